"""Initial weights drawn with the statistics of reference weights."""

import keras
import numpy as np

from keras_harden._validation import check_number
from keras_harden.initializers import _common

__all__ = ["FromStatistics"]

_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")
# Standard deviation of a unit normal truncated to [-2, 2] (Keras truncates at 2
# standard deviations): sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.8796256610342398.
_TRUNCATED_STD = 0.8796256610342398


def _check_stat(value, name):
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value, dtype="float64")
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(
                f"`{name}` must be a finite number or a non-empty 1-D list of "
                f"finite numbers (one per output channel). Received: {name}={value!r}"
            )
        return [float(v) for v in array]
    return check_number(name, value)


@keras.saving.register_keras_serializable(package="keras_harden")
class FromStatistics(keras.initializers.Initializer):
    """Draws initial weights with a given mean and standard deviation.

    The mean and standard deviation are either scalars or one value per output
    channel (the last axis of a Keras kernel). The usual way to get them is
    `FromStatistics.of(reference_weights)`, which measures them on reference
    weights, e.g. the matching layer of a trained model: a new model then
    starts at the scale the trained one ended at, without copying its values.

    The draw is exact in its first two moments: `"truncated_normal"` (values
    beyond 2 standard deviations redrawn, then rescaled by 1 / 0.87963 so the
    standard deviation is `stddev` and not 0.88 `stddev`), `"normal"`, or
    `"uniform"` on `mean +- sqrt(3) stddev`.

    Seeds: an int seed gives the same tensor on every call; a
    `keras.random.SeedGenerator` gives new values on every call; `None` draws
    a fresh seed from Python's `random` on every call.

    Args:
        mean: a number, or a list with one number per output channel.
        stddev: a number >= 0, or a list with one per output channel.
        distribution: `"truncated_normal"`, `"normal"` or `"uniform"`.
        seed: None, an int or a `keras.random.SeedGenerator`.

    Returns:
        Calling the instance with `(shape, dtype=None)` returns the tensor;
        per-channel statistics need `shape[-1] == len(mean)`.

    Example:

    >>> reference = np.random.default_rng(0).normal(0.1, 0.02, (64, 32))
    >>> init = kh.initializers.FromStatistics.of(reference, seed=0)
    >>> layer = keras.layers.Dense(32, kernel_initializer=init)

    References:
        Krähenbühl, Doersch, Donahue, Darrell. "Data-dependent Initializations
        of Convolutional Neural Networks", ICLR 2016 (matching the scale of
        weights). https://arxiv.org/abs/1511.06856
    """

    def __init__(
        self, mean=0.0, stddev=1.0, distribution="truncated_normal", seed=None
    ):
        self.mean = _check_stat(mean, "mean")
        self.stddev = _check_stat(stddev, "stddev")
        if np.any(np.asarray(self.stddev) < 0):
            raise ValueError(f"`stddev` must be >= 0. Received: stddev={stddev!r}")
        if (
            isinstance(self.mean, list)
            and isinstance(self.stddev, list)
            and len(self.mean) != len(self.stddev)
        ):
            raise ValueError(
                "`mean` and `stddev` lists must have the same length. "
                f"Received: stddev={stddev!r}"
            )
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"`distribution` must be one of {_DISTRIBUTIONS}. "
                f"Received: distribution={distribution!r}"
            )
        self.distribution = distribution
        self.seed = _common.check_seed(seed, "FromStatistics")

    @classmethod
    def of(cls, weights, per_channel=True, distribution="truncated_normal", seed=None):
        """Measures mean and standard deviation of `weights`; returns an initializer.

        Args:
            weights: reference weights: an array, a tensor or a `keras.Variable`.
            per_channel: with weights of rank >= 2, one mean and standard
                deviation per output channel (reduced over every axis but the
                last, Keras's `(..., in, out)` layout). Otherwise, or for rank
                < 2, one pair for the whole tensor.
            distribution: as in the constructor.
            seed: as in the constructor.

        Returns:
            A `FromStatistics` instance.
        """
        array = np.asarray(keras.ops.convert_to_numpy(weights), dtype="float64")
        if array.size < 2 or not np.all(np.isfinite(array)):
            raise ValueError(
                "`weights` must hold at least 2 finite values. "
                f"Received: weights of shape {array.shape}"
            )
        if per_channel and array.ndim >= 2:
            flat = array.reshape(-1, array.shape[-1])
            mean = flat.mean(axis=0).tolist()
            stddev = flat.std(axis=0).tolist()
        else:
            mean, stddev = float(array.mean()), float(array.std())
        return cls(mean=mean, stddev=stddev, distribution=distribution, seed=seed)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        dtype = _common.float_dtype(dtype)
        channels = [len(s) for s in (self.mean, self.stddev) if isinstance(s, list)]
        if channels and (not shape or shape[-1] != channels[0]):
            raise ValueError(
                f"FromStatistics holds statistics for {channels[0]} output channels; "
                f"the last axis of the shape must match. Received: shape={shape}"
            )
        seed = _common.draw_seed(self.seed)
        if self.distribution == "truncated_normal":
            unit = keras.random.truncated_normal(shape, seed=seed, dtype="float32")
            unit = unit / _TRUNCATED_STD
        elif self.distribution == "normal":
            unit = keras.random.normal(shape, seed=seed, dtype="float32")
        else:
            half = 3.0**0.5
            unit = keras.random.uniform(shape, -half, half, seed=seed, dtype="float32")
        mean = keras.ops.convert_to_tensor(self.mean, dtype="float32")
        stddev = keras.ops.convert_to_tensor(self.stddev, dtype="float32")
        return keras.ops.cast(mean + stddev * unit, dtype)

    def get_config(self):
        return {
            "mean": self.mean,
            "stddev": self.stddev,
            "distribution": self.distribution,
            "seed": _common.seed_config(self.seed),
        }
