"""keras_harden._gradients on hand-worked values, on the session's backend
(the suite runs on TensorFlow and again with KERAS_BACKEND=jax)."""

import math

import keras
import numpy as np
import pytest

from keras_harden._gradients import loss_and_gradients, norm

X = np.array([[1.0], [2.0], [3.0]], "float32")
Y = np.array([[1.0], [0.0], [1.0]], "float32")


def linear(w=0.5, **kwargs):
    """`y = x * w`: one Dense unit without bias, its kernel set to `w`."""
    dense = keras.layers.Dense(
        1, use_bias=False, kernel_initializer=keras.initializers.Constant(w), **kwargs
    )
    return keras.Sequential([keras.Input((1,)), dense])


def test_norm_of_arrays_taken_as_one_vector():
    assert norm([[3.0], [4.0]]) == 5.0  # sqrt(9 + 16)
    # sqrt(1 + 1 + 1 + 1 + 1): a (2, 2) block of ones and one more entry.
    assert norm([np.ones((2, 2)), np.array([1.0])]) == pytest.approx(math.sqrt(5))
    assert norm([]) == 0.0
    assert isinstance(norm([np.ones(2, "float32")]), float)


def test_norm_works_in_float64():
    # 3e20 squared overflows float32 (max ~3.4e38); in float64 it is 9e40.
    big = np.array([3e20, 4e20], "float32")
    assert norm([big]) == pytest.approx(5e20, rel=1e-6)


def test_mse_gradient_of_a_linear_model_by_hand():
    # w = 0.5: xw = [0.5, 1, 1.5], residual r = xw - y = [-0.5, 1, 0.5].
    # loss = mean(r^2) = (0.25 + 1 + 0.25) / 3 = 0.5
    # dL/dw = 2 * mean(x * r) = 2 * (-0.5 + 2 + 1.5) / 3 = 2.0
    model = linear(0.5)
    loss, grads = loss_and_gradients(model, X, Y, keras.losses.mean_squared_error)
    assert isinstance(loss, float)
    assert loss == pytest.approx(0.5, rel=1e-6)
    assert len(grads) == 1 and isinstance(grads[0], np.ndarray)
    assert grads[0].shape == (1, 1)
    np.testing.assert_allclose(grads[0], [[2.0]], rtol=1e-6)


def test_compiled_loss_is_used_without_loss_fn():
    model = linear(0.5)
    model.compile(loss="mean_squared_error")
    loss, grads = loss_and_gradients(model, X, Y)  # same working as above
    assert loss == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(grads[0], [[2.0]], rtol=1e-6)


def test_the_model_own_losses_are_added():
    # kernel_regularizer L2(0.1) adds 0.1 * w^2 = 0.025 to the loss and
    # 2 * 0.1 * w = 0.1 to the gradient: 0.5 + 0.025 and 2.0 + 0.1.
    model = linear(0.5, kernel_regularizer=keras.regularizers.L2(0.1))
    loss, grads = loss_and_gradients(model, X, Y, keras.losses.mean_squared_error)
    assert loss == pytest.approx(0.525, rel=1e-6)
    np.testing.assert_allclose(grads[0], [[2.1]], rtol=1e-6)


def test_current_weights_are_used_on_every_call():
    # The JAX path caches a jitted function per model and loss; it must take
    # the weights as they are now. w = 1: r = [0, 2, 2], loss = 8 / 3,
    # dL/dw = 2 * mean([0, 4, 6]) = 20 / 3.
    model = linear(0.5)
    loss_fn = keras.losses.mean_squared_error
    loss_and_gradients(model, X, Y, loss_fn)
    model.layers[0].kernel.assign([[1.0]])
    loss, grads = loss_and_gradients(model, X, Y, loss_fn)
    assert loss == pytest.approx(8 / 3, rel=1e-6)
    np.testing.assert_allclose(grads[0], [[20 / 3]], rtol=1e-6)


class _Unused(keras.layers.Layer):
    """A layer with a weight the forward pass never touches."""

    def build(self, input_shape):
        self.unused = self.add_weight(shape=(2,), initializer="ones")

    def call(self, x):
        return x


def test_a_variable_without_gradient():
    # TensorFlow's tape gives None for an unconnected variable, JAX zeros:
    # either way no direction to move it in.
    model = keras.Sequential([keras.Input((1,)), _Unused(), linear(0.5).layers[0]])
    _, grads = loss_and_gradients(model, X, Y, keras.losses.mean_squared_error)
    assert len(grads) == 2
    assert grads[0] is None or not np.any(grads[0])
    np.testing.assert_allclose(grads[1], [[2.0]], rtol=1e-6)


def test_an_unsupported_backend_is_named(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match="Received: backend='torch'"):
        loss_and_gradients(linear(), X, Y, keras.losses.mean_squared_error)
