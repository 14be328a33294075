import keras
import numpy as np
import pytest

from keras_harden.initializers import ZerO
from tests.toolkit import assert_config_round_trip, assert_save_load_identical


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))


def test_identity_where_shapes_are_equal_and_deterministic():
    np.testing.assert_array_equal(_np(ZerO()((5, 5))), np.eye(5))
    np.testing.assert_array_equal(_np(ZerO()((5, 5))), _np(ZerO()((5, 5))))


def test_partial_identity_where_the_layer_shrinks():
    # in = 6, out = 3: pass the first 3 inputs through.
    np.testing.assert_array_equal(_np(ZerO()((6, 3))), np.eye(6, 3))


def test_hadamard_where_the_layer_expands():
    # in = 2, out = 3: m = ceil(log2 3) = 2, c = 2 ** (-(2 - 1) / 2) = 1 / sqrt(2).
    # H_2 (4 x 4, Sylvester) rows: [1, 1, 1, 1], [1, -1, 1, -1], ...; the kernel
    # is c * H[:2, :3].
    expected = np.array([[1, 1, 1], [1, -1, 1]]) / np.sqrt(2.0)
    np.testing.assert_allclose(_np(ZerO()((2, 3))), expected, rtol=1e-6)
    # in = 3, out = 5: m = 3, c = 2 ** -1 = 0.5; H_3 rows 0..2, columns 0..4:
    # [1 1 1 1 1], [1 -1 1 -1 1], [1 1 -1 -1 1].
    expected = 0.5 * np.array(
        [[1, 1, 1, 1, 1], [1, -1, 1, -1, 1], [1, 1, -1, -1, 1]], dtype="float32"
    )
    np.testing.assert_array_equal(_np(ZerO()((3, 5))), expected)


def test_expanding_kernel_is_injective_with_orthogonal_rows():
    # in = 4, out = 16: m = 4, c = 2 ** (-3 / 2). Rows of H are orthogonal with
    # squared norm 16, so W W^T = c^2 * 16 * I = 2 * I: no input is lost and,
    # unlike a partial identity, every output unit receives signal.
    w = _np(ZerO()((4, 16)))
    np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(4), atol=1e-6)
    assert np.all(np.abs(w).sum(axis=0) > 0)


def test_conv_same_padding_with_equal_channels_is_the_identity_map():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    for k in (1, 3, 5):
        conv = keras.layers.Conv2D(3, k, padding="same", kernel_initializer=ZerO())
        np.testing.assert_allclose(_np(conv(x)), x, atol=1e-6)
    w = _np(ZerO()((3, 3, 2, 2)))
    assert np.all(w[0] == 0) and np.all(w[2] == 0)
    np.testing.assert_array_equal(w[1, 1], np.eye(2))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes(dtype):
    w = ZerO()((3, 5), dtype=dtype)
    assert keras.backend.standardize_dtype(w.dtype) == dtype
    np.testing.assert_array_equal(_np(w), _np(ZerO()((3, 5))))  # 0.5 and 1 are exact


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"Received: shape=\(3,\)"):
        ZerO()((3,))
    with pytest.raises(ValueError, match="Received: dtype=int32"):
        ZerO()((3, 3), dtype="int32")


def test_config_round_trip_and_keras_file(tmp_path):
    assert ZerO().get_config() == {}
    assert_config_round_trip(ZerO())
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", kernel_initializer=ZerO()),
            keras.layers.Dense(4, kernel_initializer=ZerO()),
        ],
        name="zero_model",
    )
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    loaded = assert_save_load_identical(model, x, tmp_path)
    assert isinstance(loaded.layers[0].kernel_initializer, ZerO)
