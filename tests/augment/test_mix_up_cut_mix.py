"""MixUpCutMix: per-image MixUp or CutMix, labels soft and summing to 1."""

import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip

N = 16


def constant_images(n=N, size=8):
    # Image i is the constant 10 * (i + 1) and has class i: the pixels of a
    # mixed image tell which partner it was mixed with and by how much.
    values = 10.0 * (np.arange(n) + 1)
    return np.broadcast_to(values[:, None, None, None], (n, size, size, 1)).astype(
        "float32"
    )


def partner_and_lambda(soft, i):
    """The partner p of image i and lambda read back from its soft label."""
    others = [k for k in np.flatnonzero(soft[i] > 1e-6) if k != i]
    if not others:
        return i, 1.0
    return others[0], soft[i, i]


def test_mixup_only_pixels_match_labels():
    x, y = constant_images(), np.arange(N)
    mix = kh.augment.MixUpCutMix(N, mixup_alpha=0.8, cutmix_alpha=0.0, seed=0)
    out, soft = (np.asarray(t) for t in mix(x, y))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    lambdas = []
    for i in range(N):
        p, lam = partner_and_lambda(soft, i)
        # Every pixel is lam * x_i + (1 - lam) * x_p.
        np.testing.assert_allclose(out[i], lam * x[i] + (1 - lam) * x[p], rtol=1e-5)
        lambdas.append(lam)
    assert len(set(np.round(lambdas, 4))) > N // 2  # one lambda per image


def test_cutmix_only_box_area_is_the_label_weight():
    x, y = constant_images(size=16), np.arange(N)
    mix = kh.augment.MixUpCutMix(N, mixup_alpha=0.0, cutmix_alpha=1.0, seed=1)
    out, soft = (np.asarray(t) for t in mix(x, y))
    for i in range(N):
        p, lam = partner_and_lambda(soft, i)
        pasted = out[i, ..., 0] == x[p, 0, 0, 0]
        if p == i:
            continue
        assert set(np.unique(out[i])) <= {x[i, 0, 0, 0], x[p, 0, 0, 0]}
        # Fraction of partner pixels == 1 - lambda, and they form a rectangle.
        assert pasted.mean() == pytest.approx(1 - lam, abs=1e-6)
        rows, cols = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
        if len(rows):
            assert pasted.sum() == len(rows) * len(cols)


def test_switch_mixes_both_kinds_in_one_batch():
    x, y = constant_images(32, 8), np.arange(32)
    mix = kh.augment.MixUpCutMix(32, switch_prob=0.5, seed=2)
    out = np.asarray(mix(x, y)[0])
    distinct = [len(np.unique(o)) for o in out]
    assert distinct.count(1) >= 4 and distinct.count(2) >= 4  # MixUp and CutMix


def test_label_smoothing_and_one_hot_input_and_prob_zero():
    # prob 0: no mixing; smoothing 0.1 over 4 classes: 0.9 * onehot + 0.025.
    x = constant_images(3)
    mix = kh.augment.MixUpCutMix(4, prob=0.0, label_smoothing=0.1, seed=0)
    out, soft = mix(x, np.array([2, 0, 3]))
    np.testing.assert_allclose(np.asarray(soft)[0], [0.025, 0.025, 0.925, 0.025])
    np.testing.assert_array_equal(np.asarray(out), x)
    one_hot = np.eye(N, dtype="float32")
    a = kh.augment.MixUpCutMix(N, seed=5)(constant_images(), np.arange(N))
    b = kh.augment.MixUpCutMix(N, seed=5)(constant_images(), one_hot)
    for t, u in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(t), np.asarray(u))


def test_uint8_images_and_inference():
    x = np.random.default_rng(0).integers(0, 256, (8, 6, 6, 3)).astype("uint8")
    mix = kh.augment.MixUpCutMix(3, seed=1)
    out, soft = mix(x, np.arange(8) % 3)
    assert out.dtype == "uint8" and soft.shape == (8, 3)
    out, soft = mix(x, np.arange(8) % 3, training=False)
    np.testing.assert_array_equal(np.asarray(out), x)


@pytest.mark.tf_only
def test_tf_data_map_on_pairs():
    import tensorflow as tf

    x, y = constant_images(), np.arange(N)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    ds = ds.map(kh.augment.MixUpCutMix(N, label_smoothing=0.1))
    assert ds.element_spec[1].shape.as_list() == [None, N]
    for images, labels in ds:
        assert images.shape == (8, 8, 8, 1)
        np.testing.assert_allclose(np.asarray(labels).sum(1), 1.0, atol=1e-5)


def test_config_round_trip_and_errors():
    assert_config_round_trip(kh.augment.MixUpCutMix(5, 0.4, 0.0, 0.3, 0.7, 0.1, seed=2))
    with pytest.raises(ValueError, match=r"Received: num_classes=1$"):
        kh.augment.MixUpCutMix(1)
    with pytest.raises(ValueError, match=r"Received: mixup_alpha=-1$"):
        kh.augment.MixUpCutMix(3, mixup_alpha=-1)
    with pytest.raises(ValueError, match=r"Received: switch_prob=2$"):
        kh.augment.MixUpCutMix(3, switch_prob=2)
    with pytest.raises(ValueError, match=r"Received: label_smoothing=1.0$"):
        kh.augment.MixUpCutMix(3, label_smoothing=1.0)


def test_fixed_draws_by_hand():
    # Image 0: MixUp with partner 1, weight 0.3. Image 1: CutMix from partner
    # 0, box rows 1-2, columns 2-4 (6 of 24 pixels: weight 1 - 6/24 = 0.75).
    # Image 2: not mixed (weight 1). Image 3: MixUp with itself.
    x = np.random.default_rng(0).uniform(0, 255, (4, 4, 6, 1)).astype("float32")
    layer = kh.augment.MixUpCutMix(3)
    draws = {
        "partners": np.array([1, 0, 3, 3], "int32"),
        "cutmix": np.array([False, True, False, False]),
        "weights": np.array([0.3, 0.75, 1.0, 0.6], "float32"),
        "boxes": np.array([[0, 0, 0, 0], [1, 2, 3, 5], [0, 0, 4, 6], [0] * 4]),
    }
    draws["boxes"] = draws["boxes"].astype("float32")
    out = np.asarray(layer.transform_images(x, draws))
    np.testing.assert_allclose(out[0], 0.3 * x[0] + 0.7 * x[1], rtol=1e-6)
    pasted = x[1].copy()
    pasted[1:3, 2:5] = x[0, 1:3, 2:5]
    np.testing.assert_array_equal(out[1], pasted)
    np.testing.assert_array_equal(out[2], x[2])
    np.testing.assert_allclose(out[3], x[3], rtol=1e-6)
    labels = np.asarray(layer.transform_labels(np.array([0, 1, 2, 0]), draws))
    expected = [[0.3, 0.7, 0], [0.25, 0.75, 0], [0, 0, 1], [1, 0, 0]]
    np.testing.assert_allclose(labels, expected, atol=1e-6)


def test_draws_cutmix_weights_are_the_box_area():
    layer = kh.augment.MixUpCutMix(4, prob=0.8, seed=3)
    x = np.zeros((64, 10, 12, 1), "float32")
    draws = layer.get_random_transformation({"images": x, "labels": np.zeros(64)})
    draws = {k: np.asarray(v) for k, v in draws.items()}
    assert sorted(draws["partners"]) == list(range(64))  # a permutation
    top, left, bottom, right = draws["boxes"].T
    area = (bottom - top) * (right - left) / 120
    cut = draws["cutmix"]
    np.testing.assert_allclose(draws["weights"][cut], 1 - area[cut], atol=1e-6)
    unmixed = draws["weights"] == 1
    assert 5 <= unmixed.sum() <= 25 and cut.sum() >= 15  # prob 0.8, switch 0.5
    with pytest.raises(ValueError, match=r"Received: labels=None$"):
        layer.get_random_transformation(x)
