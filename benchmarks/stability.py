"""Stability suite: known-unstable small training setups, hardened or not.

What it measures. Six small training setups on scikit-learn's digits, each
built to fail the way users' runs fail (one per failure class): an exploding
recurrent ReLU net, a too-deep badly initialised MLP, a conv net at a too-high
learning rate, a transformer without normalisation or warm-up, a healthy model
fed rare corrupted batches, and a mixed-precision (float16) net at a high
learning rate. Every setup is trained from several seeds under every method
(a column): the setup's optimizer as is (`plain`), Keras's own
`global_clipnorm` tuned on a small grid (`keras_clip`), keras_harden's
fixed-threshold `GradientClipping(global_clipnorm=1)`, every keras_harden
wrapper that takes only an inner optimizer with its defaults (found at run
time in `kh.optimizers.__all__`), and `kh.harden`'s prescription when
`kh.harden` exists. A cell is the median test accuracy with the number of
diverged seeds.

Diverged: a seed diverged when any epoch's training loss in the `fit`
History is NaN or infinite (Keras averages the batch losses over the epoch,
so one non-finite batch loss makes the epoch's loss non-finite, even when
the optimizer skipped that step), or when any model weight is NaN or
infinite after training.

Tuned Keras clip: `keras_clip` runs every value of `CLIP_GRID` (Keras's
`global_clipnorm` on the inner optimizer); per setup, the value with the
best median *validation* accuracy over the seeds (150 images held out of the
training split) wins, and its *test* accuracy is reported: what a careful
user reaches by tuning.

Goals:

- the prescription diverges in 0 seeds on every setup, and its median test
  accuracy is at least the tuned Keras clip's;
- every keras_harden wrapper with its defaults has 0 divergences wherever
  the tuned Keras clip has 0, and its median accuracy is never below
  `plain`'s by more than the noise (the spread of the per-seed values).

Run the full suite (6 setups x 3 seeds, 10 trainings each; 44 min on the
shared 2-core development machine at load average 3-5 from other jobs, 29 min
of it inside `fit` and `kh.harden`, a third of that `kh.harden`'s trials):

    .venv/bin/python benchmarks/stability.py --json /tmp/stability_full.json

a quick subset (2 seeds; the deep_mlp, conv_high_lr and corrupt_batches
setups, the cheapest three; 4.5 min at load average 2):

    .venv/bin/python benchmarks/stability.py --quick

`--workers 2` runs the (setup, column, grid value, seed) runs in two
processes of one thread each: the full suite then took 14.0 min and the
quick subset 2.1 min on the idle 2-core machine. A run's numbers equal the
sequential run's, except that single-threaded convolutions round differently
(conv_high_lr's cells moved by up to 0.03).

`--json PATH` writes every run: per-seed test and validation accuracy, epoch
losses, seconds, and the optimizer's config (for the prescription: what
`kh.harden` chose; for `keras_clip`: every grid value's runs). Or chosen
cells:

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
    """

    build: Callable
    optimizer: Callable
    epochs: int
    description: str
    corrupt: bool = False
    policy: str = "float32"


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
}


# -- methods -------------------------------------------------------------------


def keras_global_clipnorm(value):
    """`inner -> a copy of inner with Keras's global_clipnorm=value`."""

    def factory(inner):
        config = {**inner.get_config(), "global_clipnorm": value}
        return inner.__class__.from_config(config)

    return factory


# A column is a factory `inner optimizer -> optimizer`, or a dict of them (a
# grid, tuned per setup on validation accuracy), or PRESCRIPTION (kh.harden).
# Wrappers in kh.optimizers.__all__ that take only an inner optimizer are
# added by `methods()` before the prescription.
METHODS = {
    "plain": lambda inner: inner,
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


def _optimizer_and_model(setup, method, train):
    """The model to train and its optimizer; the seconds `kh.harden` took
    (0 for other methods)."""
    model = setup.build()
    if method is not PRESCRIPTION:
        return model, method(setup.optimizer()), 0.0
    start = time.perf_counter()
    rx = kh.harden(
        model, train, optimizer=setup.optimizer(), loss=LOSS, batch_size=BATCH_SIZE
    )
    return rx.model, rx.optimizer, time.perf_counter() - start


def _train(setup, method, seed, data):
    """Builds, trains and scores one run under the setup's dtype policy."""
    train, validation, test = data
    keras.utils.set_random_seed(seed)
    model, optimizer, harden_s = _optimizer_and_model(setup, method, train)
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
    keras.utils.set_random_seed(seed)  # same batches for every column
    start = time.perf_counter()
    history = model.fit(*train, batch_size=BATCH_SIZE, epochs=setup.epochs, verbose=0)
    losses = history.history["loss"]
    return {
        "seed": seed,
        "test_acc": accuracy(model, test),
        "val_acc": accuracy(model, validation),
        "diverged": not (all(map(math.isfinite, losses)) and weights_finite(model)),
        "losses": [float(loss) for loss in losses],
        "fit_s": time.perf_counter() - start,
        "harden_s": harden_s,
        "optimizer": {"class": type(optimizer).__name__, **optimizer.get_config()},
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
            runs.append({"seed": seed, "error": f"{type(error).__name__}: {error}"})
    return runs


def _median(runs, key):
    """Median of `key` over the runs that finished (NaN if none did)."""
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else math.nan


def cell_from_runs(runs_by_value):
    """A cell's record from its runs (`{None: runs}`, or a grid's
    `{value: runs}`): for a grid, every value's runs and the value that won
    on median validation accuracy."""
    if list(runs_by_value) == [None]:
        return {"runs": runs_by_value[None]}
    best = max(runs_by_value, key=lambda v: _median(runs_by_value[v], "val_acc"))
    return {"runs": runs_by_value[best], "best": best, "grid": runs_by_value}


def run_cell(setup, method, seeds, data):
    """A cell's record, its runs made here one after another."""
    values = method if isinstance(method, dict) else {None: method}
    return cell_from_runs(
        {value: run_seeds(setup, f, seeds, data) for value, f in values.items()}
    )


# -- running in several processes ----------------------------------------------

_WORKER_DATA = {}


def _worker_start():
    """Each worker process: TensorFlow quiet and on one thread (the processes
    share the cores), the data loaded once."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
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


def run_in_workers(setups, table, seeds, workers):
    """Every cell's record, the runs spread over `workers` processes."""
    import concurrent.futures
    import multiprocessing

    jobs = [
        (name, setup.epochs, method_name, value, seed)
        for name, setup in setups.items()
        for method_name, method in table.items()
        for value in (method if isinstance(method, dict) else [None])
        for seed in seeds
    ]
    done = {}
    with concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
    ) as pool:
        for job, run in pool.map(_run_job, jobs):
            done[job] = run
            print(f"  done {job[0]} {job[2]} {job[3] or ''} seed {job[4]}", flush=True)
    results = {}
    for name, setup in setups.items():
        results[name] = {}
        for method_name, method in table.items():
            values = method if isinstance(method, dict) else [None]
            results[name][method_name] = cell_from_runs(
                {
                    value: [
                        done[(name, setup.epochs, method_name, value, seed)]
                        for seed in seeds
                    ]
                    for value in values
                }
            )
    return results


# -- reporting -----------------------------------------------------------------


def cell_text(cell):
    """`median acc (divergences/seeds)`, the per-seed accuracies and the
    winning grid value."""
    runs = cell["runs"]
    errors = [run["error"] for run in runs if "error" in run]
    if errors:
        return f"error: {errors[0]}"
    diverged = sum(run["diverged"] for run in runs)
    text = f"{_median(runs, 'test_acc'):.3f} ({diverged}/{len(runs)})"
    text += " [" + " ".join(f"{run['test_acc']:.2f}" for run in runs) + "]"
    if "best" in cell:
        text += f" clip={cell['best']:g}"
    return text


def print_table(results, method_names):
    """The markdown table: rows setups, columns methods."""
    print("\n| setup | " + " | ".join(method_names) + " |")
    print("| --- |" + " ---: |" * len(method_names))
    for name, row in results.items():
        cells = [cell_text(row[m]) if m in row else "-" for m in method_names]
        print(f"| {name} | " + " | ".join(cells) + " |")


def print_harden_times(results):
    """Median seconds `kh.harden` took per setup, when it ran."""
    for name, row in results.items():
        if PRESCRIPTION in row:
            seconds = _median(row[PRESCRIPTION]["runs"], "harden_s")
            print(f"kh.harden on {name}: median {seconds:.1f} s per seed")


# -- command line --------------------------------------------------------------


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 setups")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--setups", help=f"comma list of {', '.join(SETUPS)}")
    parser.add_argument("--methods", help="comma list of columns (default all)")
    parser.add_argument("--epochs", type=int, help="override every setup's epochs")
    parser.add_argument("--json", help="write every run's results to this file")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes to spread the runs over (each on one thread)",
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
    if PRESCRIPTION in table and not hasattr(kh, "harden"):
        print("kh.harden does not exist yet: the prescription column is skipped")
        del table[PRESCRIPTION]
    seeds = range(args.seeds or (2 if args.quick else 3))
    return setups, table, seeds


def _json_ready(results):
    """`results` with grid values as strings (JSON object keys)."""
    out = {}
    for name, row in results.items():
        out[name] = {}
        for method, cell in row.items():
            cell = dict(cell)
            if "grid" in cell:
                cell["grid"] = {f"{k:g}": v for k, v in cell["grid"].items()}
            out[name][method] = cell
    return out


def main(argv=None):
    """Runs the chosen cells, prints the table, writes the JSON."""
    args = parse_args(argv)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notes from many models
    setups, table, seeds = choose(args)
    data = load_data()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"command: {' '.join(sys.argv)}")
    start = time.perf_counter()
    if args.workers > 1:
        results = run_in_workers(setups, table, seeds, args.workers)
    else:
        results = {}
        for name, setup in setups.items():
            print(f"{name}: {setup.description}; {setup.epochs} epochs", flush=True)
            train = corrupt(data[0]) if setup.corrupt else data[0]
            results[name] = {}
            for method_name, method in table.items():
                cell = run_cell(setup, method, seeds, (train, *data[1:]))
                results[name][method_name] = cell
                print(f"  {method_name}: {cell_text(cell)}", flush=True)
    print_table(results, list(table))
    print_harden_times(results)
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(seeds)} seeds; total {minutes:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_json_ready(results), f, indent=1, default=str)


if __name__ == "__main__":
    main()
