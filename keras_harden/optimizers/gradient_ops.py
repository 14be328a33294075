"""Pure `keras.ops` maths on gradient lists: norms, finiteness and clipping.

Every function here is backend-agnostic and stateless. Norms are accumulated in
float32 whatever the gradient dtype; `None` entries (variables without a
gradient) are passed through untouched and contribute nothing to a norm.

Keras lays kernels out `(..., in, out)`: the output units of a `Dense` or
`Conv*` kernel sit on the last axis. `Conv*Transpose` kernels are
`(..., out, in)`, so their units sit on the second-to-last axis.
"""

from keras import ops

#: Smallest gradient norm AGC divides by (as in the NFNets reference code).
AGC_MIN_GRAD_NORM = 1e-6


def _as_float32(x):
    return ops.cast(x, "float32")


def squared_norms(grads):
    """Per-tensor sums of squares (float32 scalars); `None` stays `None`."""
    return [None if g is None else ops.sum(ops.square(_as_float32(g))) for g in grads]


def global_norm_and_finite(grads):
    """The global L2 norm of `grads` and whether every entry is finite.

    Both come out of one pass: a NaN or an Inf anywhere makes the sum of
    squares NaN or Inf, so `isfinite(sum of squares)` is the finiteness test.
    A finite gradient whose squared norm overflows float32 (norm above about
    1.8e19) also reads as non-finite, which is the safe call for such a step.

    Args:
        grads: list of gradient tensors or `None`.

    Returns:
        `(norm, finite)`: a float32 scalar and a boolean scalar.

    Example:

    >>> import keras
    >>> norm, finite = global_norm_and_finite([keras.ops.ones((2, 2))])
    >>> float(norm), bool(finite)
    (2.0, True)
    """
    squares = [s for s in squared_norms(grads) if s is not None]
    if not squares:
        return ops.zeros((), "float32"), ops.convert_to_tensor(True)
    total = squares[0]
    for s in squares[1:]:
        total = total + s
    return ops.sqrt(total), ops.isfinite(total)


def global_norm(grads):
    """The global L2 norm (float32 scalar) of a list of gradients."""
    return global_norm_and_finite(grads)[0]


def scale(grads, factor):
    """Multiplies every gradient by the scalar `factor` (cast to its dtype)."""
    return [None if g is None else g * ops.cast(factor, g.dtype) for g in grads]


def clip_factor(norm, max_norm):
    """`min(1, max_norm / norm)`, safe at `norm == 0` (returns 1 there)."""
    norm = _as_float32(norm)
    max_norm = _as_float32(max_norm)
    return ops.where(norm > max_norm, max_norm / ops.maximum(norm, 1e-30), 1.0)


def clip_by_global_norm(grads, max_norm, norm=None):
    """Rescales `grads` so their global norm is at most `max_norm`.

    Args:
        grads: list of gradients or `None`.
        max_norm: scalar limit.
        norm: the global norm of `grads` if already known (saves a pass).

    Returns:
        `(clipped_grads, clipped_norm)`.
    """
    if norm is None:
        norm = global_norm(grads)
    factor = clip_factor(norm, max_norm)
    return scale(grads, factor), _as_float32(norm) * factor


def weight_relative_limit(variables, grads, ratio):
    """`ratio` times the global norm of the variables that have a gradient,
    that norm counted as at least 1 (so a model that starts from zeros can
    move): the largest gradient norm a scale-free cap allows."""
    weights = [v for v, g in zip(variables, grads, strict=True) if g is not None]
    norm = global_norm([ops.convert_to_tensor(w) for w in weights])
    return ratio * ops.maximum(norm, 1.0)


def clip_by_norm(grad, max_norm):
    """Rescales one tensor so its own L2 norm is at most `max_norm`."""
    norm = ops.sqrt(ops.sum(ops.square(_as_float32(grad))))
    return grad * ops.cast(clip_factor(norm, max_norm), grad.dtype)


def clip_by_value(grad, max_value):
    """Clips every entry of one tensor to `[-max_value, max_value]`."""
    return ops.clip(grad, -max_value, max_value)


def unit_axes(rank, transposed=False):
    """Axes to reduce over for per-output-unit norms of a rank-`rank` tensor.

    Scalars and vectors (biases, scales) are one unit. Kernels keep their
    output axis: the last one, or the second-to-last for `Conv*Transpose`.
    """
    if rank <= 1:
        return tuple(range(rank))
    keep = rank - 2 if transposed else rank - 1
    return tuple(a for a in range(rank) if a != keep)


def unitwise_norm(x, transposed=False):
    """Per-output-unit L2 norms of `x`, with reduced axes kept (size 1).

    Example:

    >>> import keras
    >>> kernel = keras.ops.convert_to_tensor([[3.0, 0.0], [4.0, 1.0]])  # (in, out)
    >>> keras.ops.convert_to_numpy(unitwise_norm(kernel)).tolist()
    [[5.0, 1.0]]
    """
    axes = unit_axes(len(x.shape), transposed)
    squares = ops.square(_as_float32(x))
    if not axes:
        return ops.sqrt(squares)
    return ops.sqrt(ops.sum(squares, axis=axes, keepdims=True))


def unitwise_clip(grad, param, clip_factor_value, eps, transposed=False):
    """Adaptive gradient clipping of one tensor (Brock et al., 2021).

    Each output unit's gradient is rescaled so that
    `||g_unit|| <= clip_factor * max(||w_unit||, eps)`.

    Args:
        grad: the gradient tensor.
        param: the parameter tensor (same shape).
        clip_factor_value: the ratio limit (`lambda` in the paper).
        eps: floor on the parameter norm, so zero-initialised units can move.
        transposed: `True` for `Conv*Transpose` kernels, laid out
            `(..., out, in)`.

    Returns:
        The clipped gradient.
    """
    max_norm = clip_factor_value * ops.maximum(unitwise_norm(param, transposed), eps)
    grad_norm = unitwise_norm(grad, transposed)
    factor = ops.where(
        grad_norm > max_norm,
        max_norm / ops.maximum(grad_norm, AGC_MIN_GRAD_NORM),
        1.0,
    )
    return grad * ops.cast(factor, grad.dtype)


def masked_percentile(window, filled, q):
    """The `q`-th percentile (linear interpolation, as `numpy.percentile`) of
    the first `filled` entries of the 1-D `window`.

    Args:
        window: float32 vector of length `n`.
        filled: integer scalar tensor in `[1, n]`: how many leading entries
            (in ring-buffer order, which does not matter) hold data.
        q: Python float in `[0, 100]`.

    Returns:
        A float32 scalar.
    """
    size = window.shape[0]
    positions = ops.arange(size, dtype="int32")
    filled = ops.cast(filled, "int32")
    masked = ops.where(positions < filled, window, float("inf"))
    ordered = ops.sort(masked)
    rank = (q / 100.0) * _as_float32(filled - 1)
    low = ops.cast(ops.floor(rank), "int32")
    high = ops.minimum(low + 1, filled - 1)
    frac = rank - _as_float32(low)
    low_value = ops.take(ordered, low)
    high_value = ops.take(ordered, high)
    return low_value + frac * (high_value - low_value)


__all__ = [
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_factor",
    "global_norm",
    "global_norm_and_finite",
    "masked_percentile",
    "scale",
    "squared_norms",
    "unit_axes",
    "unitwise_clip",
    "unitwise_norm",
]
