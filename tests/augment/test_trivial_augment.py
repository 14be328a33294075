"""TrivialAugment: one operation per image, uniform magnitude."""

import numpy as np
import pytest

import keras_harden as kh
from keras_harden.augment import ops as A
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


def test_fixed_draws_apply_one_operation_per_image():
    names = ["shear_x", "contrast", "posterize"]
    layer = kh.augment.TrivialAugment(value_range=(0, 1), operations=names)
    x = np.random.default_rng(4).uniform(size=(3, 10, 10, 3)).astype("float32")
    draws = {
        "operations": np.array([2, 0, 1], "int32"),
        "strengths": np.array([0.7, -0.5, 0.3], "float32"),
    }
    out = np.asarray(layer.transform_images(x, draws))
    for i, (op, strength) in enumerate(zip(*draws.values(), strict=True)):
        expected = A.TRANSFORMS[names[op]](x[i : i + 1], np.array([strength]))
        np.testing.assert_allclose(out[i], np.asarray(expected)[0], atol=1e-5)


def test_draws_are_uniform_magnitudes_and_strength_zero_is_identity():
    layer = kh.augment.TrivialAugment(seed=3)
    x = np.random.default_rng(5).integers(0, 256, (64, 8, 8, 3)).astype("uint8")
    draws = {k: np.asarray(v) for k, v in layer.get_random_transformation(x).items()}
    magnitude = np.abs(draws["strengths"])
    assert magnitude.min() >= 0 and magnitude.max() < 1 and magnitude.std() > 0.2
    # Zero strength for operations driven by the magnitude: the input back.
    draws["strengths"] = np.zeros(64, "float32")
    names = list(A.TRANSFORMS)  # the default operation list
    driven = [i for i, n in enumerate(names) if n not in ("auto_contrast", "equalize")]
    draws["operations"] = np.array(driven * 6)[:64].astype("int32")
    np.testing.assert_array_equal(np.asarray(layer.transform_images(x, draws)), x)
