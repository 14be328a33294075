"""Tiny digits models trained once per session for the fusion tests."""

import types

import keras
import numpy as np
import pytest


def digits_net(name=None, batchnorm=True):
    """Rescaling -> Conv2D(8) -> [BatchNorm] -> Flatten -> Dense(10) logits."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name=name)


def compile_(model):
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def weights_of(model):
    """A NumPy copy of every variable of `model` (seed states included)."""
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables]


def assert_same_weights(before, model):
    after = weights_of(model)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="session")
def fine_tunes(digits):
    """One start trained on 900 digits, then three fine-tunes of it with
    different seeds and data orders; 447 held-out digits for validation."""
    (x, y), (xt, yt) = digits
    x_fit, y_fit, x_val, y_val = x[:900], y[:900], x[900:], y[900:]
    keras.utils.set_random_seed(0)
    start = compile_(digits_net("start"))
    start.fit(x_fit, y_fit, epochs=3, batch_size=32, verbose=0)
    tunes = []
    for seed in (1, 2, 3):
        keras.utils.set_random_seed(seed)
        tune = keras.models.clone_model(start)
        tune.set_weights(start.get_weights())
        compile_(tune)
        order = np.random.default_rng(seed).permutation(len(x_fit))
        tune.fit(x_fit[order], y_fit[order], epochs=1, batch_size=32, verbose=0)
        tunes.append(tune)
    return types.SimpleNamespace(
        start=start,
        tunes=tunes,
        x_fit=x_fit,
        y_fit=y_fit,
        x_val=x_val,
        y_val=y_val,
        x_test=xt,
        y_test=yt,
    )


def trained_mlps(digits, seeds, epochs):
    """MLPs (64-64-64-10) trained on the flattened digits, one per seed (from
    different random starts); returns `(models, (x, y), (x_test, y_test))`."""
    (x, y), (xt, yt) = digits
    x, xt = x.reshape(len(x), -1) / 255.0, xt.reshape(len(xt), -1) / 255.0
    models = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        models.append(model)
    return models, (x, y), (xt, yt)
