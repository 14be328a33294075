"""Every layer inside a `tf.data` map, under whatever backend the pass runs:
draws made in the graph give the images an eager call gives for the same
draws, and each layer maps `(images, labels)` batches. (Under JAX the graph
runs on Keras's TensorFlow backend, as Keras's own preprocessing layers do.)"""

import keras
import numpy as np
import pytest

import keras_harden as kh

tf = pytest.importorskip("tensorflow")

X = np.random.default_rng(0).uniform(0, 255, (8, 12, 12, 3)).astype("float32")
Y = np.arange(8) % 3

LAYERS = {
    "RandAugment": lambda: kh.augment.RandAugment(magnitude_stddev=0.2, seed=1),
    "TrivialAugment": lambda: kh.augment.TrivialAugment(seed=2),
    "AugMix": lambda: kh.augment.AugMix(seed=3),
    "RandomResizedCrop": lambda: kh.augment.RandomResizedCrop(10, 9, seed=4),
    "MixUpCutMix": lambda: kh.augment.MixUpCutMix(3, label_smoothing=0.1, seed=5),
    "RandomApply": lambda: kh.augment.RandomApply(
        keras.layers.Rescaling(0.5), 0.5, seed=6
    ),
    "RandomChoice": lambda: kh.augment.RandomChoice(
        [keras.layers.Rescaling(0.5), keras.layers.Rescaling(0.25)], seed=7
    ),
    'pipeline("standard")': lambda: kh.augment.pipeline("standard", seed=8),
}
POLICIES = [name for name in LAYERS if name != 'pipeline("standard")']


def numpy(tree):
    return keras.tree.map_structure(np.asarray, tree)


@pytest.mark.parametrize("name", POLICIES)
def test_draws_made_in_tf_data_give_the_eager_images(name):
    layer = LAYERS[name]()

    def draw_and_apply(images, labels):
        draws = layer.get_random_transformation({"images": images, "labels": labels})
        out = layer.transform_images(images, draws)
        return out, layer.transform_labels(labels, draws), draws

    ds = tf.data.Dataset.from_tensors((X, Y)).map(draw_and_apply)
    images, labels, draws = numpy(next(iter(ds)))
    eager_images = np.asarray(layer.transform_images(X, draws))
    eager_labels = np.asarray(layer.transform_labels(Y, draws))
    # Float32 resampling on two backends: equal to a few ulps of 255.
    np.testing.assert_allclose(images, eager_images, atol=1e-3)
    np.testing.assert_allclose(labels, eager_labels, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_maps_image_label_pairs_and_seeds_replay(name):
    def batches():
        ds = tf.data.Dataset.from_tensors((X, Y)).repeat(2).map(LAYERS[name]())
        return [numpy(batch) for batch in ds]

    (first, labels), (second, _) = batches()
    expected = (8, 10, 9, 3) if name == "RandomResizedCrop" else X.shape
    assert first.shape == expected and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 255
    assert not np.array_equal(first, second)  # each batch draws anew
    if name == "MixUpCutMix":
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    else:
        np.testing.assert_array_equal(labels, Y)
    for a, b in zip(batches(), [(first, labels), (second, None)], strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # an int seed replays
