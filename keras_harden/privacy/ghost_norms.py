"""Per-example squared gradient norms of Dense, Conv and Embedding layers
without forming the per-example gradients ("ghost" norms).

A Dense layer `z = a W + b` applied to `T` positions of example `i`
(`a_i`: `(T, d)`, the gradient of the example's loss with respect to the
outputs `g_i`: `(T, k)`) has the per-example kernel gradient
`a_i^T g_i` (`d x k`), whose squared Frobenius norm is

    ||a_i^T g_i||^2 = sum_{t,s} (a_i a_i^T)_{ts} (g_i g_i^T)_{ts}

(Li et al. 2022; Bu et al. 2023): `T^2 (d + k)` work instead of
`T d k`, and no `d x k` tensor per example. With one position (`T = 1`,
the usual MLP) it is `||a_i||^2 ||g_i||^2`. Whichever of the two forms
is cheaper for the shapes is used (on JAX on a CPU, small kernels form
`a_i^T g_i` by a broadcast, which XLA fuses). The bias gradient is `sum_t g_{i,t}`. A
convolution is the same product on the patches of its input; an embedding
lookup's table gradient puts `g_{i,t}` on row `id_{i,t}`, so its squared
norm sums `<g_{i,t}, g_{i,s}>` over the pairs of positions with equal ids.
Every function here but `conv_patches` takes the tensors and returns
`(batch,)` squared norms.
"""

import itertools
import math

import keras
from keras import ops

# The largest kernel (inputs x outputs) whose per-example gradients JAX on a
# CPU forms by broadcasting (see `dense_squared_norms`): measured at batch 376 on 45
# shapes, faster at every one up to 512, slower at some above (64 x 32 over
# 64 positions: 1.4x slower).
_XLA_BROADCAST_MAX_KERNEL = 512

__all__ = [
    "conv_patches",
    "dense_squared_norms",
    "embedding_squared_norms",
]


def _positions(x):
    """`x` as `(batch, positions, features)`: every axis between the first
    and the last is a position."""
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], -1, shape[-1]))


def dense_squared_norms(inputs, output_gradients, use_bias=True):
    """Squared norms of each example's gradient of a Dense kernel and bias.

    Args:
        inputs: the layer's inputs `a`, `(batch, ..., d)`.
        output_gradients: the gradient of each example's loss with respect
            to the layer's outputs before the activation, `(batch, ..., k)`.
        use_bias: whether the layer has a bias (its squared norm is added).

    Returns:
        A float32 tensor `(batch,)`.

    Example:

    >>> a = np.array([[1.0, 2.0], [0.0, 3.0]])          # 2 examples, d = 2
    >>> g = np.array([[2.0], [1.0]])                    # k = 1
    >>> # kernel: ||a||^2 ||g||^2 = 5 * 4 and 9 * 1; bias: ||g||^2 = 4 and 1
    >>> ops.convert_to_numpy(dense_squared_norms(a, g)).tolist()
    [24.0, 10.0]
    """
    a = _positions(ops.cast(inputs, "float32"))
    g = _positions(ops.cast(output_gradients, "float32"))
    positions, d, k = a.shape[1], a.shape[2], g.shape[2]
    if positions == 1:
        kernel = ops.sum(a * a, axis=(1, 2)) * ops.sum(g * g, axis=(1, 2))
    elif d * k <= _XLA_BROADCAST_MAX_KERNEL and _on_xla_cpu():
        # XLA on a CPU multiplies many small matrices slowly: for small
        # kernels the per-example gradient is faster as one fused
        # broadcast-and-sum (0.16-0.8 of the batched product at 16-256
        # positions); TensorFlow's batched product stays faster (3-20x).
        per_example = ops.sum(a[:, :, :, None] * g[:, :, None, :], axis=1)
        kernel = ops.sum(per_example * per_example, axis=(1, 2))
    elif positions is not None and positions * positions <= d * k:
        a_gram = ops.matmul(a, ops.transpose(a, (0, 2, 1)))
        g_gram = ops.matmul(g, ops.transpose(g, (0, 2, 1)))
        kernel = ops.sum(a_gram * g_gram, axis=(1, 2))
    else:
        per_example = ops.einsum("btd,btk->bdk", a, g)
        kernel = ops.sum(per_example * per_example, axis=(1, 2))
    if not use_bias:
        return kernel
    bias = ops.sum(g, axis=1)
    return kernel + ops.sum(bias * bias, axis=1)


def _on_xla_cpu():
    """Whether the step runs on JAX on a CPU (where the broadcast form was
    measured; on accelerators XLA's batched products were not)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def conv_patches(inputs, kernel_size, strides, padding, dilation_rate):
    """The patches a channels-last 1D or 2D convolution multiplies by its
    kernel: `(batch, *output_positions, prod(kernel_size) * channels)`.

    A patch's features are in the kernel's layout (kernel positions row by
    row, then channels), so `patches @ reshape(kernel, (-1, filters))` is
    the convolution and `reshape(patches^T g, kernel.shape)` the kernel
    gradient for output gradients `g`.

    On JAX the patches are strided slices of the padded input, one per
    kernel position; on TensorFlow they are `keras.ops.image.extract_patches`,
    a convolution with an identity kernel. On a CPU, for 3x3 kernels over 1
    and 16 channels, XLA ran the slices 3.5-6x faster than that convolution
    and oneDNN ran the convolution 1.7x faster than the slices.

    Args:
        inputs: `(batch, length, channels)` or `(batch, h, w, channels)`.
        kernel_size, strides, dilation_rate: tuples of the convolution's.
        padding: `"valid"` or `"same"`.

    Returns:
        A tensor of patches, one per output position of the convolution.

    Example:

    >>> x = np.arange(4.0).reshape(1, 4, 1)           # one sequence 0 1 2 3
    >>> ops.convert_to_numpy(conv_patches(x, (2,), (2,), "valid", (1,))).tolist()
    [[[0.0, 1.0], [2.0, 3.0]]]
    """
    if keras.backend.backend() == "jax":
        return _sliced_patches(inputs, kernel_size, strides, padding, dilation_rate)
    if len(kernel_size) == 1:  # a 1D convolution is a 2D one of height 1
        patches = conv_patches(
            ops.expand_dims(inputs, 1),
            (1, *kernel_size),
            (1, *strides),
            padding,
            (1, *dilation_rate),
        )
        return ops.squeeze(patches, 1)
    return ops.image.extract_patches(
        inputs,
        tuple(kernel_size),
        strides=tuple(strides),
        dilation_rate=tuple(dilation_rate),
        padding=padding,
        data_format="channels_last",
    )


def _conv_geometry(size, kernel, stride, padding, dilation):
    """`(output_size, (pad_before, pad_after))` of one spatial axis, with
    Keras's (TensorFlow's) `"same"`: the extra padding of an uneven total
    goes after."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, (0, 0)
    output = -(-size // stride)
    total = max((output - 1) * stride + span - size, 0)
    return output, (total // 2, total - total // 2)


def _sliced_patches(inputs, kernel_size, strides, padding, dilation_rate):
    geometry = [
        _conv_geometry(size, kernel, stride, padding, dilation)
        for size, kernel, stride, dilation in zip(
            inputs.shape[1:-1], kernel_size, strides, dilation_rate, strict=True
        )
    ]
    outputs = [output for output, _ in geometry]
    pads = [pad for _, pad in geometry]
    if any(pad != (0, 0) for pad in pads):
        inputs = ops.pad(inputs, [(0, 0), *pads, (0, 0)])
    pieces = []
    for offsets in itertools.product(*(range(k) for k in kernel_size)):
        index = (slice(None),)
        for offset, output, stride, dilation in zip(
            offsets, outputs, strides, dilation_rate, strict=True
        ):
            start = offset * dilation
            index += (slice(start, start + (output - 1) * stride + 1, stride),)
        pieces.append(inputs[index + (slice(None),)])
    patches = ops.stack(pieces, axis=-2)  # (batch, *outputs, positions, channels)
    features = math.prod(kernel_size) * inputs.shape[-1]
    return ops.reshape(patches, (-1, *outputs, features))


def embedding_squared_norms(ids, output_gradients):
    """Squared norms of each example's gradient of an embedding table.

    Args:
        ids: integer ids `(batch, ...)`.
        output_gradients: `(batch, ..., dim)`, the gradient of each
            example's loss with respect to the looked-up vectors.

    Returns:
        A float32 tensor `(batch,)`.

    Example:

    >>> ids = np.array([[3, 3, 1]])                   # row 3 twice, row 1 once
    >>> g = np.array([[[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]]])
    >>> # row 3: (1, 0) + (1, 2) = (2, 2), norm^2 8; row 1: (0, 1), norm^2 1
    >>> ops.convert_to_numpy(embedding_squared_norms(ids, g)).tolist()
    [9.0]
    """
    batch = ops.shape(ids)[0]
    ids = ops.reshape(ids, (batch, -1))
    g = _positions(ops.cast(output_gradients, "float32"))
    same = ops.cast(ops.equal(ids[:, :, None], ids[:, None, :]), "float32")
    g_gram = ops.matmul(g, ops.transpose(g, (0, 2, 1)))
    return ops.sum(same * g_gram, axis=(1, 2))
