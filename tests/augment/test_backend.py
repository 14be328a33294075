"""The one private Keras hook of the package: TensorFlow ops inside tf.data
under other backends (`keras_harden/augment/_backend.py`)."""

import importlib
import os
import re

import keras
import pytest

from keras_harden.augment import _backend as B


def test_the_private_tensorflow_backend_hook_still_holds():
    # The one private Keras name the package uses: Keras's TensorFlow backend
    # module, whose functions stand in for keras.ops inside tf.data under
    # other backends, and SeedGenerator's `backend` argument. If this fails,
    # Keras has moved them: see "Known limits" in docs/augment.md.
    pytest.importorskip("tensorflow")
    module = importlib.import_module(B.TENSORFLOW_BACKEND)
    used = [resolve(keras, name) for name in names_used_by_the_package()]
    for function in used:
        twin = B.tensorflow_twin(function)
        assert callable(twin) and twin.__name__ == function.__name__, function
    generator = keras.random.SeedGenerator(3, backend=module)
    assert type(generator.state).__module__.startswith(B.TENSORFLOW_BACKEND)


def names_used_by_the_package():
    """Every `ops.<name>` and `random.<name>` the package's modules call."""
    folder = os.path.dirname(B.__file__)
    found = set()
    for file in os.listdir(folder):
        if file.endswith(".py"):
            with open(os.path.join(folder, file), encoding="utf-8") as f:
                found |= set(
                    re.findall(r"\b((?:ops|random)\.[a-z_.]*[a-z_])\(", f.read())
                )
    assert {"ops.image.affine_transform", "random.uniform"} <= found
    return sorted(found)


def resolve(module, dotted):
    for name in dotted.split("."):
        module = getattr(module, name)
    return module
