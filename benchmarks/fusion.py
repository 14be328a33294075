"""Fusion on the digits data: soups, ensemble and stack vs their ingredients.

For each repeat: one conv net ("the start") is trained on the first
`--train-size` training digits (default 1,000); four copies are fine-tuned
from it with different seeds and different augmentation (Keras's own random
translation / rotation / zoom layers, in training only), and each one's
batch-norm statistics are then recomputed on the training inputs (as the
soups' are). Training digits 1,000-1,346 are held out: the greedy soup
chooses its ingredients on them and the stack trains its meta-learner on
them. Accuracy is measured on the 450 test digits for:

- each fine-tune; the best of them on test (an oracle) and the one that is
  best on the held-out digits (what one would ship without fusion);
- the uniform soup (`average_weights`, batch norm recalibrated on the 1,000);
- the greedy soup (`greedy_soup`, same recalibration);
- the output-averaging ensemble (`ensemble(method="average")`);
- the stacked models (`stack`): default meta-learner (one weight per
  member) and the `"linear"` one (a Dense over all outputs).

Inference time: `predict_on_batch` on the 450 test digits, each model timed
in interleaved rounds, medians, as a ratio to one fine-tune in the same run.

    .venv/bin/python benchmarks/fusion.py --repeats 5
    .venv/bin/python benchmarks/fusion.py --repeats 5 --train-size 300
"""

import argparse
import statistics
import time

import keras
import numpy as np

import keras_harden as kh

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


def conv_net():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(32, 3, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="digits_net")


def fit(model, x, y, epochs, learning_rate, augmentation=(), seed=0):
    keras.utils.set_random_seed(seed)
    trainer = keras.Sequential([keras.Input((8, 8, 1)), *augmentation, model])
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def one_repeat(seed, start_epochs, tune_epochs, train_size):
    (x, y), (xt, yt) = kh.data.load_digits(seed=0)
    x_fit, y_fit = x[:train_size], y[:train_size]
    x_hold, y_hold = x[1000:], y[1000:]  # the same 347 held out at every size
    start = fit(conv_net(), x_fit, y_fit, start_epochs, 3e-3, seed=seed)
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
    fused = {
        "uniform soup": kh.fusion.average_weights(models, recalibrate=x_fit),
        "greedy soup": kh.fusion.greedy_soup(
            models, (x_hold, y_hold), recalibrate=x_fit
        ),
        "ensemble (average)": kh.fusion.ensemble(models),
        "stack": kh.fusion.stack(models, holdout_data=(x_hold, y_hold), seed=seed),
        "stack (linear meta)": kh.fusion.stack(
            models, "linear", holdout_data=(x_hold, y_hold), seed=seed
        ),
    }
    soup, report = fused["greedy soup"]
    fused["greedy soup"] = soup
    results = {
        f"fine-tune {i} ({name})": accuracy(m, xt, yt)
        for i, (name, m) in enumerate(tunes)
    }
    results["best single (oracle, on test)"] = max(results.values())
    # what a user would ship without fusion: the best fine-tune on held-out data
    results["best single (held-out pick)"] = accuracy(models[report.order[0]], xt, yt)
    for name, model in fused.items():
        results[name] = accuracy(model, xt, yt)
    return results, report, models[0], fused, xt


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--start-epochs", type=int, default=10)
    parser.add_argument("--tune-epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    table = {}
    for repeat in range(args.repeats):
        results, report, single, fused, xt = one_repeat(
            repeat, args.start_epochs, args.tune_epochs, args.train_size
        )
        print(f"repeat {repeat} (seed {repeat}):")
        for name, value in results.items():
            print(f"  {name:32s} {value:.4f}")
            table.setdefault(name, []).append(value)
        print("  " + str(report).replace("\n", "\n  "))
    print(f"\naccuracy on the 450 test digits, {args.repeats} repeats:")
    print(
        f"  {'model':32s} "
        + " ".join(f"rep{r}" for r in range(args.repeats))
        + "   mean"
    )
    for name, values in table.items():
        cells = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:32s} {cells}  {np.mean(values):.4f}")
    greedy = np.array(table["greedy soup"])
    oracle = np.array(table["best single (oracle, on test)"])
    pick = np.array(table["best single (held-out pick)"])
    stacked, averaged = np.array(table["stack"]), np.array(table["ensemble (average)"])
    n = args.repeats
    print(f"  greedy soup >= held-out pick in {int(np.sum(greedy >= pick))}/{n}")
    print(f"  greedy soup >= oracle best single in {int(np.sum(greedy >= oracle))}/{n}")
    print(f"  stack >= ensemble in {int(np.sum(stacked >= averaged))}/{n}")

    timed = {"one model": single, **fused}
    medians = time_models(timed, xt, args.rounds)
    print(
        f"\ninference, predict_on_batch on {len(xt)} digits, median of {args.rounds} "
        "interleaved rounds (last repeat's models):"
    )
    for name, value in medians.items():
        ratio = value / medians["one model"]
        print(f"  {name:32s} {value * 1e3:8.2f} ms  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
