"""Augmentation presets, and the layer that composes augmentation layers."""

import keras

from keras_harden.augment._layer import (
    ImageLayer,
    cast_like,
    check_seed,
    check_value_range,
    ops,
)
from keras_harden.augment.rand_augment import RandAugment
from keras_harden.augment.random_resized_crop import RandomResizedCrop

PRESETS = ("light", "standard", "strong")


@keras.saving.register_keras_serializable(package="keras_harden")
class Pipeline(ImageLayer):
    """Applies augmentation layers in sequence, as one serializable layer.

    The layers may be ours, Keras's (`keras.layers.RandomFlip`, ...) or
    keras-cv's where installed. The pipeline forwards `training` to each of
    them, so inside a model it is active in `fit` and inactive in `predict`,
    `evaluate` and `keras_harden.export`; called directly (for example as a
    `tf.data` map on batches of images or of `(images, labels)` pairs, whose
    labels pass through untouched) it is active. The output has the input's dtype
    (rounded for integer inputs), and is clipped to `value_range` when one is
    given.

    Args:
        layers: list of Keras layers taking and returning an image batch.
        value_range: optional `(low, high)` to clip the output to.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        The augmented images, or `(images, labels)` when called with labels.

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> aug = kh.augment.Pipeline(
    ...     [keras.layers.RandomFlip("horizontal", seed=1),
    ...      kh.augment.RandAugment(seed=2)], value_range=(0, 255))
    >>> aug(np.zeros((2, 16, 16, 3), "uint8")).dtype.name
    'uint8'

    References:
        `keras.layers.Pipeline`, which this follows, adding the dtype and
        range guarantees.
    """

    def __init__(self, layers, value_range=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layers, keras.layers.Layer) or not all(
            isinstance(layer, keras.layers.Layer) for layer in layers
        ):
            raise ValueError(
                f"`layers` must be a list of Keras layers. Received: layers={layers!r}"
            )
        self.pipeline_layers = list(layers)
        self.value_range = (
            None if value_range is None else check_value_range(value_range)
        )
        self.supports_jit = all(
            getattr(layer, "supports_jit", True) for layer in layers
        )

    @property
    def layers(self):
        return list(self.pipeline_layers)

    def transform_images(self, images, transformation, training=True):
        # Each layer draws its own randomness: the pipeline draws nothing.
        del transformation
        out = images
        for layer in self.pipeline_layers:
            out = layer(out, training=training)
        if self.value_range is not None:
            out = ops.clip(out, *self.value_range)
        return cast_like(out, images.dtype)

    def image_output_shape(self, input_shape):
        for layer in self.pipeline_layers:
            input_shape = layer.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layers": [
                    keras.saving.serialize_keras_object(x) for x in self.pipeline_layers
                ],
                "value_range": None
                if self.value_range is None
                else list(self.value_range),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [
            keras.saving.deserialize_keras_object(x) for x in config["layers"]
        ]
        return cls(**config)


def _check_image_size(image_size):
    if image_size is None:
        return None, None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        height, width = image_size
        ok = all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            "`image_size` must be None, a positive int or a pair of positive ints. "
            f"Received: image_size={image_size!r}"
        )
    return height, width


def pipeline(
    preset,
    image_size=None,
    value_range=(0, 255),
    seed=None,
    flip="horizontal",
    magnitude=0.5,
    crop_scale=(0.25, 1.0),
):
    """Returns a ready augmentation `Pipeline` for a named preset.

    - `"light"`: random flip, then a `RandomResizedCrop` keeping
      `crop_scale` (by default 25-100%) of the image area.
    - `"standard"`: light, then `RandAugment(num_ops=2, magnitude)` with a
      per-image magnitude spread of 0.1.
    - `"strong"`: standard, then Keras's `RandomErasing` on half the images.

    The pipeline is one layer: put it first in a model (active in `fit` only)
    or map it over batches of a `tf.data` pipeline.

    Args:
        preset: `"light"`, `"standard"` or `"strong"`.
        image_size: output size `(height, width)` or an int; None keeps the
            input size.
        value_range: `(low, high)` of the input values.
        seed: int making the whole pipeline reproducible (each layer gets
            `seed + i`), or None.
        flip: `"horizontal"`, `"vertical"`, `"horizontal_and_vertical"`, or
            None for data where a mirror image changes the class (digits,
            text).
        magnitude: RandAugment magnitude in `[0, 1]` for the standard and
            strong presets.
        crop_scale: `(low, high)` fraction of the image area kept by the
            random resized crop; `(0.6, 1.0)` suits small centred objects
            such as digits.

    Returns:
        A `keras_harden.augment.Pipeline`.

    Example:

    >>> import keras, keras_harden as kh
    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     kh.augment.pipeline("standard", seed=0),
    ...     keras.layers.Rescaling(1 / 255),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10)])

    References:
        Cubuk et al., RandAugment (https://arxiv.org/abs/1909.13719); Zhong
        et al., Random Erasing (https://arxiv.org/abs/1708.04896).
    """
    if preset not in PRESETS:
        raise ValueError(
            f"`preset` must be one of {PRESETS}. Received: preset={preset!r}"
        )
    height, width = _check_image_size(image_size)
    value_range = check_value_range(value_range)
    seed = check_seed(seed)
    flips = (None, "horizontal", "vertical", "horizontal_and_vertical")
    if flip not in flips:
        raise ValueError(f"`flip` must be one of {flips}. Received: flip={flip!r}")

    def layer_seed(i):
        return None if seed is None else seed + i

    layers = []
    if flip is not None:
        layers.append(keras.layers.RandomFlip(flip, seed=layer_seed(0)))
    layers.append(
        RandomResizedCrop(
            height,
            width,
            scale=crop_scale,
            value_range=value_range,
            seed=layer_seed(1),
        )
    )
    if preset in ("standard", "strong"):
        layers.append(
            RandAugment(
                num_ops=2,
                magnitude=magnitude,
                magnitude_stddev=0.1,
                value_range=value_range,
                seed=layer_seed(2),
            )
        )
    if preset == "strong":
        layers.append(
            keras.layers.RandomErasing(
                factor=(0.5, 0.5),
                value_range=value_range,
                seed=layer_seed(3),
            )
        )
    # Every layer of light and standard keeps the value range; only random
    # erasing's noise fill needs the final clip.
    clip = value_range if preset == "strong" else None
    return Pipeline(layers, value_range=clip, name=f"augment_{preset}")
