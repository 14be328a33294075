"""ZClip: clip global-norm spikes by their z-score against EMA statistics."""

import keras
from keras import ops

from keras_harden._validation import check_int, check_number, check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule, StateSpec


@keras.saving.register_keras_serializable(package="keras_harden")
class ZScoreClip(ClipRule):
    """Clips the global norm when it is a spike: its z-score against an
    exponential moving mean and variance of past norms exceeds `z_threshold`.

    For the first `warmup_steps` steps the rule only gathers the mean and
    (population) variance of the norms and clips nothing but the caps.
    After that, with `mu`, `var` the statistics and `z = (n - mu) / sqrt(var)`,
    a norm with `z > z_threshold` is clipped to
    `mu + z_threshold**2 / z * sqrt(var)` (ZClip's "adaptive scaling": the
    bigger the spike, the harder it is pulled back), then the statistics take
    the (clipped) norm: `mu <- alpha mu + (1 - alpha) n`,
    `var <- alpha var + (1 - alpha) (n - mu)**2` with the new `mu`.
    Two caps apply on every step, warm-up included, and the statistics only
    ever see capped norms: `max_norm`, an absolute limit, and
    `max_weight_ratio`, a limit of `max_weight_ratio * max(||W||, 1)` with
    `||W||` the global norm of the weights being trained. The second keeps a
    run that explodes from its first step from teaching the statistics that
    the explosion is normal: the warm-up has no healthy norms to learn from.

    Args:
        alpha: EMA decay in (0, 1).
        z_threshold: float > 0.
        warmup_steps: int >= 1.
        max_norm: optional float > 0.
        max_weight_ratio: optional float > 0.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.AdamW(1e-3), clip=kh.optimizers.ZScoreClip())

    References:
        Kumar, Owen, Ashkboos and others, "ZClip: Adaptive Spike Mitigation
        for LLM Pre-Training", 2025 (https://arxiv.org/abs/2504.02507);
        reference code in https://github.com/bluorion-com/ZClip.
    """

    uses_global_norm = True

    def __init__(
        self,
        alpha=0.97,
        z_threshold=2.5,
        warmup_steps=25,
        max_norm=None,
        max_weight_ratio=None,
    ):
        super().__init__()
        self.alpha = check_number(
            "alpha", alpha, low=0, high=1, low_open=True, high_open=True
        )
        self.z_threshold = check_positive("z_threshold", z_threshold)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
        self.max_norm = check_positive("max_norm", max_norm, optional=True)
        self.max_weight_ratio = check_positive(
            "max_weight_ratio", max_weight_ratio, optional=True
        )

    state_prefix = "zclip"

    def state_spec(self, variables):
        del variables
        return [
            StateSpec("norm_mean", (), "float32"),
            StateSpec("norm_var", (), "float32"),
            StateSpec("norm_count", (), "int32"),
        ]

    def limit(self, norm, mean, var, warm, cap=None):
        """The norm a step is clipped to (`inf` when it is not a spike and
        under the caps); `cap` is the weight-relative cap, if any."""
        z2 = self.z_threshold**2
        excess = norm - mean
        spike = ops.logical_and(
            ops.logical_not(warm),
            ops.logical_and(excess > 0, ops.square(excess) > z2 * var),
        )
        # mu + z_t**2 / z * sigma == mu + z_t**2 * var / (n - mu)
        threshold = mean + z2 * var / ops.maximum(excess, 1e-30)
        limit = ops.where(spike, threshold, float("inf"))
        if self.max_norm is not None:
            limit = ops.minimum(limit, self.max_norm)
        if cap is not None:
            limit = ops.minimum(limit, cap)
        return limit

    def __call__(self, grads, variables, norm, state):
        norm = ops.cast(norm, "float32")
        mean, var, count = state
        warm = count < self.warmup_steps
        cap = None
        if self.max_weight_ratio is not None:
            cap = gradient_ops.weight_relative_limit(
                variables, grads, self.max_weight_ratio
            )

        limit = self.limit(norm, mean, var, warm, cap)
        clipped, new_norm = gradient_ops.clip_by_global_norm(grads, limit, norm)

        # Warm-up: running mean and population variance of the capped norms.
        k = ops.cast(count, "float32")
        w_mean = mean + (new_norm - mean) / (k + 1.0)
        w_var = (k * var + (new_norm - mean) * (new_norm - w_mean)) / (k + 1.0)
        # After warm-up: EMA of the clipped norm.
        e_mean = self.alpha * mean + (1.0 - self.alpha) * new_norm
        e_var = self.alpha * var + (1.0 - self.alpha) * ops.square(new_norm - e_mean)
        state = [
            ops.where(warm, w_mean, e_mean),
            ops.where(warm, w_var, e_var),
            ops.minimum(count + 1, self.warmup_steps),
        ]
        return clipped, new_norm, state

    def get_config(self):
        return {
            "alpha": self.alpha,
            "z_threshold": self.z_threshold,
            "warmup_steps": self.warmup_steps,
            "max_norm": self.max_norm,
            "max_weight_ratio": self.max_weight_ratio,
        }
