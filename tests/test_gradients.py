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


# -- input_gradient: symbolic, inside a traced step ------------------------------

# y = x . w with w = (1, -2), no bias; loss (out - y)^2 per example.
# x = [[1, 2], [3, 0]], y = [[0], [1]]: out = [1 - 4, 3] = [-3, 3],
# residual r = out - y = [-3, 2]; d/dx (x . w - y)^2 = 2 r w:
# row 0: 2 * -3 * (1, -2) = (-6, 12); row 1: 2 * 2 * (1, -2) = (4, -8).
IG_X = np.array([[1.0, 2.0], [3.0, 0.0]], "float32")
IG_Y = np.array([[0.0], [1.0]], "float32")
IG_EXPECTED = [[-6.0, 12.0], [4.0, -8.0]]


def _ig_linear():
    dense = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant([[1.0], [-2.0]]),
    )
    return keras.Sequential([keras.Input((2,)), dense])


def _squared(y, out):
    return (out - y) ** 2


def test_input_gradient_of_a_linear_model_by_hand_eagerly():
    from keras_harden._gradients import input_gradient

    model = _ig_linear()
    x = keras.ops.convert_to_tensor(IG_X)
    gradient = input_gradient(model, x, IG_Y, _squared)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gradient), IG_EXPECTED)


def test_input_gradient_inside_a_compiled_function_reads_the_traced_weights():
    # Inside Keras's JAX trainer the weights are traced values mapped by a
    # StatelessScope; there the gradient must use them. With w doubled to
    # (2, -4): out = [-6, 6], r = [-6, 5], 2 r w = (-24, 48) and (20, -40).
    from keras_harden._gradients import input_gradient

    model = _ig_linear()
    x = keras.ops.convert_to_tensor(IG_X)
    if keras.backend.backend() == "jax":
        import jax

        variables = model.trainable_variables

        @jax.jit
        def compute(values, x):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values, strict=True))
            ):
                return input_gradient(model, x, IG_Y, _squared)

        same = compute([v.value for v in variables], x)
        doubled = compute([2 * v.value for v in variables], x)
    else:
        import tensorflow as tf

        compute = tf.function(lambda x: input_gradient(model, x, IG_Y, _squared))
        same = compute(x)
        model.layers[0].kernel.assign([[2.0], [-4.0]])
        doubled = compute(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(same), IG_EXPECTED)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(doubled), [[-24.0, 48.0], [20.0, -40.0]]
    )


def test_input_gradient_stopped_leaves_the_weight_gradient_first_order():
    # L(w) = sum(w . stop_gradient(g)) + nothing else, g = input_gradient at
    # w: dL/dw = sum over examples of g = (-6 + 4, 12 - 8) = (-2, 4), with no
    # second-order term through g.
    from keras_harden._gradients import input_gradient

    model = _ig_linear()
    x = keras.ops.convert_to_tensor(IG_X)
    kernel = model.layers[0].kernel
    if keras.backend.backend() == "jax":
        import jax

        def loss(value):
            with keras.StatelessScope(state_mapping=[(kernel, value)]):
                g = keras.ops.stop_gradient(input_gradient(model, x, IG_Y, _squared))
                return keras.ops.sum(keras.ops.matmul(g, value))

        grad = jax.jit(jax.grad(loss))(kernel.value)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            g = keras.ops.stop_gradient(input_gradient(model, x, IG_Y, _squared))
            value = keras.ops.sum(keras.ops.matmul(g, kernel.value))
        grad = tape.gradient(value, kernel.value)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), [[-2.0], [4.0]])


def test_input_gradient_training_flag_reaches_the_model():
    # Batch norm (gamma 1, beta 0, moving mean 0, variance 1, epsilon 1e-3):
    # in inference x / sqrt(1.001), so d sum / dx = 1 / sqrt(1.001) each;
    # in training (x - mean) / sqrt(var + eps) sums to 0 over the batch
    # whatever x is, so the gradient is 0. On JAX the training-mode update
    # of the moving mean is dropped; on TensorFlow it happens.
    from keras_harden._gradients import input_gradient

    norm_layer = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((2,)), norm_layer])
    x = keras.ops.convert_to_tensor(IG_X)

    def total(y, out):
        return out

    inference = input_gradient(model, x, IG_Y, total)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(inference),
        np.full((2, 2), 1 / math.sqrt(1.001)),
        rtol=1e-6,
    )
    training = input_gradient(model, x, IG_Y, total, training=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(training), np.zeros((2, 2)), atol=1e-5
    )
    moving_mean = keras.ops.convert_to_numpy(norm_layer.moving_mean)
    if keras.backend.backend() == "jax":
        np.testing.assert_array_equal(moving_mean, [0.0, 0.0])
    else:  # momentum 0.99: 0.01 * batch mean (2, 1)
        np.testing.assert_allclose(moving_mean, [0.02, 0.01], rtol=1e-5)


# -- losses_and_input_gradient: losses, gradient and outputs, compiled -----------


def test_losses_and_input_gradient_inside_a_compiled_function_by_hand():
    # w = (1, -2): out = [-3, 3], r = out - y = [-3, 2], losses r^2 = [9, 4],
    # gradient 2 r w (IG_EXPECTED). With w doubled to (2, -4): out = [-6, 6],
    # r = [-6, 5], losses [36, 25], gradient (-24, 48) and (20, -40).
    from keras_harden._gradients import losses_and_input_gradient

    model = _ig_linear()
    x = keras.ops.convert_to_tensor(IG_X)
    if keras.backend.backend() == "jax":
        import jax

        variables = model.trainable_variables

        @jax.jit
        def compute(values, x):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values, strict=True))
            ):
                return losses_and_input_gradient(model, x, IG_Y, _squared)

        same = compute([v.value for v in variables], x)
        doubled = compute([2 * v.value for v in variables], x)
    else:
        import tensorflow as tf

        compute = tf.function(
            lambda x: losses_and_input_gradient(model, x, IG_Y, _squared)
        )
        same = compute(x)
        model.layers[0].kernel.assign([[2.0], [-4.0]])
        doubled = compute(x)
    for got, (losses, gradient, outputs) in (
        (same, ([[9.0], [4.0]], IG_EXPECTED, [[-3.0], [3.0]])),
        (doubled, ([[36.0], [25.0]], [[-24.0, 48.0], [20.0, -40.0]], [[-6.0], [6.0]])),
    ):
        got = [keras.ops.convert_to_numpy(v) for v in got]
        np.testing.assert_allclose(got[0], losses)
        np.testing.assert_allclose(got[1], gradient)
        np.testing.assert_allclose(got[2], outputs)
