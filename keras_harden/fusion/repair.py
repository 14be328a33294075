"""`repair`: reset a merged model's unit statistics to its endpoints' (REPAIR)."""

import keras
import numpy as np

from keras_harden.fusion._common import (
    batchnorm_layers,
    check_models,
    clone_with_weights,
    first_leaf,
    iterate_batches,
    to_numpy,
)
from keras_harden.fusion.align import Analysis
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.compat import check_compatible

__all__ = ["repair"]


def _mixture(weights, count):
    """`weights` (one non-negative number per endpoint) normalised to sum 1;
    the uniform mixture when None."""
    if weights is None:
        return np.full(count, 1.0 / count)
    try:
        values = np.asarray([float(w) for w in weights], "float64")
    except (TypeError, ValueError):
        values = None
    if (
        values is None
        or len(values) != count
        or not np.all(np.isfinite(values))
        or np.any(values < 0)
        or values.sum() <= 0
    ):
        raise ValueError(
            f"`weights` must be {count} finite non-negative numbers (one per "
            f"endpoint) with a positive sum. Received: weights={weights!r}"
        )
    return values / values.sum()


def repair_targets(analysis):
    """The layers whose pre-activations REPAIR resets: every Dense or Conv
    layer making hidden units (not an output layer, not an Embedding), except
    those whose output a batch norm normalises (recalibration repairs those)."""
    targets = []
    for mixing in analysis.mixing:
        layer = mixing.layer
        if analysis.group(mixing.group) is None or mixing.normalized:
            continue
        if isinstance(layer, keras.layers.Embedding):
            continue
        if not mixing.top_level:
            raise ValueError(
                f"`repair` needs each hidden layer called once in the top-level "
                f"model; {layer.name!r} is shared or nested. "
                f"Received: merged={analysis.model.name!r}"
            )
        if layer.bias is None:
            raise ValueError(
                f"`repair` folds a shift into each hidden layer's bias; "
                f"{layer.name!r} has none (use_bias=False) and no batch norm "
                f"follows it. Received: merged={analysis.model.name!r}"
            )
        targets.append(layer)
    return targets


def _linear_copy(layer):
    """`layer` without its activation, holding its current weights."""
    config = layer.get_config()
    config["activation"] = None
    config["name"] = f"{layer.name}_linear"
    copy = type(layer).from_config(config)
    copy.build(layer.input.shape)
    copy.set_weights(layer.get_weights())
    return copy


def preactivation_moments(model, layers, data, steps, batch_size):
    """Each layer's per-unit mean and standard deviation of its output before
    the activation, over `data` (inference mode; every spatial position a
    sample): a list of `(mean, std)` float64 arrays."""
    features = keras.Model(model.inputs, [layer.input for layer in layers])
    linear = [_linear_copy(layer) for layer in layers]
    sums = [None] * len(layers)
    for x, _ in iterate_batches(data, batch_size, steps):
        if int(first_leaf(x).shape[0]) == 0:
            continue
        inputs = keras.tree.flatten(features.predict_on_batch(x))
        for index, (copy, value) in enumerate(zip(linear, inputs, strict=True)):
            z = to_numpy(copy(value)).astype("float64")
            z = z.reshape(-1, z.shape[-1])  # channels last
            if sums[index] is None:
                sums[index] = [0, 0.0, 0.0]
            sums[index][0] += z.shape[0]
            sums[index][1] = sums[index][1] + z.sum(0)
            sums[index][2] = sums[index][2] + (z * z).sum(0)
    if sums and sums[0] is None:
        raise ValueError(f"`data` yielded no examples. Received: data={data!r}")
    moments = []
    for count, total, square in sums:
        mean = total / count
        moments.append((mean, np.sqrt(np.maximum(square / count - mean**2, 0.0))))
    return moments


def _unit_axis(layer):
    """The kernel axis of `layer`'s output units."""
    if isinstance(
        layer,
        (
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        ),
    ):
        return -2
    return -1


def fold(layer, scale, shift):
    """Makes `layer`'s pre-activation `scale * z + shift` (per unit) by
    scaling its kernel's output units and rewriting its bias."""
    kernel = to_numpy(layer.kernel.value).astype("float64")
    shape = [1] * kernel.ndim
    shape[_unit_axis(layer)] = -1
    layer.kernel.assign((kernel * scale.reshape(shape)).astype(layer.kernel.dtype))
    bias = to_numpy(layer.bias.value).astype("float64")
    layer.bias.assign((scale * bias + shift).astype(layer.bias.dtype))


def repair(
    merged, endpoints, data, weights=None, steps=None, batch_size=128, epsilon=1e-5
):
    """Resets each hidden unit's statistics in a merged model to its endpoints'.

    Averaging the weights of two (aligned) networks shrinks the spread of
    their hidden units' pre-activations: unit `i` of the average computes the
    average of two correlated but different features, whose variance is
    smaller than either's. The collapse compounds layer after layer and
    costs the merged model much of its accuracy. REPAIR (Jordan et al. 2023)
    undoes it: for each hidden Dense or Conv layer, in graph order, it
    measures each unit's pre-activation mean and standard deviation over
    `data` in the merged model (with the layers before it already repaired)
    and rescales and shifts the unit so they equal the endpoints' mixture:
    target mean `sum_k w_k mean_k`, target std `sum_k w_k std_k`. The
    affine correction `z -> s * z + t` with `s = std_target /
    sqrt(var_merged + epsilon)` and `t = mean_target - s * mean_merged` is
    folded exactly into the layer: its kernel's output units are scaled by
    `s` and its bias becomes `s * bias + t`. The architecture does not
    change.

    Layers followed by batch normalisation (through per-channel layers only)
    are left alone: their batch-norm statistics are recomputed from `data`
    instead (`recalibrate_batchnorm`), before each layer is measured and once
    at the end, which is REPAIR's own recipe for batch-normalised networks.
    Output layers are not touched.

    Statistics are taken in inference mode (dropout off), every spatial
    position of a convolution's output counting as one sample; the merged
    model pays one pass over `data` per repaired layer.

    Args:
        merged: the built merged model (e.g. `average_weights` of aligned
            models).
        endpoints: the models that were merged, in the unit order of `merged`
            (aligned to one another), of its architecture.
        data: inputs to measure on: arrays, an `(x, y)` tuple, a
            `tf.data.Dataset` or an iterable of batches. Training inputs
            without augmentation are the usual choice.
        weights: one non-negative number per endpoint, the mixture the
            merged model is (normalised to sum 1). Default: uniform.
        steps: at most this many batches of `data`.
        batch_size: batch size used to split arrays.
        epsilon: added to the merged model's variance before dividing by it.

    Returns:
        A new model: a copy of `merged` with repaired weights (and
        batch-norm statistics). No input model is modified.

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> def mlp():
    ...     return keras.Sequential([keras.Input((4,)),
    ...         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    >>> a, b = mlp(), mlp()
    >>> b = kh.fusion.align(a, b)
    >>> merged = kh.fusion.average_weights([a, b], align=True)
    >>> x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    >>> repaired = kh.fusion.repair(merged, [a, b], x)
    >>> hidden = keras.Model(repaired.inputs, repaired.layers[0].output)
    >>> z = hidden.predict(x, verbose=0)  # after the ReLU: still spread out
    >>> bool(z.std() > 0)
    True

    References:
        Jordan, Sedghi, Saukh, Entezari and Neyshabur, "REPAIR:
        REnormalizing Permuted Activations for Interpolation Repair", ICLR
        2023; github.com/KellerJordan/REPAIR.
    """
    merged = check_models(merged, name="merged")[0]
    endpoints = check_models(endpoints, name="endpoints")
    if data is None:
        raise ValueError("`data` must not be None. Received: data=None")
    if not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ValueError(
            f"`epsilon` must be a non-negative number. Received: epsilon={epsilon!r}"
        )
    mixture = _mixture(weights, len(endpoints))
    check_compatible([merged, *endpoints])
    result = clone_with_weights(merged)
    analysis = Analysis(result)
    targets = repair_targets(analysis)
    has_batchnorm = bool(batchnorm_layers(result))
    # one pass per endpoint, then one per repaired layer of the merged model
    targets_moments = [[0.0, 0.0] for _ in targets]
    if not targets and not has_batchnorm:
        return result
    for coefficient, endpoint in zip(mixture, endpoints, strict=True):
        if coefficient == 0.0 or not targets:
            continue
        layers = repair_targets(_matching(Analysis(endpoint), analysis, endpoint))
        moments = preactivation_moments(endpoint, layers, data, steps, batch_size)
        for slot, (mean, std) in zip(targets_moments, moments, strict=True):
            slot[0] = slot[0] + coefficient * mean
            slot[1] = slot[1] + coefficient * std
    for layer, (mean_target, std_target) in zip(targets, targets_moments, strict=True):
        if has_batchnorm:
            recalibrate_batchnorm(result, data, steps=steps, batch_size=batch_size)
        [(mean, std)] = preactivation_moments(result, [layer], data, steps, batch_size)
        scale = std_target / np.sqrt(std**2 + epsilon)
        fold(layer, scale, mean_target - scale * mean)
    if has_batchnorm:
        recalibrate_batchnorm(result, data, steps=steps, batch_size=batch_size)
    return result


def _matching(endpoint_analysis, merged_analysis, endpoint):
    if endpoint_analysis.signature() != merged_analysis.signature():
        raise ValueError(
            f"Endpoint {endpoint.name!r} joins its channels differently from "
            f"the merged model. Received: endpoints={endpoint.name!r}"
        )
    return endpoint_analysis
