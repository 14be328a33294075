import keras
import numpy as np
import pytest

from keras_harden.initializers import DepthScaled, zero_init_layers
from tests.toolkit import assert_config_round_trip, assert_save_load_identical


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))


@pytest.mark.parametrize(
    "num_blocks, layers_per_block, factor",
    [
        (16, 2, 0.25),  # 16 ** (-1 / 2)
        (8, 3, 0.5946035575013605),  # 8 ** (-1 / 4) = 2 ** (-3 / 4)
        (1, 2, 1.0),  # a single branch is not scaled
        (27, 4, 1 / 3**0.5),  # 27 ** (-1 / 6) = 3 ** (-1 / 2)
    ],
)
def test_factor_is_the_fixup_rule(num_blocks, layers_per_block, factor):
    init = DepthScaled(
        "he_normal", num_blocks=num_blocks, layers_per_block=layers_per_block
    )
    assert init.factor == pytest.approx(factor, rel=1e-12)


def test_scales_the_base_draw_by_exactly_the_factor():
    base = keras.initializers.HeNormal(seed=3)
    scaled = DepthScaled(keras.initializers.HeNormal(seed=3), num_blocks=16)
    np.testing.assert_allclose(
        _np(scaled((32, 16))), 0.25 * _np(base((32, 16))), rtol=1e-6
    )


def test_unseeded_base_draws_anew_each_call_int_seed_repeats():
    unseeded = DepthScaled("he_normal", num_blocks=4)
    assert not np.allclose(_np(unseeded((8, 8))), _np(unseeded((8, 8))))
    seeded = DepthScaled(keras.initializers.HeNormal(seed=1), num_blocks=4)
    np.testing.assert_array_equal(_np(seeded((8, 8))), _np(seeded((8, 8))))
    generator = DepthScaled(
        keras.initializers.HeNormal(seed=keras.random.SeedGenerator(1)), 4
    )
    assert not np.allclose(_np(generator((8, 8))), _np(generator((8, 8))))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes(dtype):
    w = DepthScaled(keras.initializers.HeNormal(seed=0), num_blocks=4)(
        (3, 3, 4, 4), dtype=dtype
    )
    assert keras.backend.standardize_dtype(w.dtype) == dtype


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_blocks": 0}, "Received: num_blocks=0"),
        ({"num_blocks": 2.5}, "Received: num_blocks=2.5"),
        ({"num_blocks": 4, "layers_per_block": 1}, "Received: layers_per_block=1"),
        (
            {"initializer": "no_such_init", "num_blocks": 4},
            "Received: initializer='no_such_init'",
        ),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DepthScaled(**kwargs)


def test_zero_init_layers_zeroes_kernels_only():
    dense = keras.layers.Dense(3, bias_initializer="ones")
    dense.build((None, 4))
    sep = keras.layers.SeparableConv2D(4, 3)
    sep.build((None, 6, 6, 2))
    assert zero_init_layers([dense, sep]) == [
        (dense.name, "kernel"),
        (sep.name, "depthwise_kernel"),
        (sep.name, "pointwise_kernel"),
    ]
    assert np.all(_np(dense.kernel) == 0) and np.all(_np(dense.bias) == 1)
    assert np.all(_np(sep.depthwise_kernel) == 0) and np.all(
        _np(sep.pointwise_kernel) == 0
    )
    with pytest.raises(ValueError, match="Received: layers containing"):
        zero_init_layers([keras.layers.ReLU()])


def test_config_round_trip_and_keras_file(tmp_path):
    init = DepthScaled(
        keras.initializers.HeNormal(seed=2), num_blocks=9, layers_per_block=3
    )
    revived = assert_config_round_trip(init)
    assert set(init.get_config()) == {"initializer", "num_blocks", "layers_per_block"}
    np.testing.assert_array_equal(_np(revived((5, 5))), _np(init((5, 5))))
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", kernel_initializer=init)(inputs)
    outputs = keras.layers.Add()(
        [inputs, keras.layers.Dense(6, kernel_initializer="zeros")(h)]
    )
    model = keras.Model(inputs, outputs, name="depth_scaled_model")
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(_np(model(x)), x, atol=1e-6)  # zero branch: identity
    loaded = assert_save_load_identical(model, x, tmp_path)
    assert isinstance(loaded.layers[1].kernel_initializer, DepthScaled)
