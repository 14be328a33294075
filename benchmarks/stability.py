"""Stability suite: known-unstable small training setups, hardened or not.

What it measures. Eleven small training setups on scikit-learn's digits
(`SETUPS`). Six are built to fail the way users' runs fail (one per failure
class): an exploding recurrent ReLU net (`rnn`), a too-deep badly
initialised MLP (`deep_mlp`), a conv net at a too-high learning rate
(`conv_high_lr`), a transformer without normalisation or warm-up
(`transformer`), a healthy model fed rare corrupted batches
(`corrupt_batches`) and a mixed-precision (float16) net at a high learning
rate (`mixed_fp16`). Five test where `kh.harden` used to lose:

- `lstm_healthy`: LSTM(64) over the 8 pixel rows, Adam(8e-2); trains well
  unclipped (median test accuracy 0.936 over 3 seeds): nothing to fix, so a
  remedy must not cost accuracy;
- `bn_conv_high_lr`: Conv32-BN-Conv64-BN-pool-Dense64-BN (ReLU), SGD(3.0,
  momentum 0.9), a rate far past stable (0.08-0.20 plain, loss jumping);
- `residual_mlp`: a Dense(64) stem and 8 residual blocks
  `h + Dense(64, relu)(Dense(64, relu)(h))` without normalisation, He init,
  SGD(0.1, momentum 0.9): the loss is NaN from the first epoch;
- `deep_tanh`: 24 x Dense(64, tanh), Glorot-normal init with 2.5x the
  standard deviation, SGD(0.05, momentum 0.9): stuck at chance (0.10);
- `relu_rnn_identity`: SimpleRNN(64, relu) over the 64 pixels with an
  Identity recurrent init (the IRNN), Adam(1e-2): collapses to chance after
  a first-epoch loss of 6.

Every setup is trained from several seeds under every method (a column):

- `plain`: the setup's optimizer as is;
- `user_grid`: what a careful user does by hand: the learning rate times 1,
  1/3 and 1/10, each with Keras's own `global_clipnorm` None, 1 and 5 (9
  runs, each for the full epochs); per seed, the run with the best accuracy
  on the 150 validation images wins (ties: the earlier grid point, plain
  first), and its test accuracy is reported. The grid's time per seed is the
  training seconds of its 9 runs together;
- `keras_clip`: Keras's `global_clipnorm` alone at 0.1 / 1 / 10, the value
  with the best median validation accuracy over the seeds winning per setup;
- keras_harden's fixed-threshold `GradientClipping(global_clipnorm=1)` and
  every keras_harden wrapper that takes only an inner optimizer with its
  defaults (found at run time in `kh.optimizers.__all__`: today
  AdaptiveGradientClipping, AutoClip, ZClip, AdaGC);
- `prescription`: `kh.harden(model, train, optimizer, loss,
  epochs=setup.epochs, batch_size=64, validation_data=<the 150 validation
  images>, seed=seed)`, whose search ends with the winner trained for the
  full epochs: `rx.model` is scored as it comes back (no retraining), and
  its time is the whole call. Skipped while `kh.harden` lacks `epochs` and
  `validation_data`.

A cell is the median test accuracy with the number of diverged seeds; a
second table gives per setup plain, user_grid and prescription, harden's
and the grid's seconds (medians over seeds) and their ratio.

Diverged: a seed diverged when any epoch's training loss in the `fit`
History (for the prescription: the winner's curve, when `kh.harden` exposes
it) is NaN or infinite (Keras averages the batch losses over the epoch, so
one non-finite batch loss makes the epoch's loss non-finite, even when the
optimizer skipped that step), or when any model weight is NaN or infinite
after training.

Goals:

- on every setup, `kh.harden`'s median test accuracy is within 0.02 of the
  user grid's or above, and it diverges in 0 seeds;
- on a setup that trains unclipped (`healthy`: lstm_healthy), it is not
  below `plain` by more than 0.01;
- `kh.harden`'s wall time, its training of the winner included, is at most
  half the user grid's (compare times measured under the same load: the
  same `--threads`/`--workers`, on a machine equally busy);
- every keras_harden wrapper with its defaults has 0 divergences wherever
  the tuned Keras clip has 0, and its median accuracy is never below
  `plain`'s by more than the noise (the spread of the per-seed values).

Runs: 11 setups x 3 seeds x 18 trainings (plain, 9 grid points, 3 clips, 5
wrappers) plus the prescription. The baseline columns plain, user_grid and
keras_clip (429 runs) took about 70 min with `--workers 1 --threads 1` on
the shared 2-core development machine at load average 4 (3-18 s of training
a run, transformer and mixed_fp16 the slowest; about 10 s a run in all); the
five wrappers add 165 runs. The runs go column by column; `--json PATH` is
rewritten after every run, so a partial file holds whole columns (and an
interrupted run resumes with `--reuse` on a copy of it).

    .venv/bin/python benchmarks/stability.py --workers 1 --threads 1 \\
        --methods plain,user_grid,keras_clip --json /tmp/base.json

`--reuse PATH` (repeatable) takes the finished runs of an earlier JSON with
the same setup, column, grid value, seed and epochs instead of rerunning
them, and puts them in this invocation's table and JSON: run the baseline
columns once, then only the prescription, for one table:

    .venv/bin/python benchmarks/stability.py --workers 1 --threads 1 \\
        --methods plain,user_grid,keras_clip,prescription \\
        --reuse /tmp/base.json --json /tmp/all.json

A quick subset (2 seeds; deep_mlp, conv_high_lr, corrupt_batches):
`--quick`. `--workers N` runs the jobs in N processes of one thread each
(the old 6-setup suite took 14.0 min with 2 on the idle 2-core machine;
single-threaded convolutions round differently, so conv cells move by a few
hundredths); `--threads N` sets the single process's TensorFlow threads.
`--json` holds every run: per-seed test and validation accuracy, epoch
losses, seconds, the optimizer's config (for the prescription also what
`kh.harden` chose; for a grid every grid value's runs, and for `user_grid`
each seed's `choice` and `grid_s`). Or chosen cells:

    .venv/bin/python benchmarks/stability.py --setups rnn,transformer \\
        --methods plain,keras_clip,ZClip --seeds 5
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_harden as kh  # noqa: E402

BATCH_SIZE = 64
VALIDATION = 150
CLIP_GRID = (0.1, 1.0, 10.0)
USER_LR_DIVISORS = (1, 3, 10)
USER_CLIPNORMS = (None, 1.0, 5.0)
QUICK_SETUPS = ("deep_mlp", "conv_high_lr", "corrupt_batches")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PRESCRIPTION = "prescription"


# -- setups --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """One unstable training setup.

    Attributes:
        build: `() -> keras.Model` on `(8, 8, 1)` images in [0, 255].
        optimizer: `() -> keras.optimizers.Optimizer`, the plain optimizer.
        epochs: training epochs.
        description: one line for the report.
        corrupt: whether 3% of the training images are multiplied by 30.
        policy: the Keras dtype policy the run is built and trained under.
        healthy: whether the setup trains well unclipped (nothing to fix).
    """

    build: Callable
    optimizer: Callable
    epochs: int
    description: str
    corrupt: bool = False
    policy: str = "float32"
    healthy: bool = False


def _dense(units, activation=None, scale=2.0, dtype=None):
    """A Dense layer with a fan-in variance-scaling (He-like) kernel."""
    init = keras.initializers.VarianceScaling(scale, "fan_in", "truncated_normal")
    return keras.layers.Dense(
        units, activation=activation, kernel_initializer=init, dtype=dtype
    )


def _image_input(inputs):
    """Scales pixels to [0, 1]."""
    return keras.layers.Rescaling(1 / 255)(inputs)


def _rows(inputs):
    """The 8 pixel rows of each image as 8 tokens of 8 features, in [0, 1]."""
    return keras.layers.Reshape((8, 8))(_image_input(inputs))


def rnn():
    """SimpleRNN(64, relu) over the 64 pixels in reading order (one pixel a
    step), recurrent init Orthogonal(gain=2): the state can grow 2x a step,
    so the first gradients are huge. Then Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Reshape((64, 1))(_image_input(inputs))
    h = keras.layers.SimpleRNN(
        64,
        activation="relu",
        recurrent_initializer=keras.initializers.Orthogonal(gain=2.0),
    )(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def deep_mlp(depth=16, dtype=None):
    """`depth` Dense(64, relu) layers, He init scaled 1.5x (variance x2.25),
    then Dense(10); `dtype` sets the classifier's dtype (float32 under mixed
    precision, as Keras recommends)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(_image_input(inputs))
    for _ in range(depth):
        h = _dense(64, "relu", scale=2.0 * 1.5**2)(h)
    return keras.Model(inputs, _dense(10, scale=1.0, dtype=dtype)(h))


def conv_net():
    """Conv(32, 3) - Conv(64, 3) - max-pool - Dense(64) - Dense(10), ReLU, He
    init, no normalisation."""
    inputs = keras.Input((8, 8, 1))
    h = _image_input(inputs)
    for filters in (32, 64):
        h = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
        )(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    h = _dense(64, "relu")(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per token position."""

    def build(self, input_shape):
        """One trainable `(tokens, width)` table."""
        self.table = self.add_weight(shape=tuple(input_shape[1:]), name="table")

    def call(self, inputs):
        """`inputs` plus the table."""
        return inputs + keras.ops.cast(self.table, inputs.dtype)


def _transformer_block(h, width):
    """Self-attention then a ReLU feed-forward, each with a residual and no
    normalisation."""
    attention = keras.layers.MultiHeadAttention(num_heads=4, key_dim=width // 4)
    h = h + attention(h, h)
    return h + _dense(width, scale=1.0)(_dense(2 * width, "relu")(h))


def transformer(width=64, blocks=4):
    """Row tokens embedded to `width`, learned positions, `blocks` blocks
    without normalisation, mean-pooled, Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = PositionEmbedding()(_dense(width, scale=1.0)(_rows(inputs)))
    for _ in range(blocks):
        h = _transformer_block(h, width)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def small_mlp():
    """Healthy 4 x Dense(32, relu) MLP with He init, then Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(_image_input(inputs))
    for _ in range(4):
        h = _dense(32, "relu")(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def lstm():
    """LSTM(64) over the 8 pixel rows, then Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.LSTM(64)(_rows(inputs))
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def bn_conv_net():
    """Conv(32, 3)-BN-ReLU - Conv(64, 3)-BN-ReLU - max-pool - Dense(64)-BN-ReLU
    - Dense(10), He init."""
    inputs = keras.Input((8, 8, 1))
    h = _image_input(inputs)
    for filters in (32, 64):
        h = keras.layers.Conv2D(
            filters, 3, padding="same", kernel_initializer="he_normal"
        )(h)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(_dense(64)(h)))
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def residual_mlp(width=64, blocks=8):
    """Dense(`width`) stem, then `blocks` residual blocks
    `h + Dense(relu)(Dense(relu)(h))` without normalisation, He init, then
    Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = _dense(width)(keras.layers.Flatten()(_image_input(inputs)))
    for _ in range(blocks):
        h = h + _dense(width, "relu")(_dense(width, "relu")(h))
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def deep_tanh(depth=24):
    """`depth` Dense(64, tanh) layers, Glorot-normal init with 2.5x the
    standard deviation (VarianceScaling(2.5**2, "fan_avg")), then Dense(10)."""
    init = keras.initializers.VarianceScaling(2.5**2, "fan_avg", "truncated_normal")
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(_image_input(inputs))
    for _ in range(depth):
        h = keras.layers.Dense(64, activation="tanh", kernel_initializer=init)(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def relu_rnn_identity():
    """SimpleRNN(64, relu) over the 64 pixels in reading order, recurrent init
    Identity (the IRNN), then Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Reshape((64, 1))(_image_input(inputs))
    h = keras.layers.SimpleRNN(
        64,
        activation="relu",
        recurrent_initializer=keras.initializers.Identity(),
    )(h)
    return keras.Model(inputs, _dense(10, scale=1.0)(h))


def sgd(learning_rate):
    """`() -> SGD(learning_rate, momentum=0.9)`."""
    return lambda: keras.optimizers.SGD(learning_rate, momentum=0.9)


def adam(learning_rate):
    """`() -> Adam(learning_rate)`."""
    return lambda: keras.optimizers.Adam(learning_rate)


SETUPS = {
    "rnn": Setup(
        rnn,
        adam(1e-2),
        epochs=8,
        description="SimpleRNN(64, relu) over the 64 pixels, recurrent "
        "Orthogonal(gain=2); Adam(1e-2)",
    ),
    "deep_mlp": Setup(
        deep_mlp,
        sgd(0.05),
        epochs=8,
        description="16 x Dense(64, relu), He init x1.5; SGD(0.05, momentum=0.9)",
    ),
    "conv_high_lr": Setup(
        conv_net,
        sgd(0.5),
        epochs=8,
        description="Conv32-Conv64-pool-Dense64, no norm; SGD(0.5, momentum=0.9)",
    ),
    "transformer": Setup(
        transformer,
        adam(3e-2),
        epochs=8,
        description="4 blocks, width 64, 4 heads, no norm, no warm-up, row "
        "tokens; Adam(3e-2)",
    ),
    "corrupt_batches": Setup(
        small_mlp,
        sgd(0.05),
        epochs=8,
        corrupt=True,
        description="4 x Dense(32, relu), He init, 3% of training images x30; "
        "SGD(0.05, momentum=0.9)",
    ),
    "mixed_fp16": Setup(
        lambda: deep_mlp(depth=8, dtype="float32"),
        sgd(0.1),
        epochs=4,
        policy="mixed_float16",
        description='8 x Dense(64, relu), He init x1.5, "mixed_float16" '
        "(float32 classifier); SGD(0.1, momentum=0.9)",
    ),
    "lstm_healthy": Setup(
        lstm,
        adam(8e-2),
        epochs=8,
        healthy=True,
        description="LSTM(64) over the 8 pixel rows; Adam(8e-2): trains "
        "unclipped, nothing to fix",
    ),
    "bn_conv_high_lr": Setup(
        bn_conv_net,
        sgd(3.0),
        epochs=8,
        description="Conv32-BN-Conv64-BN-pool-Dense64-BN, ReLU; SGD(3.0, "
        "momentum=0.9), far past stable",
    ),
    "residual_mlp": Setup(
        residual_mlp,
        sgd(0.1),
        epochs=8,
        description="Dense64 stem + 8 residual blocks of 2 x Dense(64, relu), "
        "no norm, He init; SGD(0.1, momentum=0.9)",
    ),
    "deep_tanh": Setup(
        deep_tanh,
        sgd(0.05),
        epochs=8,
        description="24 x Dense(64, tanh), Glorot-normal init x2.5 in std; "
        "SGD(0.05, momentum=0.9)",
    ),
    "relu_rnn_identity": Setup(
        relu_rnn_identity,
        adam(1e-2),
        epochs=8,
        description="SimpleRNN(64, relu) over the 64 pixels, recurrent "
        "Identity (IRNN); Adam(1e-2)",
    ),
}


# -- methods -------------------------------------------------------------------


def keras_global_clipnorm(value):
    """`inner -> a copy of inner with Keras's global_clipnorm=value`."""

    def factory(inner):
        config = {**inner.get_config(), "global_clipnorm": value}
        return inner.__class__.from_config(config)

    return factory


def user_grid_point(divisor, clipnorm):
    """`inner -> a copy of inner with its learning rate / divisor and Keras's
    global_clipnorm=clipnorm (None: no clipping)`."""

    def factory(inner):
        config = inner.get_config()
        config["learning_rate"] = config["learning_rate"] / divisor
        if clipnorm is not None:
            config["global_clipnorm"] = clipnorm
        return inner.__class__.from_config(config)

    return factory


def _clip_name(clipnorm):
    """`none` or the clip norm as `%g`."""
    return "none" if clipnorm is None else f"{clipnorm:g}"


class PerSeedGrid(dict):
    """A grid column whose value is picked per seed on that seed's validation
    accuracy (what a user does with their own grid), not per setup."""


def user_grid():
    """The `user_grid` column: `USER_LR_DIVISORS x USER_CLIPNORMS`, named
    like `lr/3,clip=1` (`lr/1,clip=none` is plain)."""
    return PerSeedGrid(
        {
            f"lr/{divisor},clip={_clip_name(clipnorm)}": user_grid_point(
                divisor, clipnorm
            )
            for divisor in USER_LR_DIVISORS
            for clipnorm in USER_CLIPNORMS
        }
    )


# A column is a factory `inner optimizer -> optimizer`, or a dict of them (a
# grid: a plain dict is tuned per setup on the median validation accuracy, a
# PerSeedGrid per seed), or PRESCRIPTION (kh.harden). Wrappers in
# kh.optimizers.__all__ that take only an inner optimizer are added by
# `methods()` before the prescription.
METHODS = {
    "plain": lambda inner: inner,
    "user_grid": user_grid(),
    "keras_clip": {value: keras_global_clipnorm(value) for value in CLIP_GRID},
    "GradientClipping(global_clipnorm=1)": lambda inner: kh.optimizers.GradientClipping(
        inner, global_clipnorm=1.0
    ),
    "AdaptiveGradientClipping": kh.optimizers.AdaptiveGradientClipping,
    "AutoClip": kh.optimizers.AutoClip,
    "ZClip": kh.optimizers.ZClip,
    PRESCRIPTION: PRESCRIPTION,
}


def _default_wrappers():
    """The wrapper classes of `kh.optimizers.__all__` that are not columns yet
    and can be built from an inner optimizer alone, by name."""
    listed = {method for method in METHODS.values() if isinstance(method, type)} | {
        kh.optimizers.GradientClipping,
        kh.optimizers.HardenedOptimizer,
    }
    found = {}
    for name in kh.optimizers.__all__:
        cls = getattr(kh.optimizers, name)
        is_optimizer = isinstance(cls, type) and issubclass(
            cls, keras.optimizers.Optimizer
        )
        if not is_optimizer or cls in listed:
            continue
        try:
            cls(keras.optimizers.SGD())
        except (TypeError, ValueError):
            continue
        found[name] = cls
    return found


def methods():
    """`METHODS` with the discovered default wrappers inserted before the
    prescription."""
    table = {k: v for k, v in METHODS.items() if v is not PRESCRIPTION}
    table.update(_default_wrappers())
    table.update({k: v for k, v in METHODS.items() if v is PRESCRIPTION})
    return table


def harden_has_new_api():
    """Whether `kh.harden` exists and trains the winner itself (takes
    `epochs` and `validation_data`)."""
    import inspect

    if not hasattr(kh, "harden"):
        return False
    parameters = inspect.signature(kh.harden).parameters
    return "epochs" in parameters and "validation_data" in parameters


# -- running -------------------------------------------------------------------


def load_data():
    """`(train, validation, test)` digits, each `(x, y)`; the last
    `VALIDATION` training images are held out for validation."""
    (x, y), test = kh.data.load_digits()
    train = (x[:-VALIDATION], y[:-VALIDATION])
    validation = (x[-VALIDATION:], y[-VALIDATION:])
    return train, validation, test


def corrupt(train, seed=0):
    """A copy of `train` with 3% of the images multiplied by 30."""
    x, y = train
    x = x.copy()
    rng = np.random.default_rng(seed)
    x[rng.choice(len(x), size=int(0.03 * len(x)), replace=False)] *= 30.0
    return x, y


def accuracy(model, data):
    """Share of `data`'s images whose largest logit is the label."""
    x, y = data
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def weights_finite(model):
    """Whether every weight of `model` is finite."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


def _winner_losses(rx):
    """The winner's epoch training losses, where the prescription exposes a
    History or a loss list (on itself or on its choice); else []."""
    for owner in (rx, getattr(rx, "choice", None)):
        for name in ("history", "losses", "train_losses", "loss_curve"):
            found = getattr(owner, name, None)
            if isinstance(found, keras.callbacks.History):
                found = found.history
            if isinstance(found, dict):
                found = found.get("loss")
            if isinstance(found, (list, tuple)) and found:
                try:
                    return [float(loss) for loss in found]
                except (TypeError, ValueError):
                    continue
    return []


def _harden(setup, seed, train, validation):
    """`kh.harden` on a fresh model: the trained model, its optimizer, the
    winner's losses, the call's seconds and the choice."""
    model = setup.build()
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    rx = kh.harden(
        model,
        train,
        setup.optimizer(),
        LOSS,
        epochs=setup.epochs,
        batch_size=BATCH_SIZE,
        validation_data=validation,
        seed=seed,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    choice = getattr(rx, "choice", None)
    extra = {
        "choice": getattr(choice, "name", None),
        "choice_description": getattr(choice, "description", None),
    }
    return rx.model, rx.optimizer, _winner_losses(rx), seconds, extra


def _train(setup, method, seed, data):
    """Builds, trains and scores one run under the setup's dtype policy."""
    train, validation, test = data
    keras.utils.set_random_seed(seed)
    extra = {}
    if method is PRESCRIPTION:
        # kh.harden trains the winner for the full epochs: no retraining.
        model, optimizer, losses, harden_s, extra = _harden(
            setup, seed, train, validation
        )
        fit_s = 0.0
    else:
        model = setup.build()
        optimizer = method(setup.optimizer())
        model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
        keras.utils.set_random_seed(seed)  # same batches for every column
        start = time.perf_counter()
        history = model.fit(
            *train, batch_size=BATCH_SIZE, epochs=setup.epochs, verbose=0
        )
        fit_s, harden_s = time.perf_counter() - start, 0.0
        losses = [float(loss) for loss in history.history["loss"]]
    return {
        "seed": seed,
        "epochs": setup.epochs,
        "test_acc": accuracy(model, test),
        "val_acc": accuracy(model, validation),
        "diverged": not (all(map(math.isfinite, losses)) and weights_finite(model)),
        "losses": losses,
        "fit_s": fit_s,
        "harden_s": harden_s,
        "optimizer": {"class": type(optimizer).__name__, **optimizer.get_config()},
        **extra,
    }


def run_one(setup, method, seed, data):
    """One seed of one cell: a fresh model and optimizer from `seed`."""
    start = time.perf_counter()
    keras.utils.clear_session()
    keras.mixed_precision.set_global_policy(setup.policy)
    try:
        run = _train(setup, method, seed, data)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {**run, "run_s": time.perf_counter() - start}


def run_seeds(setup, method, seeds, data):
    """`run_one` for every seed; a failure of `kh.harden` or training is
    recorded as the run's `error`."""
    runs = []
    for seed in seeds:
        try:
            runs.append(run_one(setup, method, seed, data))
        except Exception as error:  # one failing column must not end the suite
            runs.append(
                {
                    "seed": seed,
                    "epochs": setup.epochs,
                    "error": f"{type(error).__name__}: {error}",
                }
            )
    return runs


def _median(runs, key):
    """Median of `key` over the runs that finished (NaN if none did)."""
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else math.nan


def training_seconds(run):
    """Seconds a run spent training: its `fit` plus its `kh.harden` call."""
    return run.get("fit_s", 0.0) + run.get("harden_s", 0.0)


def _pick_per_seed(runs_by_value):
    """For each seed, its run of the value with the best validation accuracy
    (ties: the earlier value), with `choice` (that value) and `grid_s` (the
    training seconds of all that seed's grid runs) added."""
    by_seed = {}
    for value, runs in runs_by_value.items():
        for run in runs:
            by_seed.setdefault(run["seed"], []).append((value, run))
    picked = []
    for seed in sorted(by_seed):
        candidates = by_seed[seed]
        finished = [(v, r) for v, r in candidates if "val_acc" in r]
        if not finished:
            picked.append(candidates[0][1])
            continue
        value, run = max(finished, key=lambda item: item[1]["val_acc"])
        grid_s = sum(training_seconds(r) for _, r in candidates)
        picked.append({**run, "choice": value, "grid_s": grid_s})
    return picked


def cell_from_runs(runs_by_value, per_seed=False):
    """A cell's record from its runs (`{None: runs}`, or a grid's
    `{value: runs}`): for a grid, every value's runs and, per setup, the value
    that won on median validation accuracy, or with `per_seed`, each seed's
    winning run."""
    if list(runs_by_value) == [None]:
        return {"runs": runs_by_value[None]}
    if per_seed:
        return {
            "runs": _pick_per_seed(runs_by_value),
            "per_seed": True,
            "grid": runs_by_value,
        }
    best = max(runs_by_value, key=lambda v: _median(runs_by_value[v], "val_acc"))
    return {"runs": runs_by_value[best], "best": best, "grid": runs_by_value}


# -- jobs, reuse, processes ----------------------------------------------------

_WORKER_DATA = {}


def _set_threads(threads):
    """TensorFlow on `threads` threads for ops and between ops."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _quiet():
    """TensorFlow's Python logger to errors only (retracing notes)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")


def _worker_start():
    """Each worker process: TensorFlow quiet and on one thread (the processes
    share the cores), the data loaded once."""
    _quiet()
    _set_threads(1)
    _WORKER_DATA["data"] = load_data()


def _run_job(job):
    """One seed of one cell, named so that a fresh process can rebuild it:
    `(setup name, epochs, method name, grid value or None, seed)`."""
    setup_name, epochs, method_name, value, seed = job
    setup = dataclasses.replace(SETUPS[setup_name], epochs=epochs)
    method = methods()[method_name]
    if value is not None:
        method = method[value]
    train, *rest = _WORKER_DATA["data"]
    data = (corrupt(train) if setup.corrupt else train, *rest)
    return job, run_seeds(setup, method, [seed], data)[0]


def _values(method):
    """A column's grid values, or `[None]`."""
    return list(method) if isinstance(method, dict) else [None]


def value_key(value):
    """A grid value as the JSON key it is stored under (None: no grid)."""
    if value is None or isinstance(value, str):
        return value
    return f"{value:g}"


def jobs_for(setups, table, seeds):
    """Every run as a job `(setup, epochs, method, grid value, seed)`, column
    by column (a partial JSON then holds whole columns)."""
    return [
        (name, setup.epochs, method_name, value, seed)
        for method_name, method in table.items()
        for name, setup in setups.items()
        for value in _values(method)
        for seed in seeds
    ]


def _reuse_key(job):
    """What identifies a run across invocations: setup, method, grid value
    (as its JSON key), seed and epochs."""
    setup_name, epochs, method_name, value, seed = job
    return (setup_name, method_name, value_key(value), seed, epochs)


def load_reusable(path):
    """`{reuse key: run}` for the finished runs (no `error`) in a JSON this
    script wrote. A run without `epochs` (older files) counts its losses."""
    with open(path) as f:
        results = json.load(f)
    found = {}
    for setup_name, row in results.items():
        for method_name, cell in row.items():
            grid = cell.get("grid") or {None: cell["runs"]}
            for key, runs in grid.items():
                for run in runs:
                    if "error" in run:
                        continue
                    epochs = run.get("epochs") or len(run.get("losses", []))
                    found[(setup_name, method_name, key, run["seed"], epochs)] = run
    return found


def collect(setups, table, seeds, done):
    """The results table `{setup: {method: cell}}` from the finished runs
    (`{job: run}`); cells, grid values and seeds with no run yet are left
    out, so a partial result is a valid (smaller) table."""
    results = {}
    for name, setup in setups.items():
        row = {}
        for method_name, method in table.items():
            runs_by_value = {}
            for value in _values(method):
                runs = [
                    done[job]
                    for job in (
                        (name, setup.epochs, method_name, value, seed) for seed in seeds
                    )
                    if job in done
                ]
                if runs:
                    runs_by_value[value] = runs
            if runs_by_value:
                row[method_name] = cell_from_runs(
                    runs_by_value, per_seed=isinstance(method, PerSeedGrid)
                )
        if row:
            results[name] = row
    return results


def run_jobs(jobs, workers, on_done):
    """Runs `jobs`, calling `on_done(job, run)` as each finishes: here one
    after another, or over `workers` processes of one thread each."""
    if workers <= 1:
        _WORKER_DATA.setdefault("data", load_data())
        for job in jobs:
            on_done(*_run_job(job))
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
    ) as pool:
        for job, run in pool.map(_run_job, jobs):
            on_done(job, run)


# -- reporting -----------------------------------------------------------------


def cell_text(cell):
    """`median acc (divergences/seeds)`, the per-seed accuracies and the
    winning grid value (per seed for a per-seed grid)."""
    runs = cell["runs"]
    errors = [run["error"] for run in runs if "error" in run]
    if errors:
        return f"error: {errors[0]}"
    diverged = sum(run["diverged"] for run in runs)
    text = f"{_median(runs, 'test_acc'):.3f} ({diverged}/{len(runs)})"
    text += " [" + " ".join(f"{run['test_acc']:.2f}" for run in runs) + "]"
    if "best" in cell:
        text += f" clip={value_key(cell['best'])}"
    if cell.get("per_seed"):
        text += " " + " ".join(run.get("choice", "?") for run in runs)
    return text


def print_table(results, method_names):
    """The markdown table: rows setups, columns methods."""
    print("\n| setup | " + " | ".join(method_names) + " |")
    print("| --- |" + " ---: |" * len(method_names))
    for name, row in results.items():
        cells = [cell_text(row[m]) if m in row else "-" for m in method_names]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _finished(cell):
    """The cell's runs that finished (no `error`)."""
    return [run for run in cell["runs"] if "error" not in run]


def summary_row(name, row):
    """One setup's plain / user_grid / prescription medians, the training
    seconds of harden and of the grid (medians over seeds), their ratio and
    the goals (None where a column is missing)."""
    acc = {
        m: _median(_finished(row[m]), "test_acc") if m in row else None
        for m in ("plain", "user_grid", PRESCRIPTION)
    }
    grid_s = harden_s = None
    if "user_grid" in row:
        grid_s = _median(_finished(row["user_grid"]), "grid_s")
    if PRESCRIPTION in row:
        harden_s = statistics.median(
            [training_seconds(r) for r in _finished(row[PRESCRIPTION])] or [math.nan]
        )
    ratio = harden_s / grid_s if harden_s is not None and grid_s else None
    rx, grid, plain = acc[PRESCRIPTION], acc["user_grid"], acc["plain"]
    goals = {
        "accuracy": None if rx is None or grid is None else rx >= grid - 0.02,
        "healthy": None
        if not SETUPS[name].healthy or rx is None or plain is None
        else rx >= plain - 0.01,
        "time": None if ratio is None else ratio <= 0.5,
    }
    return {**acc, "harden_s": harden_s, "grid_s": grid_s, "ratio": ratio, **goals}


def print_summary(results):
    """Per setup: plain, user_grid and prescription (median test accuracy),
    harden's and the grid's training seconds, their ratio and the goals met
    (`acc`: within 0.02 of the grid or above; `healthy`: not below plain by
    more than 0.01, on healthy setups; `time`: ratio at most 0.5)."""

    def number(value, spec):
        return "-" if value is None or math.isnan(value) else format(value, spec)

    print(
        "\n| setup | plain | user_grid | prescription | harden s | grid s "
        "| harden / grid | goals |"
    )
    print("| --- |" + " ---: |" * 6 + " --- |")
    for name, row in results.items():
        s = summary_row(name, row)
        goals = " ".join(
            f"{goal}:{'ok' if s[key] else 'MISS'}"
            for goal, key in (
                ("acc", "accuracy"),
                ("healthy", "healthy"),
                ("time", "time"),
            )
            if s[key] is not None
        )
        print(
            f"| {name} | {number(s['plain'], '.3f')} | {number(s['user_grid'], '.3f')} "
            f"| {number(s[PRESCRIPTION], '.3f')} | {number(s['harden_s'], '.1f')} "
            f"| {number(s['grid_s'], '.1f')} | {number(s['ratio'], '.2f')} "
            f"| {goals or '-'} |"
        )


# -- command line --------------------------------------------------------------


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 setups")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--setups", help=f"comma list of {', '.join(SETUPS)}")
    parser.add_argument("--methods", help="comma list of columns (default all)")
    parser.add_argument("--epochs", type=int, help="override every setup's epochs")
    parser.add_argument(
        "--json", help="write every run's results to this file (after each run)"
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="PATH",
        help="a JSON from an earlier run (repeatable): its finished runs with "
        "the same setup, column, grid value, seed and epochs are not rerun, "
        "and join the table (they count toward --json)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes to spread the runs over (each on one thread)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="TensorFlow threads of the single process (--workers 1; "
        "default TensorFlow's choice)",
    )
    return parser.parse_args(argv)


def choose(args):
    """The setups (with epochs applied), the method table and the seeds."""
    default = QUICK_SETUPS if args.quick else tuple(SETUPS)
    names = args.setups.split(",") if args.setups else default
    setups = {name: SETUPS[name] for name in names}
    if args.epochs:
        setups = {
            name: dataclasses.replace(setup, epochs=args.epochs)
            for name, setup in setups.items()
        }
    table = methods()
    if args.methods:
        table = {name: table[name] for name in args.methods.split(",")}
    if PRESCRIPTION in table and not harden_has_new_api():
        print(
            "kh.harden does not train the winner itself yet (no epochs / "
            "validation_data): the prescription column is skipped"
        )
        del table[PRESCRIPTION]
    seeds = range(args.seeds or (2 if args.quick else 3))
    return setups, table, seeds


def _json_ready(results):
    """`results` with grid values as JSON keys (strings)."""
    out = {}
    for name, row in results.items():
        out[name] = {}
        for method, cell in row.items():
            cell = dict(cell)
            if "grid" in cell:
                cell["grid"] = {value_key(k): v for k, v in cell["grid"].items()}
            if "best" in cell:
                cell["best"] = value_key(cell["best"])
            out[name][method] = cell
    return out


def write_json(path, results):
    """Writes `results` to `path` through a temporary file (a reader never
    sees half a file)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(_json_ready(results), f, indent=1, default=str)
    os.replace(temporary, path)


def _run_line(job, run):
    """One finished run, for the log."""
    name, _, method_name, value, seed = job
    label = f"{name} {method_name}" + (f" {value_key(value)}" if value else "")
    if "error" in run:
        return f"  {label} seed {seed}: {run['error']}"
    flag = " DIVERGED" if run["diverged"] else ""
    return (
        f"  {label} seed {seed}: test {run['test_acc']:.3f} val "
        f"{run['val_acc']:.3f}{flag}, {training_seconds(run):.1f} s"
    )


def main(argv=None):
    """Runs the chosen cells (reusing earlier runs), prints the tables, writes
    the JSON."""
    args = parse_args(argv)
    _quiet()
    if args.threads:
        _set_threads(args.threads)
    setups, table, seeds = choose(args)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"command: {' '.join(sys.argv)}")
    for name, setup in setups.items():
        print(f"{name}: {setup.description}; {setup.epochs} epochs")
    reusable = {}
    for path in args.reuse:
        reusable.update(load_reusable(path))
    jobs = jobs_for(setups, table, seeds)
    done = {
        job: reusable[_reuse_key(job)] for job in jobs if _reuse_key(job) in reusable
    }
    pending = [job for job in jobs if job not in done]
    print(f"{len(jobs)} runs: {len(done)} reused, {len(pending)} to run", flush=True)
    start = time.perf_counter()

    def on_done(job, run):
        done[job] = run
        elapsed = (time.perf_counter() - start) / 60
        print(f"{_run_line(job, run)} [{len(done)}/{len(jobs)}, {elapsed:.1f} min]")
        sys.stdout.flush()
        if args.json:
            write_json(args.json, collect(setups, table, seeds, done))

    run_jobs(pending, args.workers, on_done)
    results = collect(setups, table, seeds, done)
    print_table(results, list(table))
    print_summary(results)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(seeds)} seeds; {len(pending)} runs in {minutes:.1f} min")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
