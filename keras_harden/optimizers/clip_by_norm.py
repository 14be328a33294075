"""Per-tensor gradient norm clipping."""

import keras

from keras_harden._validation import check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule


@keras.saving.register_keras_serializable(package="keras_harden")
class ClipByNorm(ClipRule):
    """Rescales each gradient tensor so its own L2 norm is at most `clip_norm`.

    The same as Keras's `clipnorm=`, but applied to the gradient summed
    across replicas under `tf.distribute`. Each tensor is clipped
    independently, so the overall direction can change.

    Args:
        clip_norm: float > 0, the largest L2 norm one tensor's gradient keeps.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.SGD(0.1), clip=kh.optimizers.ClipByNorm(1.0))

    References:
        Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
        neural networks", ICML 2013.
    """

    def __init__(self, clip_norm):
        super().__init__()
        self.clip_norm = check_positive("clip_norm", clip_norm)

    def __call__(self, grads, variables, norm, state):
        del variables, state, norm
        clipped = [
            None if g is None else gradient_ops.clip_by_norm(g, self.clip_norm)
            for g in grads
        ]
        return clipped, None, []

    def get_config(self):
        return {"clip_norm": self.clip_norm}
