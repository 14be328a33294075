"""RandomApply: a layer applied to a random subset of the images."""

import keras

from keras_harden.augment import ops as aug_ops
from keras_harden.augment._layer import (
    RandomLayer,
    call_layer,
    check_probability,
    ops,
    random,
)


@keras.saving.register_keras_serializable(package="keras_harden")
class RandomApply(RandomLayer):
    """Applies `layer` to each image with probability `rate`, per image.

    On TensorFlow (the backend, or inside `tf.data` under any backend) the
    layer runs only on the images drawn (the batch is split, the layer
    applied to its part, and the batch put back in order); on other backends
    the layer runs on the whole batch and each image keeps the layer's output
    or its own. The layer must keep the image
    shape; its output is cast back to the input dtype. Inactive with
    `training=False` (`predict`, `evaluate`, `keras_harden.export`).

    Args:
        layer: a Keras layer (ours, Keras's or keras-cv's).
        rate: probability in `[0, 1]` that an image goes through `layer`.
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        The images, a random subset of them transformed.

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> blur = kh.augment.RandomApply(keras.layers.RandomGaussianBlur(), 0.2, seed=0)
    >>> tuple(blur(np.zeros((4, 16, 16, 3), "float32")).shape)
    (4, 16, 16, 3)

    References:
        torchvision's `transforms.RandomApply` (one draw per call there, per
        image here).
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"`layer` must be a Keras layer. Received: layer={layer!r}"
            )
        self.layer = layer
        self.rate = check_probability("rate", rate)

    def _draw(self, images, seed):
        """`{"applied": (N,) bool, whether each image goes through the
        layer}`."""
        draws = random.uniform((ops.shape(images)[0],), seed=seed)
        return {"applied": draws < self.rate}

    def _apply(self, images, transformation):
        dtype = images.dtype
        chosen = ops.cast(transformation["applied"], "int32")
        return aug_ops.apply_layers(
            [lambda x: x, lambda x: call_layer(self.layer, x, dtype)], chosen, images
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "rate": self.rate,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)
