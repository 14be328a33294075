"""`average_weights`: one model whose weights are the (weighted) mean of several."""

import numbers
import warnings

import numpy as np

from keras_harden._validation import check_bool
from keras_harden.fusion._common import (
    batchnorm_layers,
    batchnorm_statistics_ids,
    check_models,
    clone_with_weights,
    is_float,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.align import align as align_model
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.compat import check_compatible
from keras_harden.fusion.repair import repair as repair_model

__all__ = ["average_weights"]

# Fine-tunes of one start keep nearly the direction of their kernels; models
# initialised independently have about orthogonal kernels (hidden units come
# in any order). The figures measured: in `average_weights`'s docstring.
SHARED_START_COSINE = 0.5


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


def kernel_cosine(a, b):
    """The cosine similarity of two models' kernels (floating-point variables
    of rank >= 2, batch-norm statistics aside) taken as one vector each,
    leaving out kernels equal in both (frozen layers tell nothing); None when
    no kernel differs."""
    skip = batchnorm_statistics_ids(a)
    dot = norm_a = norm_b = 0.0
    for (_, _, u), (_, _, v) in zip(weight_slots(a), weight_slots(b), strict=True):
        if id(u) in skip or not is_float(u) or len(u.shape) < 2:
            continue
        u, v = to_numpy(u).astype("float64"), to_numpy(v).astype("float64")
        if np.array_equal(u, v):
            continue
        dot += float(np.sum(u * v))
        norm_a += float(np.sum(u * u))
        norm_b += float(np.sum(v * v))
    if norm_a == 0.0 or norm_b == 0.0:
        return None
    return dot / np.sqrt(norm_a * norm_b)


def check_shared_start(models, coefficients, caller):
    """Warns when a model averaged in seems not to share the first one's start:
    their kernels are nearly orthogonal (see `SHARED_START_COSINE`)."""
    used = [i for i, c in enumerate(coefficients) if c > 0]
    for index in used[1:]:
        cosine = kernel_cosine(models[used[0]], models[index])
        if cosine is None or cosine >= SHARED_START_COSINE:
            continue
        warnings.warn(
            f"{caller}: models {used[0]} and {index} do not seem to share a start: "
            f"their kernels' cosine similarity is {cosine:.2f} (fine-tunes of one "
            "start measure 0.7-1.0, independently initialised models about 0), "
            "so their average is likely much worse than either. For models from "
            "different starts use `kh.fusion.ensemble(models)` or "
            "`kh.fusion.stack(models, holdout_data=...)` instead.",
            UserWarning,
            stacklevel=3,
        )


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


def check_align(align, align_data=None):
    check_bool("align", align)
    if align_data is not None and not align:
        raise ValueError(
            "`align_data` is for activation matching: it needs `align=True`. "
            f"Received: align={align!r}"
        )


def aligned_to(reference, models, data=None):
    """`models` with each one's hidden units permuted to match `reference`'s
    (by activations on `data` when given, else by weights; `reference`
    itself, and any model that is it, as they are)."""
    return [
        m if m is reference else align_model(reference, m, data=data) for m in models
    ]


def average_weights(
    models,
    weights=None,
    recalibrate=None,
    recalibrate_steps=None,
    align=False,
    repair=None,
    align_data=None,
):
    """Returns a new model whose weights are the (weighted) mean of `models`'.

    The models must share one architecture (`check_compatible`). Every
    floating-point variable is averaged, except the moving mean and variance
    of batch-norm layers: the mean of several models' statistics describes
    none of them and is wrong for the averaged weights. They are instead
    recomputed from `recalibrate` data (see `recalibrate_batchnorm`); when no
    data is given they are left as in the first model, with a warning.
    Integer variables (seed-generator states, counters) are copied from the
    first model.

    Averaging only works for models that share a start (fine-tunes of one
    model, points along one run). A model whose kernels are nearly orthogonal
    to the first model's (cosine similarity below 0.5) gets a warning saying
    to use `ensemble` or `stack` instead, or `align=True`. Measured on the
    digits with a Dense
    MLP (64-64-10) and two small conv nets (with and without batch norm):
    28 pairs sharing a start (a trained model fine-tuned 1-5 epochs by Adam
    or SGD, against its start or another fine-tune; one random init trained
    twice) gave 0.74-1.00; 9 pairs trained from different seeds gave
    -0.03-0.12, and their uniform average scored 0.49-0.91 test accuracy
    against 0.94-0.97 for its inputs.

    Models from different starts can be averaged after aligning them:
    `align=True` permutes every model's hidden units to match the first
    model's (`kh.fusion.align`: weight matching, or activation matching on
    `align_data`), then averages (no shared-start warning then).
    The average of aligned models has collapsed unit statistics; pass
    `repair=` inputs to reset them to the models' (`kh.fusion.repair`,
    REPAIR), which also recomputes batch-norm statistics from those inputs.

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
        recalibrate_steps: at most this many batches of `recalibrate` (or of
            `repair`).
        align: `True` to align every model to the first before averaging.
        align_data: inputs to align by activation matching (with
            `align=True`); default: weight matching.
        repair: inputs to repair the average on (REPAIR, then batch-norm
            recalibration): arrays, an `(x, y)` tuple, a dataset or an
            iterable of batches. Give `repair` or `recalibrate`, not both.

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
        time", ICML 2022. Ainsworth et al., "Git Re-Basin", ICLR 2023.
        Jordan et al., "REPAIR", ICLR 2023.
    """
    models = check_models(models)
    coefficients = _coefficients(weights, len(models))
    check_align(align, align_data)
    if repair is not None and recalibrate is not None:
        raise ValueError(
            "`repair` data also recalibrates batch norm: give `repair` or "
            f"`recalibrate`, not both. Received: recalibrate={recalibrate!r}"
        )
    check_compatible(models)
    if align:
        models = aligned_to(models[0], models, align_data)
    else:
        check_shared_start(models, coefficients, "average_weights")
    result = clone_with_weights(models[0])
    assign_average(result, models, coefficients)
    if repair is not None:
        return repair_model(
            result, models, repair, weights=coefficients, steps=recalibrate_steps
        )
    finish_batchnorm(result, recalibrate, recalibrate_steps, "average_weights")
    return result
