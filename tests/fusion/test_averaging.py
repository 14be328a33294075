import keras
import numpy as np
import pytest

from keras_harden.fusion import average_weights
from tests.fusion.conftest import (
    assert_same_weights,
    compile_,
    digits_net,
    weights_of,
)


def tiny(kernel, bias):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.set_weights([np.array(kernel, "float32"), np.array(bias, "float32")])
    return model


def test_weighted_mean_by_hand():
    a = tiny([[1.0], [2.0]], [0.0])
    b = tiny([[3.0], [6.0]], [4.0])
    # weights [3, 1] -> coefficients 0.75, 0.25:
    # kernel 0.75*[1, 2] + 0.25*[3, 6] = [1.5, 3.0]; bias 0.75*0 + 0.25*4 = 1.0
    soup = average_weights([a, b], weights=[3, 1])
    np.testing.assert_allclose(soup.layers[0].kernel.numpy().ravel(), [1.5, 3.0])
    np.testing.assert_allclose(soup.layers[0].bias.numpy(), [1.0])
    # uniform: kernel [2, 4], bias 2; output for x = [1, 1] is 2 + 4 + 2 = 8
    uniform = average_weights([a, b])
    np.testing.assert_allclose(uniform.predict(np.ones((1, 2)), verbose=0), [[8.0]])


def test_equals_numpy_mean_and_inputs_untouched(fine_tunes):
    tunes = fine_tunes.tunes
    before = [weights_of(m) for m in tunes]
    with pytest.warns(UserWarning, match="batch-norm"):
        soup = average_weights(tunes)
    assert all(soup is not m for m in tunes)
    for model, saved in zip(tunes, before, strict=True):
        assert_same_weights(saved, model)
    bn = [layer for layer in soup.layers if "batch_normalization" in layer.name][0]
    stats = {id(bn.moving_mean), id(bn.moving_variance)}
    for i, variable in enumerate(soup.weights):
        values = [keras.ops.convert_to_numpy(m.weights[i].value) for m in tunes]
        if id(variable) in stats:
            # not averaged: left as in the first model (with the warning above)
            expected = values[0]
        else:
            expected = np.mean(values, axis=0)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert soup.compiled  # compiled like the first model
    assert soup.evaluate(fine_tunes.x_val, fine_tunes.y_val, verbose=0)[1] > 0.5


def test_batchnorm_statistics_recomputed_from_data(fine_tunes):
    tunes = fine_tunes.tunes
    x = fine_tunes.x_fit[:256]
    soup = average_weights(tunes, recalibrate=x)
    # By hand: the batch-norm input is relu(conv(x / 255)) with the averaged
    # conv weights; its per-channel mean and biased variance over all of x.
    conv = [layer for layer in soup.layers if isinstance(layer, keras.layers.Conv2D)][0]
    features = keras.Model(soup.inputs, conv.output).predict(x, verbose=0)
    bn = [layer for layer in soup.layers if "batch_normalization" in layer.name][0]
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), features.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )


@pytest.mark.filterwarnings("ignore:average_weights. models")  # fresh weights
def test_sequential_and_nested_models():
    def nested():
        inner = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(2)], name="inner"
        )
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))

    models = [nested() for _ in range(3)]
    soup = average_weights(models, weights=[1, 0, 1])
    for i, variable in enumerate(soup.weights):
        expected = (models[0].weights[i].numpy() + models[2].weights[i].numpy()) / 2
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


def test_no_batchnorm_no_warning(recwarn):
    average_weights([digits_net(batchnorm=False), digits_net(batchnorm=False)])
    assert not [w for w in recwarn if "batch-norm" in str(w.message)]


@pytest.mark.parametrize(
    "weights", [[1], [1, -1], [0, 0], [1, float("nan")], ["a", 1], 3]
)
def test_bad_weights(weights):
    with pytest.raises(ValueError, match=r"Received: weights="):
        average_weights([tiny([[1], [1]], [0]), tiny([[1], [1]], [0])], weights=weights)


def test_incompatible_models():
    with pytest.raises(ValueError, match="not compatible"):
        average_weights([digits_net(), digits_net(batchnorm=False)])


def test_models_from_different_starts_are_warned_about(fine_tunes, recwarn):
    calibration = fine_tunes.x_fit[:128]
    average_weights([fine_tunes.start, *fine_tunes.tunes], recalibrate=calibration)
    assert not [w for w in recwarn if "share a start" in str(w.message)]
    strangers = []
    for seed in (5, 6):  # one architecture, trained from two random starts
        keras.utils.set_random_seed(seed)
        model = compile_(digits_net())
        model.fit(fine_tunes.x_fit, fine_tunes.y_fit, epochs=1, verbose=0)
        strangers.append(model)
    models = [fine_tunes.tunes[0], *strangers]
    with pytest.warns(UserWarning, match="models 0 and 2 do not seem to share a"):
        average_weights(models, weights=[1, 0, 1], recalibrate=calibration)
    with pytest.warns(UserWarning, match=r"kh\.fusion\.ensemble\(models\)"):
        average_weights(strangers, recalibrate=calibration)
