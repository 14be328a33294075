"""`recalibrate_batchnorm`: recompute batch-norm moving statistics from data."""

import keras
import numpy as np

from keras_harden.fusion._common import (
    batchnorm_layers,
    first_leaf,
    iterate_batches,
    to_numpy,
)

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(model, data, steps=None, batch_size=128):
    """Recomputes every batch-norm layer's moving mean and variance from data.

    After weights are averaged (a soup, SWA) the moving statistics stored in
    the batch-norm layers belong to none of the averaged models: each layer's
    input distribution has changed. Like PyTorch's
    `torch.optim.swa_utils.update_bn`, this runs the model over `data` in
    training mode (each batch-norm layer normalises with its batch's
    statistics, so what a layer sees does not depend on the stale statistics
    upstream), and sets each layer's moving mean and variance to the mean and
    (biased) variance of its inputs over *all* of `data`: the per-batch
    statistics are pooled exactly (variance = E[x^2] - E[x]^2 over every
    example), not blended by the layer's momentum. Every other variable
    (kernels, dropout seed states, ...) is restored to its value before the
    call, and each layer's `momentum` and `trainable` flag too.

    Training mode also switches on dropout and augmentation layers while the
    statistics are gathered, as during training (and as `update_bn` does).

    The model is modified in place and returned.

    Args:
        model: a built Keras model.
        data: the inputs to calibrate on: an array (or list/dict of arrays for
            a multi-input model), an `(x, y)` tuple (labels are ignored), a
            `tf.data.Dataset` or any iterable of batches.
        steps: at most this many batches (default: all of `data`; give it
            for a dataset that repeats forever).
        batch_size: batch size used to split arrays (ignored for datasets).

    Returns:
        `model`, with recalibrated statistics.

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> model = keras.Sequential(
    ...     [keras.Input((3,)), keras.layers.BatchNormalization()])
    >>> x = np.array([[0.0, 1, 2], [2, 3, 4]], "float32")
    >>> _ = kh.fusion.recalibrate_batchnorm(model, x)
    >>> model.layers[0].moving_mean.numpy()
    array([1., 2., 3.], dtype=float32)

    References:
        Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
        Generalization", UAI 2018, and `torch.optim.swa_utils.update_bn`.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be a positive int. Received: steps={steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    layers = batchnorm_layers(model)
    if not layers:
        return model
    for layer in layers:
        if getattr(layer, "renorm", False):
            raise ValueError(
                f"Batch renormalization ({layer.name!r}) is not supported by "
                f"recalibrate_batchnorm. Received: model={model.name!r}"
            )
    statistics = {id(layer.moving_mean) for layer in layers}
    statistics |= {id(layer.moving_variance) for layer in layers}
    others = [v for v in model.variables if id(v) not in statistics]
    saved = [to_numpy(v) for v in others]
    flags = [(layer.momentum, layer.trainable) for layer in layers]
    sums = [None] * len(layers)  # per layer: [count, sum of means, sum of E[x^2]]
    try:
        for layer in layers:
            layer.momentum = 0.0  # moving statistics := this batch's statistics
            layer.trainable = True  # a frozen layer would not update them
        seen = 0
        for x, _ in iterate_batches(data, batch_size, steps):
            n = int(first_leaf(x).shape[0])
            if n == 0:
                continue
            model(x, training=True)
            seen += n
            for i, layer in enumerate(layers):
                mean = to_numpy(layer.moving_mean).astype("float64")
                var = to_numpy(layer.moving_variance)
                square = var.astype("float64") + mean**2
                if sums[i] is None:
                    sums[i] = [0, np.zeros_like(mean), np.zeros_like(mean)]
                sums[i][0] += n
                sums[i][1] += n * mean
                sums[i][2] += n * square
        if seen == 0:
            raise ValueError(
                f"`data` yielded no examples to recalibrate on. Received: data={data!r}"
            )
    finally:
        for layer, (momentum, trainable) in zip(layers, flags, strict=True):
            layer.momentum = momentum
            layer.trainable = trainable
        for variable, value in zip(others, saved, strict=True):
            variable.assign(value)
    for layer, (count, total, square) in zip(layers, sums, strict=True):
        mean = total / count
        variance = np.maximum(square / count - mean**2, 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return model
