"""AugMix: chains drawn per image at run time, inside tf.data too."""

import numpy as np
import pytest

import keras_harden as kh
from keras_harden.augment import ops as A
from keras_harden.augment.aug_mix import BASE_OPS, EXTRA_OPS
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


def augmix_reference(x, draws, names):
    """Hendrycks et al. 2020, on given draws, one image at a time:
    x_aug = m x + (1 - m) sum_c w_c chain_c(x), each chain the single
    transforms (checked on hand-worked values in test_ops.py) in order."""
    out = np.empty_like(x)
    for i in range(len(x)):
        image = x[i : i + 1]
        mix = np.zeros_like(image)
        for c, w in enumerate(draws["chain_weights"][i]):
            chain = image
            steps = zip(
                draws["operations"][i, c], draws["strengths"][i, c], strict=True
            )
            for op, strength in steps:
                chain = np.asarray(A.TRANSFORMS[names[op]](chain, np.array([strength])))
            mix = mix + w * chain
        m = draws["original_weight"][i]
        out[i] = np.clip(m * image + (1 - m) * mix, 0, 1)[0]
    return out


def test_fixed_draws_match_the_papers_formula():
    names = [*BASE_OPS, *EXTRA_OPS, "identity"]
    layer = kh.augment.AugMix(value_range=(0, 1), num_chains=3, chain_depth=(1, 2))
    x = images(3) / 255.0
    op = names.index
    draws = {
        "operations": np.array(
            [
                [
                    [op("rotate"), op("equalize")],
                    [op("color"), op("identity")],
                    [op("solarize"), op("shear_x")],
                ],
                [
                    [op("posterize"), op("identity")],
                    [op("translate_y"), op("contrast")],
                    [op("auto_contrast"), op("brightness")],
                ],
                [
                    [op("sharpness"), op("identity")],
                    [op("shear_y"), op("identity")],
                    [op("translate_x"), op("rotate")],
                ],
            ],
            "int32",
        ),
        "strengths": np.random.default_rng(1).uniform(-0.3, 0.3, (3, 3, 2)),
        "chain_weights": np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [1 / 3] * 3]),
        "original_weight": np.array([0.25, 0.0, 0.7]),
    }
    draws = {
        k: v.astype("int32" if k == "operations" else "float32")
        for k, v in draws.items()
    }
    out = np.asarray(layer.transform_images(x, draws))
    np.testing.assert_allclose(out, augmix_reference(x, draws, names), atol=1e-5)
    # m = 1: the original image, exactly.
    draws["original_weight"] = np.ones(3, "float32")
    np.testing.assert_array_equal(np.asarray(layer.transform_images(x, draws)), x)


def test_draws_weights_and_chain_depths():
    layer = kh.augment.AugMix(num_chains=4, chain_depth=(2, 3), seed=0)
    draws = layer.get_random_transformation(images(64))
    draws = {k: np.asarray(v) for k, v in draws.items()}
    np.testing.assert_allclose(draws["chain_weights"].sum(axis=1), 1.0, atol=1e-5)
    assert (draws["chain_weights"] >= 0).all()
    m = draws["original_weight"]
    assert m.min() >= 0 and m.max() <= 1 and 0.3 < m.mean() < 0.7  # Beta(1, 1)
    padding = draws["operations"] == len(BASE_OPS) + len(EXTRA_OPS)
    depths = (~padding).sum(axis=2)
    assert set(np.unique(depths)) == {2, 3}  # every chain 2 or 3 deep
    assert not (padding[:, :, :-1] & ~padding[:, :, 1:]).any()  # padding last
    assert (np.abs(draws["strengths"]) <= 0.3).all()  # magnitude 0.3
