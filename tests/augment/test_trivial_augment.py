"""TrivialAugment: one operation per image, uniform magnitude."""

import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip


def test_identical_images_differ_and_range_dtype_kept():
    x = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 12, 12, 3)), 16, 0)
    out = np.asarray(kh.augment.TrivialAugment(seed=1)(x.astype("uint8")))
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert len({o.tobytes() for o in out}) >= 12


def test_only_solarize_with_uniform_magnitudes():
    # Only solarize: each image's threshold is 1 - m with m ~ U(0, 1), so the
    # fraction of inverted pixels of a linear ramp varies image by image.
    x = np.repeat(np.linspace(0, 1, 100, dtype="float32").reshape(1, 10, 10, 1), 8, 0)
    out = np.asarray(
        kh.augment.TrivialAugment(value_range=(0, 1), operations=["solarize"], seed=2)(
            x
        )
    )
    inverted = [(np.abs(o - xi) > 1e-6).sum() for o, xi in zip(out, x, strict=False)]
    assert len(set(inverted)) >= 6


def test_seed_and_config():
    x = np.random.default_rng(3).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    a, b = kh.augment.TrivialAugment(seed=5), kh.augment.TrivialAugment(seed=5)
    np.testing.assert_array_equal(np.asarray(a(x)), np.asarray(b(x)))
    np.testing.assert_array_equal(np.asarray(a(x, training=False)), x)
    assert_config_round_trip(kh.augment.TrivialAugment((0, 1), ["rotate"], seed=1))
    with pytest.raises(ValueError, match=r"Received: operations=\[\]$"):
        kh.augment.TrivialAugment(operations=[])
