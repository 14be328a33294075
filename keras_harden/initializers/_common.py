"""Private helpers shared by the initializers: seeds, dtypes and small matrices.

Seed policy of every random initializer in this package (see DESIGN trap 8):

- an `int` seed gives the same tensor on every call (reproducible);
- a `keras.random.SeedGenerator` advances on every call (new values each time);
- `None` draws a fresh integer seed from Python's `random` module on every call,
  so one unseeded instance shared by several layers gives each layer different
  weights (Keras's own unseeded initializers fix one seed at construction and
  return the same tensor every call), and `keras.utils.set_random_seed` still
  makes a whole run reproducible.
"""

import random as _py_random

import keras
import numpy as np

_MAX_SEED = 2**31 - 1


def check_seed(seed, owner):
    """Validates a `seed` argument; returns it (a dict is deserialized)."""
    if isinstance(seed, dict):
        seed = keras.saving.deserialize_keras_object(seed)
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(
            f"`seed` of {owner} must be None, an int or a "
            f"`keras.random.SeedGenerator`. Received: seed={seed!r}"
        )
    return int(seed)


def seed_config(seed):
    """The serializable form of a seed (None and ints stay as they are)."""
    if seed is None or isinstance(seed, int):
        return seed
    return keras.saving.serialize_keras_object(seed)


def draw_seed(seed):
    """The seed one call uses: a fresh Python-drawn int when `seed` is None."""
    if seed is None:
        return _py_random.randint(1, _MAX_SEED)
    return seed


def float_dtype(dtype):
    """`dtype` standardized; `None` means `keras.config.floatx()`."""
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if "float" not in dtype:
        raise ValueError(
            "Initializers here produce floating-point tensors only. "
            f"Received: dtype={dtype}"
        )
    return dtype


def orthogonal_matrix(rows, cols, seed):
    """A float32 `(rows, cols)` matrix with orthonormal rows (rows <= cols) or
    orthonormal columns (rows > cols), drawn as the Q factor of a Gaussian
    matrix with the sign of R's diagonal folded in (Haar-distributed)."""
    tall = (max(rows, cols), min(rows, cols))
    a = keras.random.normal(tall, seed=seed, dtype="float32")
    q, r = keras.ops.qr(a)
    q = q * keras.ops.sign(keras.ops.diagonal(r))[None, :]
    return q if rows >= cols else keras.ops.transpose(q)


def centre_tap_kernel(matrix, shape):
    """A kernel of `shape` (spatial..., in, out) that holds `matrix` (in, out)
    at the spatial centre tap `(k - 1) // 2` of every spatial axis and zeros
    elsewhere. Under `padding="same"` that tap lines up with the input pixel,
    so a square identity `matrix` makes the convolution an identity map."""
    spatial = tuple(shape[:-2])
    onehot = np.zeros(spatial, dtype="float32")
    onehot[tuple((k - 1) // 2 for k in spatial)] = 1.0
    onehot = keras.ops.convert_to_tensor(onehot.reshape(spatial + (1, 1)))
    return onehot * keras.ops.reshape(matrix, (1,) * len(spatial) + tuple(shape[-2:]))


def check_shape(shape, owner, min_rank=2):
    shape = tuple(int(d) for d in shape)
    if len(shape) < min_rank:
        raise ValueError(
            f"{owner} needs a kernel of rank >= {min_rank} laid out "
            f"(..., in, out). Received: shape={shape}"
        )
    return shape
