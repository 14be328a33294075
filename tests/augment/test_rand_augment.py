"""RandAugment: per-image operations, seeds, ranges, dtypes, shapes, config."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.augment import ops as A
from tests.toolkit import assert_config_round_trip

# Operations whose output identifies them on a ramp image (no two coincide).
DISTINCT = ["identity", "brightness", "solarize", "posterize", "auto_contrast"]


def ramp(n=32, size=8):
    x = np.linspace(0.2, 0.8, size * size, dtype="float32").reshape(1, size, size, 1)
    return np.repeat(x, n, axis=0)


def test_identical_images_get_different_operations():
    # Fixed magnitude, no spread: any difference between outputs comes from the
    # operation chosen (and the sign of brightness), so identify each image's op.
    x = ramp()
    layer = kh.augment.RandAugment(
        num_ops=1, magnitude=0.6, value_range=(0, 1), operations=DISTINCT, seed=3
    )
    out = np.asarray(layer(x))
    candidates = {}
    for name in DISTINCT:
        for sign in (1.0, -1.0):
            candidates[(name, sign)] = np.asarray(
                A.TRANSFORMS[name](x[:1], np.array([0.6 * sign], "float32"))
            )
    found = []
    for image in out:
        matches = [
            k for k, c in candidates.items() if np.allclose(image, c[0], atol=1e-5)
        ]
        assert matches, "every output is one of the candidate operations"
        found.append(matches[0][0])
    assert len(set(found)) >= 4, found


def test_int_seed_reproducible_and_calls_differ():
    x = np.random.default_rng(0).uniform(0, 255, (8, 12, 12, 3)).astype("float32")
    a = kh.augment.RandAugment(seed=7)
    b = kh.augment.RandAugment(seed=7)
    first_a, first_b = np.asarray(a(x)), np.asarray(b(x))
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(np.asarray(a(x)), first_a)
    unseeded = [np.asarray(kh.augment.RandAugment()(x)) for _ in range(2)]
    assert not np.array_equal(*unseeded)


@pytest.mark.tf_only
def test_tf_data_batches_and_epochs_differ_and_shapes_stay_static():
    import tensorflow as tf

    x = np.random.default_rng(1).uniform(0, 255, (8, 12, 12, 3)).astype("float32")
    layer = kh.augment.RandAugment(magnitude=0.8)
    ds = tf.data.Dataset.from_tensors(x).repeat(2).map(layer)
    assert ds.element_spec.shape.as_list() == [8, 12, 12, 3]
    first, second = [np.asarray(b) for b in ds]
    assert not np.array_equal(first, second)
    again = np.asarray(next(iter(ds)))
    assert not np.array_equal(first, again)
    dynamic = tf.data.Dataset.from_tensor_slices(x).batch(3).map(layer)
    assert dynamic.element_spec.shape.as_list() == [None, 12, 12, 3]


@pytest.mark.parametrize(
    "dtype, value_range",
    [("uint8", (0, 255)), ("float32", (-1, 1)), ("float16", (0, 1))],
)
def test_range_and_dtype_kept(dtype, value_range):
    rng = np.random.default_rng(2)
    x = rng.uniform(*value_range, (16, 10, 10, 3)).astype(dtype)
    out = kh.augment.RandAugment(
        num_ops=3, magnitude=1.0, value_range=value_range, seed=0
    )(x)
    assert out.dtype == dtype and out.shape == x.shape
    out = np.asarray(out, "float32")
    assert out.min() >= value_range[0] and out.max() <= value_range[1]


def test_unbatched_image_and_magnitude_spread():
    x = np.full((10, 10, 3), 100.0, "float32")
    layer = kh.augment.RandAugment(magnitude=0.5, magnitude_stddev=0.3, seed=1)
    assert layer(x).shape == (10, 10, 3)


def test_inactive_in_predict_active_in_fit():
    x = np.random.default_rng(3).uniform(0, 255, (8, 8, 8, 1)).astype("float32")
    layer = kh.augment.RandAugment(magnitude=1.0, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    model = keras.Sequential([keras.Input((8, 8, 1)), layer, keras.layers.Flatten()])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x.reshape(8, -1))
    assert not np.array_equal(np.asarray(model(x, training=True)), x.reshape(8, -1))


def test_config_round_trip_and_errors():
    layer = kh.augment.RandAugment(3, 0.7, 0.1, (0, 1), ["rotate", "equalize"], seed=4)
    assert_config_round_trip(layer)
    with pytest.raises(ValueError, match=r"Received: num_ops=0$"):
        kh.augment.RandAugment(num_ops=0)
    with pytest.raises(ValueError, match=r"Received: magnitude=1.5$"):
        kh.augment.RandAugment(magnitude=1.5)
    with pytest.raises(ValueError, match=r"Received: magnitude_stddev=-1$"):
        kh.augment.RandAugment(magnitude_stddev=-1)
    with pytest.raises(ValueError, match=r"Received: value_range=\(1, 0\)$"):
        kh.augment.RandAugment(value_range=(1, 0))
    with pytest.raises(ValueError, match=r"Received: operations=\['blur'\]$"):
        kh.augment.RandAugment(operations=["blur"])
    with pytest.raises(ValueError, match=r"Received: seed='a'$"):
        kh.augment.RandAugment(seed="a")


# Operations driven by the magnitude (all but auto-contrast and equalize): at
# strength 0 each gives its input back (posterize keeps all 8 bits, so exactly
# only for 8-bit data).
MAGNITUDE_OPS = [n for n in A.TRANSFORMS if n not in ("auto_contrast", "equalize")]


def test_fixed_draws_apply_each_images_operations_in_order():
    # Image i goes through names[op[i, 0]] then names[op[i, 1]] at its own
    # strengths; the reference applies the single transforms (checked on
    # hand-worked values in test_ops.py) image by image.
    names = ["rotate", "solarize", "brightness", "equalize"]
    layer = kh.augment.RandAugment(num_ops=2, value_range=(0, 1), operations=names)
    x = np.random.default_rng(4).uniform(size=(4, 10, 10, 3)).astype("float32")
    draws = {
        "operations": np.array([[0, 1], [2, 3], [3, 0], [1, 2]], "int32"),
        "strengths": np.array(
            [[0.5, -0.3], [0.8, 0.0], [0.0, -1.0], [0.6, 0.2]], "float32"
        ),
    }
    out = np.asarray(layer.transform_images(x, draws))
    for i in range(4):
        expected = x[i : i + 1]
        steps = zip(draws["operations"][i], draws["strengths"][i], strict=True)
        for op, strength in steps:
            expected = A.TRANSFORMS[names[op]](expected, np.array([strength]))
        np.testing.assert_allclose(out[i], np.asarray(expected)[0], atol=1e-5)


def test_draws_pick_operations_and_signed_magnitudes():
    layer = kh.augment.RandAugment(num_ops=3, magnitude=0.4, seed=0)
    x = np.zeros((64, 4, 4, 3), "float32")
    draws = {k: np.asarray(v) for k, v in layer.get_random_transformation(x).items()}
    names = np.array(list(A.TRANSFORMS))
    assert draws["operations"].shape == (64, 3)
    assert set(np.unique(draws["operations"])) == set(range(len(names)))
    np.testing.assert_allclose(np.abs(draws["strengths"]), 0.4)
    signed = np.isin(names[draws["operations"]], sorted(A.SIGNED))
    assert (draws["strengths"][~signed] > 0).all()
    assert (draws["strengths"][signed] < 0).any() and (
        draws["strengths"][signed] > 0
    ).any()
    again = layer.get_random_transformation(x, seed=5)
    same = layer.get_random_transformation(x, seed=5)
    for key in draws:  # an int seed fixes the draws
        np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(same[key]))


def test_magnitude_zero_gives_the_input_back_exactly():
    x = np.random.default_rng(5).integers(0, 256, (16, 10, 10, 3)).astype("uint8")
    layer = kh.augment.RandAugment(
        num_ops=3, magnitude=0.0, operations=MAGNITUDE_OPS, seed=0
    )
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    xf = x.astype("float32") / 255.0
    floats = [name for name in MAGNITUDE_OPS if name != "posterize"]
    layer = kh.augment.RandAugment(3, 0.0, value_range=(0, 1), operations=floats)
    np.testing.assert_array_equal(np.asarray(layer(xf)), xf)
