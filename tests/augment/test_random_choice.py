"""RandomChoice: one of several layers per image."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip


def test_each_image_gets_one_of_the_layers():
    x = np.random.default_rng(0).uniform(1, 2, (60, 3, 3, 1)).astype("float32")
    scales = (0.5, 2.0, 3.0)
    layer = kh.augment.RandomChoice([keras.layers.Rescaling(s) for s in scales], seed=0)
    out = np.asarray(layer(x))
    picked = []
    for o, xi in zip(out, x, strict=True):
        matches = [s for s in scales if np.allclose(o, s * xi)]
        assert len(matches) == 1
        picked.append(matches[0])
    counts = [picked.count(s) for s in scales]
    assert min(counts) >= 8, counts


def test_weights_and_inference():
    x = np.ones((5, 2, 2, 1), "float32")
    layer = kh.augment.RandomChoice(
        [keras.layers.Rescaling(0.5), keras.layers.Rescaling(2.0)],
        weights=[0, 1],
        seed=1,
    )
    np.testing.assert_array_equal(np.asarray(layer(x)), 2 * x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_seeded_reproducible():
    x = np.random.default_rng(1).uniform(0, 255, (8, 8, 8, 3)).astype("float32")

    def make():
        return kh.augment.RandomChoice(
            [kh.augment.TrivialAugment(seed=1), keras.layers.RandomFlip(seed=2)], seed=3
        )

    np.testing.assert_array_equal(np.asarray(make()(x)), np.asarray(make()(x)))


def test_config_round_trip_and_errors():
    layer = kh.augment.RandomChoice(
        [keras.layers.RandomFlip(seed=1), kh.augment.RandAugment(seed=2)],
        [1, 3],
        seed=4,
    )
    clone = assert_config_round_trip(layer)
    assert [type(x) for x in clone.choice_layers] == [
        keras.layers.RandomFlip,
        kh.augment.RandAugment,
    ]
    with pytest.raises(ValueError, match=r"Received: layers=\[\]$"):
        kh.augment.RandomChoice([])
    with pytest.raises(ValueError, match=r"Received: weights=\[1\]$"):
        kh.augment.RandomChoice([keras.layers.Identity()] * 2, weights=[1])


def test_images_keep_their_dtype_under_a_mixed_precision_policy():
    # The layers here do not autocast their inputs: uint8 stays uint8 and a
    # float32 batch is not cast to the policy's float16 on the way in.
    keras.config.set_dtype_policy("mixed_float16")
    layers = [
        kh.augment.RandomChoice([keras.layers.Identity()], seed=0),
        kh.augment.RandomApply(keras.layers.Identity(), 1.0, seed=0),
        kh.augment.Pipeline([kh.augment.TrivialAugment(seed=0)]),
        kh.augment.RandAugment(seed=0),
    ]
    for dtype in ("uint8", "float32"):
        x = np.full((2, 8, 8, 3), 7, dtype)
        for layer in layers:
            assert keras.backend.standardize_dtype(layer(x).dtype) == dtype, layer


def test_fixed_draws_by_hand_and_zero_weight_is_never_chosen():
    x = np.ones((3, 1, 1, 1), "float32")
    layer = kh.augment.RandomChoice(
        [keras.layers.Rescaling(s) for s in (0.5, 2.0, 3.0)], weights=[1, 0, 1]
    )
    out = np.asarray(layer.transform_images(x, {"choices": np.array([2, 0, 1])}))
    np.testing.assert_array_equal(out.ravel(), [3.0, 0.5, 2.0])
    drawn = layer.get_random_transformation(np.zeros((300, 1, 1, 1)), seed=2)
    counts = np.bincount(np.asarray(drawn["choices"]), minlength=3)
    assert counts[1] == 0 and min(counts[0], counts[2]) >= 120
    # Weight 0 for the only other layer: every image keeps the identity.
    identity = kh.augment.RandomChoice(
        [keras.layers.Identity(), keras.layers.Rescaling(2.0)], weights=[1, 0], seed=3
    )
    xr = np.random.default_rng(0).uniform(size=(8, 4, 4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(identity(xr)), xr)
