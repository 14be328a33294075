"""The augmentation base module: shared helpers on hand-worked values."""

import keras
import numpy as np

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
