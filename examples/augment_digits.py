"""Augmentation in one line: a preset inside the model, MixUp/CutMix in tf.data.

Trains a small conv net on scikit-learn's digits (upsampled to 16x16) with
`kh.augment.pipeline("standard")` as the model's first layer (active in `fit`,
off in `predict`, `evaluate` and the exported SavedModel) and `MixUpCutMix` on
the training batches, then exports with `kh.export` and checks the served
model agrees with `predict`.

    .venv/bin/python examples/augment_digits.py
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_harden as kh


def main(epochs=8):
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = kh.data.load_digits(image_size=16, channels=1)

    # Mirror images change a digit's class: no flip; mild crops and magnitude
    # for small centred digits.
    augment = kh.augment.pipeline(
        "standard", flip=None, magnitude=0.3, crop_scale=(0.6, 1.0), seed=0
    )
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            augment,
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    # MixUp/CutMix on (images, integer labels) batches -> soft labels.
    mix = kh.augment.MixUpCutMix(num_classes=10, prob=0.5, label_smoothing=0.1, seed=0)
    train = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0)
        .batch(64)
        .map(mix, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    test = tf.data.Dataset.from_tensor_slices((x_test, keras.ops.one_hot(y_test, 10)))
    model.fit(train, epochs=epochs, verbose=0)
    loss, accuracy = model.evaluate(test.batch(256), verbose=0)
    print(f"test accuracy after {epochs} epochs: {accuracy:.3f}")

    with tempfile.TemporaryDirectory() as directory:
        path = kh.export(model, os.path.join(directory, "digits_savedmodel"))
        served = tf.saved_model.load(path)
        batch = x_test[:32]
        a, b = np.asarray(served.serve(batch)), np.asarray(served.serve(batch))
        same = np.array_equal(a, b)
        close = np.allclose(a, model.predict(batch, verbose=0), atol=1e-5)
        print(f"exported model: same output on every call: {same}; ", end="")
        print(f"equals predict: {close}")
    return accuracy


if __name__ == "__main__":
    main()
