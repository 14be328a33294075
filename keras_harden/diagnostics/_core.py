"""Private helpers shared by the diagnostics: per-layer grouping, norms, and
one backend-isolated gradient computation.

Keras callbacks never see gradients, and Keras 3 has no backend-agnostic
"give me the gradient" call, so the one place that differentiates lives here,
behind `loss_and_gradients`. Everything else works on NumPy copies.
"""

import math
import weakref

import keras
import numpy as np

HARDENED_STATS = ("gradient_norm", "clipped_gradient_norm", "skipped_steps")


def layer_key(variable):
    """The path of the layer owning `variable` (`"sequential/dense/kernel"` ->
    `"sequential/dense"`)."""
    path = getattr(variable, "path", None) or variable.name
    return path.rsplit("/", 1)[0] if "/" in path else path


def group_by_layer(variables):
    """`{layer path: [indices into variables]}`, in first-seen order."""
    groups = {}
    for index, variable in enumerate(variables):
        groups.setdefault(layer_key(variable), []).append(index)
    return groups


def to_numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def norm(arrays):
    """Euclidean norm of a list of arrays taken as one vector (float64)."""
    total = 0.0
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        total += float(np.sum(a * a))
    return math.sqrt(total)


def looks_like_probabilities(predictions):
    """Whether rows of `predictions` (the last axis) are probabilities: in
    [0, 1] and summing to 1. Otherwise they are taken for logits."""
    out = np.asarray(predictions, dtype=np.float64)
    return bool(
        out.size
        and out.min() >= 0
        and out.max() <= 1
        and np.allclose(out.sum(-1), 1, atol=1e-3)
    )


def all_finite(arrays):
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def is_hardened(optimizer):
    """Whether `optimizer` keeps gradient statistics (a keras_harden optimizer;
    its statistic variables appear once it is built)."""
    if optimizer is None:
        return False
    if all(hasattr(optimizer, n) for n in HARDENED_STATS):
        return True
    try:
        from keras_harden.optimizers import HardenedOptimizer
    except ImportError:  # pragma: no cover - the optimizers family is missing
        return False
    return isinstance(optimizer, HardenedOptimizer)


def hardened_statistics(optimizer):
    """The statistics a keras_harden optimizer already keeps, or None."""
    if optimizer is None or not all(hasattr(optimizer, n) for n in HARDENED_STATS):
        return None
    return {
        "grad_norm": float(keras.ops.convert_to_numpy(optimizer.gradient_norm)),
        "clipped_grad_norm": float(
            keras.ops.convert_to_numpy(optimizer.clipped_gradient_norm)
        ),
        "skipped_steps": float(keras.ops.convert_to_numpy(optimizer.skipped_steps)),
    }


def sync(model):
    """Under JAX, `fit` keeps the state outside the model's variables between
    epochs; callbacks that read or write variables sync it back first."""
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _compute_loss(model, loss_fn, x, y, y_pred):
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

    Returns:
        `(loss as float, [gradient as NumPy array or None per variable])`.
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
            "Gradient statistics on a plain optimizer are implemented for the "
            f"TensorFlow backend only. Received: backend={backend!r}. Use a "
            "keras_harden optimizer, whose statistics work on every backend."
        )
    return (
        float(keras.ops.convert_to_numpy(value)),
        [None if g is None else np.array(keras.ops.convert_to_numpy(g)) for g in grads],
    )


def sum_layer_norms(arrays, groups):
    """`{layer: norm of its arrays}` (arrays aligned with the grouped variables;
    None entries, e.g. variables without gradient, are skipped)."""
    return {
        name: norm([arrays[i] for i in idx if arrays[i] is not None])
        for name, idx in groups.items()
    }
