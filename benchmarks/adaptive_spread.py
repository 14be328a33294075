"""Adaptive clipping across depths, widths and learning rates.

What it measures. The adaptive wrappers' defaults (AGC's `clip_factor`,
AutoClip's and ZClip's `max_weight_ratio`, AdaGC's) were first chosen on one
depth and width of the stability suite (`benchmarks/stability.py`). This
script trains a *spread* of small setups on scikit-learn's digits under
every method, so that a default is judged on all of them, not on one cell:

- plain ReLU MLPs, depth {8, 16, 32} x width {32, 64, 128}, He init scaled
  too large (std x1.5 or x1.6), SGD(momentum 0.9) at a base rate of 0.05,
  the rate x3 either way on a subset. Of the 27 (depth, width, rate) cells
  9 are run, a Latin square: cell (i, j) of depth i and width j gets rate
  `0.05 * 3**((i + j) % 3 - 1)`, so every depth, every width and every rate
  appears three times and every (depth, width) pair once. The init std is
  x1.6 where `i + j` is odd, x1.5 elsewhere;
- a tanh MLP (16 x Dense(64, tanh), LeCun init x1.5) at SGD 0.05;
- a residual MLP without normalisation (8 blocks `h + Dense(relu(Dense(h)))`,
  width 64, He init) at SGD 0.05;
- two ReLU `SimpleRNN(64)`s on Adam 1e-2: identity recurrence over the 64
  pixels one at a time (IRNN), and Orthogonal(gain=2) recurrence over the 8
  rows;
- an LSTM(64) over 16 tokens of 4 pixels, Adam 3e-2.

Every run is a few epochs at batch 64 (1,197 training images, 19 steps an
epoch); test accuracy on the 450 held-out images. A cell is the median over
the seeds with the range; a method's summary over the spread is the median
and range of its cell medians and its wins / ties / losses against the fixed
clip `GradientClipping(global_clipnorm=1)` (a tie: medians within `--tie`,
0.02 by default, about the seed noise of these setups).

Which limit binds. AutoClip and ZClip each clip to the lower of two limits:
the rule's own (a percentile of past norms; an EMA z-score) and the weight
cap `max_weight_ratio * max(||W||, 1)`. Their columns here run the same
maths as `kh.optimizers.AutoClip` / `ZClip` (`HardenedOptimizer` with the
same rule) through a subclass of the rule that also counts, in the graph,
the steps on which the rule's limit bound (the step was clipped and the
rule's limit was below the cap), those on which the cap bound, and those
whose incoming norm was under the cap (only those reach the rule's
statistics unchanged: AutoClip records, and ZClip averages, the capped
norm). The report gives the three as shares of the steps. A rule's limit
can be below the cap when its statistics hold nothing but past caps (the
weights, and so the cap, grew since): the third share tells that case apart.

Cost: the 12 methods of the recorded run (`benchmarks/RESULTS.md`) x 14
setups x 2 seeds, 336 runs, took 73 min wall on one thread of the shared
2-core machine at load average 3-5 (44 min of CPU).

Run the recorded comparison (the 12 methods of `RECORDED`, 2 seeds; one
process, one TensorFlow thread unless `--threads`):

    .venv/bin/python benchmarks/adaptive_spread.py --json /tmp/spread.json

(`--methods all`: every method of `METHODS`, 17 of them.)

or chosen setups and methods:

    .venv/bin/python benchmarks/adaptive_spread.py --setups mlp_d16_w64,irnn \\
        --methods plain,clip1,AutoClip --seeds 3

`--list` prints the setups and methods. `--check` adds the check setups (not
part of the spread's summary), among them the case that showed the problem:
20 x Dense(48, relu), He init x1.6, SGD 0.04.
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
from keras import ops  # noqa: E402

import keras_harden as kh  # noqa: E402
from keras_harden.optimizers import gradient_ops  # noqa: E402
from keras_harden.optimizers.clip_rule import StateSpec  # noqa: E402

BATCH_SIZE = 64
VALIDATION = 150
BASE_LR = 0.05
EPOCHS = 6
TIE = 0.02
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- setups --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """One training setup: `build() -> keras.Model` on `(8, 8, 1)` images in
    [0, 255], `optimizer() -> the plain optimizer`, epochs, a description."""

    build: Callable
    optimizer: Callable
    epochs: int
    description: str


def _dense(units, activation=None, scale=2.0, distribution="truncated_normal"):
    init = keras.initializers.VarianceScaling(scale, "fan_in", distribution)
    return keras.layers.Dense(units, activation=activation, kernel_initializer=init)


def _flat(inputs):
    return keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))


def _tokens(inputs, steps):
    """The 64 pixels in reading order as `steps` tokens, in [0, 1]."""
    h = keras.layers.Rescaling(1 / 255)(inputs)
    return keras.layers.Reshape((steps, 64 // steps))(h)


def mlp(depth, width, gain, activation="relu"):
    """`depth` x Dense(width, activation), fan-in init with std x`gain` over
    He (ReLU) or LeCun (tanh), then Dense(10)."""

    def build():
        inputs = keras.Input((8, 8, 1))
        h = _flat(inputs)
        base = 2.0 if activation == "relu" else 1.0
        for _ in range(depth):
            h = _dense(width, activation, scale=base * gain**2)(h)
        return keras.Model(inputs, _dense(10, scale=1.0)(h))

    return build


def residual_mlp(blocks=8, width=64):
    """Dense(width) stem, then `blocks` x `h + Dense(width)(relu(Dense(width)(h)))`
    with He init and no normalisation (the variance doubles each block),
    relu, Dense(10)."""

    def build():
        inputs = keras.Input((8, 8, 1))
        h = _dense(width, scale=1.0)(_flat(inputs))
        for _ in range(blocks):
            h = h + _dense(width)(_dense(width, "relu")(h))
        h = keras.layers.Activation("relu")(h)
        return keras.Model(inputs, _dense(10, scale=1.0)(h))

    return build


def rnn(steps, recurrent_initializer):
    """SimpleRNN(64, relu) over the pixels as `steps` tokens, then Dense(10)."""

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.SimpleRNN(
            64, activation="relu", recurrent_initializer=recurrent_initializer()
        )(_tokens(inputs, steps))
        return keras.Model(inputs, _dense(10, scale=1.0)(h))

    return build


def lstm(steps=16):
    """LSTM(64) over the pixels as `steps` tokens, then Dense(10)."""

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.LSTM(64)(_tokens(inputs, steps))
        return keras.Model(inputs, _dense(10, scale=1.0)(h))

    return build


def sgd(learning_rate):
    return lambda: keras.optimizers.SGD(learning_rate, momentum=0.9)


def adam(learning_rate):
    return lambda: keras.optimizers.Adam(learning_rate)


DEPTHS = (8, 16, 32)
WIDTHS = (32, 64, 128)
RATE_FACTORS = (1 / 3, 1.0, 3.0)


def _grid():
    """The Latin square of MLP cells (see the module docstring)."""
    setups = {}
    for i, depth in enumerate(DEPTHS):
        for j, width in enumerate(WIDTHS):
            rate = BASE_LR * RATE_FACTORS[(i + j) % 3]
            gain = 1.6 if (i + j) % 2 else 1.5
            setups[f"mlp_d{depth}_w{width}"] = Setup(
                mlp(depth, width, gain),
                sgd(rate),
                EPOCHS,
                f"{depth} x Dense({width}, relu), He init x{gain}; "
                f"SGD({rate:.3g}, momentum=0.9)",
            )
    return setups


SETUPS = {
    **_grid(),
    "tanh_mlp": Setup(
        mlp(16, 64, 1.5, "tanh"),
        sgd(BASE_LR),
        EPOCHS,
        "16 x Dense(64, tanh), LeCun init x1.5; SGD(0.05, momentum=0.9)",
    ),
    "residual_mlp": Setup(
        residual_mlp(),
        sgd(BASE_LR),
        EPOCHS,
        "8 residual blocks of width 64, He init, no normalisation; "
        "SGD(0.05, momentum=0.9)",
    ),
    "irnn": Setup(
        rnn(64, lambda: keras.initializers.Identity()),
        adam(1e-2),
        EPOCHS,
        "SimpleRNN(64, relu) over the 64 pixels, identity recurrence; Adam(1e-2)",
    ),
    "rnn_orth2": Setup(
        rnn(8, lambda: keras.initializers.Orthogonal(gain=2.0)),
        adam(1e-2),
        EPOCHS,
        "SimpleRNN(64, relu) over the 8 rows, Orthogonal(gain=2) recurrence; "
        "Adam(1e-2)",
    ),
    "lstm": Setup(
        lstm(16),
        adam(3e-2),
        EPOCHS,
        "LSTM(64) over 16 tokens of 4 pixels; Adam(3e-2)",
    ),
}

# Not in the spread's summary: the case the problem was reported on.
CHECKS = {
    "check_d20_w48": Setup(
        mlp(20, 48, 1.6),
        sgd(0.04),
        EPOCHS,
        "20 x Dense(48, relu), He init x1.6; SGD(0.04, momentum=0.9)",
    ),
}


# -- rules that count which limit bound ------------------------------------------

_COUNTERS = [
    StateSpec("rule_bound", (), "int32"),
    StateSpec("cap_bound", (), "int32"),
    StateSpec("under_cap", (), "int32"),
]


def _bound(norm, rule_limit, cap):
    """`(rule bound, cap bound, under the cap)` as int32 0/1: the step was
    clipped and the rule's / the cap's limit was the lower one (ties go to
    the cap); the incoming norm was at most the cap, so the rule's statistics
    saw that norm as it was and not the cap."""
    if cap is None:
        one = ops.ones((), "int32")
        return ops.cast(norm > rule_limit, "int32"), ops.zeros((), "int32"), one
    rule = ops.logical_and(norm > rule_limit, rule_limit < cap)
    capped = ops.logical_and(norm > cap, cap <= rule_limit)
    return tuple(ops.cast(b, "int32") for b in (rule, capped, norm <= cap))


def _cap(rule, variables, grads):
    if rule.max_weight_ratio is None:
        return None
    return gradient_ops.weight_relative_limit(variables, grads, rule.max_weight_ratio)


def _count(counters, flags):
    return [c + f for c, f in zip(counters, flags, strict=True)]


class CountingPercentileClip(kh.optimizers.PercentileClip):
    """`PercentileClip` (AutoClip) plus counters of the binding limit."""

    def state_spec(self, variables):
        return super().state_spec(variables) + _COUNTERS

    def __call__(self, grads, variables, norm, state):
        own, counters = state[:-3], state[-3:]
        clipped, new_norm, new_own = super().__call__(grads, variables, norm, own)
        norm = ops.cast(norm, "float32")
        rule_limit = self.clip_value(new_own[0], new_own[1])  # window, count + 1
        flags = _bound(norm, rule_limit, _cap(self, variables, grads))
        return clipped, new_norm, [*new_own, *_count(counters, flags)]


class CountingZScoreClip(kh.optimizers.ZScoreClip):
    """`ZScoreClip` (ZClip) plus counters of the binding limit."""

    def state_spec(self, variables):
        return super().state_spec(variables) + _COUNTERS

    def __call__(self, grads, variables, norm, state):
        own, counters = state[:-3], state[-3:]
        clipped, new_norm, new_own = super().__call__(grads, variables, norm, own)
        norm = ops.cast(norm, "float32")
        mean, var, count = own
        rule_limit = self.limit(norm, mean, var, count < self.warmup_steps)
        flags = _bound(norm, rule_limit, _cap(self, variables, grads))
        return clipped, new_norm, [*new_own, *_count(counters, flags)]


# -- methods -------------------------------------------------------------------


def auto_clip(percentile=10.0, history=1000, max_weight_ratio=0.01):
    """AutoClip's maths (`kh.optimizers.AutoClip` is `HardenedOptimizer` with
    this rule), counting the binding limit."""
    rule = lambda: CountingPercentileClip(percentile, history, max_weight_ratio)  # noqa: E731
    return lambda inner: kh.optimizers.HardenedOptimizer(inner, clip=rule())


def z_clip(alpha=0.97, z_threshold=2.5, warmup_steps=25, max_weight_ratio=0.01):
    """ZClip's maths, counting the binding limit."""

    def factory(inner):
        rule = CountingZScoreClip(
            alpha, z_threshold, warmup_steps, None, max_weight_ratio
        )
        return kh.optimizers.HardenedOptimizer(inner, clip=rule)

    return factory


def agc(clip_factor):
    return lambda inner: kh.optimizers.AdaptiveGradientClipping(
        inner, clip_factor=clip_factor
    )


# A method is `inner optimizer -> optimizer`. The names without a parameter
# are the wrappers at their defaults as this script was written (2026-12):
# AGC clip_factor 0.03, AutoClip / ZClip max_weight_ratio 0.01.
METHODS = {
    "plain": lambda inner: inner,
    "clip1": lambda inner: kh.optimizers.GradientClipping(inner, global_clipnorm=1.0),
    "AGC": agc(0.03),
    "AGC_0.01": agc(0.01),
    "AGC_0.1": agc(0.1),
    "AdaGC": kh.optimizers.AdaGC,
    "AutoClip": auto_clip(),
    "AutoClip_cap_none": auto_clip(max_weight_ratio=None),
    "AutoClip_cap_0.003": auto_clip(max_weight_ratio=0.003),
    "AutoClip_cap_0.03": auto_clip(max_weight_ratio=0.03),
    "AutoClip_cap_0.1": auto_clip(max_weight_ratio=0.1),
    "AutoClip_p50": auto_clip(percentile=50.0),
    "ZClip": z_clip(),
    "ZClip_cap_none": z_clip(max_weight_ratio=None),
    "ZClip_cap_0.003": z_clip(max_weight_ratio=0.003),
    "ZClip_cap_0.03": z_clip(max_weight_ratio=0.03),
    "ZClip_cap_0.1": z_clip(max_weight_ratio=0.1),
}
BASELINE = "clip1"
# The methods of the run recorded in benchmarks/RESULTS.md (the default).
RECORDED = (
    "plain",
    "clip1",
    "AGC",
    "AGC_0.01",
    "AGC_0.1",
    "AdaGC",
    "AutoClip",
    "AutoClip_cap_0.003",
    "AutoClip_cap_none",
    "ZClip",
    "ZClip_cap_0.003",
    "ZClip_cap_none",
)


# -- running -------------------------------------------------------------------


def load_data():
    """`(train, test)` digits, each `(x, y)`; the stability suite's split
    (its last `VALIDATION` training images are left out here too)."""
    (x, y), test = kh.data.load_digits()
    return (x[:-VALIDATION], y[:-VALIDATION]), test


def accuracy(model, data):
    x, y = data
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _finite(model):
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


SHARES = ("rule_bound", "cap_bound", "under_cap")


def _bound_shares(optimizer, steps):
    """`{rule_bound, cap_bound, under_cap}` as shares of the steps, when
    counted."""
    rule = getattr(optimizer, "rules", [None])[0]
    if not hasattr(rule, "rule_bound"):
        return {}
    n = max(steps, 1)
    return {k: int(getattr(rule, k).numpy()) / n for k in SHARES}


def run_one(setup, method, seed, data):
    """One seed: a fresh model and optimizer, the same batches for every
    method."""
    train, test = data
    start = time.perf_counter()
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = setup.build()
    optimizer = method(setup.optimizer())
    model.compile(optimizer=optimizer, loss=LOSS)
    keras.utils.set_random_seed(seed)
    history = model.fit(*train, batch_size=BATCH_SIZE, epochs=setup.epochs, verbose=0)
    losses = [float(v) for v in history.history["loss"]]
    steps = int(optimizer.iterations.numpy())
    run = {
        "seed": seed,
        "test_acc": accuracy(model, test),
        "diverged": not (all(map(math.isfinite, losses)) and _finite(model)),
        "losses": losses,
        "steps": steps,
        "seconds": time.perf_counter() - start,
    }
    if hasattr(optimizer, "skipped_steps"):
        run["skipped"] = int(optimizer.skipped_steps.numpy())
    run.update(_bound_shares(optimizer, steps))
    return run


# -- reporting -----------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else math.nan


def cell_summary(runs):
    accs = [run["test_acc"] for run in runs]
    return median(accs), min(accs), max(accs), sum(run["diverged"] for run in runs)


def cell_text(runs):
    med, lo, hi, diverged = cell_summary(runs)
    text = f"{med:.2f} ({lo:.2f}-{hi:.2f})"
    return text + (f" {diverged}d" if diverged else "")


def shares_text(runs):
    """`rule / cap / under-cap` shares of the steps, averaged over the runs
    (`None` when not counted; the third is absent in older records)."""
    if "rule_bound" not in runs[0]:
        return None
    keys = [k for k in SHARES if k in runs[0]]
    return " / ".join(
        f"{100 * statistics.fmean(r[k] for r in runs):.0f}%" for k in keys
    )


def print_cells(results, names):
    print("\n| setup | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for setup, row in results.items():
        cells = [cell_text(row[m]) if m in row else "-" for m in names]
        print(f"| {setup} | " + " | ".join(cells) + " |")


def spread_summary(results, names, tie=TIE):
    """Per method: median, min and max of the cell medians, wins / ties /
    losses against the baseline, the mean share of steps on which the rule
    and the cap bound."""
    rows = {}
    for name in names:
        meds, record = [], [0, 0, 0]
        shares = ([], [], [])
        for row in results.values():
            if name not in row:
                continue
            med = cell_summary(row[name])[0]
            meds.append(med)
            if BASELINE in row:
                delta = med - cell_summary(row[BASELINE])[0]
                record[0 if delta > tie else 2 if delta < -tie else 1] += 1
            for key, values in zip(SHARES, shares, strict=True):
                values += [r[key] for r in row[name] if key in r]
        rows[name] = {
            "median": median(meds),
            "min": min(meds) if meds else math.nan,
            "max": max(meds) if meds else math.nan,
            "wins_ties_losses": record,
            **{
                key: statistics.fmean(values) if values else None
                for key, values in zip(SHARES, shares, strict=True)
            },
        }
    return rows


def print_summary(summary, tie=TIE):
    print(
        f"\n| method | median of cell medians | range | vs {BASELINE} "
        f"(win / tie ±{tie:g} / loss) | steps rule bound | steps cap bound "
        "| steps under the cap |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in summary.items():
        w, t, losses = s["wins_ties_losses"]
        shares = ["-" if s[k] is None else f"{100 * s[k]:.0f}%" for k in SHARES]
        print(
            f"| {name} | {s['median']:.3f} | {s['min']:.2f}-{s['max']:.2f} | "
            f"{w} / {t} / {losses} | " + " | ".join(shares) + " |"
        )


def print_bound(results, names):
    """Per cell, the shares of steps on which the rule / the cap bound."""
    counted = [
        m
        for m in names
        if any(m in row and "rule_bound" in row[m][0] for row in results.values())
    ]
    if not counted:
        return
    print(
        "\nShare of steps clipped by the rule's own limit / clipped by the "
        "weight cap / whose norm was under the cap (what the rule's statistics "
        "saw unchanged):"
    )
    print("\n| setup | " + " | ".join(counted) + " |")
    print("| --- |" + " ---: |" * len(counted))
    for setup, row in results.items():
        cells = []
        for m in counted:
            if m not in row:
                cells.append("-")
                continue
            cells.append(shares_text(row[m]))
        print(f"| {setup} | " + " | ".join(cells) + " |")


# -- command line --------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", help="comma list (default: the spread)")
    parser.add_argument(
        "--methods", help="comma list, or all (default: the recorded 12)"
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    parser.add_argument("--epochs", type=int, help="override every setup's epochs")
    parser.add_argument("--check", action="store_true", help="add the check setups")
    parser.add_argument("--tie", type=float, default=TIE, help="tie margin")
    parser.add_argument("--json", help="write every run here")
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow threads (0: its default)"
    )
    parser.add_argument("--list", action="store_true", help="list and exit")
    return parser.parse_args(argv)


def _load():
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None):
    args = parse_args(argv)
    every = {**SETUPS, **CHECKS}
    if args.list:
        for name, setup in every.items():
            print(f"{name}: {setup.description}; {setup.epochs} epochs")
        print("methods: " + ", ".join(METHODS))
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    names = args.setups.split(",") if args.setups else list(SETUPS)
    if args.check and not args.setups:
        names += list(CHECKS)
    setups = {n: every[n] for n in names}
    if args.epochs:
        setups = {
            n: dataclasses.replace(s, epochs=args.epochs) for n, s in setups.items()
        }
    chosen = args.methods.split(",") if args.methods else RECORDED
    if chosen == ["all"]:
        chosen = list(METHODS)
    methods = {m: METHODS[m] for m in chosen}
    data = load_data()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"command: {' '.join(sys.argv)}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + _load())
    start = time.perf_counter()
    results = {}
    for name, setup in setups.items():
        print(f"{name}: {setup.description}; {setup.epochs} epochs", flush=True)
        results[name] = {}
        for method_name, method in methods.items():
            runs = [run_one(setup, method, seed, data) for seed in range(args.seeds)]
            results[name][method_name] = runs
            shares = shares_text(runs)
            extra = f"  rule / cap / under cap: {shares}" if shares else ""
            print(f"  {method_name}: {cell_text(runs)}{extra}", flush=True)
    print_cells(results, list(methods))
    print_bound(results, list(methods))
    spread = {n: r for n, r in results.items() if n in SETUPS}
    summary = spread_summary(spread, list(methods), args.tie)
    print(f"\nOver the spread ({len(spread)} setups, {args.seeds} seeds):")
    print_summary(summary, args.tie)
    minutes = (time.perf_counter() - start) / 60
    if hasattr(os, "getloadavg"):
        print("load average at end: " + _load())
    print(f"\n{args.seeds} seeds; total {minutes:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
