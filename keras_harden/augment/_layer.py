"""The private base of the augmentation layers: training switch, value range,
dtype, seeding and shapes, so each layer writes only its `augment` method."""

import keras
from keras import ops

from keras_harden.augment import ops as aug_ops


def check_value_range(value_range):
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            "`value_range` must be a pair (low, high) with low < high. "
            f"Received: value_range={value_range!r}"
        ) from None
    if not low < high:
        raise ValueError(
            "`value_range` must be a pair (low, high) with low < high. "
            f"Received: value_range={value_range!r}"
        )
    return (value_range[0], value_range[1])


def check_probability(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}"
        )
    return value


def check_seed(seed):
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
    return seed


class AugmentLayer(keras.layers.Layer):
    """Base: `call(images, training=True)` maps images to the unit range,
    calls `self.augment(unit_images)` and maps back to the input's range and
    dtype. With `training=False` the input comes back untouched.

    Randomness comes from `self.seed_generator` (a `keras.random.SeedGenerator`
    seeded with `seed`): an int seed replays the same draws call by call in a
    fresh layer; every call draws new values.
    """

    def __init__(self, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.value_range = check_value_range(value_range)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Grouping images by operation needs dynamic shapes, which XLA lacks.
        self.supports_jit = not aug_ops.dynamic_shapes()
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def call(self, images, training=True):
        if not training:
            return images
        images = ops.convert_to_tensor(images)
        dtype = images.dtype
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        out = self.augment(aug_ops.to_unit(images, self.value_range))
        out = aug_ops.from_unit(out, self.value_range, dtype)
        if unbatched:
            out = ops.squeeze(out, 0)
        return out

    def augment(self, images):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"value_range": list(self.value_range), "seed": self.seed})
        return config
