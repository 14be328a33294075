"""Which per-example method a model allows, and its ghost forward pass.

DP-SGD needs each example's gradient norm. Two ways, chosen per model:

- `"ghost"`: the model is a chain of layers (a `Sequential`, or a
  functional model whose layers each take the previous one's output)
  whose trainable layers are all Dense, Conv1D / Conv2D (channels last,
  `groups=1`) or Embedding. `ghost_forward` runs the chain itself, adding a
  zero "probe" to each of those layers' outputs before the activation; the
  gradient at a probe is each example's output gradient, and
  `keras_harden.privacy.ghost_norms` turns it and the layer's input into
  squared norms without forming the per-example gradients.
- `"vectorized"`: anything else made of per-example layers: the model's own
  call vectorized over the batch (`keras_harden._gradients.
  per_example_gradients`), one gradient per example in memory.

Layers that mix the examples of a batch have no per-example gradient and
are refused (`check_model`): batch normalization. Regularization losses are
refused too (add weight decay to the optimizer instead, e.g. `AdamW`): a
data-independent penalty does not need clipping, and clipping it with the
data would change what it does.
"""

import keras
from keras import ops

from keras_harden.privacy import ghost_norms

__all__ = [
    "METHODS",
    "check_model",
    "choose_method",
    "clipped_sum",
    "ghost_forward",
    "probe_shapes",
    "squared_norms",
    "sublayers",
]

METHODS = ("auto", "ghost", "vectorized")


def sublayers(layer):
    """Every layer inside `layer` (depth first), `layer` excluded."""
    for child in getattr(layer, "layers", None) or []:
        yield child
        yield from sublayers(child)


def check_model(model):
    """Raises ValueError for what DP-SGD cannot train per example.

    Args:
        model: a Keras model.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
    ...                           keras.layers.BatchNormalization()])
    >>> try:
    ...     check_model(model)
    ... except ValueError as error:
    ...     print(str(error)[:62])
    Batch normalization mixes the examples of a batch, so DP-SGD c
    """
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(
                "Batch normalization mixes the examples of a batch, so DP-SGD "
                "cannot form one example's gradient: replace it with "
                "`keras.layers.GroupNormalization` or `LayerNormalization` "
                f"(per example). Received: layer={layer.name!r} "
                f"({type(layer).__name__})"
            )
        for attribute in (
            "kernel_regularizer",
            "bias_regularizer",
            "embeddings_regularizer",
            "activity_regularizer",
            "gamma_regularizer",
            "beta_regularizer",
        ):
            if getattr(layer, attribute, None) is not None:
                raise ValueError(
                    "DP training does not take regularization losses: use "
                    "the optimizer's weight decay (e.g. `keras.optimizers."
                    f"AdamW`). Received: layer={layer.name!r} with "
                    f"{attribute}={getattr(layer, attribute)!r}"
                )


def _chain(model):
    """The layers of `model` in order if it is a chain, else None."""
    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            if isinstance(layer, keras.Sequential):
                inner = _chain(layer)
                if inner is None:
                    return None
                layers.extend(inner)
            else:
                layers.append(layer)
        return layers
    if (
        not isinstance(model, keras.Model)
        or len(getattr(model, "inputs", []) or []) != 1
    ):
        return None
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    try:
        previous = model.inputs[0]
        for layer in layers:
            if layer.input is not previous:
                return None
            previous = layer.output
        if previous is not model.outputs[0] or len(model.outputs) != 1:
            return None
    except (AttributeError, ValueError):  # a layer used twice has no one input
        return None
    return layers


def _ghost_kind(layer):
    """`"dense"`, `"conv"`, `"embedding"`, `"plain"` (no trainable
    variables) or None (trainable, but not a layer with ghost norms)."""
    if not layer.trainable_variables:
        return "plain"
    if isinstance(layer, keras.layers.Dense):
        plain = not getattr(layer, "lora_enabled", False)
        return (
            "dense" if plain and not getattr(layer, "quantization_mode", None) else None
        )
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        ok = (
            layer.data_format == "channels_last"
            and layer.groups == 1
            and layer.padding in ("valid", "same")
        )
        return "conv" if ok else None
    if isinstance(layer, keras.layers.Embedding):
        plain = not layer.mask_zero and not getattr(layer, "lora_enabled", False)
        return "embedding" if plain else None
    return None


def choose_method(model, method="auto"):
    """`"ghost"` or `"vectorized"` for `model` (see the module docstring).

    Args:
        model: a built Keras model.
        method: `"auto"` (ghost when the model allows it), `"ghost"`
            (ValueError when it does not) or `"vectorized"`.

    Returns:
        `(method, layers)`: the method and, for ghost, the chain of layers.

    Example:

    >>> mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "tanh"),
    ...                         keras.layers.Dense(2)])
    >>> choose_method(mlp)[0]
    'ghost'
    >>> norm = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization()])
    >>> choose_method(norm)[0]
    'vectorized'
    """
    if method not in METHODS:
        raise ValueError(
            f"`per_example` must be one of {', '.join(map(repr, METHODS))}. "
            f"Received: per_example={method!r}"
        )
    if method == "vectorized":
        return "vectorized", None
    layers = _chain(model)
    reason = None
    if layers is None:
        reason = "the model is not a chain of layers (Sequential or a functional chain)"
    else:
        for layer in layers:
            if _ghost_kind(layer) is None:
                reason = (
                    f"layer {layer.name!r} ({type(layer).__name__}) has trainable "
                    "variables but no ghost norm"
                )
                break
    if reason is None:
        return "ghost", layers
    if method == "ghost":
        raise ValueError(
            f"Ghost clipping needs Dense, Conv1D/Conv2D or Embedding layers in a "
            f"chain: {reason}. Use per_example='vectorized'. Received: "
            "per_example='ghost'"
        )
    return "vectorized", None


def probe_shapes(layers, input_shape):
    """The output shape of each ghost layer (Dense, Conv, Embedding) of the
    chain for inputs of `input_shape` (batch included): where its probe
    goes."""
    shapes, shape = [], tuple(input_shape)
    for layer in layers:
        shape = tuple(layer.compute_output_shape(shape))
        if _ghost_kind(layer) != "plain":
            shapes.append(shape)
    return shapes


def _activate(layer, z):
    return z if layer.activation is None else layer.activation(z)


def ghost_forward(layers, x, probes, training=True):
    """Runs the chain on `x`, adding `probes[j]` to the `j`-th ghost layer's
    output before its activation.

    Args:
        layers: the chain, from `choose_method`.
        x: the batch of inputs.
        probes: zero tensors of `probe_shapes(layers, x.shape)`, in the
            compute dtype of their layers.
        training: the `training` flag of the other layers.

    Returns:
        `(outputs, taps)`: the model's outputs and, per ghost layer,
        `(kind, layer, input)`, what `squared_norms` and `clipped_sum`
        need: a convolution's input as its patches (`ghost_norms.
        conv_patches`), an embedding's as int32 ids.
    """
    taps, h, j = [], x, 0
    for layer in layers:
        kind = _ghost_kind(layer)
        if kind == "plain":
            h = layer(h, training=training)
            continue
        dtype = layer.compute_dtype
        if kind == "embedding":
            ids = ops.cast(h, "int32")
            h = ops.take(ops.cast(layer.embeddings, dtype), ids, axis=0) + probes[j]
            taps.append((kind, layer, ids))
        else:
            a = ops.cast(h, dtype)
            kernel = ops.cast(layer.kernel, dtype)
            if kind == "dense":
                z = ops.matmul(a, kernel)
            else:
                z = ops.conv(
                    a,
                    kernel,
                    strides=layer.strides,
                    padding=layer.padding,
                    data_format="channels_last",
                    dilation_rate=layer.dilation_rate,
                )
            if layer.use_bias:
                z = z + ops.cast(layer.bias, dtype)
            h = _activate(layer, z + probes[j])
            if kind == "conv":  # the norms and the clipped sum multiply patches
                a = ghost_norms.conv_patches(
                    a,
                    layer.kernel_size,
                    layer.strides,
                    layer.padding,
                    layer.dilation_rate,
                )
            taps.append((kind, layer, a))
        j += 1
    return h, taps


def squared_norms(taps, probe_gradients):
    """Each example's squared gradient norm over the ghost layers.

    Args:
        taps: from `ghost_forward`.
        probe_gradients: the gradient of each example's loss at each probe
            (the pullback of ones), unscaled.

    Returns:
        A float32 tensor `(batch,)`.
    """
    total = 0.0
    for (kind, layer, a), g in zip(taps, probe_gradients, strict=True):
        if kind == "embedding":
            total = total + ghost_norms.embedding_squared_norms(a, g)
            continue
        total = total + ghost_norms.dense_squared_norms(a, g, layer.use_bias)
    return total


def clipped_sum(taps, output_gradients, factors):
    """`sum_i factors_i * g_i` for every variable of the ghost layers, from
    their inputs and output gradients (Bu et al.'s book-keeping: no second
    backward pass through the model).

    A Dense kernel's is `a^T (f * g)` over the batch and positions, its
    bias's `sum (f * g)`; a convolution's is the same product with its
    input's patches, reshaped to the kernel; an embedding table's adds each
    `f_i g_{i,t}` to row `id_{i,t}`.

    Args:
        taps: from `ghost_forward`.
        output_gradients: each example's gradient at each probe, unscaled.
        factors: `(batch,)` clip factors.

    Returns:
        `{id(variable): float32 gradient}`.
    """
    sums = {}
    for (kind, layer, a), g in zip(taps, output_gradients, strict=True):
        weighted = g * ops.reshape(factors, (-1,) + (1,) * (len(g.shape) - 1))
        if kind == "embedding":
            sums[id(layer.embeddings)] = ops.segment_sum(
                ops.reshape(weighted, (-1, weighted.shape[-1])),
                ops.reshape(a, (-1,)),
                num_segments=layer.input_dim,
            )
            continue
        a = ops.cast(a, "float32")
        kernel = ops.matmul(
            ops.transpose(ops.reshape(a, (-1, a.shape[-1]))),
            ops.reshape(weighted, (-1, weighted.shape[-1])),
        )
        sums[id(layer.kernel)] = ops.reshape(kernel, layer.kernel.shape)
        if layer.use_bias:
            sums[id(layer.bias)] = ops.sum(
                ops.reshape(weighted, (-1, weighted.shape[-1])), axis=0
            )
    return sums
