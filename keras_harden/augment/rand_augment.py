"""RandAugment with the operation and its magnitude drawn per image."""

import keras

from keras_harden._validation import check_int, check_number
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
class RandAugment(AugmentLayer):
    """RandAugment: `num_ops` random operations per image, chosen per image.

    Each image of the batch draws its own sequence of `num_ops` operations
    from the 14 RandAugment operations (identity, auto-contrast, equalize,
    rotate, solarize, colour, posterize, contrast, brightness, sharpness,
    shear and translate in x and y) and its own magnitude, normal around
    `magnitude` with standard deviation `magnitude_stddev`, clipped to
    `[0, 1]`. The batch is split by operation so that each operation is
    computed only for the images that chose it: `num_ops` transforms per
    image instead of every operation for every slot (as
    `keras.layers.RandAugment` does, with one choice per batch).

    Active when called with `training=True` (the default, so it works as a
    `tf.data` map on batches) and in `fit`; inside a model it returns its
    input unchanged in `predict`, `evaluate` and `keras_harden.export`.
    Output has the input's dtype and shape and stays within `value_range`.

    Args:
        num_ops: operations applied in sequence to each image.
        magnitude: strength in `[0, 1]`; 1 is the strongest setting of each
            operation (for instance 30 degrees of rotation, see
            `keras_harden.augment.ops`). RandAugment's `M` on its 0-10 scale
            is `M / 10`.
        magnitude_stddev: standard deviation of the per-image magnitude.
        value_range: `(low, high)` of the input values.
        operations: optional list of operation names to draw from (default:
            all of `keras_harden.augment.ops.TRANSFORMS`).
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        Augmented images, same shape, dtype and value range as the input.

    Example:

    >>> import numpy as np, keras_harden as kh
    >>> layer = kh.augment.RandAugment(num_ops=2, magnitude=0.5, seed=0)
    >>> tuple(layer(np.zeros((4, 32, 32, 3), "uint8")).shape)
    (4, 32, 32, 3)

    References:
        Cubuk et al., "RandAugment: Practical automated data augmentation with
        a reduced search space", NeurIPS 2020
        (https://arxiv.org/abs/1909.13719); reference implementation in
        tensorflow/tpu `models/official/efficientnet/autoaugment.py`.
    """

    def __init__(
        self,
        num_ops=2,
        magnitude=0.5,
        magnitude_stddev=0.0,
        value_range=(0, 255),
        operations=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(value_range=value_range, seed=seed, **kwargs)
        check_int("num_ops", num_ops, minimum=1)
        check_number("magnitude", magnitude, low=0, high=1)
        check_number("magnitude_stddev", magnitude_stddev, low=0)
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_stddev = magnitude_stddev
        self.operations = check_operations(operations)
        self._names = self.operations or list(aug_ops.TRANSFORMS)

    def _draw(self, images, seed):
        """`{"operations": (N, num_ops) int32 indices into the operation list,
        "strengths": (N, num_ops) signed strengths}`."""
        # One draw for every slot: operation, sign (and the magnitude spread).
        n = ops.shape(images)[0]
        draws = random.uniform((n, self.num_ops, 2), seed=seed)
        magnitude = float(self.magnitude)
        if self.magnitude_stddev > 0:
            magnitude = random.normal(
                (n, self.num_ops), self.magnitude, self.magnitude_stddev, seed=seed
            )
            magnitude = ops.clip(magnitude, 0.0, 1.0)
        choice = pick(draws[..., 0], len(self._names))
        strength = signed_strengths(self._names, choice, magnitude, draws[..., 1])
        return {"operations": choice, "strengths": strength}

    def _apply_unit(self, images, transformation):
        choice, strength = transformation["operations"], transformation["strengths"]
        for slot in range(self.num_ops):
            images = aug_ops.apply_transforms(
                self._names, choice[:, slot], images, strength[:, slot]
            )
        return images

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_ops": self.num_ops,
                "magnitude": self.magnitude,
                "magnitude_stddev": self.magnitude_stddev,
                "operations": self.operations,
            }
        )
        return config
