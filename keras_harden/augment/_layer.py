"""The base of the augmentation layers, and what they share.

Every layer draws its random parameters in `get_random_transformation` and
applies them in `transform_images` (and `transform_labels`), a pure function
of the images and the draws, as Keras's own image preprocessing layers do.
The base `call` runs the pair; it handles the training switch, labels, single
images and dtypes, so a layer writes only its draws and its transform.

The family's maths goes through `ops` and `random`, which stand for
`keras.ops` and `keras.random`: the session backend's, or TensorFlow's inside
a `tf.data` graph under another backend (the one private Keras hook of the
package, in `_backend.py`).
"""

import importlib
import sys
import weakref

import keras

from keras_harden._validation import check_int

# `ops` and `random` are also the layers' own: they import them from here.
from keras_harden.augment._backend import (  # noqa: F401
    TENSORFLOW_BACKEND,
    in_foreign_tf_graph,
    ops,
    random,
)
from keras_harden.augment.ops import SIGNED, TRANSFORMS

# TensorFlow seed generators for tf.data graphs, one per layer (see
# `RandomLayer._seed`).
_TF_SEED_GENERATORS = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------
# Argument checks.


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
    return check_int("seed", seed, optional=True)


def check_operations(operations):
    if operations is None:
        return None
    unknown = [name for name in operations if name not in TRANSFORMS]
    if not operations or unknown or isinstance(operations, str):
        raise ValueError(
            "`operations` must be a non-empty list of names from "
            f"{sorted(TRANSFORMS)}. Received: operations={operations!r}"
        )
    return list(operations)


# ---------------------------------------------------------------------------
# Helpers shared by the layers.


def to_unit(images, value_range):
    """Casts `images` to float32 and maps `value_range` onto `[0, 1]`."""
    low, high = float(value_range[0]), float(value_range[1])
    images = ops.cast(images, "float32")
    if (low, high) == (0.0, 1.0):
        return images
    if low == 0.0:
        return images * (1.0 / high)  # one pass instead of two
    return (images - low) / (high - low)


def from_unit(images, value_range, dtype):
    """Inverse of `to_unit`: back to `value_range` and `dtype` (rounded and
    clipped for integer dtypes)."""
    low, high = float(value_range[0]), float(value_range[1])
    if low != 0.0:
        images = images * (high - low) + low
    elif high != 1.0:
        images = images * high
    if keras.backend.is_int_dtype(dtype):
        images = ops.clip(ops.round(images), low, high)
    return ops.cast(images, dtype)


def cast_like(images, dtype):
    """Casts a layer's output back to the input `dtype` (rounded for ints)."""
    images = ops.convert_to_tensor(images)
    if keras.backend.is_int_dtype(dtype) and not keras.backend.is_int_dtype(
        images.dtype
    ):
        images = ops.round(images)
    return ops.cast(images, dtype)


def call_layer(layer, images, dtype):
    """`layer` applied in training mode, its output in the input `dtype`."""
    return cast_like(layer(images, training=True), dtype)


def pick(uniform, count):
    """Integers in `[0, count)` from uniform draws in `[0, 1)`."""
    return ops.minimum(ops.cast(ops.floor(uniform * count), "int32"), count - 1)


def signed_strengths(names, choice, magnitude, coin):
    """Strengths shaped like `choice`: `magnitude`, negated where `coin < 0.5`
    for the chosen operations that have a direction."""
    signed = ops.convert_to_tensor([name in SIGNED for name in names])
    flip = ops.logical_and(ops.take(signed, choice), coin < 0.5)
    return magnitude * ops.where(flip, -1.0, 1.0)


def batch_images(data):
    """The image batch of `data`: a tensor, or a dict with `"images"`."""
    return data["images"] if isinstance(data, dict) else data


# ---------------------------------------------------------------------------
# The layers' bases.


class ImageLayer(keras.layers.Layer):
    """Base of the layers that take image batches: `call(images, labels=None,
    training=True)`.

    `call` draws `transformation = self.get_random_transformation(data,
    training)` (None when there is nothing to draw) and returns
    `self.transform_images(images, transformation, training)`, a tensor of the
    input's own dtype (no autocast: uint8 stays uint8). Labels, when given,
    come back through `self.transform_labels` (untouched unless the layer
    says otherwise) beside the images, so the layer maps a `tf.data` dataset
    of `(images, labels)` pairs as it is (`Dataset.map` calls
    `layer(images, labels)`): `ds.batch(32).map(layer)`. A single image
    (rank 3) goes through as a batch of one.

    Inside a `tf.data` map under a backend other than TensorFlow, the layer
    and its methods run on Keras's TensorFlow backend.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def __call__(self, *args, **kwargs):
        if in_foreign_tf_graph():
            # A graph traced by tf.data: TensorFlow tensors that the session
            # backend's `Layer.__call__` would try to convert. Our layers hold
            # no weights, so `call` itself is all there is to run; AutoGraph
            # leaves it as written (it would rewrite it as Keras's own code
            # is not).
            autograph = sys.modules["tensorflow"].autograph.experimental
            return autograph.do_not_convert(self.call)(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def call(self, images, labels=None, training=True):
        images = ops.convert_to_tensor(images)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        data = images if labels is None else {"images": images, "labels": labels}
        transformation = self.get_random_transformation(data, training=training)
        out = self.transform_images(images, transformation, training=training)
        if unbatched:
            out = ops.squeeze(out, 0)
        if labels is None:
            return out
        return out, self.transform_labels(labels, transformation, training=training)

    def get_random_transformation(self, data, training=True, seed=None):
        """The random draws for `data` (an image batch, or a dict with
        `"images"` and `"labels"`), as a dict of tensors; None when the layer
        draws nothing."""
        del data, training, seed
        return None

    def transform_images(self, images, transformation, training=True):
        raise NotImplementedError

    def transform_labels(self, labels, transformation, training=True):
        del transformation, training
        return labels

    def compute_output_shape(self, images_shape, labels_shape=None):
        shape = self.image_output_shape(images_shape)
        if labels_shape is None:
            return shape
        return shape, self.label_output_shape(images_shape, labels_shape)

    def image_output_shape(self, images_shape):
        return images_shape

    def label_output_shape(self, images_shape, labels_shape):
        del images_shape
        return labels_shape


class RandomLayer(ImageLayer):
    """Base of the random image layers.

    Randomness comes from `self.seed_generator` (a `keras.random.SeedGenerator`
    seeded with `seed`): an int seed replays the same draws call by call in a
    fresh layer; every call draws new values. Inside a `tf.data` graph under
    another backend the draws come from a TensorFlow generator seeded alike.
    `get_random_transformation(..., seed=...)` takes an int or a generator in
    place of the layer's. With `training=False` nothing is drawn and the
    images come back untouched. Layers that group images by operation
    (`groups_images`) need dynamic shapes, which XLA lacks, hence
    `supports_jit` on the TensorFlow backend.
    """

    groups_images = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = not (
            self.groups_images and keras.backend.backend() == "tensorflow"
        )

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        return self._draw(batch_images(data), self._seed(seed))

    def _draw(self, images, seed):
        """The draws for the batch `images` from `seed`, as a dict of
        tensors."""
        raise NotImplementedError

    def transform_images(self, images, transformation, training=True):
        if not training or transformation is None:
            return images
        return self._apply(images, transformation)

    def _apply(self, images, transformation):
        """`transform_images` in training mode."""
        raise NotImplementedError

    def _seed(self, seed):
        if seed is not None:
            return seed
        if not in_foreign_tf_graph():
            return self.seed_generator
        # The session's generator holds a variable of the session backend;
        # the tf.data graph needs a TensorFlow one (kept out of the layer's
        # tracked state, as Keras's own preprocessing layers keep theirs).
        if self not in _TF_SEED_GENERATORS:
            _TF_SEED_GENERATORS[self] = keras.random.SeedGenerator(
                self.seed, backend=importlib.import_module(TENSORFLOW_BACKEND)
            )
        return _TF_SEED_GENERATORS[self]

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


class AugmentLayer(RandomLayer):
    """Base of the image operations: `_apply` maps images to the unit range,
    calls `self._apply_unit(unit_images, transformation)` and maps the result
    back to the input's range and dtype."""

    def __init__(self, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.value_range = check_value_range(value_range)

    def _apply(self, images, transformation):
        out = self._apply_unit(to_unit(images, self.value_range), transformation)
        return from_unit(out, self.value_range, images.dtype)

    def _apply_unit(self, images, transformation):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config["value_range"] = list(self.value_range)
        return config
