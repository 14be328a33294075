"""The switch between the session backend's ops and TensorFlow's, for the
augmentation family.

`ops` and `random` below stand for `keras.ops` and `keras.random`: the session
backend's, or TensorFlow's inside a `tf.data` graph under another backend (the
one private Keras hook of the package; see `TENSORFLOW_BACKEND`). Both the
per-image transforms (`ops.py`) and the layers' base (`_layer.py`) use them,
so they live here, below both.
"""

import importlib
import sys
import types

import keras

# ---------------------------------------------------------------------------
# Backend switch: TensorFlow ops inside tf.data, whatever the session backend.
#
# A `tf.data` map traces its function into a TensorFlow graph; the session
# backend's ops (JAX, torch) cannot take its symbolic tensors. Keras's own
# preprocessing layers switch to Keras's TensorFlow backend there, through a
# private base class (`keras.src.layers.preprocessing.data_layer.DataLayer`,
# Keras 3.15) and a private backend switcher
# (`keras.src.utils.backend_utils.DynamicBackend`); Keras exports neither. We
# reach the same TensorFlow backend module ourselves: `TENSORFLOW_BACKEND` is
# the one private name the package uses (with `keras.random.SeedGenerator`'s
# undocumented `backend` argument, for a TensorFlow generator), and a test
# checks that both still provide what we call.

TENSORFLOW_BACKEND = "keras.src.backend.tensorflow"

_TWINS = {}


def in_foreign_tf_graph():
    """True while TensorFlow traces a graph (a `tf.data` map) and the session
    backend is not TensorFlow: our ops must then be TensorFlow's. (Inside
    `jax.jit`, TensorFlow executes eagerly: JAX ops.)"""
    if keras.backend.backend() == "tensorflow" or "tensorflow" not in sys.modules:
        return False
    return not sys.modules["tensorflow"].executing_eagerly()


def backend_name():
    """The backend our ops run on now: the session's, or `"tensorflow"` inside
    a `tf.data` graph."""
    return "tensorflow" if in_foreign_tf_graph() else keras.backend.backend()


def dynamic_shapes():
    """Whether the per-image dispatch may use data-dependent shapes
    (TensorFlow)."""
    return backend_name() == "tensorflow"


def tensorflow_twin(function):
    """The TensorFlow backend's version of a public `keras.ops` or
    `keras.random` function: `keras.ops.numpy.where` -> `<backend>.numpy.where`
    (the public functions are thin wrappers over the backend's)."""
    key = (function.__module__, function.__name__)
    if key not in _TWINS:
        backend = importlib.import_module(TENSORFLOW_BACKEND)
        module = getattr(backend, function.__module__.rsplit(".", 1)[-1])
        _TWINS[key] = getattr(module, function.__name__)
    return _TWINS[key]


class _Namespace:
    """`keras.ops` (or `keras.random`, `keras.ops.image`) that answers with
    TensorFlow's functions inside a `tf.data` graph under another backend."""

    def __init__(self, public):
        self._public = public

    def __getattr__(self, name):
        value = getattr(self._public, name)
        if isinstance(value, types.ModuleType):
            return _Namespace(value)
        return tensorflow_twin(value) if in_foreign_tf_graph() else value


ops = _Namespace(keras.ops)
random = _Namespace(keras.random)
