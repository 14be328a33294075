"""Test-time augmentation on the digits: clean and corruption accuracy, with
and without it, for several transform sets.

For each seed: the digits (8x8x1, divided by 255; the fixed split of
`keras_harden.data.load_digits`, 1,347 train / 450 test) train the conv net
Conv2D(32, 3x3, relu, same) - Conv2D(64, 3x3, stride 2, relu) - Flatten -
Dense(128, relu) - Dense(10) (logits), Adam 1e-3, batch 32, 15 epochs, with
the seed's initialisation and shuffling, once plainly and once with light
augmentation (Keras's `RandomTranslation` by up to one pixel, edges
repeated, in training only). Each model is scored on the clean test digits
and on the corruption suite (`keras_harden.robust.corruptions`: all of
`CORRUPTIONS` at severities 1-5, drawn with the seed), bare and wrapped in
`TestTimeAugmentation` with each candidate transform set; the mean
corruption accuracy is `mean_corruption_accuracy` over the 10 x 5 sets.

The goal the default is held to: TTA raises the mean corruption accuracy by
at least 2 points and costs at most 0.5 points of clean accuracy (medians
over the seeds). Printed: per seed and model, each set's clean and mean
corruption accuracy and their change against the bare model; the medians and
ranges over seeds; and per corruption (mean over severities) the median
change of each set, to show where it loses.

    .venv/bin/python benchmarks/test_time_augmentation.py --seeds 3
"""

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_harden.data import load_digits  # noqa: E402
from keras_harden.robust import corruptions  # noqa: E402
from keras_harden.robust.test_time_augmentation import (  # noqa: E402
    DEFAULT_TRANSFORMS,
    TestTimeAugmentation,
)

SHIFTS = ("shift:1,0", "shift:-1,0", "shift:0,1", "shift:0,-1")
DIAGONALS = ("shift:1,1", "shift:1,-1", "shift:-1,1", "shift:-1,-1")
CANDIDATES = {
    "shift4": ("identity", *SHIFTS),
    "shift8": ("identity", *SHIFTS, *DIAGONALS),
    "scale": ("identity", "scale:0.9", "scale:1.1"),
    "rotate": ("identity", "rotate:-10", "rotate:10"),
    "shift4+scale": ("identity", *SHIFTS, "scale:0.9", "scale:1.1"),
    "sharpness": ("identity", "sharpness:0.5"),
    "contrast": ("identity", "contrast:0.5"),
    # equalize is left out: PIL's algorithm leaves images of under 255 pixels
    # unchanged (its step, (pixels - top count) // 255, is 0 on 8x8)
    "auto_contrast": ("identity", "auto_contrast"),
    "auto+sharpness": ("identity", "auto_contrast", "sharpness:0.5"),
    "auto+scale": ("identity", "auto_contrast", "scale:0.9", "scale:1.1"),
    "shift4+auto": ("identity", *SHIFTS, "auto_contrast"),
}


def conv_net(seed, augment):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8, 8, 1))]
    if augment:
        layers.append(
            keras.layers.RandomTranslation(
                1 / 8, 1 / 8, fill_mode="nearest", interpolation="nearest", seed=seed
            )
        )
    layers += [
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ]
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def corrupted_sets(x, seed):
    """`{(name, severity): images}` for the whole suite."""
    return {
        (name, severity): corruptions.corrupt(x, name, severity, seed=seed)
        for name in corruptions.CORRUPTIONS
        for severity in range(1, 6)
    }


def score(model, x, y, sets):
    """Clean accuracy, `{name: [accuracy per severity]}` and their mean."""
    keys = list(sets)
    stacked = np.concatenate([x] + [sets[k] for k in keys])
    predicted = model.predict(stacked, batch_size=1024, verbose=0).argmax(-1)
    n = len(x)
    clean = float(np.mean(predicted[:n] == y))
    table = {}
    for i, (name, _) in enumerate(keys):
        part = predicted[n * (i + 1) : n * (i + 2)]
        table.setdefault(name, []).append(float(np.mean(part == y)))
    return clean, table, corruptions.mean_corruption_accuracy(table)


def points(a):
    return f"{100 * a:6.2f}"


def signed(a):
    return f"{100 * a:+6.2f}"


def summary(values):
    return (
        f"{100 * statistics.median(values):+6.2f} "
        f"[{100 * min(values):+6.2f}, {100 * max(values):+6.2f}]"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--sets", default=",".join(CANDIDATES), help="comma-separated candidates"
    )
    args = parser.parse_args()
    candidates = {name: CANDIDATES[name] for name in args.sets.split(",")}
    (x, y), (x_test, y_test) = load_digits()
    x, x_test = x / 255.0, x_test / 255.0
    print(f"backend {keras.backend.backend()}; default set {DEFAULT_TRANSFORMS}")
    # results[model kind][set] = list over seeds of (clean, table, mean)
    results = {}
    for seed in range(args.seeds):
        sets = corrupted_sets(x_test, seed)
        for kind in ("plain", "augmented"):
            start = time.perf_counter()
            model = conv_net(seed, kind == "augmented")
            model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0)
            trained = time.perf_counter() - start
            row = results.setdefault(kind, {})
            base = score(model, x_test, y_test, sets)
            row.setdefault("none", []).append(base)
            print(
                f"seed {seed} {kind:9s} (trained in {trained:4.1f} s): none "
                f"clean {points(base[0])} mCA {points(base[2])}"
            )
            for name, transforms in candidates.items():
                tta = TestTimeAugmentation(model, transforms, from_logits=True)
                result = score(tta, x_test, y_test, sets)
                row.setdefault(name, []).append(result)
                print(
                    f"    {name:14s} clean {points(result[0])} "
                    f"({signed(result[0] - base[0])})  mCA {points(result[2])} "
                    f"({signed(result[2] - base[2])})"
                )
    print(
        f"\nmedian [range] over {args.seeds} seeds, accuracy points; "
        "change = with TTA - without"
    )
    for kind, row in results.items():
        base = row["none"]
        print(
            f"{kind}: none clean "
            f"{100 * statistics.median(r[0] for r in base):.2f} mCA "
            f"{100 * statistics.median(r[2] for r in base):.2f}"
        )
        for name in candidates:
            clean = [r[0] - b[0] for r, b in zip(row[name], base, strict=True)]
            mca = [r[2] - b[2] for r, b in zip(row[name], base, strict=True)]
            met = statistics.median(mca) >= 0.02 and statistics.median(clean) >= -0.005
            print(
                f"  {name:14s} clean {summary(clean)}  mCA {summary(mca)}  "
                f"goal {'met' if met else 'missed'}"
            )
    print("\nper corruption (mean over severities), median change over seeds")
    header = " ".join(f"{n[:9]:>9s}" for n in corruptions.CORRUPTIONS)
    for kind, row in results.items():
        print(f"{kind:24s} {header}")
        base = row["none"]
        line = " ".join(
            f"{100 * statistics.median(np.mean(b[1][c]) for b in base):9.2f}"
            for c in corruptions.CORRUPTIONS
        )
        print(f"  {'none (accuracy)':22s} {line}")
        for name in candidates:
            changes = []
            for c in corruptions.CORRUPTIONS:
                deltas = [
                    np.mean(r[1][c]) - np.mean(b[1][c])
                    for r, b in zip(row[name], base, strict=True)
                ]
                changes.append(f"{100 * statistics.median(deltas):+9.2f}")
            print(f"  {name:22s} {' '.join(changes)}")


if __name__ == "__main__":
    main()
