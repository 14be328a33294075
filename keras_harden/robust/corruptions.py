"""Common corruptions at five severities, after Hendrycks and Dietterich (2019).

`corrupt(images, name, severity)` applies one of `CORRUPTIONS` to a batch of
images `(N, H, W, C)` and returns a NumPy array in the same value range. The
severities are those of the CIFAR-10-C construction (severity `s` takes the
`s`-th of five parameters), with two rules that carry them to other images:

- Values. Every parameter acts on the images mapped to `[0, 1]`:
  `(x - low) / (high - low)` for `value_range=(low, high)`, corrupted, mapped
  back. A noise standard deviation of 0.08 is 8% of the range, a brightness
  shift of 0.1 is 10% of it, whatever the range.
- Size. The parameters counted in pixels (the blur's sigma) were set for
  32x32 images; they scale with the side, per axis: `sigma_rows = c * H / 32`
  and `sigma_cols = c * W / 32`. An 8x8 image gets a quarter of the blur in
  pixels (the same blur relative to the image; at 224 pixels the rule gives
  sigma 2.8 to 7, close to ImageNet-C's own 1 to 6). Parameters that are
  already relative (pixelation's fraction of the side, the zoom factors, the
  JPEG quality, every pointwise one) stay as they are.

The corruptions, with the reference's parameters for severities 1 to 5:

- `gaussian_noise`: `clip(x + sigma * z)`, `z ~ N(0, 1)` per value; sigma
  0.04, 0.06, 0.08, 0.09, 0.10.
- `shot_noise`: `clip(Poisson(x * c) / c)` (photon counts); c 500, 250, 100,
  75, 50.
- `impulse_noise`: salt and pepper, each value 0 or 1 (half each) with
  probability `a`; a 0.01, 0.02, 0.03, 0.05, 0.07.
- `speckle_noise`: `clip(x + x * sigma * z)`; sigma 0.06, 0.10, 0.12, 0.16,
  0.20.
- `gaussian_blur`: the discrete Gaussian of variance `sigma^2` along each
  axis, edge pixels repeated; sigma 0.4, 0.6, 0.7, 0.8, 1.0 pixels at 32.
- `zoom_blur`: the mean of `x` and its zooms about the centre by 1, 1.01,
  ..., z; z 1.05, 1.10, 1.15, 1.20, 1.25.
- `contrast`: `mean + c * (x - mean)` (the augment family's `contrast`); c
  0.75, 0.5, 0.4, 0.3, 0.15.
- `brightness`: `+ b` on each pixel's value (HSV's V), clipped; b 0.05,
  0.10, 0.15, 0.20, 0.30.
- `pixelate`: box-averaged down to `int(side * f)` pixels, copied back up
  (PIL's `BOX` both ways); f 0.95, 0.90, 0.85, 0.75, 0.65.
- `jpeg_compression`: JPEG at quality q (TensorFlow's codec, on any
  backend); q 80, 65, 58, 50, 40.

Against the reference code:

- `gaussian_blur` uses the discrete Gaussian kernel `T(n; t) = exp(-t) I_n(t)`,
  `t = sigma^2` (Lindeberg 1990), whose variance is exactly `sigma^2`, where
  the reference samples the continuous density at the pixels (scikit-image's
  `gaussian`). The two agree from a sigma of about one pixel; below it the
  sampled kernel loses variance (0.08 instead of 0.16 at sigma 0.4) and at the
  sub-pixel sigmas of small images (0.1 to 0.25 at 8x8) it rounds to the
  identity in float32, while the discrete one still blurs by the stated
  variance.
- `zoom_blur` zooms continuously (bilinear interpolation about the centre);
  the reference crops `ceil(side / z)` pixels and resizes them to
  `round(that * z)`, which is the identity while both round back to the side:
  for z up to 1.01 at 32x32 and up to 1.06 at 8x8 (all of severity 1 there).
- `contrast` is the augment family's: the mean is the image's grey level (the
  mean of its channels, luma-weighted for RGB), the reference's is per
  channel. They agree for grey images; for colour ones this also pulls the
  colours towards grey.
- `brightness` adds to HSV's value with hue and saturation kept, computed
  without the colour-space round trip: each pixel's channels are scaled by
  `V' / V`, `V` the largest channel (a grey pixel: `+ b`). The augment
  family's `brightness` multiplies (PIL's enhancer): another operation.
- `pixelate` matches the reference (PIL's `BOX` resize down and up: each
  pixel takes the mean of the pixels whose centres fall in its coarse pixel).
  At 8x8 the coarse sizes `int(8 * f)` are 7, 7, 6, 6, 5: severities 1 and
  2, and 3 and 4, coincide there; severity 1 averages only rows (and
  columns) 3 and 4, and severity 5 (pairs 0-1, 3-4, 6-7) changes the digits
  less than severities 3 and 4 (pairs 1-2, 5-6), their border rows being
  empty. The severities are ordered from 32x32 up.
- Impulse noise draws one uniform `u` per value: pepper where `u < a / 2`,
  salt where `u >= 1 - a / 2` (scikit-image draws which values and then
  which kind; the same law, and with the same draws a higher severity
  changes a superset of the values).
- Not included: defocus and glass blur (their radii and pixel swaps, scaled
  to 8x8, are below one pixel, where both reduce to a Gaussian blur), motion
  blur (ImageMagick's kernel), the elastic transform, the weather
  corruptions (snow, frost, fog, spatter; frost blends the reference's
  photographs) and `saturate` (nothing to do on grey images).

Random corruptions draw their noise once, in `draw_noise` (NumPy, from the
`seed`), and apply it in a pure function of the images and the draws; an int
seed gives the same draws at every severity (so a higher severity scales the
same noise). The functions named after the corruptions are those pure
functions, on images in `[0, 1]`.

References:
    Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to
    Common Corruptions and Perturbations" (ICLR 2019), arXiv:1903.12261;
    reference code github.com/hendrycks/robustness
    (`ImageNet-C/create_c/make_cifar_c.py`).
    Lindeberg, "Scale-space for discrete signals" (IEEE TPAMI 1990).
"""

import math
import numbers

import keras
import numpy as np

from keras_harden.augment import ops as augment_ops
from keras_harden.robust import _common

__all__ = [
    "CORRUPTIONS",
    "brightness",
    "contrast",
    "corrupt",
    "corruption_parameter",
    "draw_noise",
    "gaussian_blur",
    "gaussian_noise",
    "impulse_noise",
    "jpeg_compression",
    "mean_accuracy_drop",
    "mean_corruption_accuracy",
    "pixelate",
    "shot_noise",
    "speckle_noise",
    "zoom_blur",
]

SEVERITIES = 5
REFERENCE_SIDE = 32  # the image side the pixel-valued parameters were set for

# The CIFAR-10-C parameters, severity 1 to 5.
_PARAMETERS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "zoom_blur": (5, 10, 15, 20, 25),  # zooms 1, 1.01, ..., 1 + 0.01 * k
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.10, 0.15, 0.20, 0.30),
    "pixelate": (0.95, 0.90, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

CORRUPTIONS = tuple(_PARAMETERS)
"""The corruption names, in the order of the table above (noise, blur,
digital)."""


# -- the parameters ------------------------------------------------------------


def corruption_parameter(name, severity, image_shape):
    """The parameter of corruption `name` at `severity` for images of
    `image_shape`, after the size rule.

    Args:
        name: one of `CORRUPTIONS`.
        severity: int in 1..5.
        image_shape: `(N, H, W, C)` or `(H, W, C)`.

    Returns:
        A float (noise scale, factor, shift, quality), `(sigma_rows,
        sigma_cols)` for `gaussian_blur`, the zoom factors for `zoom_blur`,
        `(rows, cols)` for `pixelate`.

    Example:

    >>> from keras_harden.robust.corruptions import corruption_parameter
    >>> corruption_parameter("gaussian_blur", 5, (8, 8, 1))   # 1.0 * 8 / 32
    (0.25, 0.25)
    >>> corruption_parameter("pixelate", 3, (8, 8, 1))        # int(8 * 0.85)
    (6, 6)
    >>> corruption_parameter("zoom_blur", 1, (8, 8, 1))
    (1.0, 1.01, 1.02, 1.03, 1.04, 1.05)
    >>> corruption_parameter("gaussian_noise", 3, (8, 8, 1))
    0.08
    """
    name = _check_name(name)
    severity = _check_severity(severity)
    height, width = (int(d) for d in tuple(image_shape)[-3:-1])
    value = _PARAMETERS[name][severity - 1]
    if name == "gaussian_blur":
        return value * height / REFERENCE_SIDE, value * width / REFERENCE_SIDE
    if name == "pixelate":
        return max(1, int(height * value)), max(1, int(width * value))
    if name == "zoom_blur":
        return tuple(round(1.0 + 0.01 * k, 2) for k in range(value + 1))
    return float(value)


# -- the draws -----------------------------------------------------------------


def draw_noise(name, images, parameter, rng):
    """The random draws of corruption `name` for `images` (in `[0, 1]`), or
    None for a deterministic corruption.

    `gaussian_noise` and `speckle_noise` draw standard normals, one per
    value; `impulse_noise` uniforms in `[0, 1)`; `shot_noise` the photon
    counts `Poisson(images * parameter)`.

    Args:
        name: one of `CORRUPTIONS`.
        images: NumPy array `(N, H, W, C)` in `[0, 1]`.
        parameter: the corruption's parameter (`corruption_parameter`).
        rng: a `numpy.random.Generator`.

    Returns:
        A float32 NumPy array of `images`' shape, or None.
    """
    shape = np.shape(images)
    if name in ("gaussian_noise", "speckle_noise"):
        return rng.standard_normal(shape).astype(np.float32)
    if name == "impulse_noise":
        return rng.random(shape).astype(np.float32)
    if name == "shot_noise":
        rate = np.asarray(images, np.float64) * parameter
        return rng.poisson(rate).astype(np.float32)
    return None


# -- the corruptions: pure functions on images in [0, 1] --------------------------


def gaussian_noise(images, noise, stddev):
    """`clip(images + stddev * noise, 0, 1)`."""
    return keras.ops.clip(_tensor(images) + stddev * _tensor(noise), 0.0, 1.0)


def shot_noise(counts, photons):
    """`clip(counts / photons, 0, 1)`: the image from `Poisson(x * photons)`
    photon counts."""
    return keras.ops.clip(_tensor(counts) / float(photons), 0.0, 1.0)


def impulse_noise(images, uniform, amount):
    """Salt and pepper: 0 where `uniform < amount / 2`, 1 where `uniform >=
    1 - amount / 2`, `images` elsewhere (a larger `amount` changes a superset
    of the same draws' values, each to the same extreme)."""
    images, uniform = _tensor(images), _tensor(uniform)
    half = amount / 2.0
    salted = keras.ops.where(uniform >= 1.0 - half, keras.ops.ones_like(images), images)
    return keras.ops.where(uniform < half, keras.ops.zeros_like(images), salted)


def speckle_noise(images, noise, stddev):
    """`clip(images + images * stddev * noise, 0, 1)`: noise in proportion to
    the value."""
    images = _tensor(images)
    return keras.ops.clip(images + images * stddev * _tensor(noise), 0.0, 1.0)


def gaussian_blur(images, sigma):
    """Blurs each channel with the discrete Gaussian of variance `sigma^2`
    along each axis, the edge pixels repeated beyond the border.

    Args:
        images: `(N, H, W, C)` in `[0, 1]`.
        sigma: `(sigma_rows, sigma_cols)` in pixels, each >= 0.
    """
    images = _tensor(images)
    height, width = images.shape[1], images.shape[2]
    rows = _convolution_matrix(_discrete_gaussian(sigma[0]), height)
    cols = _convolution_matrix(_discrete_gaussian(sigma[1]), width)
    return keras.ops.clip(_separable(images, rows, cols), 0.0, 1.0)


def zoom_blur(images, zooms):
    """The mean of `images` and its zooms about the centre by each factor of
    `zooms` (each >= 1; bilinear interpolation): `(x + sum_z zoom(x, z)) /
    (len(zooms) + 1)`."""
    images = _tensor(images)
    height, width = images.shape[1], images.shape[2]
    total = images
    for zoom in zooms:
        rows, cols = _zoom_matrix(zoom, height), _zoom_matrix(zoom, width)
        total = total + _separable(images, rows, cols)
    return keras.ops.clip(total / (len(zooms) + 1.0), 0.0, 1.0)


def contrast(images, factor):
    """`mean + factor * (images - mean)`, the mean the image's grey level: the
    augment family's `contrast` at strength `(factor - 1) / 0.9`."""
    images = _tensor(images)
    strength = (float(factor) - 1.0) / augment_ops.MAX_ENHANCE
    v = keras.ops.full((keras.ops.shape(images)[0],), strength, dtype="float32")
    return augment_ops.contrast(images, v)


def brightness(images, delta):
    """Adds `delta` to each pixel's HSV value `V` (its largest channel),
    clipped to `[0, 1]`, hue and saturation kept: the channels are scaled by
    `V' / V` (a black pixel becomes the grey `V'`)."""
    images = _tensor(images)
    value = keras.ops.max(images, axis=-1, keepdims=True)
    brighter = keras.ops.clip(value + delta, 0.0, 1.0)
    lit = value > 0
    scaled = images * brighter / keras.ops.where(lit, value, 1.0)
    return keras.ops.clip(keras.ops.where(lit, scaled, brighter), 0.0, 1.0)


def pixelate(images, size):
    """Box-averages `images` down to `size = (rows, cols)` coarse pixels and
    copies them back: each coarse pixel averages the pixels whose centres it
    holds, and those pixels take the average (PIL's `BOX` resize there and
    back, as the reference code pixelates)."""
    images = _tensor(images)
    height, width = images.shape[1], images.shape[2]
    rows, cols = _pixelate_matrix(size[0], height), _pixelate_matrix(size[1], width)
    return keras.ops.clip(_separable(images, rows, cols), 0.0, 1.0)


def jpeg_compression(images, quality):
    """Encodes each image as a JPEG at `quality` (0-100) and decodes it
    (TensorFlow's `tf.image.adjust_jpeg_quality`: values rounded to 8 bits,
    1 or 3 channels); a NumPy array."""
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - TensorFlow is a dependency
        raise ValueError(
            "`jpeg_compression` needs TensorFlow (its JPEG codec). Received: "
            "name='jpeg_compression' without TensorFlow installed"
        ) from error
    images = np.asarray(keras.ops.convert_to_numpy(images), np.float32)
    if images.shape[-1] not in (1, 3):
        raise ValueError(
            "`jpeg_compression` takes images with 1 or 3 channels. Received: "
            f"images.shape={images.shape}"
        )
    quality = int(quality)
    out = [
        tf.image.adjust_jpeg_quality(tf.constant(image), quality).numpy()
        for image in images
    ]
    return np.clip(np.stack(out).astype(np.float32), 0.0, 1.0)


_APPLY = {
    "gaussian_noise": lambda x, p, d: gaussian_noise(x, d, p),
    "shot_noise": lambda x, p, d: shot_noise(d, p),
    "impulse_noise": lambda x, p, d: impulse_noise(x, d, p),
    "speckle_noise": lambda x, p, d: speckle_noise(x, d, p),
    "gaussian_blur": lambda x, p, d: gaussian_blur(x, p),
    "zoom_blur": lambda x, p, d: zoom_blur(x, p),
    "contrast": lambda x, p, d: contrast(x, p),
    "brightness": lambda x, p, d: brightness(x, p),
    "pixelate": lambda x, p, d: pixelate(x, p),
    "jpeg_compression": lambda x, p, d: jpeg_compression(x, p),
}


# -- the public entry point --------------------------------------------------------


def corrupt(images, name, severity, value_range=(0, 1), seed=None):
    """Corrupts a batch of images with one common corruption at one severity.

    The images are mapped to `[0, 1]` by `value_range`, corrupted with the
    CIFAR-10-C parameters of `severity` (the pixel-valued ones scaled to the
    image size: see the module's docstring), and mapped back.

    Args:
        images: `(N, H, W, C)` images, channels last, inside `value_range`.
        name: one of `CORRUPTIONS`.
        severity: int in 1..5.
        value_range: `(low, high)` of the images (noise scales, shifts and
            the clipping are fractions of it).
        seed: None, an int (the same draws on every call, at every severity)
            or a `keras.random.SeedGenerator` (new draws every call); None
            follows `keras.utils.set_random_seed`.

    Returns:
        The corrupted images, a NumPy array of `images`' shape in
        `value_range` (`images`' float dtype, else float32).

    Example:

    >>> from keras_harden.robust.corruptions import corrupt
    >>> x = np.full((1, 4, 4, 1), 100.0, "float32")       # a flat grey image
    >>> corrupt(x, "contrast", 5, value_range=(0, 255))[0, 0, 0].tolist()
    [100.0]
    >>> # brightness 3 adds 0.15 of the range: 100 + 0.15 * 255 = 138.25
    >>> corrupt(x, "brightness", 3, value_range=(0, 255))[0, 0, 0].tolist()
    [138.25]
    >>> noisy = corrupt(x, "gaussian_noise", 5, (0, 255), seed=0)
    >>> bool(np.all(noisy == corrupt(x, "gaussian_noise", 5, (0, 255), seed=0)))
    True

    References:
        Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to
        Common Corruptions and Perturbations" (ICLR 2019), arXiv:1903.12261;
        github.com/hendrycks/robustness (`make_cifar_c.py`).
    """
    name = _check_name(name)
    severity = _check_severity(severity)
    low, high = _check_range(value_range)
    rng = _common.rng(seed)
    x = np.asarray(images)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    if x.ndim != 4 or not x.size:
        raise ValueError(
            "`images` must be a non-empty batch `(N, H, W, C)`, channels last. "
            f"Received: images.shape={x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("`images` must be finite. Received: images with NaN or Inf")
    if x.min() < low or x.max() > high:
        raise ValueError(
            f"`images` must lie within `value_range` ({low:g}, {high:g}). "
            f"Received: images from {float(x.min()):g} to {float(x.max()):g}"
        )
    unit = ((x.astype(np.float64) - low) / (high - low)).astype(np.float32)
    parameter = corruption_parameter(name, severity, unit.shape)
    draws = draw_noise(name, unit, parameter, rng)
    out = _APPLY[name](unit, parameter, draws)
    out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
    return np.clip(low + out * (high - low), low, high).astype(dtype)


# -- the summary -------------------------------------------------------------------


def mean_corruption_accuracy(accuracies):
    """The mean accuracy over corruptions and severities.

    Each corruption's accuracies are averaged over its severities, then the
    corruptions are averaged (the same as the mean of all entries when every
    corruption has all five). This is Hendrycks and Dietterich's mean
    corruption error turned into an accuracy and left unnormalised: their
    mCE divides each corruption's errors by AlexNet's on ImageNet-C, which
    has no counterpart for other data sets and models.

    Args:
        accuracies: a mapping `{name: per-severity accuracies}` or a 2-D
            array-like `(corruptions, severities)`; finite numbers.

    Returns:
        A float.

    Example:

    >>> from keras_harden.robust.corruptions import mean_corruption_accuracy
    >>> # noise: (0.9 + 0.8 + 0.7 + 0.6 + 0.5) / 5 = 0.7
    >>> # contrast: (1.0 + 1.0 + 0.9 + 0.9 + 0.7) / 5 = 0.9; their mean 0.8
    >>> round(mean_corruption_accuracy({
    ...     "gaussian_noise": [0.9, 0.8, 0.7, 0.6, 0.5],
    ...     "contrast": [1.0, 1.0, 0.9, 0.9, 0.7]}), 6)
    0.8

    References:
        Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to
        Common Corruptions and Perturbations" (ICLR 2019), arXiv:1903.12261.
    """
    rows = _accuracy_rows(accuracies)
    return float(np.mean([np.mean(row) for row in rows]))


def mean_accuracy_drop(accuracies, clean_accuracy):
    """The clean accuracy less the mean corruption accuracy: Hendrycks and
    Dietterich's relative mCE (the error added by each corruption over the
    clean error, averaged) unnormalised, as accuracy points.

    Args:
        accuracies: as for `mean_corruption_accuracy`.
        clean_accuracy: the accuracy on the clean images, a finite number.

    Returns:
        A float: `clean_accuracy - mean_corruption_accuracy(accuracies)`.

    Example:

    >>> from keras_harden.robust.corruptions import mean_accuracy_drop
    >>> # (0.95 - 0.7 + 0.95 - 0.9) / 2 = 0.95 - 0.8 = 0.15
    >>> round(mean_accuracy_drop({"gaussian_noise": [0.9, 0.8, 0.7, 0.6, 0.5],
    ...     "contrast": [1.0, 1.0, 0.9, 0.9, 0.7]}, 0.95), 6)
    0.15

    References:
        Hendrycks and Dietterich (ICLR 2019), arXiv:1903.12261 (relative mCE).
    """
    if (
        isinstance(clean_accuracy, bool)
        or not isinstance(clean_accuracy, numbers.Real)
        or not math.isfinite(clean_accuracy)
    ):
        raise ValueError(
            "`clean_accuracy` must be a finite number. Received: "
            f"clean_accuracy={clean_accuracy!r}"
        )
    return float(clean_accuracy) - mean_corruption_accuracy(accuracies)


def _accuracy_rows(accuracies):
    if hasattr(accuracies, "items"):
        rows = [
            list(np.ravel(np.asarray(v, dtype=object))) for v in accuracies.values()
        ]
    else:
        array = np.asarray(accuracies, dtype=object)
        rows = [list(row) for row in array] if array.ndim == 2 else None
    ok = bool(rows) and all(
        row
        and all(
            isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(float(v))
            for v in row
        )
        for row in rows
    )
    if not ok:
        raise ValueError(
            "`accuracies` must map each corruption to its per-severity "
            "accuracies (or be a 2-D array `(corruptions, severities)`), all "
            f"finite numbers, none empty. Received: accuracies={accuracies!r}"
        )
    return [np.asarray(row, np.float64) for row in rows]


# -- linear maps along one axis -------------------------------------------------------


def _tensor(x):
    return keras.ops.convert_to_tensor(x, "float32")


def _separable(images, rows, cols):
    """Applies the `(H, H)` matrix `rows` along the rows and the `(W, W)`
    matrix `cols` along the columns of each image."""
    rows = keras.ops.convert_to_tensor(rows, "float32")
    cols = keras.ops.convert_to_tensor(cols, "float32")
    out = keras.ops.einsum("ij,njkc->nikc", rows, images)
    return keras.ops.einsum("lk,nikc->nilc", cols, out)


def _bessel_ive(n, t):
    """`exp(-t) I_n(t)`, the modified Bessel function of the first kind
    scaled, for an integer `n >= 0` and `t > 0`, by its power series."""
    log_half = math.log(t / 2.0)
    total = 0.0
    for k in range(int(t + 10.0 * math.sqrt(t) + 40)):
        total += math.exp(
            (2 * k + n) * log_half - math.lgamma(k + 1) - math.lgamma(k + n + 1) - t
        )
    return total


def _discrete_gaussian(sigma):
    """The discrete Gaussian kernel of variance `sigma^2`, offsets `-r..r`
    with `r = ceil(5 sigma) + 2`, normalised to sum 1 (`[1]` at sigma 0)."""
    if sigma <= 0:
        return np.ones(1)
    radius = math.ceil(5.0 * sigma) + 2
    t = sigma * sigma
    weights = np.array([_bessel_ive(abs(k), t) for k in range(-radius, radius + 1)])
    return weights / weights.sum()


def _convolution_matrix(kernel, length):
    """The `(length, length)` matrix of a centred convolution by `kernel`
    with the edge values repeated beyond the border."""
    radius = len(kernel) // 2
    matrix = np.zeros((length, length))
    for i in range(length):
        for offset, weight in zip(range(-radius, radius + 1), kernel, strict=True):
            matrix[i, min(max(i + offset, 0), length - 1)] += weight
    return matrix


def _zoom_matrix(zoom, length):
    """Bilinear sampling of a zoom by `zoom` about the centre: output pixel
    `i` reads the input at `c + (i - c) / zoom`, `c = (length - 1) / 2`."""
    centre = (length - 1) / 2.0
    matrix = np.zeros((length, length))
    for i in range(length):
        source = min(max(centre + (i - centre) / zoom, 0.0), length - 1.0)
        left = min(int(math.floor(source)), length - 1)
        right = min(left + 1, length - 1)
        frac = source - left
        matrix[i, left] += 1.0 - frac
        matrix[i, right] += frac
    return matrix


def _pixelate_matrix(size, length):
    """The `(length, length)` matrix of pixelation along one axis: pixel `j`
    belongs to coarse pixel `floor((j + 1/2) * size / length)` (the coarse
    pixel holding its centre) and takes the mean of the pixels that share
    it."""
    cell = (np.arange(length) * 2 + 1) * size // (2 * length)
    same = (cell[:, None] == cell[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


# -- checks --------------------------------------------------------------------------


def _check_name(name):
    if not isinstance(name, str) or name not in _PARAMETERS:
        raise ValueError(
            f"`name` must be one of {', '.join(CORRUPTIONS)}. Received: name={name!r}"
        )
    return name


def _check_severity(severity):
    ok = isinstance(severity, numbers.Integral) and not isinstance(severity, bool)
    if not ok or not 1 <= severity <= SEVERITIES:
        raise ValueError(
            f"`severity` must be an integer in 1..{SEVERITIES}. "
            f"Received: severity={severity!r}"
        )
    return int(severity)


def _check_range(value_range):
    checked = _common.check_value_range(value_range)
    if checked is None:
        raise ValueError(
            "`value_range` must be a pair `(low, high)` (corruptions are "
            "fractions of it). Received: value_range=None"
        )
    return checked
