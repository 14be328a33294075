"""`AdaGC`: per-tensor EMA clipping as a drop-in optimizer."""

import keras

from keras_harden.optimizers.hardened import HardenedOptimizer, single_rule_config
from keras_harden.optimizers.per_tensor_ema_clip import PerTensorEMAClip


@keras.saving.register_keras_serializable(package="keras_harden")
class AdaGC(HardenedOptimizer):
    """Clips the global norm to `abs_clip` during warm-up, then each tensor
    against an EMA of its own clipped norms (see `PerTensorEMAClip`).

    Safe from the first step (warm-up clips instead of only watching), and
    afterwards a spike in one tensor is pulled back without touching the
    others. `abs_clip` is an absolute norm: like any fixed clip, it suits
    some models' scale better than others'.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap.
        abs_clip: float > 0, the global norm limit during warm-up.
        rel_clip: float > 0, the largest ratio of a tensor's norm to its
            average after warm-up.
        beta: EMA decay in (0, 1).
        warmup_steps: int >= 0.
        skip_nonfinite: see `HardenedOptimizer`.
        max_consecutive_nonfinite: see `HardenedOptimizer`.
        name: optional name.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.AdaGC(keras.optimizers.AdamW(1e-3))

    References:
        Wang et al., "AdaGC: Improving Training Stability for Large Language
        Model Pretraining", 2025 (https://arxiv.org/abs/2502.11034).
    """

    def __init__(
        self,
        inner_optimizer,
        abs_clip=1.0,
        rel_clip=1.05,
        beta=0.98,
        warmup_steps=100,
        skip_nonfinite=True,
        max_consecutive_nonfinite=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            inner_optimizer,
            clip=PerTensorEMAClip(abs_clip, rel_clip, beta, warmup_steps),
            skip_nonfinite=skip_nonfinite,
            max_consecutive_nonfinite=max_consecutive_nonfinite,
            name=name,
            **kwargs,
        )

    def _wrapper_config(self):
        return single_rule_config(self)
