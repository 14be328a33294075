"""A deep plain MLP on the digits data, initialised three ways.

Sixteen Dense(64, relu) layers with no normalisation and no shortcut: with
Keras's default Glorot init the signal dies on the way through; ZerO (an
identity per layer) and LSUV (unit-variance rescaling on real data) start it
trainable. Run: `.venv/bin/python examples/initializers_deep_mlp.py`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_harden as kh  # noqa: E402

DEPTH, EPOCHS = 16, 2


def build(kernel_initializer):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((64,))]
    layers += [
        keras.layers.Dense(64, activation="relu", kernel_initializer=kernel_initializer)
        for _ in range(DEPTH)
    ]
    layers.append(keras.layers.Dense(10, kernel_initializer=kernel_initializer))
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main():
    (x, y), (x_test, y_test) = kh.data.load_digits()
    x, x_test = x.reshape(-1, 64) / 255.0, x_test.reshape(-1, 64) / 255.0

    models = {
        "glorot (Keras default)": build("glorot_uniform"),
        "ZerO": build(kh.initializers.ZerO()),
        "LSUV": build(kh.initializers.DeltaOrthogonal(gain=2**0.5)),
    }
    report = kh.initializers.lsuv(models["LSUV"], x[:256], seed=0)
    print(
        f"lsuv: {sum(r.converged for r in report)}/{len(report)} layers converged;",
        f"first {report[0]}",
    )
    for name, model in models.items():
        model.fit(x, y, batch_size=64, epochs=EPOCHS, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"{name:>24}: test accuracy {accuracy:.3f} after {EPOCHS} epochs")


if __name__ == "__main__":
    main()
