import keras
import numpy as np
import pytest

from keras_harden.fusion import StochasticWeightAveraging, recalibrate_batchnorm

X = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
Y = X @ np.array([[1.0], [-2.0], [0.5]], "float32")


class Snapshots(keras.callbacks.Callback):
    """Records the weights at every epoch end (before SWA swaps them)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def linear(batchnorm=False):
    layers = [keras.Input((3,))]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.mark.parametrize(
    "start_epoch, period, averaged", [(1, 1, [1, 2, 3]), (0, 2, [0, 2]), (3, 5, [3])]
)
def test_final_weights_are_the_mean_of_the_averaged_epochs(
    start_epoch, period, averaged
):
    keras.utils.set_random_seed(0)
    model = linear()
    snapshots = Snapshots()
    swa = StochasticWeightAveraging(start_epoch=start_epoch, period=period)
    model.fit(X, Y, epochs=4, batch_size=8, verbose=0, callbacks=[snapshots, swa])
    assert swa.averaged_epochs == averaged
    # e.g. start 1, period 1 over 4 epochs: mean of the epoch-1, -2, -3 weights
    for i, weight in enumerate(model.get_weights()):
        expected = np.mean([snapshots.weights[e][i] for e in averaged], axis=0)
        np.testing.assert_allclose(weight, expected, rtol=1e-6)


def test_batchnorm_recalibrated_at_the_end():
    keras.utils.set_random_seed(0)
    model = linear(batchnorm=True)
    swa = StochasticWeightAveraging(start_epoch=1, recalibrate=X)
    model.fit(X, Y, epochs=3, batch_size=8, verbose=0, callbacks=[swa])
    bn = model.layers[0]
    # the first layer sees X itself: its statistics are X's mean and variance
    np.testing.assert_allclose(bn.moving_mean.numpy(), X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), X.var(0), rtol=1e-5)
    other = linear(batchnorm=True)
    with pytest.warns(UserWarning, match="batch-norm"):
        other.fit(X, Y, epochs=2, verbose=0, callbacks=[StochasticWeightAveraging()])
    stale = other.layers[0].moving_mean.numpy().copy()
    recalibrate_batchnorm(other, X)
    assert not np.allclose(stale, other.layers[0].moving_mean.numpy())


def test_warns_when_training_ends_before_start():
    model = linear()
    before = [w.copy() for w in model.get_weights()]
    swa = StochasticWeightAveraging(start_epoch=5)
    with pytest.warns(UserWarning, match="start_epoch=5"):
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[swa])
    assert swa.averaged_epochs == []
    assert not np.allclose(before[0], model.get_weights()[0])  # trained, not swapped


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_epoch": -1}, "start_epoch=-1"),
        ({"period": 0}, "period=0"),
        ({"recalibrate_steps": 0}, "recalibrate_steps=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StochasticWeightAveraging(**kwargs)
