"""Fusion on the digits data: soups, ensemble and stack vs their ingredients.

For each repeat `r`: the digits are split with seed `r` (so every repeat has
its own 450 test digits); the conv net of `examples/fusion_make_saved_model.py`
("the start") is trained on the first `--train-size` training digits (default
1,000); four copies are fine-tuned from it with different seeds and different
augmentation (Keras's own random translation / rotation / zoom layers, in
training only), and each one's batch-norm statistics are then recomputed on
the training inputs (as the soups' are). Training digits 1,000-1,346 are held
out: the greedy soups choose their ingredients on them, the stack trains its
meta-learner on them, and the single model one would ship without fusion is
the one that is best on them. Accuracy on the test digits, for:

- each fine-tune; the best of them on test (an oracle) and the one that is
  best on the held-out digits;
- the uniform soup (`average_weights`, batch norm recalibrated on the 1,000);
- two greedy soups (`greedy_soup`, same recalibration): one choosing by
  held-out accuracy (the default metric), one by held-out cross-entropy
  (`metric=SparseCategoricalCrossentropy`, `higher_is_better=False`), each
  compared with the single model picked by the same held-out metric;
- the output-averaging ensemble (`ensemble(method="average")`);
- the stacked models (`stack`): default meta-learner (one weight per
  member) and the `"linear"` one (a Dense over all outputs).

The paired differences (in test digits) between each greedy soup and its
held-out pick are summarised as wins/ties/losses and a mean with a 95%
t-interval over the repeats.

Inference time: `predict_on_batch` on the test digits, each model timed in
interleaved rounds, medians, as a ratio to one fine-tune in the same run.

    .venv/bin/python benchmarks/fusion.py --repeats 10
    .venv/bin/python benchmarks/fusion.py --repeats 10 --train-size 300
"""

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np
from scipy import stats

import keras_harden as kh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from fusion_make_saved_model import conv_net, fit  # noqa: E402

AUGMENTATIONS = {
    "none": lambda seed: [],
    "translate": lambda seed: [keras.layers.RandomTranslation(0.1, 0.1, seed=seed)],
    "rotate+zoom": lambda seed: [
        keras.layers.RandomRotation(0.05, seed=seed),
        keras.layers.RandomZoom(0.1, seed=seed + 1),
    ],
    "translate+rotate": lambda seed: [
        keras.layers.RandomTranslation(0.08, 0.08, seed=seed),
        keras.layers.RandomRotation(0.04, seed=seed + 1),
    ],
}
# (soup row, single-model row it is compared with)
GREEDY_VS_PICK = (
    ("greedy soup (held-out accuracy)", "best single (held-out accuracy pick)"),
    ("greedy soup (held-out loss)", "best single (held-out loss pick)"),
)


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def one_repeat(seed, start_epochs, tune_epochs, train_size):
    (x, y), (xt, yt) = kh.data.load_digits(seed=seed)
    x_fit, y_fit = x[:train_size], y[:train_size]
    hold = (x[1000:], y[1000:])  # the same 347 held out at every size
    start = conv_net()
    fit(start, x_fit, y_fit, start_epochs, 3e-3, [], seed)
    tunes = []
    for i, (name, make) in enumerate(AUGMENTATIONS.items()):
        tune = keras.models.clone_model(start)
        tune.set_weights(start.get_weights())
        fit(tune, x_fit, y_fit, tune_epochs, 1e-3, make(seed * 10 + i), seed * 10 + i)
        # fair singles: batch-norm statistics recomputed on the (unaugmented)
        # training inputs, as the soups get; momentum 0.99 over a few hundred
        # steps leaves them stale otherwise
        kh.fusion.recalibrate_batchnorm(tune, x_fit)
        tunes.append((name, tune))
    models = [m for _, m in tunes]
    by_accuracy = kh.fusion.greedy_soup(models, hold, recalibrate=x_fit)
    by_loss = kh.fusion.greedy_soup(
        models,
        hold,
        metric=keras.metrics.SparseCategoricalCrossentropy(from_logits=True),
        higher_is_better=False,
        recalibrate=x_fit,
    )
    fused = {
        "uniform soup": kh.fusion.average_weights(models, recalibrate=x_fit),
        GREEDY_VS_PICK[0][0]: by_accuracy.model,
        GREEDY_VS_PICK[1][0]: by_loss.model,
        "ensemble (average)": kh.fusion.ensemble(models),
        "stack": kh.fusion.stack(models, holdout_data=hold, seed=seed),
        "stack (linear meta)": kh.fusion.stack(
            models, "linear", holdout_data=hold, seed=seed
        ),
    }
    results = {
        f"fine-tune {i} ({name})": accuracy(m, xt, yt)
        for i, (name, m) in enumerate(tunes)
    }
    results["best single (oracle, on test)"] = max(results.values())
    # what a user would ship without fusion: the best fine-tune on held-out data
    for (_, pick), soup in zip(GREEDY_VS_PICK, (by_accuracy, by_loss), strict=True):
        results[pick] = accuracy(models[soup.report.order[0]], xt, yt)
    for name, model in fused.items():
        results[name] = accuracy(model, xt, yt)
    reports = {"accuracy": by_accuracy.report, "loss": by_loss.report}
    return results, reports, models[0], fused, xt


def paired_summary(soup, single, n_test):
    """Wins/ties/losses and the mean difference in test digits, 95% t-interval."""
    diff = (np.asarray(soup) - np.asarray(single)) * n_test
    wins, ties = int(np.sum(diff > 0.5)), int(np.sum(np.abs(diff) <= 0.5))
    mean = float(np.mean(diff)) + 0.0  # no "-0.00"
    half = (
        float(stats.t.ppf(0.975, len(diff) - 1) * stats.sem(diff))
        if len(diff) > 1 and np.std(diff) > 0
        else 0.0
    )
    return (
        f"{wins} wins, {ties} ties, {len(diff) - wins - ties} losses; "
        f"mean {mean:+.2f} test digits "
        f"(95% CI {mean - half:+.2f} to {mean + half:+.2f})"
    )


def time_models(models, x, rounds):
    for model in models.values():
        model.predict_on_batch(x)  # trace once
    times = {name: [] for name in models}
    names = list(models)
    for round_ in range(rounds):
        shift = round_ % len(names)  # rotate the order: no variant always first
        for name in names[shift:] + names[:shift]:
            model = models[name]
            start = time.perf_counter()
            model.predict_on_batch(x)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--start-epochs", type=int, default=10)
    parser.add_argument("--tune-epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    table = {}
    for repeat in range(args.repeats):
        results, reports, single, fused, xt = one_repeat(
            repeat, args.start_epochs, args.tune_epochs, args.train_size
        )
        print(f"repeat {repeat} (seed {repeat}):")
        for name, value in results.items():
            print(f"  {name:38s} {value:.4f}")
            table.setdefault(name, []).append(value)
        for report in reports.values():
            print("  " + str(report).replace("\n", "\n  "))
    n_test = len(xt)
    print(f"\naccuracy on the {n_test} test digits, {args.repeats} repeats:")
    print(
        f"  {'model':38s} "
        + " ".join(f"r{r:<4d}" for r in range(args.repeats))
        + " mean"
    )
    for name, values in table.items():
        cells = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:38s} {cells}  {np.mean(values):.4f}")
    print("\npaired, per repeat:")
    oracle = table["best single (oracle, on test)"]
    for soup, pick in GREEDY_VS_PICK:
        print(
            f"  {soup} vs its pick: " + paired_summary(table[soup], table[pick], n_test)
        )
        print(f"  {soup} vs the oracle: " + paired_summary(table[soup], oracle, n_test))
    print(
        "  stack vs ensemble: "
        + paired_summary(table["stack"], table["ensemble (average)"], n_test)
    )

    timed = {"one model": single, **fused}
    medians = time_models(timed, xt, args.rounds)
    print(
        f"\ninference, predict_on_batch on {n_test} digits, median of {args.rounds} "
        "interleaved rounds (last repeat's models):"
    )
    for name, value in medians.items():
        ratio = value / medians["one model"]
        print(f"  {name:38s} {value * 1e3:8.2f} ms  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
