import keras
import numpy as np
import pytest

from keras_harden.fusion import recalibrate_batchnorm
from tests.fusion.conftest import weights_of

X = np.array(
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 9.0], [6.0, 7.0, 1.0]], "float32"
)


def bn_only(**kwargs):
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(**kwargs)]
    )


def test_pooled_statistics_by_hand():
    model = bn_only()
    bn = model.layers[0]
    recalibrate_batchnorm(model, X, batch_size=2)
    # column 0 is 0, 2, 4, 6: mean 3, biased variance (9 + 1 + 1 + 9) / 4 = 5.
    # In batches of 2 the batch variances are 1 and 1: their mean (1) would miss
    # the spread of the batch means (1 and 5); pooling E[x^2] - E[x]^2 does not.
    # column 1 is column 0 + 1: mean 4, variance 5.
    # column 2 is 2, 4, 9, 1: mean 4, variance (4 + 0 + 25 + 9) / 4 = 9.5.
    np.testing.assert_allclose(bn.moving_mean.numpy(), [3.0, 4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [5.0, 5.0, 9.5], rtol=1e-6)
    assert bn.momentum == 0.99  # restored


def test_steps_limit_batches():
    model = bn_only()
    recalibrate_batchnorm(model, X, steps=1, batch_size=2)
    # only rows 0 and 1: means [1, 2, 3], variances [1, 1, 1]
    np.testing.assert_allclose(model.layers[0].moving_mean.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(model.layers[0].moving_variance.numpy(), [1.0] * 3)


def test_deeper_frozen_layer_against_numpy_and_other_weights_untouched():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="relu")(inputs)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False  # frozen layers are recalibrated too, stay frozen
    h = frozen(h)
    outputs = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, outputs)
    before = {
        v.path: w for v, w in zip(model.variables, weights_of(model), strict=True)
    }
    recalibrate_batchnorm(model, (X, np.zeros(4)))  # labels are ignored
    assert frozen.trainable is False
    for variable, value in zip(model.variables, weights_of(model), strict=True):
        if "moving" not in variable.path:
            np.testing.assert_array_equal(value, before[variable.path])
    kernel, bias = model.layers[1].get_weights()
    pre = np.maximum(X @ kernel + bias, 0.0)  # what the layer sees, by hand
    np.testing.assert_allclose(frozen.moving_mean.numpy(), pre.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        frozen.moving_variance.numpy(), pre.var(0), rtol=1e-5, atol=1e-7
    )


def test_dropout_seed_state_is_restored():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dropout(0.5),
            keras.layers.BatchNormalization(),
        ]
    )
    seeds = [v for v in model.variables if "seed" in v.path]
    assert seeds  # the dropout layer's seed-generator state
    before = weights_of(model)
    recalibrate_batchnorm(model, X, batch_size=2)
    after = weights_of(model)
    for variable, a, b in zip(model.variables, before, after, strict=True):
        if "moving" not in variable.path:
            np.testing.assert_array_equal(a, b)
    # dropout (rate 0.5, kept values doubled) was on: statistics differ from X's
    assert not np.allclose(model.layers[1].moving_mean.numpy(), X.mean(0))


def test_conv_statistics_reduce_batch_and_space():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 4, 2)).astype("float32") * [1.0, 3.0] + [0.5, -2.0]
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), keras.layers.BatchNormalization()]
    )
    recalibrate_batchnorm(model, x, batch_size=4)  # batches of 4 and 2
    bn = model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var((0, 1, 2)), rtol=1e-5)


@pytest.mark.tf_only
def test_dataset_equals_arrays():
    import tensorflow as tf

    a, b = bn_only(), bn_only()
    recalibrate_batchnorm(a, X, batch_size=3)
    recalibrate_batchnorm(b, tf.data.Dataset.from_tensor_slices((X, X)).batch(3))
    np.testing.assert_allclose(
        a.layers[0].moving_variance.numpy(), b.layers[0].moving_variance.numpy()
    )


def test_model_without_batchnorm_is_returned_unchanged():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = weights_of(model)
    assert recalibrate_batchnorm(model, X) is model
    for a, b in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"data": X[:0]}, "at least one example"),
        ({"data": None}, "data=None"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"data": X, **kwargs}
    with pytest.raises(ValueError, match=message):
        recalibrate_batchnorm(bn_only(), **kwargs)
