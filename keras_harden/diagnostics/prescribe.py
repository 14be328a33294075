"""`harden`: measure a model's first steps, try the remedies that fit, keep
the one that trains best on held-out data."""

import math
from typing import NamedTuple

import keras
import numpy as np

from keras_harden._validation import check_int, check_number
from keras_harden.diagnostics import _core

__all__ = ["Prescription", "Trial", "harden"]

# A candidate is only preferred over an earlier (simpler) one when its
# held-out loss is lower by more than this fraction: short trials are noisy.
_PREFER_SIMPLER = 0.01
# Held-out accuracies closer than this count as a tie (about one standard
# error at 300 held-out samples).
_ACCURACY_TIE = 0.02
# The clip thresholds tried: fractions of the median first-step norm, and the
# norm at which one plain SGD step moves the weights by this fraction of
# their norm.
_CLIP_FRACTIONS = (1.0, 0.1)
_STEP_FRACTION = 0.01
# The held-out part scores each trial; more samples than this only cost time.
_MAX_HOLDOUT = 1024
# With at least this many kernel layers and no normalisation layer, a model
# is a deep plain net, and a data-driven re-initialisation is tried too.
_DEEP_PLAIN_DEPTH = 8
_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


class Trial(NamedTuple):
    """One remedy tried: its name, what it is, the held-out loss after the
    trial (`inf` when the run diverged), whether it diverged, and for a
    classifier the held-out accuracy (else `None`)."""

    name: str
    description: str
    held_out_loss: float
    diverged: bool
    held_out_accuracy: float = None


class Prescription:
    """What `harden` chose, with the measurements behind it.

    Attributes:
        optimizer: a fresh optimizer to compile the model with.
        model: the model (the one passed in), with any change applied.
        choice: the winning trial.
        trials: every `Trial`, in the order they ran.
        first_step_norm: median global gradient norm of the first steps.
        changes: descriptions of the changes made to the model (may be empty).
    """

    def __init__(self, optimizer, model, choice, trials, first_step_norm, changes):
        self.optimizer = optimizer
        self.model = model
        self.choice = choice
        self.trials = trials
        self.first_step_norm = first_step_norm
        self.changes = changes

    @property
    def why(self):
        """One sentence on why the choice won."""
        plain = self.trials[0]
        if all(t.diverged for t in self.trials):
            return (
                "every trial diverged: lower the learning rate further or look "
                "for NaN/Inf in the data"
            )
        if self.choice.name == plain.name:
            return (
                "no remedy beat plain training on held-out loss; it keeps "
                "non-finite steps from landing"
            )
        if plain.diverged:
            return f"plain training diverged; {self.choice.name} trained best"
        if plain.held_out_accuracy is not None:
            return (
                f"{self.choice.name} reached held-out accuracy "
                f"{self.choice.held_out_accuracy:.3f} against "
                f"{plain.held_out_accuracy:.3f} for plain training"
            )
        return (
            f"{self.choice.name} reached held-out loss "
            f"{self.choice.held_out_loss:.4g} against {plain.held_out_loss:.4g} "
            "for plain training"
        )

    def to_markdown(self):
        lines = [
            f"**Prescription: {self.choice.description}** ({self.why}).",
            "",
            f"Median global gradient norm of the first steps: "
            f"{self.first_step_norm:.4g}.",
        ]
        if self.changes:
            lines.append("Model changes: " + "; ".join(self.changes) + ".")
        lines += [
            "",
            "| trial | held-out loss | held-out accuracy | diverged |",
            "| --- | ---: | ---: | --- |",
        ]
        for t in self.trials:
            mark = " (chosen)" if t is self.choice else ""
            accuracy = (
                "-" if t.held_out_accuracy is None else f"{t.held_out_accuracy:.3f}"
            )
            lines.append(
                f"| {t.description}{mark} | {t.held_out_loss:.4g} | {accuracy} | "
                f"{'yes' if t.diverged else 'no'} |"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        return f"Prescription(choice={self.choice.name!r})"


class _Remedy(NamedTuple):
    """A wrapper around a fresh copy of the user's optimizer (from
    `inner_config`), and an optional change to the model."""

    name: str
    description: str
    wrap: object
    inner_class: type
    inner_config: dict
    change: object = None
    note: str = ""

    def optimizer(self):
        return self.wrap(self.inner_class.from_config(dict(self.inner_config)))


def _scaled_learning_rate(config, factor):
    """`config` with its learning rate times `factor`, or `None` when the
    rate is a schedule."""
    rate = config.get("learning_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        return None
    return {**config, "learning_rate": float(rate) * factor}


def _classifier_kind(loss_fn):
    """ "sparse" or "categorical" for a cross-entropy loss, else `None`."""
    name = getattr(loss_fn, "name", None) or getattr(loss_fn, "__name__", "")
    if "categorical_crossentropy" not in name:
        return None
    return "sparse" if name.startswith("sparse") else "categorical"


def _is_deep_plain(model):
    layers = model.layers
    if any(isinstance(layer, _NORMALIZATION) for layer in layers):
        return False
    kernels = [layer for layer in layers if getattr(layer, "kernel", None) is not None]
    return len(kernels) >= _DEEP_PLAIN_DEPTH


def _first_step_norm(model, x, y, loss_fn, batch_size, steps=5):
    """Median global gradient norm over the first `steps` batches, at the
    model's current weights (nothing is updated)."""
    norms = []
    for i in range(steps):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        if len(x[sl]) == 0:
            break
        _, grads = _core.loss_and_gradients(model, x[sl], y[sl], loss_fn)
        norms.append(_core.norm([g for g in grads if g is not None]))
    finite = [n for n in norms if math.isfinite(n)]
    return float(np.median(finite)) if finite else float("nan")


def _check(data, optimizer, batch_size, trial_steps, holdout):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            "`data` must be an `(x, y)` pair of arrays. "
            f"Received: data={type(data).__name__}"
        )
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "`optimizer` must be a keras.optimizers.Optimizer (the one you would "
            f"compile with). Received: optimizer={optimizer!r}"
        )
    check_int("batch_size", batch_size, minimum=1)
    check_int("trial_steps", trial_steps, minimum=1)
    check_number("holdout", holdout, low=0, high=1, low_open=True, high_open=True)


def harden(
    model,
    data,
    optimizer,
    loss,
    batch_size=32,
    trial_steps=60,
    holdout=0.2,
    seed=0,
):
    """Finds a remedy that trains `model` stably, checked by short trials.

    1. Measures the median global gradient norm `n0` of the first steps at the
       model's initial weights.
    2. Trains a short trial (`trial_steps` steps of `fit`, from the same
       initial weights) for each remedy, in order from the least invasive:
       plain training (non-finite steps skipped), a fixed global clip at
       `n0`, at `n0 / 10` and at the norm for which one plain SGD step would
       move the weights by 1% of their norm, adaptive gradient clipping
       (`AdaptiveGradientClipping` with its defaults); then the best of these
       with the learning rate divided by 10 and, for a deep net without
       normalisation layers, with its kernels re-initialised by `lsuv`.
    3. Keeps the remedy with the lowest loss on a held-out part of `data`
       (a later remedy must beat an earlier one by more than 1%); for a
       cross-entropy loss, only the remedies within 0.02 of the best held-out
       accuracy compete (a net collapsed to one class can have a lower loss
       than one still learning). It restores the model's initial weights,
       with the winner's change applied.

    Each trial recompiles `model` and seeds Keras's global random state with
    `seed` (so every trial sees the same dropout draws); afterwards the model
    is compiled with the prescribed optimizer and `loss` (compile again to add
    metrics).

    Args:
        model: a built Keras model.
        data: `(x, y)` arrays of training data; a random `holdout` fraction
            (at most 1,024 samples) scores the trials.
        optimizer: the optimizer you would compile with (left untouched;
            fresh copies are made from its config).
        loss: the loss you would compile with.
        batch_size: int >= 1.
        trial_steps: int >= 1, training steps per trial.
        holdout: float in (0, 1).
        seed: int, for the split and the trials' shuffling.

    Returns:
        A `Prescription`: `.optimizer` to compile with, `.model`, and the
        trials behind the choice (`print(prescription)`).

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> rx = kh.harden(model, (x, y), keras.optimizers.SGD(0.1),
    ...                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                trial_steps=5)
    >>> rx.model.fit(x, y, verbose=0)  # doctest: +SKIP
    """
    _check(data, optimizer, batch_size, trial_steps, holdout)
    from keras_harden import optimizers as kho
    from keras_harden.initializers import lsuv

    x, y = (np.asarray(a) for a in data)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = min(_MAX_HOLDOUT, max(1, int(round(holdout * len(x)))))
    x_val, y_val = x[order[:n_val]], y[order[:n_val]]
    x_train, y_train = x[order[n_val:]], y[order[n_val:]]
    loss_fn = keras.losses.get(loss)
    classifier = _classifier_kind(loss_fn)
    initial = model.get_weights()
    n0 = _first_step_norm(model, x_train, y_train, loss_fn, batch_size)
    # the trial's batches: the training part in a shuffled order, repeated
    rng = np.random.default_rng(seed + 1)
    trial = np.resize(rng.permutation(len(x_train)), trial_steps * batch_size)

    def run(remedy):
        model.set_weights(initial)
        if remedy.change is not None:
            remedy.change()
        keras.utils.set_random_seed(seed)
        model.compile(optimizer=remedy.optimizer(), loss=loss_fn)
        history = model.fit(
            x_train[trial],
            y_train[trial],
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
        )
        predictions = np.concatenate(
            [
                keras.ops.convert_to_numpy(model(x_val[i : i + 256], training=False))
                for i in range(0, len(x_val), 256)
            ]
        )
        held_out = float(keras.ops.mean(loss_fn(y_val, predictions)))
        diverged = not (
            math.isfinite(held_out)
            and all(math.isfinite(v) for v in history.history["loss"])
        )
        accuracy = None
        if classifier:
            labels = y_val if classifier == "sparse" else np.argmax(y_val, -1)
            accuracy = float(np.mean(np.argmax(predictions, -1) == labels))
        return Trial(
            remedy.name,
            remedy.description,
            math.inf if diverged else held_out,
            diverged,
            None if diverged else accuracy,
        )

    given = optimizer.get_config()
    name = type(optimizer).__name__

    def remedy(label, description, wrap):
        return _Remedy(label, description, wrap, type(optimizer), given)

    remedies = [remedy("plain", f"{name} as given", kho.HardenedOptimizer)]
    limits = [n0 * fraction for fraction in _CLIP_FRACTIONS]
    rate = given.get("learning_rate")
    if isinstance(rate, (int, float)) and rate > 0:
        limits.append(_STEP_FRACTION * _core.norm(initial) / rate)
    for limit in limits:
        if math.isfinite(limit) and limit > 0:
            limit = float(f"{limit:.3g}")
            remedies.append(
                remedy(
                    f"clip {limit:g}",
                    f"{name} with a global clip at {limit:g}",
                    lambda inner, limit=limit: kho.GradientClipping(
                        inner, global_clipnorm=limit
                    ),
                )
            )
    remedies.append(
        remedy(
            "agc",
            f"{name} with adaptive gradient clipping",
            kho.AdaptiveGradientClipping,
        )
    )
    trials = [run(r) for r in remedies]
    best = remedies[trials.index(_best(trials))]

    slower = _scaled_learning_rate(given, 0.1)
    if slower is not None:
        remedies.append(
            best._replace(
                name=f"{best.name}, lr / 10",
                description=f"{best.description}, learning rate / 10",
                inner_config=slower,
            )
        )
        trials.append(run(remedies[-1]))
    if _is_deep_plain(model):
        sample = x_train[:256]
        remedies.append(
            best._replace(
                name=f"{best.name}, lsuv",
                description=f"{best.description}, kernels re-initialised by lsuv",
                change=lambda: lsuv(model, sample, seed=seed),
                note="kernels re-initialised by lsuv on 256 training samples",
            )
        )
        trials.append(run(remedies[-1]))
    choice = _best(trials)
    chosen = remedies[trials.index(choice)]
    model.set_weights(initial)
    if chosen.change is not None:
        chosen.change()
    prescribed = chosen.optimizer()
    model.compile(optimizer=prescribed, loss=loss_fn)
    return Prescription(
        optimizer=prescribed,
        model=model,
        choice=choice,
        trials=trials,
        first_step_norm=n0,
        changes=[chosen.note] if chosen.note else [],
    )


def _best(trials):
    """The winning trial; the first when all diverged.

    By held-out loss: the earliest (least invasive) trial within
    `_PREFER_SIMPLER` of the lowest loss. For a classifier, only the trials
    within `_ACCURACY_TIE` of the best held-out accuracy compete on loss: a
    net collapsed to one class can have a lower loss than one still
    learning, while accuracies closer than that are noise on a few hundred
    held-out samples.
    """
    finite = [t for t in trials if not t.diverged]
    if not finite:
        return trials[0]
    if finite[0].held_out_accuracy is not None:
        top = max(t.held_out_accuracy for t in finite)
        finite = [t for t in finite if t.held_out_accuracy >= top - _ACCURACY_TIE]
    lowest = min(t.held_out_loss for t in finite)
    return next(t for t in finite if t.held_out_loss <= lowest * (1 + _PREFER_SIMPLER))
