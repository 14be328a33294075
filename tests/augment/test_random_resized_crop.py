"""RandomResizedCrop: resampling golden values, per-image boxes, shapes, config."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.augment.random_resized_crop import crop_and_resize, resample_matrix
from tests.toolkit import assert_config_round_trip


def test_resample_matrix_magnify_and_shrink():
    # Magnify [0, 2) of 4 pixels onto 4: centres 0.25, 0.75, 1.25, 1.75 against
    # pixel centres 0.5 .. 3.5, tent of width 1, rows normalized:
    # [1, 0, 0, 0], [.75, .25, 0, 0], [.25, .75, 0, 0], [0, .75, .25, 0].
    rows = np.asarray(resample_matrix(np.array([0.0]), np.array([2.0]), 4, 4))[0]
    expected = [
        [1, 0, 0, 0],
        [0.75, 0.25, 0, 0],
        [0.25, 0.75, 0, 0],
        [0, 0.75, 0.25, 0],
    ]
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    # Shrink 4 onto 2: centres 1 and 3, tent of width 2:
    # [.75, .75, .25, 0] / 1.75 and [0, .25, .75, .75] / 1.75 (antialiased).
    rows = np.asarray(resample_matrix(np.array([0.0]), np.array([4.0]), 4, 2))[0]
    expected = np.array([[0.75, 0.75, 0.25, 0], [0, 0.25, 0.75, 0.75]]) / 1.75
    np.testing.assert_allclose(rows, expected, atol=1e-6)


def test_crop_and_resize_full_box_is_identity_and_ramp_values():
    x = np.random.default_rng(0).uniform(size=(2, 5, 6, 3)).astype("float32")
    full = np.array([[0, 0, 5, 6]] * 2, "float32")
    np.testing.assert_allclose(np.asarray(crop_and_resize(x, full, 5, 6)), x, atol=1e-6)
    # Ramp [0, 10, 20, 30] along x, box x in [0, 2) onto 4 columns:
    # 0, 0.75*0 + 0.25*10 = 2.5, 7.5, 0.75*10 + 0.25*20 = 12.5.
    ramp = np.tile(np.array([0, 10, 20, 30], "float32"), (1, 4, 1)).reshape(1, 4, 4, 1)
    out = np.asarray(crop_and_resize(ramp, np.array([[0, 0, 4, 2]], "float32"), 4, 4))
    np.testing.assert_allclose(out[0, 0, :, 0], [0, 2.5, 7.5, 12.5], atol=1e-5)


def test_each_image_gets_its_own_crop():
    x = np.repeat(np.random.default_rng(1).uniform(0, 255, (1, 16, 16, 3)), 8, 0)
    out = np.asarray(kh.augment.RandomResizedCrop(12, 10, seed=0)(x.astype("float32")))
    assert out.shape == (8, 12, 10, 3)
    distinct = {tuple(np.round(o.ravel()[:20], 3)) for o in out}
    assert len(distinct) == 8
    assert out.min() >= 0 and out.max() <= 255


def test_scale_one_and_fixed_ratio_is_the_whole_image():
    x = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 1)).astype("float32")
    layer = kh.augment.RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1)
    np.testing.assert_allclose(np.asarray(layer(x)), x, atol=1e-3)


def test_inference_resizes_whole_image_and_keeps_dtype():
    x = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    layer = kh.augment.RandomResizedCrop(8, 8, seed=0)
    out = layer(x, training=False)
    assert out.shape == (2, 8, 8, 3) and out.dtype == "uint8"
    same = kh.augment.RandomResizedCrop(seed=0)(x, training=False)
    np.testing.assert_array_equal(np.asarray(same), x)
    assert layer(x).dtype == "uint8"


@pytest.mark.tf_only
def test_tf_data_and_model_shapes_static():
    import tensorflow as tf

    layer = kh.augment.RandomResizedCrop(6, 7, seed=0)
    ds = tf.data.Dataset.from_tensors(np.zeros((4, 10, 10, 3), "float32")).map(layer)
    assert ds.element_spec.shape.as_list() == [4, 6, 7, 3]
    model = keras.Sequential([keras.Input((10, 10, 3)), layer])
    assert model.output_shape == (None, 6, 7, 3)


def test_config_round_trip_and_errors():
    assert_config_round_trip(
        kh.augment.RandomResizedCrop(8, 9, (0.2, 0.9), (0.5, 2.0), seed=3)
    )
    with pytest.raises(ValueError, match=r"Received: height=0$"):
        kh.augment.RandomResizedCrop(0, 4)
    with pytest.raises(ValueError, match=r"Received: scale=\(0.5, 0.2\)$"):
        kh.augment.RandomResizedCrop(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match=r"Received: ratio=\(0, 1\)$"):
        kh.augment.RandomResizedCrop(ratio=(0, 1))


def test_fixed_boxes_crop_exactly_and_magnify_by_hand():
    x = np.arange(128, dtype="float32").reshape(2, 8, 8, 1) / 128
    layer = kh.augment.RandomResizedCrop(4, 4, value_range=(0, 1))
    # Image 0: the 4x4 box at row 2, column 4, kept at its size: a plain crop.
    # Image 1: the 2x2 box at the origin magnified onto 4x4: output centres
    # 0.25, 0.75, 1.25, 1.75 against pixel centres 0.5, 1.5, 2.5 give the rows
    # W = [[1, 0, 0], [.75, .25, 0], [.25, .75, 0], [0, .75, .25]] (tent
    # filter, rows normalized, see test_resample_matrix_magnify_and_shrink),
    # so out = W x[:3, :3] W^T.
    boxes = np.array([[2, 4, 4, 4], [0, 0, 2, 2]], "float32")
    out = np.asarray(layer.transform_images(x, {"boxes": boxes}))
    np.testing.assert_array_equal(out[0], x[0, 2:6, 4:8])
    w = np.array([[1, 0, 0], [0.75, 0.25, 0], [0.25, 0.75, 0], [0, 0.75, 0.25]])
    expected = w @ x[1, :3, :3, 0] @ w.T
    np.testing.assert_allclose(out[1, :, :, 0], expected, atol=1e-4)


def test_draws_are_boxes_inside_the_image_with_the_asked_area_and_ratio():
    layer = kh.augment.RandomResizedCrop(scale=(0.2, 0.5), ratio=(0.5, 2.0), seed=0)
    boxes = np.asarray(
        layer.get_random_transformation(np.zeros((256, 20, 30, 3)))["boxes"]
    )
    top, left, height, width = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 20 + 1e-4).all() and (left + width <= 30 + 1e-4).all()
    area = height * width / 600
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.5 + 1e-5
    ratio = width / height
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 2.0 + 1e-5


def test_the_whole_image_as_the_box_gives_the_input_back_exactly():
    x = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3)).astype("uint8")
    layer = kh.augment.RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    xf = x.astype("float32") / 255.0
    unit = kh.augment.RandomResizedCrop(value_range=(0, 1), scale=(1, 1), ratio=(1, 1))
    np.testing.assert_array_equal(np.asarray(unit(xf)), xf)
