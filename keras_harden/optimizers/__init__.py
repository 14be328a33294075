"""keras_harden.optimizers: gradient clipping rules and non-finite step
skipping as drop-in wrappers around any Keras optimizer.

`HardenedOptimizer(inner, clip=[rules...])` is the general wrapper; the rules
are `ClipByValue`, `ClipByNorm`, `ClipByGlobalNorm`, `UnitwiseClip` (AGC),
`PercentileClip` (AutoClip), `ZScoreClip` (ZClip) and `PerTensorEMAClip`
(AdaGC). `GradientClipping`, `AdaptiveGradientClipping`, `AutoClip`, `ZClip`
and `AdaGC` are the wrapper with one rule.
"""

from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.ada_gc import AdaGC
from keras_harden.optimizers.adaptive_gradient_clipping import AdaptiveGradientClipping
from keras_harden.optimizers.auto_clip import AutoClip
from keras_harden.optimizers.clip_by_global_norm import ClipByGlobalNorm
from keras_harden.optimizers.clip_by_norm import ClipByNorm
from keras_harden.optimizers.clip_by_value import ClipByValue
from keras_harden.optimizers.clip_rule import ClipRule
from keras_harden.optimizers.gradient_clipping import GradientClipping
from keras_harden.optimizers.hardened import HardenedOptimizer, NonFiniteGradientError
from keras_harden.optimizers.nonfinite_limit import NonFiniteLimit
from keras_harden.optimizers.per_tensor_ema_clip import PerTensorEMAClip
from keras_harden.optimizers.percentile_clip import PercentileClip
from keras_harden.optimizers.unitwise_clip import UnitwiseClip
from keras_harden.optimizers.z_clip import ZClip
from keras_harden.optimizers.zscore_clip import ZScoreClip

__all__ = [
    "AdaGC",
    "AdaptiveGradientClipping",
    "AutoClip",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByValue",
    "ClipRule",
    "GradientClipping",
    "HardenedOptimizer",
    "NonFiniteGradientError",
    "NonFiniteLimit",
    "PerTensorEMAClip",
    "PercentileClip",
    "UnitwiseClip",
    "ZClip",
    "ZScoreClip",
    "gradient_ops",
]
