"""Everything fusion makes saves with `model.save`, loads in a fresh Python
process after `import keras_harden` alone with identical outputs, and exports
with `keras_harden.export` to a SavedModel serving the same outputs."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.toolkit import subprocess_env

LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras_harden  # registers everything keras_harden makes
    import keras

    directory, names = sys.argv[1], sys.argv[2].split(",")
    x = np.load(f"{directory}/x.npy")
    for name in names:
        model = keras.saving.load_model(f"{directory}/{name}.keras")
        np.save(f"{directory}/{name}.loaded.npy", model.predict(x, verbose=0))
    """
)


@pytest.fixture(scope="module")
def fused(fine_tunes):
    models = fine_tunes.tunes
    val = (fine_tunes.x_val, fine_tunes.y_val)
    return {
        "uniform": kh.fusion.average_weights(
            models, recalibrate=fine_tunes.x_fit[:256]
        ),
        "greedy": kh.fusion.greedy_soup(
            models, val, recalibrate=fine_tunes.x_fit[:128]
        )[0],
        "average": kh.fusion.ensemble(models),
        "concat": kh.fusion.ensemble(
            models, "concatenate", head=keras.layers.Dense(10), features=-2
        ),
        "stack": kh.fusion.stack(models, holdout_data=val, epochs=2),
        "aligned": kh.fusion.average_weights(
            models[:2], align=True, repair=fine_tunes.x_fit[:256]
        ),
        "ties": kh.fusion.merge(
            fine_tunes.start, models, "ties", recalibrate=fine_tunes.x_fit[:256]
        ),
    }


@pytest.mark.slow
def test_fresh_process_loads_identical(tmp_path, fused, fine_tunes):
    x = fine_tunes.x_test[:32]
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for name, model in fused.items():
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.predict(x, verbose=0)
    run = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path), ",".join(fused)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name, output in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.loaded.npy"), output)


@pytest.mark.tf_only
@pytest.mark.slow
def test_export_serves_the_same_outputs(tmp_path, fused, fine_tunes):
    import tensorflow as tf

    x = fine_tunes.x_test[:32]
    for name in ("uniform", "concat", "stack", "aligned", "ties"):
        model = fused[name]
        path = kh.export(model, tmp_path / name)
        artifact = tf.saved_model.load(path)
        served = artifact.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(served, model.predict(x, verbose=0), atol=1e-5)
        reloaded = kh.load_model(path)
        np.testing.assert_allclose(reloaded.predict(x, verbose=0), served, atol=1e-6)
