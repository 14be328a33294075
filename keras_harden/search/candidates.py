"""The candidates `harden` searches over, built from what was measured.

A candidate is a learning rate, a clip and whether the kernels are
re-initialised. `build_candidates` is a pure function of the measurements
(the optimizer's rate, the range test's suggestion, the gradient norm of the
healthy steps, whether the net is deep without normalisation); `make_optimizer`
turns a candidate into a fresh optimizer.
"""

import math
from typing import NamedTuple

import keras

from keras_harden import optimizers as kho
from keras_harden.search import _copies

__all__ = [
    "Candidate",
    "build_candidates",
    "clip_threshold",
    "is_deep_plain",
    "make_optimizer",
]

# The rates a careful user tries by hand: the given one, a third, a tenth.
RATE_FACTORS = (1.0, 1 / 3, 1 / 10)
# One plain SGD step at the given rate should move the weights by at most
# this fraction of their norm; a measured gradient norm more than
# `_EXPLODED` times the norm that does so is itself exploded.
_STEP_FRACTION = 0.01
_EXPLODED = 10.0
# With at least this many kernel layers and no normalisation layer, a model
# is a deep plain net: re-initialising its kernels (lsuv) is a candidate.
DEEP_PLAIN_DEPTH = 8
_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


class Candidate(NamedTuple):
    """One setting to train: `rate` (None: the optimizer's own), `clip`
    (`"none"`: the optimizer as it is; `"global"`: a global-norm clip
    at `clip_norm`; `"agc"`: adaptive gradient clipping) and `reinit`
    (kernels re-initialised by `lsuv` first)."""

    name: str
    description: str
    rate: float = None
    clip: str = "none"
    clip_norm: float = None
    reinit: bool = False


def _short(value):
    return f"{value:.3g}"


def clip_threshold(healthy_norm, weight_norm, rate):
    """The global clip to try: the gradient norm of the healthy steps, unless
    that norm is itself exploded.

    A plain SGD step of norm `rate * g` moves weights of norm `weight_norm`
    by the fraction `rate * g / weight_norm`; at `g = 0.01 * weight_norm /
    rate` that is 1%. A measured norm more than 10x that (a net exploding
    from its first step, where no step is healthy) is replaced by it.

    >>> clip_threshold(3.0, 30.0, 0.5)   # 1% step at 0.6: 3 is within 10x
    3.0
    >>> clip_threshold(8e6, 20.0, 0.01)  # 1% step at 20: 8e6 is exploded
    20.0
    >>> clip_threshold(3.0, 30.0, None)  # no rate to compare with
    3.0
    """
    if rate is None or not rate > 0 or not weight_norm > 0:
        return healthy_norm
    step_norm = _STEP_FRACTION * weight_norm / rate
    if math.isfinite(healthy_norm) and healthy_norm <= _EXPLODED * step_norm:
        return healthy_norm
    return step_norm


def build_candidates(
    rate, optimizer_name, clip_norm=None, deep_plain=False, suggested_rate=None
):
    """The candidates, the least invasive first; the first is plain training.

    Rates: the given `rate`, a third and a tenth of it, and the range test's
    `suggested_rate` when that lies more than 2x below the tenth (the given
    rate is far past stable). Clips: none, a global clip at `clip_norm` (the
    gradient norm of healthy steps) and AGC; for a deep plain net, none, AGC
    and AGC after `lsuv` re-initialisation.

    >>> [c.name for c in build_candidates(0.3, "SGD", clip_norm=2.0)]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['plain', 'lr 0.1', 'lr 0.03', 'clip 2', 'lr 0.1, clip 2', 'lr 0.03, clip 2',
     'agc', 'lr 0.1, agc', 'lr 0.03, agc']
    >>> len(build_candidates(0.3, "SGD", deep_plain=True, suggested_rate=0.001))
    12
    """
    rates = [None]
    if rate is not None and rate > 0:
        rates += [rate * f for f in RATE_FACTORS[1:]]
        if suggested_rate is not None and 0 < suggested_rate < rates[-1] / 2:
            rates.append(suggested_rate)
    usable_clip = clip_norm is not None and math.isfinite(clip_norm) and clip_norm > 0
    if deep_plain:
        kinds = [("none", False), ("agc", False), ("agc", True)]
    else:
        kinds = [("none", False)] + ([("global", False)] if usable_clip else [])
        kinds.append(("agc", False))
    clip_norm = float(_short(clip_norm)) if usable_clip else None
    candidates = []
    for clip, reinit in kinds:
        for r in rates:
            parts = [] if r is None else [f"lr {_short(r)}"]
            words = [optimizer_name]
            words.append("as given" if r is None else f"at rate {_short(r)}")
            if clip == "global":
                parts.append(f"clip {_short(clip_norm)}")
                words.append(f"with a global clip at {_short(clip_norm)}")
            elif clip == "agc":
                parts.append("agc")
                words.append("with adaptive gradient clipping")
            if reinit:
                parts.append("lsuv")
                words[-1] += ","
                words.append("kernels re-initialised by lsuv")
            candidates.append(
                Candidate(
                    ", ".join(parts) or "plain",
                    " ".join(words),
                    r,
                    clip,
                    clip_norm if clip == "global" else None,
                    reinit,
                )
            )
    return candidates


def make_optimizer(candidate, optimizer_class, config):
    """A fresh optimizer for `candidate` from the user's optimizer class and
    config: without a clip, the user's optimizer itself (at the candidate's
    rate); else it wrapped in the clip."""
    inner = _copies.optimizer_with_rate(optimizer_class, config, candidate.rate)
    if candidate.clip == "global":
        return kho.GradientClipping(inner, global_clipnorm=candidate.clip_norm)
    if candidate.clip == "agc":
        return kho.AdaptiveGradientClipping(inner)
    return inner


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def is_deep_plain(model):
    """Whether `model` has at least 8 kernel layers and no normalisation."""
    layers = list(_layers(model))
    if any(isinstance(layer, _NORMALIZATION) for layer in layers):
        return False
    kernels = [layer for layer in layers if getattr(layer, "kernel", None) is not None]
    return len(kernels) >= DEEP_PLAIN_DEPTH
