"""The one place the package takes gradients, per backend.

Keras 3 has no backend-agnostic "give me the gradient" call (callbacks never
see gradients), so whatever needs them outside a training step — the
diagnostics, the seed search, the search above the families — calls
`loss_and_gradients` here: a `tf.GradientTape` on TensorFlow, a jitted
`jax.value_and_grad` (cached per model and loss) on JAX. The attacks call
`loss_and_input_gradients`, the gradient with respect to the inputs instead
of the weights. Results come back as NumPy copies.
"""

import math
import weakref

import keras
import numpy as np

__all__ = [
    "input_gradient",
    "loss_and_gradients",
    "loss_and_input_gradients",
    "losses_and_input_gradient",
    "norm",
]


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


_TF_INPUT_FUNCTIONS = weakref.WeakKeyDictionary()
_JAX_INPUT_FUNCTIONS = weakref.WeakKeyDictionary()


def _input_gradient_function(model, loss_fn, x, y):
    """A compiled `(trainable, non_trainable, x, y) -> (losses, gradient,
    outputs)` for `model` in inference mode, cached per model and loss: a
    `tf.function` on TensorFlow (traced once for any batch size, with the
    variables read when it runs: the two first arguments are ignored), a
    `jax.jit` on JAX with the variables passed in and mapped by a
    `keras.StatelessScope` (compiled once per batch shape); both compute
    `losses_and_input_gradient`. The function holds the model weakly, so the
    cache does not keep it alive."""
    backend = keras.backend.backend()
    cache = _TF_INPUT_FUNCTIONS if backend == "tensorflow" else _JAX_INPUT_FUNCTIONS
    per_model = cache.setdefault(model, {})
    key = id(loss_fn)
    if backend == "tensorflow":  # one signature per input and target layout
        key = (key, tuple(x.shape[1:]), str(x.dtype), tuple(y.shape[1:]), str(y.dtype))
    if key in per_model:
        return per_model[key][1]
    model_ref = weakref.ref(model)
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [
            tf.TensorSpec((None, *v.shape[1:]), v.dtype, name=name)
            for name, v in (("x", x), ("y", y))
        ]

        @tf.function(input_signature=signature)
        def tf_compute(x, y):
            return losses_and_input_gradient(model_ref(), x, y, loss_fn)

        def function(trainable, non_trainable, x, y):
            del trainable, non_trainable  # the tf.function reads the variables
            return tf_compute(x, y)

    else:
        import jax

        def compute(trainable, non_trainable, x, y):
            model = model_ref()
            mapping = list(zip(model.trainable_variables, trainable, strict=True))
            mapping += zip(model.non_trainable_variables, non_trainable, strict=True)
            with keras.StatelessScope(state_mapping=mapping):
                return losses_and_input_gradient(model, x, y, loss_fn)

        function = jax.jit(compute)

    per_model[key] = (loss_fn, function)
    return function


def loss_and_input_gradients(model, x, y, loss_fn):
    """Per-example losses and their gradient with respect to the inputs.

    The forward pass runs in inference mode (`training=False`: dropout off,
    batch norm on its moving statistics) and changes no state. The
    per-example losses are summed before differentiating, so row `i` of the
    gradient is the gradient of example `i`'s own loss, whatever the batch
    size. The model's own losses (regularizers) are not added. The compiled
    function is cached per model and loss (pass the same `loss_fn` object to
    reuse it).

    Args:
        model: a built single-input Keras model.
        x: one batch of inputs (an array; cast to the model's float type by
            the caller).
        y: the targets of that batch, in the form `loss_fn` takes.
        loss_fn: `(y_true, y_pred) -> per-example losses` of shape `(batch,)`,
            written with `keras.ops`.

    Returns:
        `(losses, gradient, outputs)`, NumPy arrays: the per-example losses
        `(batch,)`, `d sum(losses) / dx` of `x`'s shape, and the model's
        outputs on `x`.

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[1.0, 2.0], [3.0, 0.0]], "float32")
    >>> def squared(y, out):  # (x . w - y)^2 per example; w = (1, 1)
    ...     return keras.ops.squeeze((out - y) ** 2, -1)
    >>> losses, grad, outputs = loss_and_input_gradients(
    ...     model, x, np.zeros((2, 1), "float32"), squared)
    >>> # x . w = [3, 3]; loss = [9, 9]; d/dx (x . w)^2 = 2 (x . w) w = [6, 6]
    >>> losses.tolist(), grad.tolist(), outputs.tolist()
    ([9.0, 9.0], [[6.0, 6.0], [6.0, 6.0]], [[3.0], [3.0]])
    """
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise NotImplementedError(
            "Gradients with respect to the inputs are implemented for the "
            f"TensorFlow and JAX backends only. Received: backend={backend!r}."
        )
    x = keras.ops.convert_to_tensor(x)
    y = keras.ops.convert_to_tensor(y)
    function = _input_gradient_function(model, loss_fn, x, y)
    if backend == "jax":
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
    else:
        trainable = non_trainable = None
    losses, gradient, outputs = function(trainable, non_trainable, x, y)
    return tuple(
        np.array(keras.ops.convert_to_numpy(v)) for v in (losses, gradient, outputs)
    )


def input_gradient(model, x, y, loss_fn, training=False):
    """The gradient of `sum(loss_fn(y, model(x)))` with respect to `x`, as a
    backend tensor, for use inside a traced training step.

    Unlike `loss_and_input_gradients` (which compiles its own function and
    returns NumPy), this is symbolic: called inside a `tf.function` train
    step it adds a nested `tf.GradientTape` that watches `x`; inside the JAX
    trainer's `jax.value_and_grad` it takes `jax.grad` of a closure that
    calls the model. On JAX the model reads its variables (through any
    `keras.StatelessScope` in force, as in Keras's JAX trainer) and sees them
    through `stop_gradient`, so the outer differentiation does not trace
    second derivatives through this computation; on TensorFlow the outer
    tape records it, and the caller must `stop_gradient` the result (or
    anything built from it) before it enters a loss that is differentiated
    with respect to the weights. Summing the per-example losses makes row
    `i` of the gradient the gradient of example `i`'s own loss. With
    `training=True` the forward pass runs in training mode; on JAX state
    updates made there (batch statistics) are dropped, on TensorFlow they
    happen.

    Args:
        model: a Keras model (or any layer) taking `x`.
        x: a float tensor, the inputs to differentiate at.
        y: the targets, in the form `loss_fn` takes (any tensor structure).
        loss_fn: `(y, outputs) -> losses` written with `keras.ops`; summed
            over every entry before differentiating.
        training: the `training` flag of the forward pass.

    Returns:
        A tensor of `x`'s shape and dtype: `d sum(loss_fn(y, model(x))) / dx`.

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = keras.ops.convert_to_tensor(np.array([[1.0, 2.0]], "float32"))
    >>> def squared(y, out):  # (x . w - y)^2 with w = (1, 1), y = 0
    ...     return (out - y) ** 2
    >>> # d/dx (x . w)^2 = 2 (x . w) w = 2 * 3 * (1, 1)
    >>> keras.ops.convert_to_numpy(
    ...     input_gradient(model, x, np.zeros((1, 1), "float32"), squared)).tolist()
    [[6.0, 6.0]]
    """
    return losses_and_input_gradient(model, x, y, loss_fn, training)[1]


def losses_and_input_gradient(model, x, y, loss_fn, training=False):
    """The per-example losses, their gradient with respect to `x` and the
    model's outputs, as backend tensors, for use inside a compiled function.

    The symbolic counterpart of `loss_and_input_gradients` (and
    `input_gradient` with the losses and outputs of the same forward pass):
    on TensorFlow a `tf.GradientTape` that watches `x`, on JAX
    `jax.value_and_grad` of a closure that calls the model with its
    variables read through any `keras.StatelessScope` in force (so inside a
    jitted function the caller maps the variables to the function's
    arguments) and seen through `stop_gradient`. The losses are summed
    before differentiating, so row `i` of the gradient is the gradient of
    example `i`'s own loss.

    Args:
        model: a Keras model (or any layer) taking `x`.
        x: a float tensor, the inputs to differentiate at.
        y: the targets, in the form `loss_fn` takes.
        loss_fn: `(y, outputs) -> per-example losses` written with
            `keras.ops`.
        training: the `training` flag of the forward pass.

    Returns:
        `(losses, gradient, outputs)`: `loss_fn(y, model(x))`, `d
        sum(losses) / dx` of `x`'s shape, and `model(x)`.

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = keras.ops.convert_to_tensor(np.array([[1.0, 2.0]], "float32"))
    >>> def squared(y, out):  # (x . w - y)^2 with w = (1, 1), y = 0
    ...     return keras.ops.squeeze((out - y) ** 2, -1)
    >>> losses, gradient, outputs = losses_and_input_gradient(
    ...     model, x, np.zeros((1, 1), "float32"), squared)
    >>> # x . w = 3: loss 9, d/dx (x . w)^2 = 2 * 3 * (1, 1)
    >>> [keras.ops.convert_to_numpy(v).tolist() for v in (losses, gradient, outputs)]
    [[9.0], [[6.0, 6.0]], [[3.0]]]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = model(x, training=training)
            losses = loss_fn(y, outputs)
            total = keras.ops.sum(losses)
        return losses, tape.gradient(total, x), outputs
    if backend == "jax":
        import jax

        mapping = [(v, keras.ops.stop_gradient(v.value)) for v in model.variables]

        def total(x):
            with keras.StatelessScope(state_mapping=mapping):
                outputs = model(x, training=training)
            losses = loss_fn(y, outputs)
            return keras.ops.sum(losses), (losses, outputs)

        (_, (losses, outputs)), gradient = jax.value_and_grad(total, has_aux=True)(
            keras.ops.convert_to_tensor(x)
        )
        return losses, gradient, outputs
    raise NotImplementedError(
        "Gradients with respect to the inputs are implemented for the "
        f"TensorFlow and JAX backends only. Received: backend={backend!r}."
    )
