"""RandomChoice: one of several augmentation layers per image."""

import keras

from keras_harden.augment import ops as aug_ops
from keras_harden.augment._layer import RandomLayer, call_layer, ops, random


def _bind(layer, dtype):
    def apply(images):
        return call_layer(layer, images, dtype)

    return apply


@keras.saving.register_keras_serializable(package="keras_harden")
class RandomChoice(RandomLayer):
    """Applies one of `layers` to each image, chosen per image.

    Each image draws one layer (uniformly, or with probabilities proportional
    to `weights`). On TensorFlow (the backend, or inside `tf.data` under any
    backend) the batch is split by choice and each layer runs only on the
    images that chose it; on other backends every layer runs on the whole
    batch and each image keeps its own layer's output.
    The layers must keep the image shape; outputs are cast back to the input
    dtype. Inactive (the input comes back) with `training=False`, so inside a
    model it is off in `predict`, `evaluate` and `keras_harden.export`.

    Args:
        layers: list of Keras layers (ours, Keras's or keras-cv's).
        weights: optional list of non-negative relative probabilities, one
            per layer.
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        The images, each transformed by its chosen layer.

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> choice = kh.augment.RandomChoice(
    ...     [keras.layers.RandomRotation(0.1), kh.augment.TrivialAugment()], seed=0)
    >>> tuple(choice(np.zeros((4, 16, 16, 3), "float32")).shape)
    (4, 16, 16, 3)

    References:
        torchvision's `transforms.RandomChoice` (one choice per call there,
        per image here).
    """

    def __init__(self, layers, weights=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if (
            isinstance(layers, keras.layers.Layer)
            or not layers
            or not all(isinstance(x, keras.layers.Layer) for x in layers)
        ):
            raise ValueError(
                "`layers` must be a non-empty list of Keras layers. "
                f"Received: layers={layers!r}"
            )
        if weights is not None:
            given, weights = weights, [float(w) for w in weights]
            if len(weights) != len(layers) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError(
                    "`weights` must be one non-negative number per layer, not all "
                    f"zero. Received: weights={given!r}"
                )
        self.choice_layers = list(layers)
        self.weights_ = weights

    def _draw(self, images, seed):
        """`{"choices": (N,) int32 index of each image's layer}`."""
        n = len(self.choice_layers)
        if self.weights_ is None:
            logits = ops.zeros((1, n))
        else:
            logits = ops.log(ops.convert_to_tensor([self.weights_], "float32"))
        batch = ops.shape(images)[0]
        choice = random.categorical(
            ops.tile(logits, (batch, 1)), 1, dtype="int32", seed=seed
        )
        return {"choices": choice[:, 0]}

    def _apply(self, images, transformation):
        fns = [_bind(layer, images.dtype) for layer in self.choice_layers]
        return aug_ops.apply_layers(fns, transformation["choices"], images)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layers": [
                    keras.saving.serialize_keras_object(x) for x in self.choice_layers
                ],
                "weights": self.weights_,
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
