"""Element-wise gradient clipping."""

import keras

from keras_harden._validation import check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule


@keras.saving.register_keras_serializable(package="keras_harden")
class ClipByValue(ClipRule):
    """Clips every gradient entry to `[-clip_value, clip_value]`.

    The bluntest rule: it changes the gradient's direction as well as its
    size. Prefer a norm rule unless single huge entries are the problem.

    Args:
        clip_value: float > 0, the largest absolute value an entry may keep.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.SGD(0.1), clip=kh.optimizers.ClipByValue(0.5))

    References:
        Mikolov, "Statistical Language Models Based on Neural Networks", 2012
        (clipping by value for recurrent networks).
    """

    def __init__(self, clip_value):
        super().__init__()
        self.clip_value = check_positive("clip_value", clip_value)

    def __call__(self, grads, variables, norm, state):
        del variables, state, norm
        clipped = [
            None if g is None else gradient_ops.clip_by_value(g, self.clip_value)
            for g in grads
        ]
        return clipped, None, []

    def get_config(self):
        return {"clip_value": self.clip_value}
