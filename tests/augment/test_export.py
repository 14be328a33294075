"""Export with augmentation off: `keras_harden.export` serves in inference mode;
Keras's own `model.export` keeps augmentation on (trap 3 in DESIGN.md: if this
last test starts failing, Keras has fixed it)."""

import keras
import numpy as np
import pytest

import keras_harden as kh

pytestmark = pytest.mark.tf_only
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def augmented_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            kh.augment.pipeline("standard", image_size=10, seed=0),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).uniform(0, 255, (8, 12, 12, 3)).astype("float32")
    return model, x


def test_kh_export_serves_in_inference_mode(augmented_model, tmp_path):
    model, x = augmented_model
    path = kh.export(model, tmp_path / "served")
    loaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    serve = loaded.serve
    first, second = np.asarray(serve(x)), np.asarray(serve(x))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, model.predict(x, verbose=0), atol=1e-5)


def test_keras_model_export_keeps_augmentation_on(augmented_model, tmp_path):
    model, x = augmented_model
    model.export(str(tmp_path / "keras_served"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "keras_served"))
    serve = loaded.serve
    first, second = np.asarray(serve(x)), np.asarray(serve(x))
    predicted = model.predict(x, verbose=0)
    assert not np.allclose(first, second) or not np.allclose(
        first, predicted, atol=1e-5
    )
