"""Fuse three fine-tunes of one digits model: soup, ensemble and stack.

Trains a tiny conv net, fine-tunes three copies of it with different seeds,
then builds a greedy soup, an output-averaging ensemble and a stacked model,
saves each as `.keras`, loads it back and prints test accuracies.

    .venv/bin/python examples/fusion_soup.py [--out saved_models/demo_fusion]
"""

import argparse
import os

import keras
import numpy as np

import keras_harden as kh


def net():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def train(model, x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="saved_models/demo_fusion")
    args = parser.parse_args()
    (x, y), (x_test, y_test) = kh.data.load_digits()
    x_train, y_train, x_val, y_val = x[:1000], y[:1000], x[1000:], y[1000:]

    start = train(net(), x_train, y_train, epochs=3, seed=0)
    tunes = []
    for seed in (1, 2, 3):
        tune = keras.models.clone_model(start)
        tune.set_weights(start.get_weights())
        tunes.append(train(tune, x_train, y_train, epochs=1, seed=seed))

    # scored by held-out cross-entropy: on 347 digits accuracy often ties
    soup, report = kh.fusion.greedy_soup(
        tunes,
        (x_val, y_val),
        metric=keras.metrics.SparseCategoricalCrossentropy(from_logits=True),
        higher_is_better=False,
        recalibrate=x_train,
    )
    print(report)
    fused = {
        "soup": soup,
        "ensemble": kh.fusion.ensemble(tunes),  # averages the logits
        "stack": kh.fusion.stack(tunes, holdout_data=(x_val, y_val), epochs=5),
    }
    os.makedirs(args.out, exist_ok=True)
    for name, model in fused.items():
        path = kh.save_model(model, os.path.join(args.out, f"{name}.keras"))
        loaded = kh.load_model(path)
        same = np.array_equal(
            loaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0)
        )
        accuracy = np.mean(loaded.predict(x_test, verbose=0).argmax(-1) == y_test)
        print(f"{name:9s} test accuracy {accuracy:.3f}  reloaded identical: {same}")
    for i, tune in enumerate(tunes):
        accuracy = np.mean(tune.predict(x_test, verbose=0).argmax(-1) == y_test)
        print(f"tune {i}    test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
