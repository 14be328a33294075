import subprocess
import sys

import numpy as np
import pytest

import keras_harden as kh


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


def test_import_alone_in_fresh_process():
    code = "import keras_harden as kh; print(kh.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kh.__version__


def test_import_loads_neither_keras_nor_a_backend():
    # the command line answers bad arguments before TensorFlow starts; that
    # needs `import keras_harden` to import no family (they import Keras)
    code = (
        "import sys, keras_harden as kh; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', "
        "'keras_harden.optimizers', 'keras_harden.saving') if m in sys.modules)); "
        "print(sorted(kh.__all__) == sorted(n for n in dir(kh) if n in kh.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]


def test_public_names_resolve_to_their_modules():
    import keras_harden.optimizers
    import keras_harden.saving
    import keras_harden.search
    from keras_harden import robust

    assert robust is kh.robust and kh.robust.__name__ == "keras_harden.robust"
    assert kh.optimizers is keras_harden.optimizers
    assert kh.optimizers.AdaptiveGradientClipping.__module__ == (
        "keras_harden.optimizers.adaptive_gradient_clipping"
    )
    assert kh.export is keras_harden.saving.export
    assert kh.save_model is keras_harden.saving.save_model
    assert kh.harden is keras_harden.search.harden
    assert kh.lr_range_test is keras_harden.search.lr_range_test
    for name in kh.__all__:
        assert getattr(kh, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_family'"):
        kh.no_such_family  # noqa: B018
    with pytest.raises(ImportError):
        from keras_harden import no_such_family  # noqa: F401


# What a fresh process does with a `.keras` file holding keras_harden objects:
# plain Keras after `import keras_harden` cannot find the classes (the families
# are not imported yet), `kh.load_model` can, and afterwards every module that
# registers a serializable class has been imported.
_LOADER = """
import json, pathlib, sys
import keras_harden as kh

before = [m for m in ("keras", "keras_harden.optimizers") if m in sys.modules]
import keras

try:
    keras.saving.load_model(sys.argv[1])
    plain = "loaded"
except Exception as error:
    plain = type(error).__name__ + ": " + str(error)
model = kh.load_model(sys.argv[1])
root = pathlib.Path(kh.__file__).parent
registering = sorted(
    "keras_harden." + ".".join(p.relative_to(root).with_suffix("").parts)
    for p in root.rglob("*.py")
    if "register_keras_serializable" in p.read_text()
)
print(json.dumps({
    "before": before,
    "plain": plain,
    "optimizer": type(model.optimizer).__name__,
    "layers": [type(layer).__name__ for layer in model.layers],
    "init": type(model.layers[-1].kernel_initializer).__name__,
    "not_imported": [m for m in registering if m not in sys.modules],
}))
"""


def test_kh_load_model_registers_every_family_first(tmp_path):
    import json

    import keras

    from tests.toolkit import subprocess_env

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            kh.augment.RandomResizedCrop(8, 8, seed=0),
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer=kh.initializers.ZerO()),
        ]
    )
    model.compile(
        optimizer=kh.optimizers.AdaptiveGradientClipping(keras.optimizers.SGD(0.1)),
        loss="sparse_categorical_crossentropy",
    )
    path = kh.save_model(model, tmp_path / "hardened.keras")
    out = subprocess.run(
        [sys.executable, "-c", _LOADER, path],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == []
    # Keras finds a class by its registered name only: the families' imports
    # are what make the file loadable
    assert result["plain"] != "loaded"
    assert "keras_harden>" in result["plain"]
    assert result["optimizer"] == "AdaptiveGradientClipping"
    assert result["layers"] == ["RandomResizedCrop", "Flatten", "Dense"]
    assert result["init"] == "ZerO"
    assert result["not_imported"] == []
