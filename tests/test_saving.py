"""Saving, loading and exporting (`keras_harden.saving`), and the committed
fused model in `saved_models/`."""

import os
import stat
import zipfile

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import assert_save_load_identical, small_classifier

COMMITTED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "saved_models",
    "digits_soup.keras",
)


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
        kh.save_model(model, path, overwrite=True)
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
    kh.export(model, path, overwrite=True)  # replacing an export is atomic too
    assert sorted(os.listdir(tmp_path)) == ["sm"]


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_saved_file_gets_ordinary_permissions(tmp_path):
    path = kh.save_model(small_classifier(), tmp_path / "m.keras")
    # mkstemp would leave 0o600: a model file others cannot read
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
    os.chmod(path, 0o640)
    kh.save_model(small_classifier(), path, overwrite=True)  # keeps the old mode
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_load_model_errors_for_directories_and_foreign_zips(tmp_path):
    empty = tmp_path / "not_a_savedmodel"
    empty.mkdir()
    with pytest.raises(ValueError, match="not_a_savedmodel.*saved_model.pb"):
        kh.load_model(empty)
    foreign = tmp_path / "photos.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("cat.txt", "meow")
    with pytest.raises(ValueError, match="photos.keras.*config.json"):
        kh.load_model(foreign)


def test_lambda_refusal_names_the_file(tmp_path):
    inputs = keras.Input((2,))
    path = str(tmp_path / "has_code.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1.0)(inputs)).save(path)
    with pytest.raises(ValueError, match=r"has_code\.keras.*safe_mode=False"):
        kh.load_model(path)


def test_committed_fused_model_loads_and_classifies(digits):
    # saved_models/digits_soup.keras is made by
    # examples/fusion_make_saved_model.py (test accuracy 0.991 when written);
    # a change that breaks loading saved models fails here.
    assert os.path.getsize(COMMITTED) < 1_000_000
    soup = kh.load_model(COMMITTED)  # safe mode on: no code in the file
    _, (xt, yt) = digits
    accuracy = np.mean(soup.predict(xt, verbose=0).argmax(-1) == yt)
    assert accuracy >= 0.97
    assert soup.output.shape == (None, 10)


def _snapshot(folder):
    """Every file under `folder` with its bytes: what must survive a refusal."""
    return {
        os.path.relpath(os.path.join(root, name), folder): open(
            os.path.join(root, name), "rb"
        ).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_save_model_never_writes_over_by_surprise(tmp_path):
    path = kh.save_model(small_classifier(), tmp_path / "m.keras")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"m\.keras.*already exists.*overwrite=True"):
        kh.save_model(small_classifier(), path)
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"folder\.keras.*is a directory"):
        kh.save_model(small_classifier(), folder, overwrite=True)
    with pytest.raises(ValueError, match=r"overwrite='yes'"):
        kh.save_model(small_classifier(), tmp_path / "n.keras", overwrite="yes")
    assert _snapshot(tmp_path) == {**before, "folder.keras/notes.txt": b"mine"}
    kh.save_model(small_classifier(), path, overwrite=True)
    assert _snapshot(tmp_path)["m.keras"] != before["m.keras"]


@pytest.mark.tf_only
def test_export_never_destroys_a_file_or_other_files(tmp_path):
    model = small_classifier()
    trained = kh.save_model(model, tmp_path / "b.keras")
    notes = tmp_path / "project"
    notes.mkdir()
    (notes / "notes.txt").write_text("do not lose me")
    before = _snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"b\.keras.*is a file"):
            kh.export(model, trained, overwrite=overwrite)
        with pytest.raises(ValueError, match=r"project.*notes\.txt.*never deletes"):
            kh.export(model, notes, overwrite=overwrite)
    assert _snapshot(tmp_path) == before
    # an earlier export with a stray file beside it is not only an export
    served = kh.export(model, tmp_path / "served")
    (tmp_path / "served" / "README").write_text("how this was made")
    with pytest.raises(ValueError, match="README"):
        kh.export(model, served, overwrite=True)
    assert (tmp_path / "served" / "README").read_text() == "how this was made"


@pytest.mark.tf_only
def test_export_replaces_an_export_only_when_asked(tmp_path):
    model = small_classifier()
    empty = tmp_path / "empty"
    empty.mkdir()
    kh.export(model, empty)  # an empty folder holds nothing to lose
    assert (empty / "saved_model.pb").is_file()
    before = _snapshot(empty)
    with pytest.raises(ValueError, match=r"already holds a SavedModel.*overwrite=True"):
        kh.export(small_classifier(), empty)
    assert _snapshot(empty) == before
    kh.export(small_classifier(), empty, overwrite=True)
    assert _snapshot(empty) != before
    assert sorted(os.listdir(tmp_path)) == ["empty"]
