"""`AdaptiveGradientClipping`: AGC (NFNets) as a drop-in optimizer."""

import keras

from keras_harden.optimizers.hardened import HardenedOptimizer, single_rule_config
from keras_harden.optimizers.unitwise_clip import UnitwiseClip


@keras.saving.register_keras_serializable(package="keras_harden")
class AdaptiveGradientClipping(HardenedOptimizer):
    """Unit-wise adaptive gradient clipping (AGC) around any optimizer.

    Each output unit's gradient norm is capped at
    `clip_factor * max(||W_unit||, eps)` (see `UnitwiseClip`), so the cap
    follows the scale of the weights and needs no per-model threshold.
    Good default for deep conv nets and large learning rates or batches.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap.
        clip_factor: float > 0. 0.03 was chosen on the stability suite
            (`benchmarks/stability.py`, batch 64): level with NFNets' 0.01
            (chosen there for batch 4096) on the exploding setups, better on
            rare corrupted batches (0.93 against 0.87 test accuracy), and
            3x looser on healthy runs, which 0.01 slows at small batches.
            Kept on a spread of 14 unstable setups
            (`benchmarks/adaptive_spread.py`), where it beat a fixed global
            clip of 1 on 7 and lost on 1; there 0.01 did better at SGD 0.15
            (0.92 and 0.73 against 0.84 and 0.49) and 0.1 on the shallowest
            net at SGD 0.017: the limit is on the gradient, not the step, so
            lower the factor as the learning rate rises.
        eps: float > 0, weight-norm floor.
        exclude: regular expressions; variables whose path matches one are
            not clipped (e.g. the classifier's layer name).
        transposed: regular expressions naming `Conv*Transpose` kernels.
        skip_nonfinite: see `HardenedOptimizer`.
        max_consecutive_nonfinite: see `HardenedOptimizer`.
        name: optional name.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.AdaptiveGradientClipping(
    ...     keras.optimizers.SGD(0.1, momentum=0.9), clip_factor=0.02)

    References:
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021
        (https://arxiv.org/abs/2102.06171).
    """

    def __init__(
        self,
        inner_optimizer,
        clip_factor=0.03,
        eps=1e-3,
        exclude=(),
        transposed=("transpose",),
        skip_nonfinite=True,
        max_consecutive_nonfinite=None,
        name=None,
        **kwargs,
    ):
        rule = UnitwiseClip(clip_factor, eps, exclude=exclude, transposed=transposed)
        super().__init__(
            inner_optimizer,
            clip=rule,
            skip_nonfinite=skip_nonfinite,
            max_consecutive_nonfinite=max_consecutive_nonfinite,
            name=name,
            **kwargs,
        )

    def _wrapper_config(self):
        return single_rule_config(self)
