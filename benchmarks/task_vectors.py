"""Task-vector merging of fine-tunes on the digits: `kh.fusion.merge` against
the uniform soup, the ensemble and the endpoints.

For each repeat `r` (the digits split with seed `r`, its own 450 test digits):
a small conv net with batch norm (the one of
`examples/fusion_make_saved_model.py`) is trained for `--base-epochs` on the
first 1,000 training digits: the base. Four copies are fine-tuned from it for
`--tune-epochs`, each differently:

- tune 0: the first 500 of the 1,000 digits, no augmentation;
- tune 1: the other 500, no augmentation;
- tune 2: all 1,000 with random translation;
- tune 3: all 1,000 with random rotation and zoom;

each with its own seed. Every model's batch-norm statistics (base and tunes)
are recomputed on the 1,000 training inputs, as every merge's are. Training
digits 1,000-1,346 are held out (the validation digits).

Two settings are merged: all four tunes, and the two halves (tunes 0 and 1),
the only pair SLERP takes. In each setting, every method is run over a small
grid of its arguments, each merge is scored on the validation digits, and:

- "default": the method at the library's default arguments;
- "val-best": the grid point best on the validation digits in this repeat
  (accuracy, ties broken by cross-entropy);

are scored on the test digits, as is "merge best on val" (the one merge,
of every method and grid point, best on the validation digits: what a user
tuning on held-out data would ship), with the uniform soup
(`kh.fusion.average_weights`), the output-averaging ensemble
(`kh.fusion.ensemble`, k models' cost), the base, each tune, and the tune best
on the validation digits (what one would ship without merging). Task
arithmetic's and DARE's `scaling` grid is given in multiples of the uniform
soup's step `1/k` (k tunes), so that one grid serves both settings.

The grid table at the end (mean validation accuracy and cross-entropy over
the repeats and both settings) is where the library's defaults come from.

    .venv/bin/python benchmarks/task_vectors.py              # 5 repeats
    .venv/bin/python benchmarks/task_vectors.py --quick      # 1 repeat, small grid
"""

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np

import keras_harden as kh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from fusion_make_saved_model import conv_net, fit  # noqa: E402

TUNES = (
    ("first half", slice(0, 500), lambda seed: []),
    ("second half", slice(500, 1000), lambda seed: []),
    (
        "translate",
        slice(0, 1000),
        lambda seed: [keras.layers.RandomTranslation(0.1, 0.1, seed=seed)],
    ),
    (
        "rotate+zoom",
        slice(0, 1000),
        lambda seed: [
            keras.layers.RandomRotation(0.05, seed=seed),
            keras.layers.RandomZoom(0.1, seed=seed + 1),
        ],
    ),
)
SETTINGS = {"4 tunes": (0, 1, 2, 3), "2 tunes (halves)": (0, 1)}


def grid(quick):
    """`{method: [kwargs, ...]}`; "m" is a multiple of the soup step 1/k."""
    if quick:
        return {
            "task_arithmetic": [{"m": m} for m in (1.0, 2.0)],
            "ties": [{"density": d, "scaling": 1.0} for d in (0.2, 1.0)],
            "dare": [{"drop_rate": p, "m": 1.0} for p in (0.5, 0.9)],
            "dare_ties": [{"drop_rate": 0.5, "scaling": 1.0}],
            "slerp": [{"t": 0.5}],
        }
    return {
        "task_arithmetic": [{"m": m} for m in (1.0, 1.5, 2.0, 3.0)],
        "ties": [
            {"density": d, "scaling": s}
            for d in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
            for s in (1.0, 1.5)
        ],
        "dare": [
            {"drop_rate": p, "m": m}
            for p in (0.1, 0.3, 0.5, 0.7, 0.9)
            for m in (1.0, 1.5, 2.0)
        ],
        "dare_ties": [
            {"drop_rate": p, "scaling": s}
            for p in (0.1, 0.3, 0.5, 0.7, 0.9)
            for s in (0.75, 1.0)
        ],
        "slerp": [{"t": t} for t in (0.3, 0.5, 0.7)],
    }


def label(kwargs):
    return ", ".join(f"{k}={v:g}" for k, v in kwargs.items())


def arguments(kwargs, k, seed, method):
    """`merge` keyword arguments for one grid point."""
    out = {key: value for key, value in kwargs.items() if key != "m"}
    if "m" in kwargs:
        out["scaling"] = kwargs["m"] / k
    if method in ("dare", "dare_ties"):
        out["seed"] = seed
    return out


def scores(model, x, y):
    """(accuracy, mean cross-entropy) of `model`'s logits on `(x, y)`."""
    logits = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), "f8")
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return (
        float(np.mean(logits.argmax(-1) == y)),
        float(-np.mean(log_p[np.arange(len(y)), y])),
    )


def one_repeat(seed, args, methods):
    (x, y), (xt, yt) = kh.data.load_digits(seed=seed)
    x_fit, y_fit, val = x[:1000], y[:1000], (x[1000:], y[1000:])
    base = conv_net()
    fit(base, x_fit, y_fit, args.base_epochs, 3e-3, [], seed)
    kh.fusion.recalibrate_batchnorm(base, x_fit)
    tunes = []
    for i, (_, part, augmentation) in enumerate(TUNES):
        tune = keras.models.clone_model(base)
        tune.set_weights(base.get_weights())
        tune_seed = 100 * seed + i + 1
        fit(
            tune,
            x_fit[part],
            y_fit[part],
            args.tune_epochs,
            1e-3,
            augmentation(tune_seed),
            tune_seed,
        )
        kh.fusion.recalibrate_batchnorm(tune, x_fit)
        tunes.append(tune)

    test = {"base": scores(base, xt, yt)[0]}
    for (name, _, _), tune in zip(TUNES, tunes, strict=True):
        test[f"tune ({name})"] = scores(tune, xt, yt)[0]
    val_scores = {}  # (setting, method, label) -> (accuracy, cross-entropy)
    for setting, indices in SETTINGS.items():
        chosen = [tunes[i] for i in indices]
        k = len(chosen)
        picked = max(indices, key=lambda i: scores(tunes[i], *val)[0])
        test[f"{setting}: best tune on val"] = scores(tunes[picked], xt, yt)[0]
        soup = kh.fusion.average_weights(chosen, recalibrate=x_fit)
        test[f"{setting}: uniform soup"] = scores(soup, xt, yt)[0]
        test[f"{setting}: ensemble"] = scores(kh.fusion.ensemble(chosen), xt, yt)[0]
        overall = None  # the merge best on val over every method and grid point
        for method, points in methods.items():
            if method == "slerp" and k != 2:
                continue
            best = None
            for kwargs in points:
                merged = kh.fusion.merge(
                    base,
                    chosen,
                    method,
                    recalibrate=x_fit,
                    **arguments(kwargs, k, seed, method),
                )
                on_val = scores(merged, *val)
                val_scores[(setting, method, label(kwargs))] = on_val
                key = (on_val[0], -on_val[1])
                if best is None or key > best[0]:
                    best = (key, kwargs, scores(merged, xt, yt)[0])
            test[f"{setting}: {method} val-best"] = best[2]
            test[f"{setting}: {method} val-best args"] = label(best[1])
            if overall is None or best[0] > overall[0]:
                overall = (best[0], f"{method}: {label(best[1])}", best[2])
            dare_seed = {"seed": seed} if method in ("dare", "dare_ties") else {}
            default = kh.fusion.merge(
                base, chosen, method, recalibrate=x_fit, **dare_seed
            )
            test[f"{setting}: {method} default"] = scores(default, xt, yt)[0]
        test[f"{setting}: merge best on val"] = overall[2]
        test[f"{setting}: merge best on val, which"] = overall[1]
    return test, val_scores


def spread(values):
    return f"{statistics.median(values):.4f} [{min(values):.4f}-{max(values):.4f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-epochs", type=int, default=3)
    parser.add_argument("--tune-epochs", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, a small grid (a smoke test)"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    methods = grid(args.quick)
    started = time.perf_counter()

    table, grid_scores = {}, {}
    for repeat in range(args.repeats):
        test, val_scores = one_repeat(repeat, args, methods)
        print(f"repeat {repeat} (seed {repeat}), test accuracy:", flush=True)
        for name, value in test.items():
            shown = value if isinstance(value, str) else f"{value:.4f}"
            print(f"  {name:52s} {shown}")
            table.setdefault(name, []).append(value)
        for key, value in val_scores.items():
            grid_scores.setdefault(key, []).append(value)

    print(
        f"\ntest accuracy, median [min-max] over {args.repeats} repeats "
        f"(450 test digits each; one digit = 0.0022):"
    )
    for name, values in table.items():
        if isinstance(values[0], str):
            print(f"  {name:52s} {' | '.join(values)}")
        else:
            print(f"  {name:52s} {spread(values)}")

    print(
        "\nper repeat, in points: the merge best on val (every method and grid "
        "point) minus the uniform soup / minus the ensemble:"
    )
    for setting in SETTINGS:
        best = table[f"{setting}: merge best on val"]
        soup = table[f"{setting}: uniform soup"]
        ensemble = table[f"{setting}: ensemble"]
        to_soup = [100 * (b - s) for b, s in zip(best, soup, strict=True)]
        to_ensemble = [100 * (b - e) for b, e in zip(best, ensemble, strict=True)]
        print(
            f"  {setting}: vs soup "
            + " ".join(f"{d:+.1f}" for d in to_soup)
            + f" (median {statistics.median(to_soup):+.1f}); vs ensemble "
            + " ".join(f"{d:+.1f}" for d in to_ensemble)
            + f" (median {statistics.median(to_ensemble):+.1f})"
        )

    print(
        "\neach method at its defaults against the uniform soup, per repeat, in "
        "test digits: wins / ties / losses, median difference:"
    )
    for setting in SETTINGS:
        soup = np.asarray(table[f"{setting}: uniform soup"])
        for method in methods:
            name = f"{setting}: {method} default"
            if name not in table:
                continue
            diff = np.round((np.asarray(table[name]) - soup) * 450).astype(int)
            print(
                f"  {name:42s} {int(np.sum(diff > 0))} / {int(np.sum(diff == 0))} / "
                f"{int(np.sum(diff < 0))}, median {np.median(diff):+.1f}"
            )

    print(
        "\nvalidation grid (347 digits), mean accuracy / cross-entropy over "
        "repeats, per setting; then pooled over the settings:"
    )
    pooled = {}
    for (setting, method, point), values in grid_scores.items():
        accuracy = np.mean([v[0] for v in values])
        loss = np.mean([v[1] for v in values])
        print(f"  {setting:18s} {method:16s} {point:28s} {accuracy:.4f} {loss:.4f}")
        pooled.setdefault((method, point), []).append((accuracy, loss))
    print("\n  pooled (mean over settings), best first per method:")
    for method in methods:
        rows = [
            (point, np.mean([a for a, _ in v]), np.mean([c for _, c in v]))
            for (m, point), v in pooled.items()
            if m == method
        ]
        rows.sort(key=lambda row: (-row[1], row[2]))
        for point, accuracy, loss in rows:
            print(f"  {method:16s} {point:28s} {accuracy:.4f} {loss:.4f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
