"""The augmentation base module: shared helpers on hand-worked values, and the
one private Keras hook (TensorFlow ops inside tf.data under other backends)."""

import importlib
import os
import re

import keras
import numpy as np
import pytest

from keras_harden.augment import _layer as L


def test_unit_range_round_trip_for_uint8():
    x = np.array([0, 1, 128, 255], "uint8").reshape(1, 2, 2, 1)
    unit = L.to_unit(x, (0, 255))
    np.testing.assert_allclose(np.asarray(unit).ravel(), [0, 1 / 255, 128 / 255, 1])
    back = L.from_unit(unit, (0, 255), "uint8")
    np.testing.assert_array_equal(np.asarray(back), x)
    # (-1, 1): 0.25 in unit -> 0.25 * 2 - 1 = -0.5.
    back = L.from_unit(np.array([0.25], "float32"), (-1, 1), "float32")
    np.testing.assert_allclose(np.asarray(back), [-0.5])


def test_pick_and_signed_strengths():
    # floor(u * 3), the top draw kept below 3.
    picked = L.pick(np.array([0.0, 0.34, 0.67, 0.9999999], "float32"), 3)
    np.testing.assert_array_equal(np.asarray(picked), [0, 1, 2, 2])
    # rotate is signed, equalize is not: only rotate's coin below 0.5 flips it.
    names = ["rotate", "equalize"]
    choice = np.array([0, 0, 1, 1], "int32")
    coin = np.array([0.2, 0.7, 0.2, 0.7], "float32")
    strength = L.signed_strengths(names, choice, 0.4, coin)
    np.testing.assert_allclose(np.asarray(strength), [-0.4, 0.4, 0.4, 0.4])


def test_cast_like_rounds_for_integer_dtypes():
    out = L.cast_like(np.array([1.4, 1.6, 254.5], "float32"), "uint8")
    assert keras.backend.standardize_dtype(out.dtype) == "uint8"
    np.testing.assert_array_equal(np.asarray(out), [1, 2, 254])


def test_the_private_tensorflow_backend_hook_still_holds():
    # The one private Keras name the package uses: Keras's TensorFlow backend
    # module, whose functions stand in for keras.ops inside tf.data under
    # other backends, and SeedGenerator's `backend` argument. If this fails,
    # Keras has moved them: see "Known limits" in docs/augment.md.
    pytest.importorskip("tensorflow")
    module = importlib.import_module(L.TENSORFLOW_BACKEND)
    used = [resolve(keras, name) for name in names_used_by_the_package()]
    for function in used:
        twin = L.tensorflow_twin(function)
        assert callable(twin) and twin.__name__ == function.__name__, function
    generator = keras.random.SeedGenerator(3, backend=module)
    assert type(generator.state).__module__.startswith(L.TENSORFLOW_BACKEND)


def names_used_by_the_package():
    """Every `ops.<name>` and `random.<name>` the package's modules call."""
    folder = os.path.dirname(L.__file__)
    found = set()
    for file in os.listdir(folder):
        if file.endswith(".py"):
            with open(os.path.join(folder, file), encoding="utf-8") as f:
                found |= set(
                    re.findall(r"\b((?:ops|random)\.[a-z_.]*[a-z_])\(", f.read())
                )
    assert {"ops.image.affine_transform", "random.uniform"} <= found
    return sorted(found)


def resolve(module, dotted):
    for name in dotted.split("."):
        module = getattr(module, name)
    return module
