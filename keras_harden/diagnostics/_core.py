"""Private helpers shared by the diagnostics: per-layer grouping and norms,
on NumPy copies. Gradients come from `keras_harden._gradients`, the one
place the package differentiates.
"""

import sys

import keras
import numpy as np

from keras_harden._gradients import norm

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


def all_finite(arrays):
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def is_hardened(optimizer):
    """Whether `optimizer` keeps gradient statistics (a keras_harden optimizer;
    its statistic variables appear once it is built)."""
    if optimizer is None:
        return False
    if all(hasattr(optimizer, n) for n in HARDENED_STATS):
        return True
    # Not built yet (on TensorFlow, `fit` builds the optimizer after
    # `on_train_begin`): a keras_harden optimizer then is an instance of the
    # optimizers family's wrapper. The family is looked up, not imported (one
    # family does not import another): an instance means it is loaded.
    hardened = sys.modules.get("keras_harden.optimizers.hardened")
    return hardened is not None and isinstance(optimizer, hardened.HardenedOptimizer)


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


def sum_layer_norms(arrays, groups):
    """`{layer: norm of its arrays}` (arrays aligned with the grouped variables;
    None entries, e.g. variables without gradient, are skipped)."""
    return {
        name: norm([arrays[i] for i in idx if arrays[i] is not None])
        for name, idx in groups.items()
    }
