"""ZerO: deterministic initialization with only zeros, ones and Hadamard signs."""

import math

import keras
import numpy as np

from keras_harden.initializers import _common

__all__ = ["ZerO"]


def _hadamard(m):
    """The Sylvester Hadamard matrix of order 2**m: H[i, j] = (-1)**popcount(i & j)."""
    idx = np.arange(2**m)
    bits = np.bitwise_and(idx[:, None], idx[None, :])
    parity = np.zeros_like(bits)
    while bits.any():
        parity ^= bits & 1
        bits >>= 1
    return (1 - 2 * parity).astype("float32")


def _zero_matrix(fan_in, fan_out):
    """The ZerO matrix in Keras layout `(fan_in, fan_out)` as a NumPy array."""
    if fan_out <= fan_in:
        return np.eye(fan_in, fan_out, dtype="float32")
    m = math.ceil(math.log2(fan_out))
    c = 2.0 ** (-(m - 1) / 2.0)
    # Paper layout W (out x in) = c * I*(out x 2^m) H_m I*(2^m x in) = c * H[:out, :in];
    # Keras stores W^T, and H is symmetric, so the kernel is c * H[:in, :out].
    return c * _hadamard(m)[:fan_in, :fan_out]


@keras.saving.register_keras_serializable(package="keras_harden")
class ZerO(keras.initializers.Initializer):
    """Deterministic ZerO initialization (identity and Hadamard, no randomness).

    Zhao, Schäfer and Anandkumar (2022) initialize every weight matrix with
    zeros and ones only: a (partial) identity where a layer keeps or reduces
    the width, so it passes its first `out` inputs straight through, and a
    scaled Hadamard matrix where the layer expands the width (a partial
    identity there would leave the extra units identical forever, the
    "training degeneracy" the Hadamard transform breaks).

    In Keras layout `(in, out)`:

    - `out <= in`: `W[i, i] = 1` for `i < out`, zeros elsewhere;
    - `out > in`: `W = c * H[:in, :out]` with `H` the Sylvester Hadamard matrix
      of order `2**m`, `m = ceil(log2(out))`, `c = 2 ** (-(m - 1) / 2)`
      (the constant of Algorithm 1 of the paper; the authors' code uses
      `2 ** (-m / 2)`).

    Conv kernels `(spatial..., in, out)` get that matrix at the spatial centre
    tap `(k - 1) // 2` and zeros elsewhere (Algorithm 2), which makes a
    `padding="same"` conv with `in == out` an identity map. The result does not
    depend on any seed: every call returns the same tensor.

    ZerO is meant for residual networks (the paper zero-initialises the last
    layer of each branch) and for deep plain networks whose input already is
    non-negative; see `docs/initializers.md` for measured results.

    Returns:
        Calling the instance with `(shape, dtype=None)` returns the kernel.

    Example:

    >>> layer = keras.layers.Dense(64, kernel_initializer=kh.initializers.ZerO())
    >>> w = kh.initializers.ZerO()((4, 4))
    >>> bool(keras.ops.all(w == keras.ops.eye(4)))
    True

    References:
        Zhao, Schäfer, Anandkumar. "ZerO Initialization: Initializing Neural
        Networks with only Zeros and Ones", TMLR 2022.
        https://arxiv.org/abs/2110.12661 (reference code:
        https://github.com/jiaweizzhao/ZerO-initialization).
    """

    def __call__(self, shape, dtype=None):
        shape = _common.check_shape(shape, "ZerO")
        dtype = _common.float_dtype(dtype)
        matrix = keras.ops.convert_to_tensor(_zero_matrix(shape[-2], shape[-1]))
        if len(shape) > 2:
            matrix = _common.centre_tap_kernel(matrix, shape)
        return keras.ops.cast(matrix, dtype)

    def get_config(self):
        return {}
