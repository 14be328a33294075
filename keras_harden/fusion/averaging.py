"""`average_weights`: one model whose weights are the (weighted) mean of several."""

import numbers
import warnings

import numpy as np

from keras_harden.fusion._common import (
    batchnorm_layers,
    batchnorm_statistics_ids,
    check_models,
    clone_with_weights,
    is_float,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.compat import check_compatible

__all__ = ["average_weights"]


def _coefficients(weights, count):
    if weights is None:
        return np.full(count, 1.0 / count)
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(
            f"`weights` must be a list of {count} non-negative numbers. "
            f"Received: weights={weights!r}"
        ) from None
    if (
        len(values) != count
        or not all(isinstance(w, numbers.Real) for w in weights)
        or any(not np.isfinite(w) or w < 0 for w in values)
        or sum(values) <= 0
    ):
        raise ValueError(
            f"`weights` must be {count} finite non-negative numbers (one per "
            f"model) with a positive sum. Received: weights={weights!r}"
        )
    values = np.asarray(values, dtype="float64")
    return values / values.sum()


def assign_average(target, models, coefficients):
    """Writes the weighted mean of `models`' variables into `target` (a model
    of the same architecture), skipping batch-norm moving statistics and
    non-float variables (seeds, counters), which keep `target`'s values."""
    skip = batchnorm_statistics_ids(target)
    sources = [weight_slots(model) for model in models]
    for position, (_, _, variable) in enumerate(weight_slots(target)):
        if id(variable) in skip or not is_float(variable):
            continue
        total = 0.0
        for coefficient, slots in zip(coefficients, sources, strict=True):
            if coefficient == 0.0:
                continue
            value = to_numpy(slots[position][2])
            total = total + coefficient * value.astype("float64")
        variable.assign(np.asarray(total, dtype=variable.dtype))


def finish_batchnorm(model, recalibrate, steps, caller):
    """Recalibrates `model`'s batch-norm statistics or warns that it cannot."""
    if not batchnorm_layers(model):
        return
    if recalibrate is None:
        warnings.warn(
            f"{caller}: the model has batch-norm layers and no `recalibrate` data "
            "was given, so their moving statistics were left as in the first "
            "model; they do not match the averaged weights. Pass "
            "`recalibrate=x_train` (inputs only) to recompute them.",
            UserWarning,
            stacklevel=3,
        )
        return
    recalibrate_batchnorm(model, recalibrate, steps=steps)


def average_weights(models, weights=None, recalibrate=None, recalibrate_steps=None):
    """Returns a new model whose weights are the (weighted) mean of `models`'.

    The models must share one architecture (`check_compatible`). Every
    floating-point variable is averaged, except the moving mean and variance
    of batch-norm layers: the mean of several models' statistics describes
    none of them and is wrong for the averaged weights. They are instead
    recomputed from `recalibrate` data (see `recalibrate_batchnorm`); when no
    data is given they are left as in the first model, with a warning.
    Integer variables (seed-generator states, counters) are copied from the
    first model.

    The result is a clone of the first model (compiled like it, when it was
    compiled); the input models are not modified.

    Args:
        models: a list of built Keras models of one architecture.
        weights: optional list of non-negative numbers, one per model; they
            are normalised to sum to 1. Default: the uniform mean.
        recalibrate: inputs to recompute batch-norm statistics from: an
            array, an `(x, y)` tuple, a `tf.data.Dataset` or an iterable of
            batches. Training inputs (without augmentation) are the usual
            choice.
        recalibrate_steps: at most this many batches of `recalibrate`.

    Returns:
        A new Keras model.

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> def net():
    ...     return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> a, b = net(), net()
    >>> a.set_weights([np.array([[1.0], [2.0]]), np.array([0.0])])
    >>> b.set_weights([np.array([[3.0], [6.0]]), np.array([4.0])])
    >>> soup = kh.fusion.average_weights([a, b], weights=[3, 1])
    >>> soup.layers[0].kernel.numpy().ravel().tolist()
    [1.5, 3.0]

    References:
        Wortsman et al., "Model soups: averaging weights of multiple
        fine-tuned models improves accuracy without increasing inference
        time", ICML 2022.
    """
    models = check_models(models)
    coefficients = _coefficients(weights, len(models))
    check_compatible(models)
    result = clone_with_weights(models[0])
    assign_average(result, models, coefficients)
    finish_batchnorm(result, recalibrate, recalibrate_steps, "average_weights")
    return result
