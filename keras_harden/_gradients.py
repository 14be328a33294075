"""The one place the package takes gradients, per backend.

Keras 3 has no backend-agnostic "give me the gradient" call (callbacks never
see gradients), so whatever needs them outside a training step — the
diagnostics, the seed search, the search above the families — calls
`loss_and_gradients` here: a `tf.GradientTape` on TensorFlow, a jitted
`jax.value_and_grad` (cached per model and loss) on JAX. The attacks call
`loss_and_input_gradients`, the gradient with respect to the inputs instead
of the weights. Results come back as NumPy copies. Differentially private
training needs each example's gradient inside its compiled step:
`per_example_gradients` (vectorized over the batch) and
`losses_and_pullback` (one forward pass, then vector-Jacobian products with
chosen per-example weights).
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
    "losses_and_pullback",
    "norm",
    "per_example_gradients",
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


def per_example_gradients(function, variables, values, x, y, state_mapping=()):
    """Each example's loss, output and gradient of `variables`, symbolic.

    `function(x_i, y_i) -> (loss, output)` runs on one example at a time
    (with a batch axis of 1) and returns its scalar loss and its output
    (batch axis 1 too); it is vectorized over the batch: `tf.vectorized_map`
    of a `tf.GradientTape` on TensorFlow, `jax.vmap` of `jax.value_and_grad`
    on JAX. For use inside a compiled training step.

    Args:
        function: `(x_i, y_i) -> (scalar loss, output)`, calling the model.
        variables: the Keras variables to differentiate.
        values: JAX: their current values (the step's state), which
            `function` reads through a `keras.StatelessScope`; TensorFlow:
            ignored (the variables are read).
        x: a tensor `(batch, ...)`.
        y: a tensor `(batch, ...)`.
        state_mapping: JAX: `(variable, value)` pairs of the other state
            `function` reads (non-trainable variables); TensorFlow: ignored.

    Returns:
        `(losses, outputs, gradients)`: `(batch,)`, `(batch, ...)` and one
        `(batch, *variable.shape)` tensor per variable (zeros where a
        variable does not reach the loss).

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> def squared(x, y):                   # (x . w - y)^2, w = (1, 1)
    ...     out = model(x)
    ...     return keras.ops.sum((out - y) ** 2), out
    >>> x = np.array([[1.0, 2.0], [3.0, 0.0]], "float32")
    >>> variables = model.trainable_variables
    >>> losses, _, grads = per_example_gradients(
    ...     squared, variables, [v.value for v in variables], x,
    ...     np.zeros((2, 1), "float32"))
    >>> # 2 (x . w - y) x: 2 * 3 * (1, 2) and 2 * 3 * (3, 0)
    >>> keras.ops.convert_to_numpy(grads[0])[:, :, 0].tolist()
    [[6.0, 12.0], [18.0, 0.0]]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def one(example):
            x_i, y_i = example
            with tf.GradientTape() as tape:
                loss, output = function(x_i[None], y_i[None])
            grads = tape.gradient(
                loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            return loss, output[0], [tf.convert_to_tensor(g) for g in grads]

        return tf.vectorized_map(one, (x, y))
    if backend == "jax":
        import jax

        def one(values, x_i, y_i):
            mapping = list(zip(variables, values, strict=True)) + list(state_mapping)
            with keras.StatelessScope(state_mapping=mapping):
                loss, output = function(x_i[None], y_i[None])
            return loss, output[0]

        step = jax.vmap(jax.value_and_grad(one, has_aux=True), in_axes=(None, 0, 0))
        (losses, outputs), grads = step(list(values), x, y)
        return losses, outputs, grads
    raise NotImplementedError(
        "Per-example gradients are implemented for the TensorFlow and JAX "
        f"backends only. Received: backend={backend!r}."
    )


def losses_and_pullback(function, variables, values, probes, state_mapping=()):
    """Runs `function` once and returns its vector-Jacobian product.

    `function(probes) -> (losses, aux)` computes per-example losses
    `(batch,)` from the variables and from `probes`, tensors it adds to
    intermediate results (zeros, so that their gradient is the gradient
    with respect to those results). The returned `pullback(cotangent)`
    gives `(d <cotangent, losses> / d variables, d <cotangent, losses> /
    d probes)` without running the forward pass again, so it can be called
    twice with different per-example weights: once with ones for each
    example's gradient at the probes, once with clip factors for the
    clipped sum. TensorFlow: a persistent `tf.GradientTape`; JAX:
    `jax.vjp`. For use inside a compiled training step.

    Args:
        function: `probes -> (losses, aux)`; `aux` is any structure of
            tensors returned as is.
        variables: the Keras variables to differentiate.
        values: JAX: their values in the step's state; TensorFlow: ignored.
        probes: a list of tensors.
        state_mapping: JAX: `(variable, value)` pairs of the other state
            `function` reads; TensorFlow: ignored.

    Returns:
        `(losses, aux, pullback)`.

    Example:

    >>> dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[1.0, 2.0], [3.0, 0.0]], "float32")
    >>> def losses(probes):                  # (x . w + probe)^2 per example
    ...     z = model(x) + probes[0]
    ...     return keras.ops.sum(z ** 2, axis=1), z
    >>> values = [v.value for v in model.trainable_variables]
    >>> _, z, pullback = losses_and_pullback(
    ...     losses, model.trainable_variables, values, [np.zeros((2, 1), "float32")])
    >>> d_weights, d_probes = pullback(np.array([1.0, 0.5], "float32"))
    >>> # d/dz z^2 = 2z = (6, 6), weighted (1, 0.5); d/dw = sum c 2z x
    >>> keras.ops.convert_to_numpy(d_probes[0])[:, 0].tolist()
    [6.0, 3.0]
    >>> keras.ops.convert_to_numpy(d_weights[0])[:, 0].tolist()  # 6 (1, 2) + 3 (3, 0)
    [15.0, 12.0]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        probes = [tf.convert_to_tensor(p) for p in probes]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(probes)
            losses, aux = function(probes)

        def pullback(cotangent):
            d_variables, d_probes = tape.gradient(
                losses,
                (list(variables), probes),
                output_gradients=tf.cast(cotangent, losses.dtype),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return [tf.convert_to_tensor(g) for g in d_variables], d_probes

        return losses, aux, pullback
    if backend == "jax":
        import jax

        def run(values, probes):
            mapping = list(zip(variables, values, strict=True)) + list(state_mapping)
            with keras.StatelessScope(state_mapping=mapping):
                return function(probes)

        losses, vjp, aux = jax.vjp(run, list(values), list(probes), has_aux=True)

        def pullback(cotangent):
            return vjp(keras.ops.cast(cotangent, losses.dtype))

        return losses, aux, pullback
    raise NotImplementedError(
        "Per-example gradients are implemented for the TensorFlow and JAX "
        f"backends only. Received: backend={backend!r}."
    )
