"""RandomResizedCrop with one crop box per image."""

import math

import keras

from keras_harden._validation import check_int
from keras_harden.augment._layer import AugmentLayer, cast_like, ops, random

_ATTEMPTS = 10


def _check_pair(name, value, low_bound, inclusive_high=None):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair (low, high). Received: {name}={value!r}"
        ) from None
    ok = low_bound < low <= high and (inclusive_high is None or high <= inclusive_high)
    if not ok:
        raise ValueError(
            f"`{name}` must be a pair with {low_bound} < low <= high"
            + (f" <= {inclusive_high}" if inclusive_high is not None else "")
            + f". Received: {name}={value!r}"
        )
    return (value[0], value[1])


def resample_matrix(start, length, in_size, out_size):
    """Rows of weights `(N, out_size, in_size)` that resample the interval
    `[start, start + length)` of each image's axis onto `out_size` pixels.

    A tent filter on half-pixel centres: plain linear interpolation when the
    crop is magnified, widened to the crop-to-output ratio (antialiasing)
    when it is shrunk; each row is normalized to sum to 1, so edges clamp.
    """
    start = ops.cast(start, "float32")
    scale = ops.cast(length, "float32") / float(out_size)  # (N,)
    centres = (
        start[:, None]
        + (ops.arange(out_size, dtype="float32")[None, :] + 0.5) * scale[:, None]
    )  # (N, out), in input pixel units
    width = ops.maximum(scale, 1.0)[:, None, None]
    pixels = ops.arange(in_size, dtype="float32")[None, None, :] + 0.5
    weights = ops.relu(1.0 - ops.abs(pixels - centres[:, :, None]) / width)
    total = ops.sum(weights, axis=2, keepdims=True)
    return weights / ops.maximum(total, 1e-12)


def crop_and_resize(images, boxes, height, width):
    """Crops `boxes` `(N, 4)` = (y0, x0, box height, box width) in pixels from
    each image and resizes to `(height, width)` with two batched matmuls."""
    in_h, in_w = images.shape[1], images.shape[2]
    images = ops.convert_to_tensor(images, "float32")
    rows = resample_matrix(boxes[:, 0], boxes[:, 2], in_h, height)  # (N, h, H)
    cols = resample_matrix(boxes[:, 1], boxes[:, 3], in_w, width)  # (N, w, W)
    out = ops.einsum("nia,nabc->nibc", rows, images)
    return ops.einsum("njb,nibc->nijc", cols, out)


@keras.saving.register_keras_serializable(package="keras_harden")
class RandomResizedCrop(AugmentLayer):
    """Crops a random box from each image and resizes it to `(height, width)`.

    Each image draws its own box: the area is a uniform fraction `scale` of
    the image, the aspect ratio (width / height) is log-uniform in `ratio`;
    as in torchvision, up to ten draws are tried and a box that does not fit
    falls back to the whole image. The offset is uniform over the positions
    where the box fits. Resampling is bilinear with antialiasing when the box
    is shrunk (a tent filter as wide as the shrink factor), computed as two
    batched matrix products, so it runs on every backend. (Keras's
    `RandomCrop` draws one offset for the whole batch and never rescales.)

    In inference (`training=False`), the whole image is resized to
    `(height, width)` (a no-op when the size is unchanged), so the shapes
    match between training and inference.

    Args:
        height: output height; None keeps the input height.
        width: output width; None keeps the input width.
        scale: `(low, high)` range of the crop area as a fraction of the image.
        ratio: `(low, high)` range of the aspect ratio width / height.
        value_range: `(low, high)` of the input values.
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        Images `(N, height, width, C)` of the input's dtype.

    Example:

    >>> import numpy as np, keras_harden as kh
    >>> crop = kh.augment.RandomResizedCrop(24, 24, seed=0)
    >>> tuple(crop(np.zeros((2, 32, 32, 3), "float32")).shape)
    (2, 24, 24, 3)

    References:
        Szegedy et al., "Going deeper with convolutions", CVPR 2015
        (https://arxiv.org/abs/1409.4842); torchvision's
        `transforms.RandomResizedCrop`.
    """

    def __init__(
        self,
        height=None,
        width=None,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        value_range=(0, 255),
        seed=None,
        **kwargs,
    ):
        super().__init__(value_range=value_range, seed=seed, **kwargs)
        self.height = check_int("height", height, minimum=1, optional=True)
        self.width = check_int("width", width, minimum=1, optional=True)
        self.scale = _check_pair("scale", scale, 0.0, 1.0)
        self.ratio = _check_pair("ratio", ratio, 0.0)

    def _target(self, images):
        height = self.height or images.shape[1]
        width = self.width or images.shape[2]
        if height is None or width is None:
            raise ValueError(
                "RandomResizedCrop needs static image height and width (or "
                f"explicit `height`/`width`). Received: input shape={images.shape}"
            )
        return height, width

    def transform_images(self, images, transformation, training=True):
        if training and transformation is not None:
            return self._apply(images, transformation)
        height, width = self._target(images)
        if (height, width) == tuple(images.shape[1:3]):
            return images
        out = ops.image.resize(
            ops.cast(images, "float32"), (height, width), antialias=True
        )
        return cast_like(ops.clip(out, *self.value_range), images.dtype)

    def _draw(self, images, seed):
        """`{"boxes": (N, 4) crop boxes (top, left, height, width) in
        pixels}`."""
        in_h, in_w = float(images.shape[1]), float(images.shape[2])
        n = ops.shape(images)[0]
        draws = (n, _ATTEMPTS)
        area = random.uniform(draws, *self.scale, seed=seed) * (in_h * in_w)
        log_ratio = random.uniform(
            draws, math.log(self.ratio[0]), math.log(self.ratio[1]), seed=seed
        )
        aspect = ops.exp(log_ratio)
        box_w = ops.sqrt(area * aspect)
        box_h = ops.sqrt(area / aspect)
        fits = ops.logical_and(box_w <= in_w, box_h <= in_h)
        # First attempt that fits, else the whole image.
        first = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=1), 1)
        any_fit = ops.any(fits, axis=1)
        box_w = ops.where(
            any_fit, ops.take_along_axis(box_w, first, axis=1)[:, 0], in_w
        )
        box_h = ops.where(
            any_fit, ops.take_along_axis(box_h, first, axis=1)[:, 0], in_h
        )
        offsets = random.uniform((n, 2), seed=seed)
        y0 = offsets[:, 0] * (in_h - box_h)
        x0 = offsets[:, 1] * (in_w - box_w)
        return {"boxes": ops.stack([y0, x0, box_h, box_w], axis=1)}

    def _apply_unit(self, images, transformation):
        height, width = self._target(images)
        out = crop_and_resize(images, transformation["boxes"], height, width)
        return ops.clip(out, 0.0, 1.0)

    def image_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        height = self.height or input_shape[-3]
        width = self.width or input_shape[-2]
        return input_shape[:-3] + (height, width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": list(self.scale),
                "ratio": list(self.ratio),
            }
        )
        return config
