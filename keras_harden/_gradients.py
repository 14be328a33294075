"""The one place the package takes gradients, per backend.

Keras 3 has no backend-agnostic "give me the gradient" call (callbacks never
see gradients), so whatever needs them outside a training step — the
diagnostics, the seed search, the search above the families — calls
`loss_and_gradients` here: a `tf.GradientTape` on TensorFlow, a jitted
`jax.value_and_grad` (cached per model and loss) on JAX. Results come back as
NumPy copies.
"""

import math
import weakref

import keras
import numpy as np

__all__ = ["loss_and_gradients", "norm"]


def norm(arrays):
    """Euclidean norm of a list of arrays taken as one vector, in float64.

    Args:
        arrays: a list of arrays (NumPy or tensors NumPy can convert).

    Returns:
        A Python float: `sqrt(sum of every squared entry)`.

    Example:

    >>> norm([[3.0], [4.0]])  # sqrt(3**2 + 4**2)
    5.0
    """
    total = 0.0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        total += float(np.sum(a * a))
    return math.sqrt(total)


def _compute_loss(model, loss_fn, x, y, y_pred):
    """`loss_fn` (mean over the batch, plus the model's own losses), or the
    model's compiled loss when `loss_fn` is None."""
    if loss_fn is not None:
        value = keras.ops.mean(loss_fn(y, y_pred))
        if model.losses:
            value = value + keras.ops.sum(keras.ops.stack(model.losses))
        return value
    return model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)


_JAX_FUNCTIONS = weakref.WeakKeyDictionary()


def _jax_value_and_grad(model, loss_fn):
    """A jitted `(trainable, non_trainable, x, y) -> (loss, grads)` for
    `model`, cached per model and loss (the closure keeps `loss_fn` alive, so
    its id stays unique while cached)."""
    import jax

    per_model = _JAX_FUNCTIONS.setdefault(model, {})
    key = id(loss_fn)
    if key not in per_model:
        trainable_vars = list(model.trainable_variables)
        non_trainable_vars = list(model.non_trainable_variables)

        def compute(trainable, non_trainable, x, y):
            mapping = list(zip(trainable_vars, trainable, strict=True)) + list(
                zip(non_trainable_vars, non_trainable, strict=True)
            )
            with keras.StatelessScope(state_mapping=mapping):
                y_pred = model(x, training=True)
                return _compute_loss(model, loss_fn, x, y, y_pred)

        per_model[key] = (loss_fn, jax.jit(jax.value_and_grad(compute)))
    return per_model[key][1]


def loss_and_gradients(model, x, y, loss_fn=None):
    """Loss and gradients of the trainable variables on one batch.

    The forward pass runs in training mode (dropout on, batch statistics), as
    in `fit`; the caller snapshots and restores non-trainable state (moving
    averages, seed generators) when the model must stay untouched.

    Args:
        model: a built Keras model.
        x: the inputs of one batch.
        y: the targets of that batch.
        loss_fn: a loss function `(y_true, y_pred) -> per-example or scalar
            loss`, averaged over the batch and added to the model's own
            losses; None uses the model's compiled loss.

    Returns:
        `(loss as float, [gradient as NumPy array or None per variable])`,
        the gradients in the order of `model.trainable_variables`.

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((1,)), dense])
    >>> x, y = np.array([[1.0], [2.0]]), np.zeros((2, 1))
    >>> loss, grads = loss_and_gradients(model, x, y, keras.losses.mean_squared_error)
    >>> # w = 1: xw - y = [1, 2]; loss = mean([1, 4]); dL/dw = 2 * mean([1, 4])
    >>> loss, grads[0].tolist()
    (2.5, [[5.0]])
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            value = _compute_loss(model, loss_fn, x, y, y_pred)
        grads = tape.gradient(value, variables)
    elif backend == "jax":
        value, grads = _jax_value_and_grad(model, loss_fn)(
            [v.value for v in variables],
            [v.value for v in model.non_trainable_variables],
            x,
            y,
        )
    else:
        raise NotImplementedError(
            "Gradients outside a training step are implemented for the "
            f"TensorFlow and JAX backends only. Received: backend={backend!r}. "
            "Use a keras_harden optimizer, whose statistics work on every "
            "backend."
        )
    return (
        float(keras.ops.convert_to_numpy(value)),
        [None if g is None else np.array(keras.ops.convert_to_numpy(g)) for g in grads],
    )
