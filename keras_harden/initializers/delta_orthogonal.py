"""Delta-orthogonal initialization for very deep convolutional networks."""

import keras

from keras_harden._validation import check_positive
from keras_harden.initializers import _common

__all__ = ["DeltaOrthogonal"]


@keras.saving.register_keras_serializable(package="keras_harden")
class DeltaOrthogonal(keras.initializers.Initializer):
    """Orthogonal matrix at the centre tap of a conv kernel, zeros elsewhere.

    Xiao et al. (2018) showed that a plain (no normalisation, no residual)
    convolutional network of thousands of layers trains when every kernel is a
    "delta": a random orthogonal `in x out` matrix (times `gain`) at the spatial
    centre tap and zeros at every other tap. Each layer then maps the
    centre pixel's channel vector isometrically, so the input-output Jacobian
    is well conditioned at any depth (dynamical isometry).

    Keras kernels are laid out `(spatial..., in, out)`. For Conv1D/2D/3D
    kernels the rows of the centre matrix are orthonormal, `W W^T = gain^2 I`,
    which requires `in <= out`; a kernel that shrinks the channels raises a
    `ValueError`. The centre tap is index `(k - 1) // 2` on each spatial axis,
    the tap that `padding="same"` aligns with the input pixel. A 2-D kernel
    (Dense) gets a plain orthogonal matrix (orthonormal rows or columns,
    whichever is shorter), like `keras.initializers.Orthogonal`.

    For ReLU networks use `gain=2 ** 0.5`; for tanh, `gain=1.0`.

    Seeds: an int seed gives the same tensor on every call; a
    `keras.random.SeedGenerator` gives new values on every call; `None` draws
    a fresh seed from Python's `random` on every call (so one unseeded instance
    shared by several layers does not give them identical weights, unlike an
    unseeded Keras initializer; `keras.utils.set_random_seed` makes it
    reproducible).

    Args:
        gain: positive multiplier of the orthogonal matrix.
        seed: None, an int or a `keras.random.SeedGenerator`.

    Returns:
        Calling the instance with `(shape, dtype=None)` returns the kernel.

    Example:

    >>> init = kh.initializers.DeltaOrthogonal(gain=2**0.5, seed=0)
    >>> layer = keras.layers.Conv2D(32, 3, padding="same", kernel_initializer=init)
    >>> w = init((3, 3, 16, 32))
    >>> float(keras.ops.max(keras.ops.abs(w[0, 0])))  # only the centre tap is set
    0.0

    References:
        Xiao, Bahri, Sohl-Dickstein, Schoenholz, Pennington. "Dynamical Isometry
        and a Mean Field Theory of CNNs: How to Train 10,000-Layer Vanilla
        Convolutional Neural Networks", ICML 2018.
        https://arxiv.org/abs/1806.05393 (reference code:
        https://github.com/brain-research/mean-field-cnns).
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = check_positive("gain", gain)
        self.seed = _common.check_seed(seed, "DeltaOrthogonal")

    def __call__(self, shape, dtype=None):
        shape = _common.check_shape(shape, "DeltaOrthogonal")
        dtype = _common.float_dtype(dtype)
        fan_in, fan_out = shape[-2], shape[-1]
        if len(shape) > 2 and fan_in > fan_out:
            raise ValueError(
                "DeltaOrthogonal needs in_channels <= out_channels for a conv "
                "kernel (its centre tap must have orthonormal rows); use "
                "keras.initializers.Orthogonal for a layer that reduces channels. "
                f"Received: shape={shape}"
            )
        seed = _common.draw_seed(self.seed)
        matrix = self.gain * _common.orthogonal_matrix(fan_in, fan_out, seed)
        if len(shape) > 2:
            matrix = _common.centre_tap_kernel(matrix, shape)
        return keras.ops.cast(matrix, dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": _common.seed_config(self.seed)}
