"""RandomApply: a layer on a random subset of the images, decided per image."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip


class BatchSizeSpy(keras.layers.Layer):
    """Doubles its input and records the batch sizes it was called on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes = []

    def call(self, x):
        self.sizes.append(int(x.shape[0]))
        return x * 2.0


def test_each_image_is_either_untouched_or_transformed():
    x = np.random.default_rng(0).uniform(1, 2, (64, 4, 4, 1)).astype("float32")
    spy = BatchSizeSpy()
    out = np.asarray(kh.augment.RandomApply(spy, rate=0.3, seed=1)(x))
    doubled = np.all(np.isclose(out, 2 * x), axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(doubled ^ kept)
    assert 5 <= doubled.sum() <= 35
    if keras.backend.backend() == "tensorflow":
        # The layer ran once, on the chosen images only.
        assert spy.sizes == [int(doubled.sum())]


def test_rate_zero_and_one_and_inference():
    x = np.ones((4, 3, 3, 1), "float32")
    never = kh.augment.RandomApply(keras.layers.Rescaling(2.0), rate=0.0, seed=0)
    always = kh.augment.RandomApply(keras.layers.Rescaling(2.0), rate=1.0, seed=0)
    np.testing.assert_array_equal(np.asarray(never(x)), x)
    np.testing.assert_array_equal(np.asarray(always(x)), 2 * x)
    np.testing.assert_array_equal(np.asarray(always(x, training=False)), x)


def test_dtype_kept_with_a_float_layer():
    x = np.full((6, 8, 8, 3), 100, "uint8")
    layer = kh.augment.RandomApply(keras.layers.RandomGaussianBlur(seed=0), 0.5, seed=2)
    out = layer(x)
    assert out.dtype == "uint8" and out.shape == x.shape


def test_config_round_trip_and_errors():
    layer = kh.augment.RandomApply(kh.augment.TrivialAugment(seed=1), rate=0.25, seed=3)
    clone = assert_config_round_trip(layer)
    assert isinstance(clone.layer, kh.augment.TrivialAugment)
    with pytest.raises(ValueError, match=r"Received: rate=1.5$"):
        kh.augment.RandomApply(keras.layers.Identity(), rate=1.5)
    with pytest.raises(ValueError, match=r"Received: layer='flip'$"):
        kh.augment.RandomApply("flip")


def test_fixed_draws_by_hand():
    x = np.arange(4, dtype="float32").reshape(4, 1, 1, 1) + 1
    layer = kh.augment.RandomApply(keras.layers.Rescaling(2.0), 0.5)
    draws = {"applied": np.array([True, False, True, False])}
    out = np.asarray(layer.transform_images(x, draws)).ravel()
    np.testing.assert_array_equal(out, [2, 2, 6, 4])
    drawn = layer.get_random_transformation(np.zeros((400, 1, 1, 1)), seed=1)
    assert 160 <= np.asarray(drawn["applied"]).sum() <= 240  # rate 0.5
