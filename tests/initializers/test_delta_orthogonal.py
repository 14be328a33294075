import keras
import numpy as np
import pytest

from keras_harden.initializers import DeltaOrthogonal
from tests.toolkit import assert_config_round_trip, assert_save_load_identical


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))


@pytest.mark.parametrize(
    "shape",
    [(3, 4, 8), (3, 3, 4, 8), (3, 3, 3, 2, 4), (5, 5, 6, 6)],
    ids=["conv1d", "conv2d", "conv3d", "conv2d_square_5x5"],
)
def test_centre_tap_has_orthonormal_rows_and_other_taps_are_zero(shape):
    w = _np(DeltaOrthogonal(gain=2.0, seed=1)(shape))
    centre = tuple((k - 1) // 2 for k in shape[:-2])
    c = w[centre]
    # Rows of the (in, out) centre matrix are orthonormal times gain:
    # W W^T = gain^2 I = 4 I (in x in).
    np.testing.assert_allclose(c @ c.T, 4.0 * np.eye(shape[-2]), atol=1e-5)
    rest = w.copy()
    rest[centre] = 0.0
    assert np.all(rest == 0.0)


def test_even_kernel_uses_the_tap_same_padding_aligns():
    # k = 2 -> centre tap (2 - 1) // 2 = 0.
    w = _np(DeltaOrthogonal(seed=0)((2, 2, 3, 3)))
    assert np.abs(w[0, 0]).sum() > 0
    assert np.all(w[1] == 0) and np.all(w[0, 1] == 0)


def test_dense_kernel_falls_back_to_plain_orthogonal():
    tall = _np(DeltaOrthogonal(gain=3.0, seed=0)((7, 3)))  # columns orthonormal
    np.testing.assert_allclose(tall.T @ tall, 9.0 * np.eye(3), atol=1e-5)
    wide = _np(DeltaOrthogonal(seed=0)((3, 7)))  # rows orthonormal
    np.testing.assert_allclose(wide @ wide.T, np.eye(3), atol=1e-5)


def test_same_padding_conv_preserves_every_pixels_channel_norm():
    # With in == out the centre matrix Q is orthogonal, so a "same" conv maps
    # each pixel's channel vector v to v Q: ||v Q|| = ||v||.
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 5)).astype("float32")
    conv = keras.layers.Conv2D(
        5,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=DeltaOrthogonal(seed=3),
    )
    y = _np(conv(x))
    np.testing.assert_allclose(
        np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5
    )


def test_shrinking_conv_kernel_is_refused_clearly():
    with pytest.raises(
        ValueError, match=r"in_channels <= out_channels.*Received: shape=\(3, 3, 8, 4\)"
    ):
        DeltaOrthogonal(seed=0)((3, 3, 8, 4))
    with pytest.raises(ValueError, match=r"rank >= 2.*Received: shape=\(4,\)"):
        DeltaOrthogonal(seed=0)((4,))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gain": 0.0}, "Received: gain=0.0"),
        ({"gain": "big"}, "Received: gain='big'"),
        ({"seed": 1.5}, "Received: seed=1.5"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeltaOrthogonal(**kwargs)


def test_int_seed_repeats_seed_generator_and_none_advance():
    a = DeltaOrthogonal(seed=7)
    np.testing.assert_array_equal(_np(a((4, 4))), _np(a((4, 4))))
    np.testing.assert_array_equal(_np(a((4, 4))), _np(DeltaOrthogonal(seed=7)((4, 4))))
    g = DeltaOrthogonal(seed=keras.random.SeedGenerator(7))
    assert not np.allclose(_np(g((4, 4))), _np(g((4, 4))))
    u = DeltaOrthogonal()
    assert not np.allclose(_np(u((4, 4))), _np(u((4, 4))))
    keras.utils.set_random_seed(5)
    first = _np(u((4, 4)))
    keras.utils.set_random_seed(5)
    np.testing.assert_array_equal(first, _np(u((4, 4))))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip("JAX runs without x64 here: it makes float64 arrays float32")
    w = DeltaOrthogonal(seed=0)((3, 3, 4, 6), dtype=dtype)
    assert keras.backend.standardize_dtype(w.dtype) == dtype
    c = _np(w)[1, 1]
    np.testing.assert_allclose(c @ c.T, np.eye(4), atol=2e-2)


def test_config_round_trip_and_keras_file(tmp_path):
    assert_config_round_trip(DeltaOrthogonal(gain=1.5, seed=3))
    assert DeltaOrthogonal(gain=1.5, seed=3).get_config() == {"gain": 1.5, "seed": 3}
    revived = assert_config_round_trip(
        DeltaOrthogonal(seed=keras.random.SeedGenerator(4))
    )
    assert isinstance(revived.seed, keras.random.SeedGenerator)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(
        4, 3, padding="same", kernel_initializer=DeltaOrthogonal(seed=1)
    )(inputs)
    outputs = keras.layers.Dense(
        3, kernel_initializer=DeltaOrthogonal(gain=2.0, seed=2)
    )(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs, name="delta_orthogonal_model")
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    loaded = assert_save_load_identical(model, x, tmp_path)
    init = loaded.layers[1].kernel_initializer
    assert isinstance(init, DeltaOrthogonal) and init.get_config() == {
        "gain": 1.0,
        "seed": 1,
    }
