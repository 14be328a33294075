"""Layer-sequential unit-variance (LSUV) initialization for Keras 3 models."""

from typing import NamedTuple

import keras
import numpy as np

from keras_harden._batches import first_inputs
from keras_harden._validation import check_int, check_positive
from keras_harden.initializers import _common

__all__ = ["lsuv", "LSUVLayerReport"]


class LSUVLayerReport(NamedTuple):
    """What `lsuv` did to one layer."""

    layer: str
    """The layer's name."""
    weight: str
    """The rescaled weight: `kernel` (DepthwiseConv's filters too) or
    `pointwise_kernel` (SeparableConv)."""
    iterations: int
    """How many times the weight was rescaled."""
    std: float
    """The standard deviation measured last (after the last rescaling)."""
    converged: bool
    """Whether `abs(std - target_std) <= tol`."""


def _targets(layer):
    """(weights to pre-initialize, weight to rescale) of a layer, by name."""
    if isinstance(layer, keras.layers.SeparableConv2D) or isinstance(
        layer, keras.layers.SeparableConv1D
    ):
        return ["depthwise_kernel", "pointwise_kernel"], "pointwise_kernel"
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return ["kernel"], "kernel"  # Keras 3 keeps the depthwise filters in `kernel`
    kernel = getattr(layer, "kernel", None)
    if isinstance(kernel, keras.Variable) and len(kernel.shape) >= 2:
        return ["kernel"], "kernel"
    return [], None


def _orthonormal(variable, depthwise, seed):
    """An orthonormal tensor of the variable's shape. Depthwise kernels
    `(spatial..., channels, multiplier)` are orthonormal across the filters of
    all channels (rows = spatial taps); other kernels flatten all axes but the
    last, as `keras.initializers.Orthogonal` does."""
    shape = tuple(int(d) for d in variable.shape)
    if depthwise:
        rows, cols = int(np.prod(shape[:-2])), shape[-2] * shape[-1]
    else:
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
    matrix = _common.orthogonal_matrix(rows, cols, seed)
    return keras.ops.cast(keras.ops.reshape(matrix, shape), variable.dtype)


def lsuv(
    model,
    data,
    target_std=1.0,
    tol=0.1,
    max_iter=10,
    pre_activation=True,
    orthonormal=True,
    seed=None,
):
    """Layer-sequential unit-variance initialization of a built Keras model.

    Mishkin and Matas (2016): first give every kernel an orthonormal value,
    then, layer by layer from the input onwards, run `data` through the model
    up to that layer and divide the kernel by the standard deviation of the
    layer's output (times `target_std`), until that standard deviation is
    within `tol` of `target_std` or `max_iter` rescalings were made. The
    result is a network whose every layer starts with unit-scale signals on
    real data, whatever the depth and activation.

    Handled: every top-level layer with a `kernel` of rank >= 2 (Dense,
    Conv1D/2D/3D, their Transpose variants, EinsumDense), DepthwiseConv1D/2D
    (whose `kernel` holds the depthwise filters in Keras 3; its orthonormal
    pre-init makes the filters of all channels orthonormal to each other) and
    SeparableConv1D/2D, for which both kernels get the
    orthonormal pre-init and the `pointwise_kernel` is rescaled (it sets the
    output scale for all channels at once; the depthwise filters stay
    orthonormal). Layers inside nested models and layers called more than once
    (shared) are skipped. Only kernels are written: biases, normalisation
    statistics and every other weight keep their values.

    With `pre_activation=True` (the default) the statistic is taken before a
    layer's own fused activation (`Dense(64, activation="tanh")` is measured on
    `x W + b`): a saturating activation could never reach `target_std`.
    `pre_activation=False` measures the layer's output as Keras returns it,
    as the Keras 2 implementations did. The activation is swapped for the
    identity only while measuring and restored afterwards.

    Works on functional and Sequential models (a sub-model
    `keras.Model(model.inputs, layer.output)` per layer, run eagerly in
    inference mode). `data` should be one batch of a few hundred samples.

    Args:
        model: a built functional or Sequential model.
        data: inputs (array, list or dict), an `(x, y)` pair, or an iterable of
            batches (its first batch is used).
        target_std: the standard deviation to reach, > 0.
        tol: accepted absolute deviation from `target_std`, > 0.
        max_iter: most rescalings per layer, an int >= 1.
        pre_activation: measure before the layer's fused activation.
        orthonormal: start from an orthonormal kernel (LSUV's first step);
            `False` only rescales the kernels the model already has.
        seed: None, an int or a `keras.random.SeedGenerator` for the
            orthonormal draws.

    Returns:
        A list of `LSUVLayerReport(layer, weight, iterations, std, converged)`,
        one per handled layer, in the order they were processed.

    Example:

    >>> model = keras.Sequential([keras.Input((64,))] +
    ...     [keras.layers.Dense(64, activation="tanh") for _ in range(32)] +
    ...     [keras.layers.Dense(10)])
    >>> x = np.random.default_rng(0).normal(size=(256, 64)).astype("float32")
    >>> report = kh.initializers.lsuv(model, x, seed=0)
    >>> all(r.converged for r in report)
    True

    References:
        Mishkin, Matas. "All you need is a good init", ICLR 2016.
        https://arxiv.org/abs/1511.06422 (reference code:
        https://github.com/ducha-aiki/LSUVinit).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model. Received: model={type(model).__name__}"
        )
    check_positive("target_std", target_std)
    check_positive("tol", tol)
    check_int("max_iter", max_iter, minimum=1)
    seed = _common.check_seed(seed, "lsuv")
    x = first_inputs(data)
    if not model.built:
        model(x)
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if inputs and len(inputs) == 1:
        inputs = inputs[0]
    if inputs is None or (isinstance(inputs, list) and not inputs):
        raise ValueError(
            "`model` must be a functional or Sequential model with known inputs "
            "(a subclassed model has no layer graph to cut). "
            f"Received: model={type(model).__name__}"
        )

    report = []
    for layer in model.layers:
        init_names, scaled_name = _targets(layer)
        if scaled_name is None:
            continue
        try:
            probe = keras.Model(inputs, layer.output)
        except (AttributeError, ValueError):
            continue  # shared layer (several outputs) or outside the graph
        if orthonormal:
            for name in init_names:
                variable = getattr(layer, name)
                depthwise = name == "depthwise_kernel" or isinstance(
                    layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
                )
                value = _orthonormal(variable, depthwise, _common.draw_seed(seed))
                variable.assign(value)
        variable = getattr(layer, scaled_name)
        iterations, std = 0, _measure(probe, layer, x, pre_activation)
        while abs(std - target_std) > tol and iterations < max_iter:
            if not np.isfinite(std) or std == 0.0:
                break
            scale = keras.ops.cast(target_std / std, variable.dtype)
            variable.assign(variable * scale)
            iterations += 1
            std = _measure(probe, layer, x, pre_activation)
        report.append(
            LSUVLayerReport(
                layer=layer.name,
                weight=scaled_name,
                iterations=iterations,
                std=std,
                converged=bool(abs(std - target_std) <= tol),
            )
        )
    return report


def _measure(probe, layer, x, pre_activation):
    """Standard deviation of `layer`'s output (optionally pre-activation) on `x`."""
    activation = getattr(layer, "activation", None)
    swap = pre_activation and activation is not None
    if swap:
        layer.activation = keras.activations.linear
    try:
        out = probe(x, training=False)
    finally:
        if swap:
            layer.activation = activation
    out = np.asarray(keras.ops.convert_to_numpy(out), dtype="float64")
    return float(out.std())
