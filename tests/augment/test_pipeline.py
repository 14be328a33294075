"""Presets and the composing layer: in a model, in tf.data, saved and loaded."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_config_round_trip


def images(n=6, size=16, dtype="uint8"):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3)).astype(dtype)


def test_presets_are_built_from_the_documented_layers():
    kinds = {
        p: [type(x).__name__ for x in kh.augment.pipeline(p).layers]
        for p in kh.augment.PRESETS
    }
    assert kinds["light"] == ["RandomFlip", "RandomResizedCrop"]
    assert kinds["standard"] == kinds["light"] + ["RandAugment"]
    assert kinds["strong"] == kinds["standard"] + ["RandomErasing"]
    no_flip = kh.augment.pipeline("light", flip=None).layers
    assert [type(x).__name__ for x in no_flip] == ["RandomResizedCrop"]


@pytest.mark.parametrize("preset", ["light", "standard", "strong"])
def test_preset_keeps_dtype_range_and_is_reproducible(preset):
    x = images()
    out = kh.augment.pipeline(preset, image_size=(12, 10), seed=3)(x)
    assert out.dtype == "uint8" and out.shape == (6, 12, 10, 3)
    again = kh.augment.pipeline(preset, image_size=(12, 10), seed=3)(x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
    xf = images(dtype="float32") / 255.0
    out = np.asarray(kh.augment.pipeline(preset, value_range=(0, 1), seed=1)(xf))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_in_a_model_on_in_fit_off_in_predict_and_saved(tmp_path):
    x = images(16, 12).astype("float32")
    y = np.arange(16) % 2
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            kh.augment.pipeline("strong", image_size=8, seed=0),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    aug = model.layers[0]
    assert model.output_shape == (None, 2)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    # Inference: the whole image resized to 8x8, the same on every call.
    inference = np.asarray(aug(x, training=False))
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), inference)
    assert not np.allclose(np.asarray(aug(x, training=True)), inference)
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))
    path = tmp_path / "with_augment.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), first, atol=1e-6)
    assert [type(x) for x in loaded.layers[0].layers] == [type(x) for x in aug.layers]
    # TensorFlow's antialiased resize as the independent reference
    tf = pytest.importorskip("tensorflow")
    resized = np.asarray(tf.image.resize(x, (8, 8), antialias=True))
    np.testing.assert_allclose(inference, resized, atol=1e-3)


@pytest.mark.tf_only
def test_tf_data_map_on_batches_static_shape():
    import tensorflow as tf

    aug = kh.augment.pipeline("standard", image_size=8)
    ds = tf.data.Dataset.from_tensors(images(4)).repeat(2).map(aug)
    assert ds.element_spec.shape.as_list() == [4, 8, 8, 3]
    assert ds.element_spec.dtype == tf.uint8
    first, second = (np.asarray(b) for b in ds)
    assert not np.array_equal(first, second)


def test_compose_any_layers_config_and_errors():
    aug = kh.augment.Pipeline(
        [
            keras.layers.RandomRotation(0.1, seed=1),
            kh.augment.RandomApply(kh.augment.TrivialAugment(seed=2), 0.5, seed=3),
            kh.augment.RandomResizedCrop(8, 8, seed=4),
        ],
        value_range=(0, 255),
    )
    out = aug(images())
    assert out.shape == (6, 8, 8, 3) and out.dtype == "uint8"
    clone = assert_config_round_trip(aug)
    assert [type(x) for x in clone.layers] == [type(x) for x in aug.layers]
    with pytest.raises(ValueError, match=r"Received: preset='heavy'$"):
        kh.augment.pipeline("heavy")
    with pytest.raises(ValueError, match=r"Received: image_size=\(0, 4\)$"):
        kh.augment.pipeline("light", image_size=(0, 4))
    with pytest.raises(ValueError, match=r"Received: flip='sideways'$"):
        kh.augment.pipeline("light", flip="sideways")
    with pytest.raises(ValueError, match=r"Received: layers='flip'$"):
        kh.augment.Pipeline("flip")


def test_keras_cv_layers_compose_when_installed():
    keras_cv = pytest.importorskip("keras_cv")
    aug = kh.augment.Pipeline(
        [
            keras_cv.layers.RandomSharpness(0.5, value_range=(0, 255)),
            kh.augment.RandAugment(),
        ]
    )
    assert aug(images()).shape == (6, 16, 16, 3)


@pytest.mark.tf_only
def test_the_readme_tf_data_recipe_on_image_label_pairs(digits):
    # Dataset.map calls aug(images, labels): the labels pass through untouched
    import tensorflow as tf

    (x, y), _ = digits
    ds = tf.data.Dataset.from_tensor_slices((x[:64], y[:64]))
    aug = kh.augment.pipeline("strong", image_size=12, flip=None, seed=0)
    mix = kh.augment.MixUpCutMix(num_classes=10, label_smoothing=0.1, seed=0)
    train = ds.batch(32).map(aug).map(mix).prefetch(2)
    assert train.element_spec[0].shape.as_list() == [None, 12, 12, 1]
    assert train.element_spec[1].shape.as_list() == [None, 10]
    for images_, labels in train:
        assert images_.dtype == tf.float32 and images_.shape == (32, 12, 12, 1)
        np.testing.assert_allclose(np.asarray(labels).sum(1), 1.0, atol=1e-5)
    layer = kh.augment.RandAugment(seed=0)  # a single layer maps pairs as well
    for (a, labels), b in zip(ds.batch(32).map(layer), ds.batch(32), strict=True):
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(b[1]))
        assert a.shape == b[0].shape


def test_labels_pass_through_eagerly_and_symbolically():
    x, y = images(4), np.array([3, 1, 4, 1], "int64")
    aug = kh.augment.pipeline("light", image_size=8, seed=0)
    out, labels = aug(x, y)
    assert out.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(labels), y)
    out, labels = kh.augment.RandomResizedCrop(8, 8)(x, y, training=False)
    assert out.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(labels), y)
    spec = aug(keras.Input((16, 16, 3)), keras.Input((), dtype="int64"))
    assert [tuple(t.shape) for t in spec] == [(None, 8, 8, 3), (None,)]


@pytest.mark.tf_only
def test_composing_adds_no_op_to_the_graph():
    # In tf.data (and in a compiled model) the preset traces to exactly the
    # operations of its two layers called by hand: composition costs nothing
    # at run time.
    import collections

    import tensorflow as tf

    preset = kh.augment.pipeline("light", seed=1)
    flip = keras.layers.RandomFlip("horizontal", seed=1)
    crop = kh.augment.RandomResizedCrop(scale=(0.25, 1.0), seed=2)
    spec = tf.TensorSpec((None, 16, 16, 3), tf.float32)

    def operations(fn):
        graph = tf.function(fn).get_concrete_function(spec).graph
        return collections.Counter(op.type for op in graph.get_operations())

    assert operations(preset) == operations(lambda x: crop(flip(x)))


def test_zero_magnitude_and_whole_image_crop_give_the_input_back_exactly():
    # Every step at its identity setting: the pipeline adds nothing of its own.
    undriven = ("auto_contrast", "equalize")  # not driven by the magnitude
    driven = [n for n in kh.augment.ops.TRANSFORMS if n not in undriven]
    aug = kh.augment.Pipeline(
        [
            kh.augment.RandomApply(keras.layers.RandomFlip(seed=0), rate=0.0, seed=1),
            kh.augment.RandomResizedCrop(scale=(1, 1), ratio=(1, 1), seed=2),
            kh.augment.RandAugment(magnitude=0.0, operations=driven, seed=3),
        ],
        value_range=(0, 255),
    )
    x = images()
    np.testing.assert_array_equal(np.asarray(aug(x)), x)
