"""Adaptive gradient clipping (AGC): unit-wise, relative to the weights."""

import re
import warnings

import keras

from keras_harden._validation import check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule


def _patterns(name, value):
    if isinstance(value, str):
        value = [value]
    try:
        value = list(value)
    except TypeError:
        value = None
    if value is None or not all(isinstance(p, str) for p in value):
        raise ValueError(
            f"`{name}` must be a list of regular-expression strings. "
            f"Received: {name}={value!r}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{name}` holds an invalid regular expression ({error}). "
                f"Received: {name}={value!r}"
            ) from None
    return tuple(value)


def _path(variable):
    return getattr(variable, "path", None) or getattr(variable, "name", "")


@keras.saving.register_keras_serializable(package="keras_harden")
class UnitwiseClip(ClipRule):
    """Adaptive gradient clipping: each output unit's gradient norm is capped
    at `clip_factor * max(||W_unit||, eps)`.

    A unit is one output channel: a kernel's norms are taken over every axis
    but the output axis (the last in Keras's `(..., in, out)` layout, the
    second-to-last for `Conv*Transpose`, whose kernels are `(..., out, in)`).
    Vectors (biases, batch-norm scales) and scalars count as one unit. The
    cap is relative to the weights, so it needs no tuning per model scale;
    `eps` lets zero-initialised units move.

    Variables whose path matches any pattern in `exclude` are left unclipped
    (NFNets leave the final classifier unclipped: pass its layer name).
    Variables whose path matches any pattern in `transposed` use the
    `(..., out, in)` layout; the default matches Keras's default names
    (`conv2d_transpose/kernel`); add yours if you renamed such layers.

    Args:
        clip_factor: float > 0, the ratio limit (`lambda`, 0.01 in NFNets for
            large batches; larger values clip less).
        eps: float > 0, the floor on the weight norm.
        exclude: regular expressions searched in each variable's `path`.
        transposed: regular expressions naming `(..., out, in)` kernels.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.SGD(0.1),
    ...     clip=kh.optimizers.UnitwiseClip(0.01, exclude=["predictions"]))

    References:
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021
        (https://arxiv.org/abs/2102.06171); reference code in
        https://github.com/deepmind/deepmind-research/tree/master/nfnets.
    """

    def __init__(
        self, clip_factor=0.01, eps=1e-3, exclude=(), transposed=("transpose",)
    ):
        super().__init__()
        self.clip_factor = check_positive("clip_factor", clip_factor)
        self.eps = check_positive("eps", eps)
        self.exclude = _patterns("exclude", exclude)
        self.transposed = _patterns("transposed", transposed)

    def _matches(self, patterns, variable):
        path = _path(variable)
        return any(re.search(p, path) for p in patterns)

    def build(self, optimizer, variables):
        super().build(optimizer, variables)
        paths = [_path(v) for v in variables]
        unmatched = [
            p for p in self.exclude if not any(re.search(p, path) for path in paths)
        ]
        if unmatched:
            shown = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
            warnings.warn(
                f"UnitwiseClip: `exclude` patterns {unmatched} match no trainable "
                f"variable, so nothing is excluded for them. Variable paths look "
                f"like: {shown}. Received: exclude={list(self.exclude)}",
                stacklevel=2,
            )

    def is_excluded(self, variable):
        """Whether `variable`'s gradient is left unclipped."""
        return self._matches(self.exclude, variable)

    def __call__(self, grads, variables, norm, state):
        del norm, state
        clipped = []
        for g, v in zip(grads, variables, strict=True):
            if g is None or self.is_excluded(v):
                clipped.append(g)
                continue
            clipped.append(
                gradient_ops.unitwise_clip(
                    g,
                    v,
                    self.clip_factor,
                    self.eps,
                    transposed=self._matches(self.transposed, v),
                )
            )
        return clipped, None, []

    def get_config(self):
        return {
            "clip_factor": self.clip_factor,
            "eps": self.eps,
            "exclude": list(self.exclude),
            "transposed": list(self.transposed),
        }
