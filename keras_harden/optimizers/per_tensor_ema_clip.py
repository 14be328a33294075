"""AdaGC: per-tensor thresholds from an EMA of each tensor's clipped norms."""

import keras
from keras import ops

from keras_harden._validation import check_int, check_number, check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule, StateSpec


def _tensor_norm(g):
    return ops.sqrt(ops.sum(ops.square(ops.cast(g, "float32"))))


@keras.saving.register_keras_serializable(package="keras_harden")
class PerTensorEMAClip(ClipRule):
    """Clips each gradient tensor against an exponential moving average of
    its own past clipped norms (AdaGC).

    Warm-up (the first `warmup_steps` steps): the whole gradient is clipped
    to the global norm `abs_clip`, and each tensor's reference norm `gamma`
    is the smallest non-zero clipped norm it has had, so the thresholds start
    from the calmest steps, not from outliers. After warm-up, tensor `i` with
    norm `n_i` is scaled by `min(1, rel_clip * gamma_i / n_i)` and then
    `gamma_i <- beta * gamma_i + (1 - beta) * (clipped n_i)`: a tensor's
    norm may grow by at most `rel_clip` per step relative to its average, and
    a spike in one tensor leaves the others untouched.

    A tensor that has had no non-zero gradient yet is not clipped and its
    first clipped norm starts its average (the paper's running minimum would
    freeze such a tensor at threshold 0 for good).

    Args:
        abs_clip: float > 0, the global norm limit during warm-up.
        rel_clip: float > 0, the largest ratio of a tensor's norm to its
            average after warm-up (`lambda_rel`, 1.05 in the paper).
        beta: EMA decay in (0, 1).
        warmup_steps: int >= 0.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.AdamW(1e-3), clip=kh.optimizers.PerTensorEMAClip())

    References:
        Wang et al., "AdaGC: Improving Training Stability for Large Language
        Model Pretraining", 2025 (https://arxiv.org/abs/2502.11034).
    """

    uses_global_norm = True
    state_prefix = "adagc"

    def __init__(self, abs_clip=1.0, rel_clip=1.05, beta=0.98, warmup_steps=100):
        super().__init__()
        self.abs_clip = check_positive("abs_clip", abs_clip)
        self.rel_clip = check_positive("rel_clip", rel_clip)
        self.beta = check_number(
            "beta", beta, low=0, high=1, low_open=True, high_open=True
        )
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)

    def state_spec(self, variables):
        # gamma 0 means "no non-zero norm seen yet"
        return [
            StateSpec("tensor_norm_average", (len(variables),), "float32"),
            StateSpec("step_count", (), "int32"),
        ]

    def __call__(self, grads, variables, norm, state):
        del variables
        gammas, count = state
        warm = count < self.warmup_steps
        global_factor = gradient_ops.clip_factor(norm, self.abs_clip)
        clipped, new_gammas, squares = [], [], []
        for i, g in enumerate(grads):
            gamma = gammas[i]
            if g is None:
                clipped.append(None)
                new_gammas.append(gamma)
                continue
            n = _tensor_norm(g)
            seen = gamma > 0
            limit = ops.where(seen, self.rel_clip * gamma, float("inf"))
            factor = ops.where(warm, global_factor, gradient_ops.clip_factor(n, limit))
            m = n * factor
            warm_gamma = ops.where(
                m > 0, ops.where(seen, ops.minimum(gamma, m), m), gamma
            )
            ema_gamma = ops.where(seen, self.beta * gamma + (1.0 - self.beta) * m, m)
            new_gammas.append(ops.where(warm, warm_gamma, ema_gamma))
            clipped.append(g * ops.cast(factor, g.dtype))
            squares.append(ops.square(m))
        new_norm = ops.sqrt(sum(squares)) if squares else ops.zeros((), "float32")
        new_state = [
            ops.stack(new_gammas) if new_gammas else gammas,
            ops.minimum(count + 1, self.warmup_steps),
        ]
        return clipped, new_norm, new_state

    def get_config(self):
        return {
            "abs_clip": self.abs_clip,
            "rel_clip": self.rel_clip,
            "beta": self.beta,
            "warmup_steps": self.warmup_steps,
        }
