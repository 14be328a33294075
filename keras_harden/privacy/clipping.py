"""DP-SGD's per-example clipping and its noisy sum, as pure functions.

The private gradient of one step (Abadi et al. 2016) is

    (sum_i clip(w_i g_i) + N(0, (noise_multiplier * C)^2 I)) / B

where `g_i` is example `i`'s gradient, `w_i` its weight (0 for the padding
of a fixed-shape batch), `clip(v) = v * min(1, C / ||v||)` with `||.||` the
Euclidean norm over every trainable variable together, and `B` the expected
batch size (a constant: dividing by the drawn size would make the step
depend on it). These functions take the per-example squared norms and the
standard-normal draws as inputs, so they are tested with NumPy arrays.
"""

from keras import ops

__all__ = ["clip_factors", "clipped_sum", "noisy_mean", "squared_norms"]


def squared_norms(per_example_gradients):
    """Each example's squared gradient norm over all variables together.

    Args:
        per_example_gradients: a list of tensors `(batch, *variable_shape)`.

    Returns:
        A float tensor `(batch,)`.

    Example:

    >>> g = [np.array([[3.0], [0.0]]), np.array([[0.0, 4.0], [1.0, 0.0]])]
    >>> ops.convert_to_numpy(squared_norms(g)).tolist()  # 9 + 16, 0 + 1
    [25.0, 1.0]
    """
    total = 0.0
    for g in per_example_gradients:
        g = ops.reshape(ops.cast(g, "float32"), (ops.shape(g)[0], -1))
        total = total + ops.sum(g * g, axis=1)
    return total


def clip_factors(squared_norms, l2_norm_clip, weights=None):
    """The factor `w_i * min(1, C / (w_i ||g_i||))` of each example.

    Multiplying example `i`'s gradient by its factor weights it by `w_i`,
    then scales it to norm at most `C`. A NaN norm keeps factor `w_i`, so a
    NaN gradient reaches the sum and the optimizer's own non-finite check
    (a `LossScaleOptimizer`, or a keras_harden wrapper's `skip_nonfinite`)
    sees it. An infinite norm gets factor 0: a gradient with an infinite
    entry still makes the sum NaN (`0 * inf`), but a finite gradient whose
    float32 squared norm overflows (entries above about 1e19) is left out
    of the sum, not clipped; either way no example adds more than `C`. A
    padded example (`w_i = 0`) gets 0 whatever its norm.

    Args:
        squared_norms: `(batch,)`, each example's unweighted squared norm.
        l2_norm_clip: the clip norm `C` > 0.
        weights: None (all 1) or `(batch,)` non-negative example weights.

    Returns:
        A float32 tensor `(batch,)`.

    Example:

    >>> norms2 = np.array([25.0, 0.25, 4.0])     # norms 5, 0.5, 2
    >>> factors = clip_factors(norms2, 1.0, [1.0, 1.0, 0.0])
    >>> ops.convert_to_numpy(factors).astype(float).round(6).tolist()
    [0.2, 1.0, 0.0]
    """
    norms = ops.sqrt(ops.cast(squared_norms, "float32"))
    if weights is not None:
        weights = ops.cast(ops.reshape(weights, (-1,)), "float32")
        norms = norms * weights
    over = norms > l2_norm_clip  # False for NaN: the NaN goes through
    factors = ops.where(over, l2_norm_clip / ops.where(over, norms, 1.0), 1.0)
    return factors if weights is None else factors * weights


def clipped_sum(per_example_gradients, factors):
    """`sum_i factors_i * g_i` for each variable.

    Args:
        per_example_gradients: a list of tensors `(batch, *variable_shape)`.
        factors: `(batch,)`, from `clip_factors`.

    Returns:
        A list of tensors of the variables' shapes.

    Example:

    >>> g = [np.array([[3.0, 4.0], [0.3, 0.4]])]
    >>> (total,) = clipped_sum(g, [0.2, 1.0])     # 0.2 (3, 4) + (0.3, 0.4)
    >>> ops.convert_to_numpy(total).astype(float).round(6).tolist()
    [0.9, 1.2]
    """
    factors = ops.cast(factors, "float32")
    return [
        ops.tensordot(factors, ops.cast(g, "float32"), axes=1)
        for g in per_example_gradients
    ]


def noisy_mean(summed, normal_draws, noise_stddev, normalizer):
    """`(summed + noise_stddev * normal_draws) / normalizer`, per variable.

    Args:
        summed: a list of tensors, the clipped sums.
        normal_draws: a list of standard-normal tensors of the same shapes
            (zeros where this replica adds no noise).
        noise_stddev: `noise_multiplier * C`.
        normalizer: the expected batch size.

    Returns:
        A list of float32 tensors.

    Example:

    >>> out = noisy_mean([np.array([1.0, 2.0])], [np.array([0.5, -1.0])], 2.0, 4)
    >>> ops.convert_to_numpy(out[0]).tolist()   # ([1, 2] + 2 * [0.5, -1]) / 4
    [0.5, 0.0]
    """
    return [
        (ops.cast(s, "float32") + noise_stddev * ops.cast(n, "float32")) / normalizer
        for s, n in zip(summed, normal_draws, strict=True)
    ]
