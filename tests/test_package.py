import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_save_load_identical, small_classifier


def test_version_and_families():
    assert kh.__version__.count(".") == 2
    for family in ("optimizers", "initializers", "augment", "fusion", "diagnostics"):
        assert hasattr(kh, family)


def test_load_digits_shapes_and_range():
    (x, y), (xt, yt) = kh.data.load_digits(image_size=16, channels=3)
    assert x.shape[1:] == (16, 16, 3) and x.dtype == np.float32
    assert len(x) + len(xt) == 1797
    assert x.min() == 0.0 and x.max() == 255.0
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 12}, "image_size=12"),
        ({"channels": 2}, "channels=2"),
        ({"test_fraction": 1.5}, "test_fraction=1.5"),
    ],
)
def test_load_digits_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kh.data.load_digits(**kwargs)


def test_save_model_is_atomic_and_loads(tmp_path, digits):
    (x, _), _ = digits
    model = small_classifier()
    path = kh.save_model(model, tmp_path / "m.keras")
    assert os.listdir(tmp_path) == ["m.keras"]
    np.testing.assert_allclose(
        kh.load_model(path).predict(x[:16], verbose=0), model.predict(x[:16], verbose=0)
    )
    assert_save_load_identical(model, x[:16], tmp_path)


def test_failed_save_keeps_the_old_file(tmp_path):
    model = small_classifier()
    path = kh.save_model(model, tmp_path / "m.keras")
    before = open(path, "rb").read()

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom()

    model.save = explode
    with pytest.raises(Boom):
        kh.save_model(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.keras"]


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.keras"):
        kh.load_model(tmp_path / "missing.keras")
    foreign = tmp_path / "foreign.keras"
    foreign.write_text("not a zip")
    with pytest.raises(ValueError, match="foreign.keras"):
        kh.load_model(foreign)
    good = kh.save_model(small_classifier(), tmp_path / "good.keras")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(open(good, "rb").read()[:500])
    with pytest.raises(ValueError, match="truncated.keras"):
        kh.load_model(truncated)
    with pytest.raises(ValueError, match="path="):
        kh.save_model(small_classifier(), tmp_path / "m.h5")


def test_load_model_refuses_lambda_in_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode=False"):
        kh.load_model(path)
    loaded = kh.load_model(path, safe_mode=False)
    np.testing.assert_allclose(loaded.predict(np.ones((1, 4)), verbose=0), 2.0)


@pytest.mark.tf_only
def test_export_serves_inference_mode(tmp_path, digits):
    import tensorflow as tf

    (x, _), _ = digits
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dropout(0.5)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    path = kh.export(model, tmp_path / "sm")
    artifact = tf.saved_model.load(path)  # keep a reference: it owns the variables
    served = artifact.serve(tf.constant(x[:8]))
    np.testing.assert_allclose(
        served.numpy(), model.predict(x[:8], verbose=0), atol=1e-5
    )
    reloaded = kh.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x[:8], verbose=0), served.numpy(), atol=1e-6
    )
    kh.export(model, path)  # overwriting an existing export is atomic too
    assert sorted(os.listdir(tmp_path)) == ["sm"]


def test_import_alone_in_fresh_process():
    code = "import keras_harden as kh; print(kh.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kh.__version__
