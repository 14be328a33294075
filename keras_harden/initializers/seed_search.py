"""Measured "lucky initialization": pick the seed whose first steps train best."""

import math
from typing import NamedTuple

import keras
import numpy as np

from keras_harden import _gradients
from keras_harden._batches import iterate_batches
from keras_harden._validation import check_int, check_positive

__all__ = ["seed_search", "SeedSearchResult"]


class SeedSearchResult(NamedTuple):
    """What `seed_search` returns."""

    model: keras.Model
    """The chosen model, after its `steps` trial steps (optimizer state kept)."""
    seed: int
    """The chosen seed; `build_model(seed)` after `keras.utils.set_random_seed(seed)`
    rebuilds the same initial model."""
    table: list
    """One dict per trial: `seed`, `loss`, `grad_norm_start`, `grad_norm_end`,
    `finite`, `eligible`."""

    def summary(self):
        """The table as aligned text, the chosen seed marked with `*`."""
        lines = ["  seed        loss  grad_norm_start  grad_norm_end  eligible"]
        for row in self.table:
            mark = "*" if row["seed"] == self.seed else " "
            lines.append(
                f"{mark}{row['seed']:>5} {row['loss']:>11.4g} "
                f"{row['grad_norm_start']:>16.4g} {row['grad_norm_end']:>14.4g}  "
                f"{row['eligible']}"
            )
        return "\n".join(lines)


def _grad_norm_and_loss(model, x, y):
    """Global gradient norm and loss of one batch in training mode, with the
    model's compiled loss (TensorFlow or JAX)."""
    loss, grads = _gradients.loss_and_gradients(model, x, y)
    return _gradients.norm([g for g in grads if g is not None]), loss


def seed_search(
    build_model,
    data,
    trials=8,
    steps=20,
    seeds=None,
    batch_size=64,
    max_growth=1.0,
):
    """Builds a model with several seeds and keeps the one that trains best early.

    "Lucky initialization" made measurable: for each seed, the global random
    seed is set (`keras.utils.set_random_seed(seed)`, so unseeded initializers
    and dropout follow it), `build_model(seed)` builds and compiles a model,
    and `steps` training steps run with `train_on_batch` on the same batches
    for every trial. Before and after them, the global gradient norm and the
    loss are measured on the first batch. A trial is *eligible* when every
    loss and both gradient norms are finite and the norm did not grow (end <=
    `max_growth` x start) nor vanish (end > 1e-8 x start: a network whose
    ReLUs all died has a zero gradient and a deceptively low, constant
    loss). The eligible trial with the lowest final loss wins; if none is
    eligible, the finite trial with the lowest loss does (its row says
    `eligible=False`); if no trial stayed finite, `RuntimeError`.

    The gradient norm is taken with the backend's own gradient (TensorFlow
    or JAX); the training steps use whatever the model was compiled with.

    Args:
        build_model: `callable(seed) -> compiled keras.Model`.
        data: an `(x, y)` pair of arrays (batches are slices of one fixed
            shuffle) or an iterable of `(x, y)` batches (e.g. `tf.data`).
        trials: number of seeds tried when `seeds` is None (seeds 0..trials-1).
        steps: training steps per trial, an int >= 1.
        seeds: explicit list of int seeds (overrides `trials`).
        batch_size: batch size when `data` is a pair of arrays.
        max_growth: largest accepted ratio of final to initial gradient norm.

    Returns:
        `SeedSearchResult(model, seed, table)`: the winning model after its
        trial steps, its seed, and one dict per trial (`seed`, `loss`,
        `grad_norm_start`, `grad_norm_end`, `finite`, `eligible`).
        `result.summary()` formats the table.

    Example:

    >>> def build(seed):
    ...     model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    ...     model.compile("adam", "sparse_categorical_crossentropy")
    ...     return model
    >>> (x, y), _ = kh.data.load_digits()
    >>> data = (x.reshape(-1, 64) / 255, y)
    >>> result = kh.initializers.seed_search(build, data, trials=3, steps=5)
    >>> result.seed in (0, 1, 2)
    True

    References:
        Frankle, Carbin. "The Lottery Ticket Hypothesis", ICLR 2019, and
        Picard. "torch.manual_seed(3407) is all you need", 2021
        (https://arxiv.org/abs/2109.08203): seeds matter measurably.
    """
    if not callable(build_model):
        raise ValueError(
            "`build_model` must be callable(seed). "
            f"Received: build_model={build_model!r}"
        )
    if seeds is None:
        check_int("trials", trials, minimum=1)
        seeds = list(range(trials))
    else:
        seeds = list(seeds)
        if not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds
        ):
            raise ValueError(
                f"`seeds` must be a non-empty list of ints. Received: seeds={seeds!r}"
            )
    check_int("steps", steps, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_positive("max_growth", max_growth)

    if isinstance(data, tuple):  # arrays: batches of one fixed shuffle
        order = np.random.default_rng(0).permutation(len(data[0]))
    else:
        order = None
    batches = list(
        iterate_batches(
            data, batch_size, steps, order=order, cycle=True, labels=True
        )
    )
    probe_x, probe_y = batches[0]
    table, best, best_key = [], None, None
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = build_model(seed)
        if not isinstance(model, keras.Model) or not model.compiled:
            raise ValueError(
                "`build_model` must return a compiled keras.Model. "
                f"Received: build_model({seed}) -> {type(model).__name__}"
            )
        start, _ = _grad_norm_and_loss(model, probe_x, probe_y)
        losses = []
        for x, y in batches:
            logs = model.train_on_batch(x, y, return_dict=True)
            losses.append(float(logs["loss"]))
        end, loss = _grad_norm_and_loss(model, probe_x, probe_y)
        finite = all(math.isfinite(v) for v in losses + [start, end, loss])
        # Eligible: finite, not grown, and not vanished (a zero gradient on a
        # non-zero start means every unit died: a loss of log(classes) for good).
        eligible = finite and 1e-8 * start < end <= max_growth * start
        table.append(
            {
                "seed": seed,
                "loss": loss,
                "grad_norm_start": start,
                "grad_norm_end": end,
                "finite": finite,
                "eligible": eligible,
            }
        )
        if finite:
            key = (not eligible, loss)
            if best_key is None or key < best_key:
                best, best_key = (model, seed), key
    if best is None:
        raise RuntimeError(
            "seed_search: every trial produced a non-finite loss or gradient norm; "
            "lower the learning rate or fix the initialization."
        )
    return SeedSearchResult(model=best[0], seed=best[1], table=table)
