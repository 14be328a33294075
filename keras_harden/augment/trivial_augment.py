"""TrivialAugment: one operation per image with a uniform random magnitude."""

import keras

from keras_harden.augment import ops as aug_ops
from keras_harden.augment._layer import (
    AugmentLayer,
    check_operations,
    ops,
    pick,
    random,
    signed_strengths,
)


@keras.saving.register_keras_serializable(package="keras_harden")
class TrivialAugment(AugmentLayer):
    """TrivialAugment: one random operation per image, uniform magnitude.

    Each image draws one operation from the RandAugment set (or from
    `operations`) and its own magnitude uniformly in `[0, 1]`, with a random
    direction for the operations that have one. It runs on the same per-image
    machinery as `RandAugment`: each operation is computed only for the images
    that chose it. There is nothing to tune.

    Active when called with `training=True` (the default; a `tf.data` map) and
    in `fit`; inactive in `predict`, `evaluate` and `keras_harden.export`.

    Args:
        value_range: `(low, high)` of the input values.
        operations: optional list of names from
            `keras_harden.augment.ops.TRANSFORMS` (default: all of them).
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        Augmented images, same shape, dtype and value range as the input.

    Example:

    >>> import numpy as np, keras_harden as kh
    >>> layer = kh.augment.TrivialAugment(seed=0)
    >>> tuple(layer(np.zeros((4, 32, 32, 3), "float32")).shape)
    (4, 32, 32, 3)

    References:
        Müller and Hutter, "TrivialAugment: Tuning-free yet state-of-the-art
        data augmentation", ICCV 2021 (https://arxiv.org/abs/2103.10158);
        reference implementation github.com/automl/trivialaugment.
    """

    def __init__(self, value_range=(0, 255), operations=None, seed=None, **kwargs):
        super().__init__(value_range=value_range, seed=seed, **kwargs)
        self.operations = check_operations(operations)
        self._names = self.operations or list(aug_ops.TRANSFORMS)

    def _draw(self, images, seed):
        """`{"operations": (N,) int32 indices into the operation list,
        "strengths": (N,) signed strengths}`."""
        draws = random.uniform((ops.shape(images)[0], 3), seed=seed)
        choice = pick(draws[:, 0], len(self._names))
        strength = signed_strengths(self._names, choice, draws[:, 1], draws[:, 2])
        return {"operations": choice, "strengths": strength}

    def _apply_unit(self, images, transformation):
        return aug_ops.apply_transforms(
            self._names,
            transformation["operations"],
            images,
            transformation["strengths"],
        )

    def get_config(self):
        config = super().get_config()
        config.update({"operations": self.operations})
        return config
