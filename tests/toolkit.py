"""A small test toolkit of our own (Keras's `keras.src.testing` is private)."""

import os

import keras
import numpy as np


def assert_config_round_trip(obj):
    """`from_config(get_config())` and Keras (de)serialization reproduce `obj`'s
    config exactly; returns the clone made through `keras.saving`."""
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return revived


def assert_save_load_identical(model, x, directory, atol=0.0):
    """Saves `model` as `.keras` in `directory`, loads it back and checks the
    predictions on `x` agree to `atol`; returns the loaded model."""
    path = os.path.join(os.fspath(directory), f"{model.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = model.predict(x, verbose=0)
    actual = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    return loaded


def fit_jit_compiled(model, x, y, optimizer, loss, epochs=1, batch_size=32):
    """Compiles with `jit_compile=True`, fits, and returns the `History`."""
    model.compile(optimizer=optimizer, loss=loss, jit_compile=True)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)


def small_classifier(input_shape=(8, 8, 1), num_classes=10, seed=0):
    """A tiny functional conv net for the digits data."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=init)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init)(x)
    return keras.Model(inputs, outputs)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env():
    """This environment for a child Python, the repository first on its path
    (what was on PYTHONPATH stays after it)."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def run_example(script, *args, timeout=300):
    """Runs `examples/<script>` as a user would (repo root as working directory)
    and returns its stdout, failing with the tail of stderr if it exits non-zero."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
