"""The per-image transforms and the per-image dispatch, on hand-worked values."""

import numpy as np
import pytest
from keras import ops

from keras_harden.augment import ops as A


def const(value, shape=(1, 4, 4, 3)):
    return np.full(shape, value, "float32")


def run(fn, images, v):
    return np.asarray(fn(ops.convert_to_tensor(images), ops.convert_to_tensor(v)))


def test_brightness_blends_with_black():
    # factor = 1 + 0.9 v: v=0.5 -> 1.45, 0.5 * 1.45 = 0.725;
    # v=1 on 0.8 -> 1.52, clipped to 1.
    np.testing.assert_allclose(run(A.brightness, const(0.5), [0.5]), 0.725, atol=1e-6)
    np.testing.assert_allclose(run(A.brightness, const(0.8), [1.0]), 1.0)
    np.testing.assert_allclose(run(A.brightness, const(0.5), [-1.0]), 0.05, atol=1e-6)


def test_color_blends_with_grey():
    # Pure red, grey = 0.299; v=-1 -> factor 0.1:
    # R = 0.299 + 0.1 * 0.701 = 0.3691, G = B = 0.299 + 0.1 * (0 - 0.299) = 0.2691.
    red = np.zeros((1, 2, 2, 3), "float32")
    red[..., 0] = 1.0
    out = run(A.color, red, [-1.0])
    np.testing.assert_allclose(out[0, 0, 0], [0.3691, 0.2691, 0.2691], atol=1e-5)
    grey = const(0.3)
    np.testing.assert_allclose(run(A.color, grey, [1.0]), grey, atol=1e-6)


def test_contrast_blends_with_the_mean():
    # Half 0.2, half 0.6: mean 0.4; factor 0.1 -> 0.4 + 0.1 * (+-0.2) = 0.38 / 0.42.
    x = const(0.2, (1, 2, 2, 3))
    x[:, 1] = 0.6
    out = run(A.contrast, x, [-1.0])
    np.testing.assert_allclose(out[0, 0, 0], 0.38, atol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0], 0.42, atol=1e-6)


def test_solarize_threshold():
    # v=0.5: threshold 0.5 * 256/255 = 0.50196; 0.6 -> 0.4, 0.2 stays.
    # v=0 inverts nothing.
    x = np.array([0.2, 0.6, 1.0], "float32").reshape(1, 1, 3, 1)
    np.testing.assert_allclose(
        run(A.solarize, x, [0.5]).ravel(), [0.2, 0.4, 0.0], atol=1e-6
    )
    np.testing.assert_allclose(run(A.solarize, x, [0.0]).ravel(), [0.2, 0.6, 1.0])


def test_posterize_bits():
    # |v|=1: 4 bits dropped, step 16: 200 -> 192. |v|=0.5: 2 bits, step 4: 201 -> 200.
    x = np.array([200, 201], "float32").reshape(1, 1, 2, 1) / 255
    np.testing.assert_allclose(
        run(A.posterize, x, [1.0]).ravel() * 255, [192, 192], atol=1e-4
    )
    np.testing.assert_allclose(
        run(A.posterize, x, [-0.5]).ravel() * 255, [200, 200], atol=1e-4
    )
    np.testing.assert_allclose(
        run(A.posterize, x, [0.0]).ravel() * 255, [200, 201], atol=1e-4
    )


def test_auto_contrast_stretches_each_channel():
    # Channel 0 spans [0.2, 0.6] -> (v - 0.2) / 0.4; channel 1 constant: unchanged.
    x = np.zeros((1, 1, 3, 2), "float32")
    x[0, 0, :, 0] = [0.2, 0.4, 0.6]
    x[0, 0, :, 1] = 0.7
    out = run(A.auto_contrast, x, [0.0])
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, 1], 0.7)


def test_equalize_hand_worked():
    # 32x32 = 1024 pixels: 512 at level 10, 256 at 20, 256 at 30.
    # PIL: step = (1024 - 256) // 255 = 3; lut[l] = (pixels below l + 1) // 3:
    # 10 -> 1 // 3 = 0, 20 -> 513 // 3 = 171, 30 -> min(769 // 3, 255) = 255.
    levels = np.array([10] * 512 + [20] * 256 + [30] * 256, "float32").reshape(
        1, 32, 32, 1
    )
    out = np.round(run(A.equalize, levels / 255, [0.0]) * 255)
    assert dict(zip(*np.unique(out, return_counts=True), strict=False)) == {
        0: 512,
        171: 256,
        255: 256,
    }


def test_equalize_matches_pil():
    pil_ops = pytest.importorskip("PIL.ImageOps")
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    images = rng.normal(100, 30, (3, 24, 24, 3)).clip(0, 255).round().astype("uint8")
    out = np.round(run(A.equalize, images.astype("float32") / 255, [0.0] * 3) * 255)
    for image, ours in zip(images, out, strict=False):
        expected = np.asarray(pil_ops.equalize(image_mod.fromarray(image)))
        np.testing.assert_array_equal(ours, expected)


def test_sharpness_hand_worked():
    # One bright pixel at the centre of 5x5 zeros; SMOOTH kernel centre weight 5/13.
    # v=-1 -> factor 0.1: centre 5/13 + 0.1 * (1 - 5/13) = 0.44615; interior
    # neighbour 1/13 * 0.9 = 0.06923; border pixels untouched (0).
    x = np.zeros((1, 5, 5, 1), "float32")
    x[0, 2, 2, 0] = 1.0
    out = run(A.sharpness, x, [-1.0])[0, :, :, 0]
    assert out[2, 2] == pytest.approx(0.44615, abs=1e-4)
    assert out[1, 1] == pytest.approx(0.06923, abs=1e-4)
    assert out[0, 0] == 0.0 and out[0, 2] == 0.0


def test_translate_x_moves_by_whole_pixels():
    # width 20, v = 2/9: shift 0.45 * 2/9 * 20 = 2 pixels right; fill is black 0.
    x = np.tile(np.arange(20, dtype="float32") / 20, (1, 3, 1)).reshape(1, 3, 20, 1)
    out = run(A.translate_x, x, [2.0 / 9.0])
    np.testing.assert_allclose(out[0, :, 2:, 0], x[0, :, :-2, 0], atol=1e-4)
    np.testing.assert_allclose(out[0, :, :2, 0], 0.0)


def test_shear_keeps_the_centre_line_and_rotation_the_centre():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 9, 9, 1)).astype("float32")
    sheared = run(A.shear_x, x, [1.0, -1.0])
    np.testing.assert_allclose(sheared[:, 4], x[:, 4], atol=1e-5)
    assert not np.allclose(sheared[:, 0], x[:, 0])
    sheared_y = run(A.shear_y, x, [1.0, -1.0])
    np.testing.assert_allclose(sheared_y[:, :, 4], x[:, :, 4], atol=1e-5)
    rotated = run(A.rotate, x, [1.0, -0.5])
    np.testing.assert_allclose(rotated[:, 4, 4], x[:, 4, 4], atol=1e-5)
    assert not np.allclose(rotated, x)


def test_geometric_group_equals_the_single_transforms():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(5, 12, 12, 3)).astype("float32")
    names = ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"]
    v = np.array([0.7, -0.4, 0.3, -0.9, 0.5], "float32")
    kind = np.arange(5, dtype="int32")
    fused = np.asarray(A.geometric(names)(x, v, kind))
    for i, name in enumerate(names):
        single = run(A.TRANSFORMS[name], x[i : i + 1], v[i : i + 1])
        np.testing.assert_allclose(fused[i : i + 1], single, atol=1e-5)


@pytest.mark.parametrize("name", sorted(A.TRANSFORMS))
def test_every_transform_keeps_range_shape_and_accepts_empty_batches(name):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(4, 10, 12, 3)).astype("float32")
    out = run(A.TRANSFORMS[name], x, [1.0, -1.0, 0.5, 0.0])
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    empty = run(A.TRANSFORMS[name], x[:0], np.zeros((0,), "float32"))
    assert empty.shape == (0, 10, 12, 3)


@pytest.mark.tf_only  # the grouped path; other backends map with a switch
def test_apply_per_image_runs_each_function_only_on_its_images():
    seen = {}

    def spy(k):
        def fn(images, v):
            seen[k] = np.asarray(v).tolist()
            return images + float(k)

        return fn

    choice = np.array([2, 0, 2, 1, 0, 2], "int32")
    x = np.zeros((6, 2, 2, 1), "float32")
    v = np.arange(6, dtype="float32")
    out = np.asarray(A.apply_per_image([spy(0), spy(1), spy(2), spy(3)], choice, x, v))
    # Image i gets + choice[i]; function k saw exactly the strengths of its images.
    np.testing.assert_array_equal(out[:, 0, 0, 0], choice)
    assert seen == {0: [1.0, 4.0], 1: [3.0], 2: [0.0, 2.0, 5.0], 3: []}


def test_apply_layers_selects_per_image():
    choice = np.array([1, 0, 1], "int32")
    x = np.ones((3, 2, 2, 1), "float32")
    out = np.asarray(A.apply_layers([lambda t: t * 2.0, lambda t: t * 3.0], choice, x))
    np.testing.assert_array_equal(out[:, 0, 0, 0], [3.0, 2.0, 3.0])
