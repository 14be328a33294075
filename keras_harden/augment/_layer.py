"""The private base of the augmentation layers: training switch, labels passed
through, value range, dtype, seeding and shapes, so each layer writes only its
`augment` method."""

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


class ImageLayer(keras.layers.Layer):
    """Base of the layers that take image batches: `call(images, labels=None,
    training=True)`.

    `self.call_images(images, training)` makes the new images, as a tensor
    of the input's own dtype (no autocast: uint8 stays uint8). Labels, when
    given, come back untouched beside them, so the layer maps a `tf.data`
    dataset of `(images, labels)` pairs as it is (`Dataset.map` calls
    `layer(images, labels)`): `ds.batch(32).map(layer)`.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def call(self, images, labels=None, training=True):
        images = self.call_images(ops.convert_to_tensor(images), training)
        return images if labels is None else (images, labels)

    def call_images(self, images, training):
        raise NotImplementedError

    def compute_output_shape(self, images_shape, labels_shape=None):
        shape = self.image_output_shape(images_shape)
        return shape if labels_shape is None else (shape, labels_shape)

    def image_output_shape(self, images_shape):
        return images_shape


class RandomLayer(ImageLayer):
    """Base of the random image layers: with `training=True` the images go to
    `self.transform`; with `training=False` they come back untouched.

    Randomness comes from `self.seed_generator` (a `keras.random.SeedGenerator`
    seeded with `seed`): an int seed replays the same draws call by call in a
    fresh layer; every call draws new values. Layers that group images by
    operation (`groups_images`, through `aug_ops.apply_layers`) need dynamic
    shapes, which XLA lacks, hence `supports_jit` on the TensorFlow backend.
    """

    groups_images = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = not (self.groups_images and aug_ops.dynamic_shapes())

    def call_images(self, images, training):
        return self.transform(images) if training else images

    def transform(self, images):
        raise NotImplementedError

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
