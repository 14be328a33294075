"""Re-makes `saved_models/digits_soup.keras`, the committed fused digits model.

A small conv net is trained on 1,000 training digits, four copies are
fine-tuned from it with different seeds and augmentation, and a greedy soup
of them is chosen on the other 347 training digits (batch-norm statistics
recomputed on the 1,000). The soup is written atomically with
`kh.save_model`. Deterministic on one machine; takes about a minute on CPU.

    .venv/bin/python examples/fusion_make_saved_model.py [--out PATH]
"""

import argparse

import keras
import numpy as np

import keras_harden as kh


def conv_net():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(32, 3, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_soup")


def fit(model, x, y, epochs, learning_rate, augmentation, seed):
    keras.utils.set_random_seed(seed)
    trainer = keras.Sequential([keras.Input((8, 8, 1)), *augmentation, model])
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.fit(x, y, epochs=epochs, batch_size=32, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="saved_models/digits_soup.keras")
    args = parser.parse_args()

    (x, y), (xt, yt) = kh.data.load_digits(seed=0)
    x_fit, y_fit, x_hold, y_hold = x[:1000], y[:1000], x[1000:], y[1000:]
    start = conv_net()
    fit(start, x_fit, y_fit, 10, 3e-3, [], seed=0)
    tunes = []
    for seed in range(4):
        tune = keras.models.clone_model(start)
        tune.set_weights(start.get_weights())
        shift = [keras.layers.RandomTranslation(0.08, 0.08, seed=seed)] if seed else []
        fit(tune, x_fit, y_fit, 5, 1e-3, shift, seed=seed + 1)
        kh.fusion.recalibrate_batchnorm(tune, x_fit)
        tunes.append(tune)
    soup, report = kh.fusion.greedy_soup(tunes, (x_hold, y_hold), recalibrate=x_fit)
    print(report)
    test_accuracy = float(np.mean(soup.predict(xt, verbose=0).argmax(-1) == yt))
    print(f"test accuracy of the soup: {test_accuracy:.4f}")
    kh.save_model(soup, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
