"""keras_harden._gradients.loss_and_input_gradients on hand-worked values, on
the session's backend (the suite runs on TensorFlow and again with
KERAS_BACKEND=jax)."""

import math

import keras
import numpy as np
import pytest

from keras_harden._gradients import loss_and_input_gradients
from keras_harden.robust import _common
from tests.robust._models import CENTRE, D, binary_linear


def test_cross_entropy_of_a_linear_model_by_hand():
    # At x = 0.5 (see tests/robust/_models.py): z = (1.0, 0.75), so
    # z1 - z0 = -0.25 and p1 = sigmoid(-0.25) = 1 / (1 + e^0.25) = 0.4378235.
    # Label 0: loss = log(1 + e^-0.25) = 0.5759394, gradient p1 * d.
    # Label 1: loss = log(1 + e^+0.25) = 0.8259394, gradient -(1 - p1) * d.
    x = np.concatenate([CENTRE, CENTRE])
    losses, gradient, outputs = loss_and_input_gradients(
        binary_linear(), x, np.array([0, 1], "int32"), _common.cross_entropy_logits
    )
    p1 = 1 / (1 + math.exp(0.25))
    assert losses.shape == (2,) and gradient.shape == (2, 4)
    assert all(isinstance(a, np.ndarray) for a in (losses, gradient, outputs))
    np.testing.assert_allclose(losses, [0.5759394, 0.8259394], rtol=1e-5)
    np.testing.assert_allclose(gradient[0], p1 * D, rtol=1e-5)
    np.testing.assert_allclose(gradient[1], -(1 - p1) * D, rtol=1e-5)
    np.testing.assert_allclose(outputs, [[1.0, 0.75], [1.0, 0.75]], rtol=1e-6)


def test_each_row_is_its_own_example_gradient():
    # The losses are summed, not averaged: an example's gradient does not
    # depend on the batch it is in.
    model = binary_linear()
    x = np.random.default_rng(0).uniform(size=(5, 4)).astype("float32")
    y = np.array([0, 1, 1, 0, 1], "int32")
    loss = _common.cross_entropy_logits
    _, together, _ = loss_and_input_gradients(model, x, y, loss)
    for i in range(5):
        _, alone, _ = loss_and_input_gradients(model, x[i : i + 1], y[i : i + 1], loss)
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-7)


def test_squared_error_by_hand():
    # One unit y = x . (1, 1): loss (x . w - t)^2, gradient 2 (x . w - t) w.
    # x = (1, 2), t = 1: residual 2, loss 4, gradient (4, 4).
    dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    model = keras.Sequential([keras.Input((2,)), dense])

    def squared(t, out):
        return keras.ops.squeeze((out - t) ** 2, -1)

    losses, gradient, _ = loss_and_input_gradients(
        model, np.array([[1.0, 2.0]], "float32"), np.ones((1, 1), "float32"), squared
    )
    np.testing.assert_allclose(losses, [4.0])
    np.testing.assert_allclose(gradient, [[4.0, 4.0]])


def test_inference_mode_and_no_state_change():
    # Dropout is off (two calls agree, and equal the model without it) and
    # batch norm uses, and keeps, its moving statistics.
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization()(inputs)
    h = keras.layers.Dropout(0.5)(h)
    outputs = keras.layers.Dense(3, kernel_initializer="ones")(h)
    model = keras.Model(inputs, outputs)
    before = [np.array(v) for v in model.get_weights()]
    x = np.random.default_rng(1).uniform(size=(8, 4)).astype("float32")
    y = np.zeros(8, "int32")
    first = loss_and_input_gradients(model, x, y, _common.cross_entropy_logits)
    second = loss_and_input_gradients(model, x, y, _common.cross_entropy_logits)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        first[2], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_current_weights_are_used_on_every_call():
    # The compiled function is cached per model and loss; it must read the
    # weights as they are now. Kernel all zeros, bias (0.5, 0): z = (0.5, 0),
    # loss log(1 + e^-0.5), gradient sigmoid(-0.5) * (w1 - w0) = 0.
    model = binary_linear()
    loss = _common.cross_entropy_logits
    loss_and_input_gradients(model, CENTRE, np.zeros(1, "int32"), loss)
    model.layers[0].kernel.assign(np.zeros((4, 2), "float32"))
    losses, gradient, _ = loss_and_input_gradients(
        model, CENTRE, np.zeros(1, "int32"), loss
    )
    np.testing.assert_allclose(losses, [math.log(1 + math.exp(-0.5))], rtol=1e-6)
    np.testing.assert_allclose(gradient, np.zeros((1, 4)), atol=1e-7)


def test_an_unsupported_backend_is_named(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match="Received: backend='torch'"):
        loss_and_input_gradients(
            binary_linear(), CENTRE, np.zeros(1, "int32"), _common.cross_entropy_logits
        )


def test_the_probability_cross_entropy_matches_the_logits_one():
    # softmax then -log p[label] is log_softmax's cross-entropy: the same
    # losses and input gradients, on both branches (p[label] above and below
    # 1/2: labels 0 and 1 at the same points)
    x = np.random.default_rng(2).uniform(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 0, 1, 0, 1], "int32")
    logits = loss_and_input_gradients(
        binary_linear(), x, y, _common.cross_entropy_logits
    )
    probabilities = loss_and_input_gradients(
        binary_linear(softmax=True), x, y, _common.cross_entropy_probabilities
    )
    np.testing.assert_allclose(probabilities[0], logits[0], rtol=1e-5)
    np.testing.assert_allclose(probabilities[1], logits[1], rtol=1e-4, atol=1e-7)
