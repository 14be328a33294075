"""keras_harden.robust.corruptions: each corruption against a NumPy (SciPy,
PIL, colorsys) reference on fixed draws and against hand-worked values; the
severity rules; `corrupt`'s range, seeds and checks; the summaries."""

import colorsys

import keras
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, special

from keras_harden.robust import _common
from keras_harden.robust import corruptions as cc

RNG = np.random.default_rng(0)
X8 = RNG.random((6, 8, 8, 1)).astype("float32")  # white noise, grey
X32 = RNG.random((4, 32, 32, 3)).astype("float32")  # white noise, colour


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def digits8(digits):
    (x, _), _ = digits
    return (x[:64] / 255.0).astype("float32")


# -- the severity rules --------------------------------------------------------------


def test_the_parameters_are_the_reference_ones_at_32_pixels():
    # make_cifar_c.py's lists, severity 1 and 5
    shape = (32, 32, 3)
    assert cc.corruption_parameter("gaussian_noise", 1, shape) == 0.04
    assert cc.corruption_parameter("shot_noise", 5, shape) == 50.0
    assert cc.corruption_parameter("impulse_noise", 4, shape) == 0.05
    assert cc.corruption_parameter("speckle_noise", 2, shape) == 0.10
    assert cc.corruption_parameter("gaussian_blur", 1, shape) == (0.4, 0.4)
    assert cc.corruption_parameter("contrast", 5, shape) == 0.15
    assert cc.corruption_parameter("brightness", 5, shape) == 0.30
    assert cc.corruption_parameter("jpeg_compression", 3, shape) == 58.0
    # pixelate: int(32 * f) for f = 0.95, 0.9, 0.85, 0.75, 0.65
    sizes = [cc.corruption_parameter("pixelate", s, shape)[0] for s in range(1, 6)]
    assert sizes == [30, 28, 27, 24, 20]
    # zoom blur: np.arange(1, 1 + 0.01 * (k + 1), 0.01), k = 5 .. 25
    zooms = cc.corruption_parameter("zoom_blur", 5, shape)
    assert len(zooms) == 26 and zooms[0] == 1.0 and zooms[-1] == 1.25


def test_pixel_parameters_scale_with_each_side():
    # sigma 0.7 (severity 3) at 8 rows and 16 columns: 0.7 * 8/32, 0.7 * 16/32
    assert cc.corruption_parameter("gaussian_blur", 3, (2, 8, 16, 1)) == pytest.approx(
        (0.175, 0.35)
    )
    # pixelate at 8x8: int(8 * f) = 7, 7, 6, 6, 5
    sizes = [cc.corruption_parameter("pixelate", s, (8, 8, 1)) for s in range(1, 6)]
    assert sizes == [(7, 7), (7, 7), (6, 6), (6, 6), (5, 5)]
    # value parameters do not depend on the size
    assert cc.corruption_parameter("gaussian_noise", 3, (8, 8, 1)) == 0.08


# -- each corruption against a reference on fixed draws --------------------------------


def test_gaussian_and_speckle_noise_against_numpy():
    noise = RNG.standard_normal(X8.shape).astype("float32")
    np.testing.assert_allclose(
        _np(cc.gaussian_noise(X8, noise, 0.08)),
        np.clip(X8 + 0.08 * noise, 0, 1),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        _np(cc.speckle_noise(X8, noise, 0.12)),
        np.clip(X8 + X8 * 0.12 * noise, 0, 1),
        atol=1e-6,
    )


def test_shot_noise_divides_the_counts_and_draws_poisson():
    counts = np.array([[[[0.0], [50.0], [120.0]]]], "float32")
    # 0 / 100, 50 / 100, 120 / 100 clipped to 1
    np.testing.assert_allclose(_np(cc.shot_noise(counts, 100)), [[[[0], [0.5], [1]]]])
    # the draws: Poisson(x * c), mean x * c and variance x * c
    x = np.full((1, 100, 100, 1), 0.4, "float32")
    drawn = cc.draw_noise("shot_noise", x, 50.0, np.random.default_rng(1))
    assert np.all(drawn == np.round(drawn))
    assert drawn.mean() == pytest.approx(20.0, rel=0.02)
    assert drawn.var() == pytest.approx(20.0, rel=0.05)


def test_impulse_noise_by_hand():
    # amount 0.02: pepper (0) below 0.01, salt (1) from 0.99, else unchanged
    x = np.full((1, 1, 6, 1), 0.5, "float32")
    u = np.array([0.0, 0.0099, 0.01, 0.5, 0.9899, 0.99], "float32").reshape(x.shape)
    out = _np(cc.impulse_noise(x, u, 0.02)).ravel()
    np.testing.assert_array_equal(out, [0, 0, 0.5, 0.5, 0.5, 1])


def test_impulse_noise_hits_the_amount_half_salt_half_pepper():
    x = np.full((1, 200, 200, 1), 0.5, "float32")
    u = cc.draw_noise("impulse_noise", x, 0.07, np.random.default_rng(2))
    out = _np(cc.impulse_noise(x, u, 0.07))
    assert np.mean(out == 0) == pytest.approx(0.035, abs=0.003)
    assert np.mean(out == 1) == pytest.approx(0.035, abs=0.003)


def _discrete_gaussian_reference(sigma, radius):
    # exp(-t) I_n(t) from SciPy, t = sigma^2, n = -radius .. radius
    n = np.arange(-radius, radius + 1)
    return special.ive(np.abs(n), sigma**2)


@pytest.mark.parametrize("sigma", [0.1, 0.4, 1.0, 2.5])
def test_the_discrete_gaussian_kernel(sigma):
    kernel = cc._discrete_gaussian(sigma)
    radius = len(kernel) // 2
    reference = _discrete_gaussian_reference(sigma, radius)
    np.testing.assert_allclose(kernel, reference / reference.sum(), rtol=1e-9)
    # its variance is sigma^2 (cut at 5 sigma + 2, the tail beyond holds
    # less than 2e-5 of it)
    offsets = np.arange(-radius, radius + 1)
    assert np.sum(kernel * offsets**2) == pytest.approx(sigma**2, rel=2e-5)


def test_the_discrete_gaussian_by_hand_at_sigma_0_1():
    # t = 0.01, e^-t = 0.99004983: T(1) = e^-t I_1(t) = 0.99004983 * (0.005
    # + 0.01^3 / 16) = 0.00495031, T(0) = 0.99004983 * (1 + 0.01^2 / 4) =
    # 0.99007458; T(2) = e^-t (t / 2)^2 / 2 = 1.24e-5
    kernel = cc._discrete_gaussian(0.1)
    centre = len(kernel) // 2
    assert kernel[centre] == pytest.approx(0.99007458, abs=1e-8)
    assert kernel[centre + 1] == pytest.approx(0.00495031, abs=1e-8)
    assert kernel[centre + 2] == pytest.approx(1.2376e-5, rel=1e-3)


def test_gaussian_blur_against_scipy():
    sigma = (0.25, 0.7)
    reference = X8.astype(np.float64)
    for axis, s in ((1, sigma[0]), (2, sigma[1])):
        kernel = cc._discrete_gaussian(s)
        reference = ndimage.convolve1d(reference, kernel, axis=axis, mode="nearest")
    np.testing.assert_allclose(_np(cc.gaussian_blur(X8, sigma)), reference, atol=1e-6)


def test_gaussian_blur_keeps_a_constant_image_and_spreads_a_dot_by_sigma():
    flat = np.full((1, 8, 8, 1), 0.3, "float32")
    np.testing.assert_allclose(_np(cc.gaussian_blur(flat, (1.0, 1.0))), flat, atol=1e-6)
    # a dot in the middle of 31 pixels spreads with variance sigma^2 per axis
    dot = np.zeros((1, 31, 31, 1), "float32")
    dot[0, 15, 15, 0] = 1.0
    out = _np(cc.gaussian_blur(dot, (0.5, 1.5)))[0, :, :, 0]
    offsets = np.arange(31) - 15
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.sum(out.sum(1) * offsets**2) == pytest.approx(0.25, abs=1e-5)
    assert np.sum(out.sum(0) * offsets**2) == pytest.approx(2.25, abs=1e-5)


def test_zoom_blur_against_scipy():
    zooms = (1.0, 1.1, 1.25)
    reference = X8[..., 0].astype(np.float64)
    total = reference.copy()
    centre = (8 - 1) / 2
    for zoom in zooms:
        # output pixel i reads the input at centre + (i - centre) / zoom
        for n in range(len(reference)):
            total[n] += ndimage.affine_transform(
                reference[n],
                np.eye(2) / zoom,
                offset=centre - centre / zoom,
                order=1,
                mode="nearest",
            )
    np.testing.assert_allclose(
        _np(cc.zoom_blur(X8, zooms))[..., 0], total / (len(zooms) + 1), atol=1e-6
    )


def test_zoom_blur_by_hand():
    # a zoom of 1 is the identity; a constant image stays constant
    np.testing.assert_allclose(_np(cc.zoom_blur(X8, (1.0,))), X8, atol=1e-6)
    flat = np.full((1, 8, 8, 1), 0.6, "float32")
    np.testing.assert_allclose(_np(cc.zoom_blur(flat, (1.0, 1.2))), flat, atol=1e-6)
    # one row of 3 pixels (0, 0.5, 1), zoom 2 about the centre 1: pixel 0
    # reads 1 - 1/2 = 0.5 -> 0.25, pixel 2 reads 1.5 -> 0.75; the mean with
    # the image: (0 + 0.25) / 2, (0.5 + 0.5) / 2, (1 + 0.75) / 2
    row = np.array([0.0, 0.5, 1.0], "float32").reshape(1, 1, 3, 1)
    np.testing.assert_allclose(
        _np(cc.zoom_blur(row, (2.0,))).ravel(), [0.125, 0.5, 0.875], atol=1e-6
    )


def test_contrast_against_the_reference_formula_on_grey_images():
    # (x - mean) * c + mean, the mean per image
    mean = X8.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        _np(cc.contrast(X8, 0.4)), (X8 - mean) * 0.4 + mean, atol=1e-6
    )


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_contrast_of_a_constant_image_is_itself(severity):
    flat = np.full((2, 8, 8, 3), 0.35, "float32")
    np.testing.assert_allclose(cc.corrupt(flat, "contrast", severity), flat, atol=1e-6)


def test_brightness_against_colorsys():
    x = X32[:1, :6, :6]
    out = _np(cc.brightness(x, 0.2))
    for index in np.ndindex(x.shape[:3]):
        h, s, v = colorsys.rgb_to_hsv(*x[index].astype(np.float64))
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0))
        np.testing.assert_allclose(out[index], expected, atol=1e-6)


def test_brightness_by_hand():
    # grey values: + 0.15, clipped at 1; black becomes the grey 0.15
    grey = np.array([0.0, 0.5, 0.9], "float32").reshape(1, 1, 3, 1)
    np.testing.assert_allclose(_np(cc.brightness(grey, 0.15)).ravel(), [0.15, 0.65, 1])
    # colour (0.2, 0.4, 0.0): V 0.4 -> 0.5, every channel times 0.5 / 0.4
    colour = np.array([0.2, 0.4, 0.0], "float32").reshape(1, 1, 1, 3)
    np.testing.assert_allclose(
        _np(cc.brightness(colour, 0.1)).ravel(), [0.25, 0.5, 0.0], atol=1e-6
    )


def _pil_pixelate(image, size):
    """The reference: PIL BOX down to `size`, BOX back up (per channel)."""
    height, width = image.shape[:2]
    out = np.empty_like(image)
    for c in range(image.shape[-1]):
        small = Image.fromarray(image[..., c], mode="F").resize(
            (size[1], size[0]), Image.BOX
        )
        out[..., c] = np.asarray(small.resize((width, height), Image.BOX))
    return out


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_pixelate_against_pil_at_every_severity(severity):
    for x in (X8, X32):
        size = cc.corruption_parameter("pixelate", severity, x.shape)
        out = _np(cc.pixelate(x, size))
        reference = np.stack([_pil_pixelate(image, size) for image in x])
        np.testing.assert_allclose(out, reference, atol=1e-5)


def test_pixelate_by_hand():
    # a 2x2-block-constant 8x8 image pixelated to 4x4 is itself
    blocks = RNG.random((2, 4, 4, 1)).astype("float32")
    image = blocks.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(_np(cc.pixelate(image, (4, 4))), image, atol=1e-6)
    # one row of 4 to 3 coarse pixels: centres (j + 1/2) * 3/4 = 0.375,
    # 1.125, 1.875, 2.625 fall in 0, 1, 1, 2: pixels 1 and 2 share a mean
    row = np.array([0.1, 0.2, 0.6, 0.9], "float32").reshape(1, 1, 4, 1)
    np.testing.assert_allclose(
        _np(cc.pixelate(row, (1, 3))).ravel(), [0.1, 0.4, 0.4, 0.9], atol=1e-6
    )


def test_jpeg_keeps_a_flat_mid_grey_block_and_rounds_to_8_bits():
    # a flat block at level 128 has no AC terms and a DC of 8 * (128 - 128) = 0
    flat = np.full((2, 8, 8, 1), 128 / 255, "float32")
    np.testing.assert_allclose(cc.jpeg_compression(flat, 40), flat, atol=1e-7)
    out = cc.jpeg_compression(X8, 80)
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)
    # quality 80 stays closer to the image than quality 40
    smooth = _np(cc.gaussian_blur(X32, (1.0, 1.0)))
    near = np.abs(cc.jpeg_compression(smooth, 80) - smooth).mean()
    far = np.abs(cc.jpeg_compression(smooth, 40) - smooth).mean()
    assert near < far


def test_jpeg_refuses_other_channel_counts():
    with pytest.raises(
        ValueError, match=r"1 or 3 channels.*images.shape=\(1, 8, 8, 2\)"
    ):
        cc.jpeg_compression(np.zeros((1, 8, 8, 2), "float32"), 80)


# -- corrupt: the severities, the range, the draws -------------------------------------


def _distances(x, name, value_range=(0, 1)):
    return [
        float(np.abs(cc.corrupt(x, name, s, value_range, seed=3) - x).mean())
        for s in range(1, 6)
    ]


@pytest.mark.parametrize("name", cc.CORRUPTIONS)
def test_severities_strictly_increase_the_distance_at_32_pixels(name):
    distances = _distances(X32, name)
    assert distances[0] > 0
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


@pytest.mark.parametrize("name", cc.CORRUPTIONS)
def test_severities_increase_the_distance_on_digits(name, digits8):
    distances = _distances(digits8, name)
    assert distances[0] > 0
    pairs = list(zip(distances, distances[1:], strict=False))
    if name == "pixelate":
        # int(8 * f) = 7, 7, 6, 6, 5: severities 1 = 2 and 3 = 4 exactly; 7
        # merges rows 3-4 only, 6 rows 1-2 and 5-6, 5 rows 0-1, 3-4 and 6-7,
        # where the digits' empty borders make it the smaller change
        assert distances[0] == distances[1] and distances[2] == distances[3]
        assert distances[1] < distances[4] < distances[2]
    else:
        assert all(a < b for a, b in pairs), distances


@pytest.mark.parametrize("name", cc.CORRUPTIONS)
def test_outputs_stay_in_the_value_range_and_follow_it(name):
    low, high = -1.0, 3.0
    x = low + (high - low) * X8
    for severity in (1, 5):
        out = cc.corrupt(x, name, severity, value_range=(low, high), seed=4)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert out.min() >= low and out.max() <= high
        # the same corruption of the images mapped to [0, 1], mapped back
        unit = cc.corrupt(X8, name, severity, seed=4)
        np.testing.assert_allclose(out, low + (high - low) * unit, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "pure"),
    [
        ("gaussian_noise", lambda x, d: cc.gaussian_noise(x, d, 0.09)),
        ("speckle_noise", lambda x, d: cc.speckle_noise(x, d, 0.16)),
        ("impulse_noise", lambda x, d: cc.impulse_noise(x, d, 0.05)),
        ("shot_noise", lambda x, d: cc.shot_noise(d, 75.0)),
    ],
)
def test_corrupt_is_the_pure_function_of_the_seeds_draws(name, pure):
    # severity 4; the draws come from the seed's generator, in draw_noise
    parameter = cc.corruption_parameter(name, 4, X8.shape)
    draws = cc.draw_noise(name, X8, parameter, _common.rng(11))
    np.testing.assert_allclose(
        cc.corrupt(X8, name, 4, seed=11), _np(pure(X8, draws)), atol=1e-6
    )


def test_seeds():
    name = "gaussian_noise"
    first = cc.corrupt(X8, name, 2, seed=5)
    np.testing.assert_array_equal(first, cc.corrupt(X8, name, 2, seed=5))
    assert not np.array_equal(first, cc.corrupt(X8, name, 2, seed=6))
    # an int seed draws the same noise at every severity: severity 5 (0.10)
    # is severity 1 (0.04) scaled by 2.5 where nothing is clipped
    one, five = cc.corrupt(X8, name, 1, seed=5), cc.corrupt(X8, name, 5, seed=5)
    inside = (five > 0) & (five < 1) & (one > 0) & (one < 1)
    np.testing.assert_allclose((five - X8)[inside], 2.5 * (one - X8)[inside], atol=1e-5)
    # a SeedGenerator draws anew on every call, reproducibly from its seed
    generator = keras.random.SeedGenerator(7)
    a, b = (
        cc.corrupt(X8, name, 2, seed=generator),
        cc.corrupt(X8, name, 2, seed=generator),
    )
    assert not np.array_equal(a, b)
    again = keras.random.SeedGenerator(7)
    np.testing.assert_array_equal(a, cc.corrupt(X8, name, 2, seed=again))
    # None follows keras.utils.set_random_seed
    keras.utils.set_random_seed(8)
    c = cc.corrupt(X8, name, 2)
    keras.utils.set_random_seed(8)
    np.testing.assert_array_equal(c, cc.corrupt(X8, name, 2))


def test_corrupt_keeps_a_float64_dtype_and_takes_integer_images():
    x = np.round(X8.astype(np.float64) * 255)
    out = cc.corrupt(x, "brightness", 2, value_range=(0, 255))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.clip(x + 0.1 * 255, 0, 255), atol=1e-3)
    ints = cc.corrupt(x.astype("uint8"), "brightness", 2, value_range=(0, 255))
    assert ints.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "fog"},
            r"`name` must be one of gaussian_noise.*Received: name='fog'",
        ),
        (
            {"severity": 0},
            r"`severity` must be an integer in 1..5. Received: severity=0",
        ),
        ({"severity": 6}, r"Received: severity=6"),
        ({"severity": True}, r"Received: severity=True"),
        ({"severity": 2.0}, r"Received: severity=2.0"),
        ({"value_range": None}, r"Received: value_range=None"),
        ({"value_range": (1, 0)}, r"Received: value_range=\(1, 0\)"),
        ({"seed": -1}, r"Received: seed=-1"),
        ({"images": X8[0]}, r"\(N, H, W, C\).*Received: images.shape=\(8, 8, 1\)"),
        ({"images": X8 * 2}, r"within `value_range` \(0, 1\). Received: images from"),
        ({"images": X8 * np.nan}, r"finite. Received: images with NaN"),
    ],
)
def test_corrupt_checks_its_arguments(kwargs, message):
    arguments = {"images": X8, "name": "gaussian_noise", "severity": 1}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        cc.corrupt(**arguments)


# -- the summaries ---------------------------------------------------------------


def test_mean_corruption_accuracy_by_hand():
    # mapping: (0.9 + 0.7) / 2 = 0.8 and (0.6 + 0.4 + 0.2) / 3 = 0.4 -> 0.6
    # (each corruption weighs the same, whatever its number of severities)
    ragged = {"a": [0.9, 0.7], "b": [0.6, 0.4, 0.2]}
    assert cc.mean_corruption_accuracy(ragged) == pytest.approx(0.6)
    # array: rows (1, 0.5) and (0.25, 0.25): means 0.75, 0.25 -> 0.5
    assert cc.mean_corruption_accuracy([[1.0, 0.5], [0.25, 0.25]]) == pytest.approx(0.5)
    assert cc.mean_accuracy_drop(ragged, 0.95) == pytest.approx(0.35)


@pytest.mark.parametrize("bad", [{}, [], [0.5, 0.6], {"a": []}, {"a": [0.5, np.nan]}])
def test_mean_corruption_accuracy_checks(bad):
    with pytest.raises(
        ValueError, match=r"`accuracies` must map.*Received: accuracies="
    ):
        cc.mean_corruption_accuracy(bad)
    with pytest.raises(ValueError, match=r"Received: clean_accuracy='1'"):
        cc.mean_accuracy_drop({"a": [0.5]}, "1")
