"""`GradientClipping`: Keras's clipnorm/clipvalue/global_clipnorm, done right."""

import keras

from keras_harden._validation import check_positive
from keras_harden.optimizers.clip_by_global_norm import ClipByGlobalNorm
from keras_harden.optimizers.clip_by_norm import ClipByNorm
from keras_harden.optimizers.clip_by_value import ClipByValue
from keras_harden.optimizers.hardened import HardenedOptimizer

# in the order they apply
_RULES = {
    "clipvalue": ClipByValue,
    "clipnorm": ClipByNorm,
    "global_clipnorm": ClipByGlobalNorm,
}


@keras.saving.register_keras_serializable(package="keras_harden")
class GradientClipping(HardenedOptimizer):
    """Fixed-threshold clipping with the same arguments as Keras's optimizers,
    plus non-finite step skipping.

    Differences from `keras.optimizers.SGD(..., global_clipnorm=...)`: the
    clip applies to the gradient summed across replicas under
    `tf.distribute` (Keras caps each replica's share, so with 2 replicas a
    step can reach twice the limit), to the unscaled gradient under mixed
    precision, and once per real update with gradient accumulation. Several
    arguments may be combined; they apply in the order value, per-tensor
    norm, global norm.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap.
        clipnorm: optional float > 0, per-tensor norm cap (`ClipByNorm`).
        clipvalue: optional float > 0, per-entry cap (`ClipByValue`).
        global_clipnorm: optional float > 0, global norm cap
            (`ClipByGlobalNorm`).
        skip_nonfinite: see `HardenedOptimizer`.
        max_consecutive_nonfinite: see `HardenedOptimizer`.
        name: optional name.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.GradientClipping(
    ...     keras.optimizers.SGD(0.1, momentum=0.9), global_clipnorm=1.0)

    References:
        Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
        neural networks", ICML 2013.
    """

    def __init__(
        self,
        inner_optimizer,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        skip_nonfinite=True,
        max_consecutive_nonfinite=None,
        name=None,
        **kwargs,
    ):
        limits = {
            "clipvalue": clipvalue,
            "clipnorm": clipnorm,
            "global_clipnorm": global_clipnorm,
        }
        if all(limit is None for limit in limits.values()):
            raise ValueError(
                "GradientClipping needs a limit: pass `global_clipnorm`, "
                "`clipnorm` or `clipvalue` (for skipping non-finite steps alone, "
                "use HardenedOptimizer(inner_optimizer)). Received: "
                "global_clipnorm=None, clipnorm=None, clipvalue=None"
            )
        rules = [
            _RULES[argument](check_positive(argument, limit))
            for argument, limit in limits.items()
            if limit is not None
        ]
        super().__init__(
            inner_optimizer,
            clip=rules,
            skip_nonfinite=skip_nonfinite,
            max_consecutive_nonfinite=max_consecutive_nonfinite,
            name=name,
            **kwargs,
        )
        self.limits = limits

    def _wrapper_config(self):
        return {
            **self.limits,
            "skip_nonfinite": self.skip_nonfinite,
            "max_consecutive_nonfinite": self.max_consecutive_nonfinite,
        }
