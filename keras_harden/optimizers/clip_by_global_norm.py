"""Global gradient norm clipping."""

import keras

from keras_harden._validation import check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule


@keras.saving.register_keras_serializable(package="keras_harden")
class ClipByGlobalNorm(ClipRule):
    """Rescales all gradients together so their global L2 norm is at most
    `clip_norm`.

    The direction of the step is kept; only its length is capped. Unlike
    Keras's `global_clipnorm=`, under `tf.distribute.MirroredStrategy` the cap
    applies to the gradient summed across replicas, so a 2-replica step
    equals the 1-device step on the same global batch. The global norm comes
    from the optimizer's single fused pass, so this rule adds one multiply
    per gradient.

    Args:
        clip_norm: float > 0, the largest global norm a step keeps.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.SGD(0.1), clip=kh.optimizers.ClipByGlobalNorm(1.0))

    References:
        Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
        neural networks", ICML 2013.
    """

    uses_global_norm = True

    def __init__(self, clip_norm):
        super().__init__()
        self.clip_norm = check_positive("clip_norm", clip_norm)

    def __call__(self, grads, variables, norm, state):
        del variables, state
        clipped, new_norm = gradient_ops.clip_by_global_norm(
            grads, self.clip_norm, norm
        )
        return clipped, new_norm, []

    def get_config(self):
        return {"clip_norm": self.clip_norm}
