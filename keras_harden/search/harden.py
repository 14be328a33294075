"""`harden`: find, by a real search, how to train a model stably, and train it.

One search, top to bottom:

1. The data becomes a stream of training batches in one fixed order and a
   held-out set (`_data.prepare`).
2. A learning-rate range test on a copy of the model measures the largest
   stable rate and the gradient norm of healthy steps (`range_test`).
3. From those, the candidates: the given rate, a third and a tenth (and the
   range test's suggestion when the given rate is far past stable) times no
   clip, a global clip at the healthy norm and AGC; for a deep net without
   normalisation, re-initialisation by `lsuv` instead of the fixed clip
   (`candidates.build_candidates`). Plain training is the first.
4. Successive halving (`halving`): every candidate trains its own copy of the
   model on the same batches, in lockstep; after each round the best third
   continue, *where they stopped*, until one is left at the end of the
   user's run. Plain training survives every round unless the round's best
   beats it beyond the noise of the held-out score (a paired test), and wins
   at the end unless the best remedy beats it so.
5. The winner's weights and optimizer state land in the user's model, which
   is compiled with that optimizer: the search's last round was its training.
"""

import math
import time

import keras
import numpy as np

from keras_harden import _gradients
from keras_harden._validation import check_int, check_number
from keras_harden.initializers import lsuv
from keras_harden.search import _copies, _data, halving, range_test
from keras_harden.search.candidates import (
    build_candidates,
    clip_threshold,
    is_deep_plain,
    make_optimizer,
)
from keras_harden.search.prescription import Contestant, Prescription

__all__ = ["harden"]

# The first round trains at least this many steps: shorter is noise.
_MIN_ROUND_STEPS = 10
# Held-out predictions are made in chunks of this many examples.
_PREDICT_CHUNK = 256
# lsuv re-initialises from this many training examples.
_LSUV_SAMPLES = 256
# The paired test's threshold, in standard errors of the mean difference.
_NOISE_Z = 2.0


def _classifier_kind(loss_fn):
    """ "sparse" or "categorical" for a cross-entropy loss, else `None`."""
    name = getattr(loss_fn, "name", None) or getattr(loss_fn, "__name__", "")
    if "categorical_crossentropy" not in name:
        return None
    return "sparse" if name.startswith("sparse") else "categorical"


def _per_example_loss(loss_fn, y, predictions):
    if isinstance(loss_fn, keras.losses.Loss):
        values = loss_fn.call(y, predictions)
    else:
        values = loss_fn(y, predictions)
    values = np.asarray(keras.ops.convert_to_numpy(values), np.float64)
    return values.reshape(len(values), -1).mean(-1) if values.ndim > 1 else values


class _Scorer:
    """Scores a model on the held-out set: per-example scores (1/0 for a
    right/wrong class, else minus the example's loss), their mean, the mean
    loss and, for a classifier, the accuracy."""

    def __init__(self, held_out, loss_fn):
        self.x, self.y = held_out
        self.loss_fn = loss_fn
        self.kind = _classifier_kind(loss_fn)
        self.n = len(self.y)

    def __call__(self, model):
        # equal chunks (the last padded by wrapping round): one traced shape
        size = min(_PREDICT_CHUNK, self.n)
        chunks = []
        for start in range(0, self.n, size):
            index = np.arange(start, start + size) % self.n
            part = keras.tree.map_structure(lambda a, i=index: a[i], self.x)
            chunks.append(np.asarray(model.predict_on_batch(part)))
        predictions = np.concatenate(chunks)[: self.n]
        losses = _per_example_loss(self.loss_fn, self.y, predictions)
        loss = float(np.mean(losses))
        if not math.isfinite(loss):
            return None
        if self.kind is None:
            return {"per_example": -losses, "score": -loss, "loss": loss}
        labels = self.y if self.kind == "sparse" else np.argmax(self.y, -1)
        correct = (np.argmax(predictions, -1) == np.reshape(labels, -1)).astype(float)
        accuracy = float(np.mean(correct))
        return {
            "per_example": correct,
            "score": accuracy,
            "loss": loss,
            "accuracy": accuracy,
        }


def _lsuv_sample(stream):
    xs, count = [], 0
    for x, _, _ in stream.batches():
        xs.append(x)
        count += len(keras.tree.flatten(x)[0])
        if count >= _LSUV_SAMPLES:
            break
    joined = keras.tree.map_structure(lambda *a: np.concatenate(a), *xs)
    return keras.tree.map_structure(lambda a: a[:_LSUV_SAMPLES], joined)


def _check(optimizer, epochs, steps, batch_size, validation_split, eta, verbose):
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "`optimizer` must be a keras.optimizers.Optimizer (the one you would "
            f"compile with). Received: optimizer={optimizer!r}"
        )
    check_int("epochs", epochs, minimum=1)
    check_int("steps", steps, minimum=1, optional=True)
    check_int("batch_size", batch_size, minimum=1)
    check_number(
        "validation_split",
        validation_split,
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    check_int("eta", eta, minimum=2)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")


class _Progress:
    """A line per round (`verbose=2`), plus a progress bar within each round
    (`verbose=1`), as `fit` shows them."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.bar = None

    def round_starts(self, number, total, alive, start, end):
        if self.verbose:
            print(
                f"Round {number}/{total}: {len(alive)} candidate(s), steps "
                f"{start + 1}-{end}",
                flush=True,
            )
        if self.verbose == 1:
            self.bar = keras.utils.Progbar(end - start, stateful_metrics=["best"])

    def step(self, done, best_loss):
        if self.bar is not None:
            self.bar.update(done, [("best", best_loss)])

    def round_ends(self, kept, dropped):
        self.bar = None
        if self.verbose:
            print(
                f"  continues: {', '.join(kept)}"
                + (f"; stops: {', '.join(dropped)}" if dropped else ""),
                flush=True,
            )


def harden(
    model,
    data,
    optimizer,
    loss,
    epochs=1,
    steps=None,
    batch_size=32,
    validation_data=None,
    validation_split=0.2,
    metrics=None,
    eta=3,
    range_test_steps=None,
    seed=0,
    verbose=1,
):
    """Searches for a stable way to train `model`, and trains it that way.

    A learning-rate range test measures the largest stable rate and the
    gradient norm of healthy steps; candidates are built from them (the
    given rate, a third, a tenth, and the range test's suggestion when the
    given rate is far past stable; no clip, a global clip at the healthy
    norm, adaptive gradient clipping; `lsuv` re-initialisation for deep nets
    without normalisation). Successive halving trains them all on the same
    batches and lets the best third continue where they stopped, round after
    round, until one is left at the end of your run (`epochs` or `steps`):
    the winner is trained. Plain training (your optimizer as given) wins
    unless a remedy beats it on the held-out
    data beyond the noise of that score (a paired test at two standard
    errors).

    The cost, in training steps, is about 2.3 to 4 runs (for 9 to 16
    candidates) plus the range test: a third to a half of a 3 x 3 grid of
    full runs. Each candidate trains its own copy of the model.

    Args:
        model: a built Keras model (Sequential, functional, or a subclass
            `keras.models.clone_model` can copy). It ends up with the
            winner's trained weights, compiled with the winner's optimizer
            (its state kept, so `fit` continues), `loss` and `metrics`.
        data: what `fit` takes: `(x, y)` or `(x, y, sample_weight)` arrays, a
            `tf.data.Dataset` or a `keras.utils.PyDataset` of such batches.
        optimizer: the optimizer you would compile with (left untouched;
            candidates are fresh copies from its config).
        loss: the loss you would compile with. A cross-entropy loss makes the
            search rank by held-out accuracy; any other by held-out loss.
        epochs: int >= 1, the length of your run in epochs (ignored when
            `steps` is given).
        steps: int >= 1 or None, the length of your run in training steps;
            needed for a dataset of unknown length.
        batch_size: int >= 1, for arrays.
        validation_data: held-out `(x, y)` arrays or a dataset, to score the
            candidates; needed for a dataset.
        validation_split: float in (0, 1): without `validation_data`, this
            random fraction of the arrays (at most 1,024 samples) is held out
            and the rest trains.
        metrics: passed to the final `compile`.
        eta: int >= 2, the halving factor: a round keeps the best `1 / eta`.
        range_test_steps: steps of the range test; by default a quarter of
            the run, between 20 and 100.
        seed: int, for the split, the batch order and the candidates' draws.
        verbose: 0 (silent), 1 (a line and a progress bar per round) or 2 (a
            line per round).

    Returns:
        A `Prescription`: `.optimizer` (compiled into `.model`), `.choice`,
        `.why`, every candidate's curve and round, the range test; `print` it
        or `.plot(path)`.

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> rx = kh.harden(model, (x, y), keras.optimizers.SGD(0.1),
    ...                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                epochs=2, verbose=0)
    >>> rx.model is model
    True

    References:
        Jamieson and Talwalkar, "Non-stochastic Best Arm Identification and
        Hyperparameter Optimization" (AISTATS 2016); Li et al., "Hyperband"
        (JMLR 2018); Smith, "Cyclical Learning Rates" (WACV 2017).
    """
    started = time.perf_counter()
    _copies.check_built(model)
    _check(optimizer, epochs, steps, batch_size, validation_split, eta, verbose)
    check_int("range_test_steps", range_test_steps, minimum=3, optional=True)
    stream, held_out = _data.prepare(
        data, batch_size, validation_data, validation_split, seed
    )
    if steps is None:
        if stream.steps_per_epoch is None:
            raise ValueError(
                "`steps` is needed when `data` is a dataset of unknown length "
                "(an endless or filtered tf.data.Dataset). Received: steps=None"
            )
        steps = epochs * stream.steps_per_epoch
    loss_fn = keras.losses.get(loss)
    scorer = _Scorer(held_out, loss_fn)
    keras.utils.set_random_seed(seed)

    # 2. the range test
    config = optimizer.get_config()
    rate = _copies.rate_of(config)
    test = None
    if rate is not None and rate > 0:
        n_test = range_test_steps or min(100, max(20, steps // 4))
        test = range_test.run_range_test(
            model,
            stream,
            optimizer,
            loss_fn,
            range_test.geometric_rates(rate * 1e-4, rate * 1e2, n_test),
            range_test.default_smoothing(n_test),
            rate,
        )

    # 3. the candidates, each with its own copy of the model
    candidates = build_candidates(
        rate,
        type(optimizer).__name__,
        clip_norm=None
        if test is None
        else clip_threshold(
            test.healthy_gradient_norm(), _gradients.norm(model.get_weights()), rate
        ),
        deep_plain=is_deep_plain(model),
        suggested_rate=None if test is None else test.suggested_rate,
    )
    reinitialised = None  # lsuv's weights, computed once for every candidate
    if any(c.reinit for c in candidates):
        reference = _copies.copy_model(model)
        lsuv(reference, _lsuv_sample(stream), seed=seed)
        reinitialised = reference.get_weights()
    contestants = []
    for candidate in candidates:
        copy = _copies.copy_model(model)
        if candidate.reinit:
            copy.set_weights(reinitialised)
        copy.compile(
            optimizer=make_optimizer(candidate, type(optimizer), config), loss=loss_fn
        )
        # built here, its variables are not created inside the first traced
        # step, which TensorFlow would then trace twice
        copy.optimizer.build(copy.trainable_variables)
        contestants.append(Contestant(candidate, copy))

    # 4. successive halving, in lockstep on one stream of batches
    rounds = halving.schedule(steps, len(contestants), eta, _MIN_ROUND_STEPS)
    progress = _Progress(verbose)
    alive = list(range(len(contestants)))
    batches = stream.batches()
    step = 0
    for number, planned in enumerate(rounds, 1):
        if not alive:  # every candidate diverged
            break
        progress.round_starts(number, len(rounds), alive, step, planned.end)
        start = step
        while step < planned.end:
            x, y, weights = next(batches)
            for index in alive:
                contestants[index].train_on_batch(x, y, weights)
            step += 1
            progress.step(step - start, _best_recent(contestants, alive))
        for index in alive:
            contestants[index].score(scorer, step)
        scores = [
            contestants[i].last_score if i in alive else -math.inf
            for i in range(len(contestants))
        ]
        per_example = [c.last_per_example for c in contestants]
        if scorer.kind is not None:  # accuracies within noise: loss decides
            losses = [
                c.held_out[-1].get("loss", math.inf) if i in alive else math.inf
                for i, c in enumerate(contestants)
            ]
            scores = halving.rank_scores(scores, losses, per_example, z=_NOISE_Z)
        kept = halving.survivors(
            scores, planned.keep, protected=0, per_example=per_example, z=_NOISE_Z
        )
        for index in alive:
            if index not in kept:
                contestants[index].stop(step)
        progress.round_ends(
            [contestants[i].name for i in kept],
            [contestants[i].name for i in alive if i not in kept],
        )
        alive = kept
    winner = contestants[_winner(alive, contestants)]

    # 5. the winner's weights and optimizer state into the user's model (when
    # every candidate diverged, the model keeps its initial weights)
    prescribed = make_optimizer(winner.candidate, type(optimizer), config)
    if winner.model is not None:
        model.set_weights(winner.model.get_weights())
    model.compile(optimizer=prescribed, loss=loss, metrics=metrics)
    model.optimizer.build(model.trainable_variables)
    if winner.model is not None:
        for target, source in zip(
            model.optimizer.variables, winner.model.optimizer.variables, strict=True
        ):
            target.assign(source)
    return Prescription(
        optimizer=prescribed,
        model=model,
        choice=winner,
        contestants=contestants,
        rounds=rounds,
        range_test=test,
        run_steps=steps,
        seconds=time.perf_counter() - started,
        noise_z=_NOISE_Z,
    )


def _best_recent(contestants, alive):
    recent = [contestants[i].recent_loss() for i in alive]
    finite = [v for v in recent if math.isfinite(v)]
    return min(finite) if finite else math.nan


def _winner(kept, contestants):
    """The last round's survivors are the best remedy and, unless that one
    beat it, plain training (index 0), which then wins."""
    if not kept:  # every candidate diverged: report plain training
        return 0
    return 0 if 0 in kept else kept[0]
