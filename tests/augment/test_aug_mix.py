"""AugMix: chains drawn per image at run time, inside tf.data too."""

import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip


def images(n=8):
    return np.random.default_rng(0).uniform(0, 255, (n, 12, 12, 3)).astype("float32")


@pytest.mark.tf_only
def test_tf_data_chains_change_per_batch_and_seed_replays():
    import tensorflow as tf

    x = images()

    def run(seed):
        augmix = kh.augment.AugMix(num_chains=2, chain_depth=(1, 2), seed=seed)
        ds = tf.data.Dataset.from_tensors(x).repeat(3).map(augmix)
        return [np.asarray(b) for b in ds]

    first = run(4)
    assert not np.allclose(first[0], first[1]) and not np.allclose(first[1], first[2])
    for a, b in zip(first, run(4), strict=True):
        np.testing.assert_array_equal(a, b)


def test_chains_that_keep_the_image_mix_back_to_the_image():
    # x_aug = m x + (1 - m) sum_i w_i chain_i(x) with sum_i w_i = 1 (Hendrycks
    # et al. 2020). At magnitude 0 every base operation leaves a constant image
    # as it is (rotations, shears and shifts by 0, solarize above 1, posterize
    # keeping 8 bits; auto-contrast and equalize have nothing to stretch), so
    # every chain_i(x) = x and x_aug = x, whatever the draws. Mixing in only
    # one chain, weighted w_i < 1, darkens it instead.
    x = np.full((8, 12, 12, 3), 128, "uint8")
    out = np.asarray(kh.augment.AugMix(magnitude=0.0, all_ops=False, seed=0)(x))
    np.testing.assert_array_equal(out, x)


def test_identical_images_differ_range_dtype():
    x = np.repeat(images(1).astype("uint8"), 8, 0)
    out = np.asarray(kh.augment.AugMix(seed=1)(x))
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert len({o.tobytes() for o in out}) == 8


def test_float_range_inference_and_config():
    # Same batch shape and operation set as above: one compiled dispatch on JAX.
    x = images(8) / 127.5 - 1.0
    layer = kh.augment.AugMix((-1, 1), 2, (1, 2), 0.5, 0.5, seed=2)
    out = np.asarray(layer(x))
    assert out.min() >= -1 and out.max() <= 1 and not np.allclose(out, x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    assert_config_round_trip(layer)
    assert_config_round_trip(kh.augment.AugMix(all_ops=False, seed=1))
    with pytest.raises(ValueError, match=r"Received: chain_depth=\(2, 1\)$"):
        kh.augment.AugMix(chain_depth=(2, 1))
    with pytest.raises(ValueError, match=r"Received: alpha=0$"):
        kh.augment.AugMix(alpha=0)
