import re

import keras
import numpy as np
import pytest

from keras_harden.fusion import check_compatible


def dense_net(units=3, dtype="float32"):
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(units, dtype=dtype)], name=f"net{units}"
    )


def test_same_architecture_different_names_is_compatible():
    # Two models from one builder get different layer names (dense, dense_1):
    # still one architecture. Dense(4 -> 3) holds 2 variables: kernel and bias.
    a, b = dense_net(), dense_net()
    assert a.layers[0].name != b.layers[0].name
    assert check_compatible([a, b]) == 2


def test_shape_mismatch_names_layer_path_and_both_shapes():
    a, b = dense_net(3), dense_net(5)
    with pytest.raises(ValueError) as error:
        check_compatible([a, b])
    message = str(error.value)
    assert f"'{a.layers[0].name}/kernel'" in message
    assert re.search(r"shapes \(4, 3\) and \(4, 5\)", message)
    assert "Models 0 and 1" in message


def test_missing_layer_and_dtype_mismatch():
    deeper = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match=r"shapes none and \(3, 2\)"):
        check_compatible([dense_net(), deeper])
    with pytest.raises(ValueError, match="float64"):
        check_compatible([dense_net(), dense_net(dtype="float64")])


def test_nested_model_paths():
    def outer():
        inner = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3)], name="inner"
        )
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))

    a, b = outer(), outer()
    assert check_compatible([a, b, outer()]) == 4
    b.get_layer("top").set_weights([np.zeros((3, 2)), np.zeros(2)])  # values differ
    assert check_compatible([a, b]) == 4
    wide = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6)], name="inner")
    inputs = keras.Input((4,))
    c = keras.Model(inputs, keras.layers.Dense(2, name="top")(wide(inputs)))
    with pytest.raises(
        ValueError, match=r"'inner/dense_\d+/kernel'.*\(4, 3\) and \(4, 6\)"
    ):
        check_compatible([a, c])


@pytest.mark.parametrize("bad", [[], [1, 2], "model", 3])
def test_bad_models_argument(bad):
    with pytest.raises(ValueError, match="Received: models="):
        check_compatible(bad)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="must be built"):
        check_compatible([keras.Sequential([keras.layers.Dense(2)])])
