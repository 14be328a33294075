"""keras_harden.optimizers in one minute: a one-line swap in `compile`.

Trains a small conv net on scikit-learn's digits with adaptive gradient
clipping around SGD, prints the per-step statistics the wrapper keeps,
shows a NaN batch being skipped, and saves/loads the model with the
optimizer state. Runs in well under 20 s on a laptop CPU.

    python examples/optimizers_quickstart.py
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_harden as kh  # noqa: E402


def build_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="classifier"),
        ]
    )


def main():
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = kh.data.load_digits()

    # The one-line swap: wrap any Keras optimizer.
    optimizer = kh.optimizers.AdaptiveGradientClipping(
        keras.optimizers.SGD(0.1, momentum=0.9),
        clip_factor=0.02,
        exclude=["classifier"],  # NFNets leave the classifier unclipped
        max_consecutive_nonfinite=10,
    )
    model = build_model()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    print(f"test accuracy: {model.evaluate(xt, yt, verbose=0)[1]:.3f}")
    print(
        f"last step: gradient norm {float(optimizer.gradient_norm):.3f}, "
        f"after clipping {float(optimizer.clipped_gradient_norm):.3f}"
    )

    # A poisoned batch: the step is skipped, nothing changes, a counter goes up.
    weights = model.get_weights()
    bad = x[:64].copy()
    bad[0, 0, 0, 0] = np.nan
    model.train_on_batch(bad, y[:64])
    unchanged = all(
        np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True)
    )
    print(
        f"NaN batch skipped: {unchanged}, skipped_steps={int(optimizer.skipped_steps)}"
    )

    # Save and load: wrapper, rule and state come back.
    path = os.path.join(tempfile.mkdtemp(), "digits_agc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    print(
        f"reloaded optimizer: {type(loaded.optimizer).__name__}, "
        f"skipped_steps={int(loaded.optimizer.skipped_steps)}"
    )


if __name__ == "__main__":
    main()
