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


class RandomLayer(keras.layers.Layer):
    """Base of the random image layers: `call(images, training=True)` hands
    the images, as a tensor of their own dtype (no autocast: uint8 stays
    uint8), to `self.transform`; with `training=False` they come back
    untouched.

    Randomness comes from `self.seed_generator` (a `keras.random.SeedGenerator`
    seeded with `seed`): an int seed replays the same draws call by call in a
    fresh layer; every call draws new values. Layers that group images by
    operation (`groups_images`, through `aug_ops.apply_layers`) need dynamic
    shapes, which XLA lacks, hence `supports_jit` on the TensorFlow backend.
    """

    groups_images = True

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = not (self.groups_images and aug_ops.dynamic_shapes())

    def call(self, images, training=True):
        if not training:
            return images
        return self.transform(ops.convert_to_tensor(images))

    def transform(self, images):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


class AugmentLayer(RandomLayer):
    """Base of the image operations: maps images to the unit range, calls
    `self.augment(unit_images)` and maps back to the input's range and dtype;
    single images (rank 3) are augmented as a batch of one.
    """

    def __init__(self, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.value_range = check_value_range(value_range)

    def transform(self, images):
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

    def get_config(self):
        config = super().get_config()
        config["value_range"] = list(self.value_range)
        return config
