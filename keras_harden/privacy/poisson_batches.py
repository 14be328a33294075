"""`PoissonBatches`: the batches DP-SGD's accounting assumes, fixed-shape.

Each step takes every example independently with probability
`q = expected_batch_size / n` (Poisson sampling), so a batch has a random
size. A compiled step would retrace for each new size; instead every batch
is padded to one `max_batch_size` and carries a 0/1 mask as its sample
weights (the padding's gradients are weighted by 0 before clipping, so it
changes nothing). `max_batch_size` defaults to the least size that a
binomial draw exceeds with probability below `1e-12` per step (about 7
standard deviations above the mean), rounded up to a multiple of 8 so it
splits evenly over replicas.
"""

import math

import keras
import numpy as np

from keras_harden._validation import check_int

__all__ = ["PoissonBatches"]

OVERFLOW_PROBABILITY = 1e-12


def default_max_batch_size(n_examples, sampling_rate):
    """The least multiple of 8 that a Binomial(n, q) draw exceeds with
    probability at most `OVERFLOW_PROBABILITY`.

    Example:

    >>> default_max_batch_size(1400, 256 / 1400)   # mean 256, sd 14.5
    368
    """
    from scipy.stats import binom

    # isf: the least k with P(X > k) <= the probability
    bound = int(binom.isf(OVERFLOW_PROBABILITY, n_examples, sampling_rate))
    return min(8 * math.ceil(bound / 8), 8 * math.ceil(n_examples / 8))


class PoissonBatches(keras.utils.PyDataset):
    """Poisson-sampled batches of `(x, y)`, padded to one shape with a mask.

    Batch `i` of epoch `e` holds each example with probability `q =
    expected_batch_size / len(x)`, drawn from `numpy.random.default_rng((
    seed, e, i))`: the same seed gives the same batches in any order of
    access. Each batch is `(x_padded, y_padded, mask)`, the first rows the
    drawn examples, the mask 1 for them and 0 for the padding; `fit` takes
    the mask as sample weights. An epoch is `ceil(n / expected_batch_size)`
    steps by default, as `keras_harden.privacy.steps_for` counts them. A
    draw larger than `max_batch_size` (probability below 1e-12 per step
    with the default) raises RuntimeError instead of dropping examples,
    which the accounting would not cover.

    The draws use NumPy's PCG64 generator, which is not a cryptographic
    source: the guarantee assumes an attacker cannot predict them.

    On TensorFlow, `DPTraining.fit` reads these batches as `tf_dataset`
    (the same batches, gathered in `tf.data` rather than by a Python
    generator), unless a subclass makes its own batches, `fit` is given
    `steps_per_epoch`, or the dataset has worker threads or processes.

    Args:
        x: an array `(n, ...)` of inputs.
        y: an array `(n, ...)` of targets.
        expected_batch_size: int >= 1, at most `n`: `q * n`.
        steps_per_epoch: None or an int >= 1 (see above).
        max_batch_size: None (see the module docstring) or an int
            >= `expected_batch_size`.
        seed: None (fresh entropy) or an int >= 0.
        **kwargs: `keras.utils.PyDataset`'s `workers`,
            `use_multiprocessing`, `max_queue_size`.

    Example:

    >>> x, y = np.arange(100.0).reshape(100, 1), np.arange(100) % 2
    >>> batches = PoissonBatches(x, y, expected_batch_size=10, seed=0)
    >>> xb, yb, mask = batches[0]
    >>> len(batches), batches.sampling_rate, xb.shape, int(mask.sum())
    (10, 0.1, (40, 1), 10)
    >>> bool(np.all(xb[mask == 0] == 0))
    True
    """

    def __init__(
        self,
        x,
        y,
        expected_batch_size,
        *,
        steps_per_epoch=None,
        max_batch_size=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.x, self.y = np.asarray(x), np.asarray(y)
        if self.x.ndim == 0 or len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(
                "`x` and `y` must be arrays with the same number of examples "
                f"(at least 1). Received: x.shape={self.x.shape}, "
                f"y.shape={self.y.shape}"
            )
        n = len(self.x)
        self.expected_batch_size = check_int(
            "expected_batch_size", expected_batch_size, minimum=1
        )
        if self.expected_batch_size > n:
            raise ValueError(
                f"`expected_batch_size` must be at most the {n} examples. "
                f"Received: expected_batch_size={expected_batch_size}"
            )
        self.steps_per_epoch = check_int(
            "steps_per_epoch", steps_per_epoch, minimum=1, optional=True
        )
        if self.steps_per_epoch is None:
            self.steps_per_epoch = math.ceil(n / self.expected_batch_size)
        if max_batch_size is None:
            max_batch_size = default_max_batch_size(n, self.sampling_rate)
        self.max_batch_size = check_int(
            "max_batch_size", max_batch_size, minimum=self.expected_batch_size
        )
        self.seed = check_int("seed", seed, minimum=0, optional=True)
        self._entropy = (
            self.seed if self.seed is not None else np.random.SeedSequence().entropy
        )
        self.epoch = 0

    @property
    def n_examples(self):
        return len(self.x)

    @property
    def sampling_rate(self):
        """`q`: each example's probability of being in a batch."""
        return self.expected_batch_size / self.n_examples

    def __len__(self):
        return self.steps_per_epoch

    def indices(self, index, epoch=None):
        """The indices of the examples drawn for batch `index` of `epoch`
        (default: the current one, `self.epoch`, the calls to
        `on_epoch_end` so far; Keras's `fit` makes one before its first
        epoch, after reading a batch for its shapes)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self._entropy, epoch, index))
        return np.flatnonzero(rng.random(self.n_examples) < self.sampling_rate)

    def _checked(self, index, drawn):
        """`drawn`, if it fits in `max_batch_size`; else RuntimeError."""
        if len(drawn) > self.max_batch_size:
            raise RuntimeError(
                f"PoissonBatches drew {len(drawn)} examples for batch {index}, "
                f"more than max_batch_size={self.max_batch_size} (an event of "
                f"probability below {OVERFLOW_PROBABILITY:g} with the default "
                "size); dropping some would break the accounting. Pass a larger "
                "max_batch_size."
            )
        return drawn

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        drawn = self._checked(index, self.indices(index))
        size = self.max_batch_size
        x = np.zeros((size, *self.x.shape[1:]), self.x.dtype)
        y = np.zeros((size, *self.y.shape[1:]), self.y.dtype)
        mask = np.zeros(size, "float32")
        x[: len(drawn)], y[: len(drawn)], mask[: len(drawn)] = (
            self.x[drawn],
            self.y[drawn],
            1.0,
        )
        return x, y, mask

    def tf_dataset(self, epochs, first_epoch=None):
        """The batches of `epochs` epochs from `first_epoch` (default: the
        current one) as one `tf.data.Dataset`, batch for batch those that
        indexing gives (TensorFlow only).

        Keras's `fit` reads a `PyDataset` through a Python generator inside
        `tf.data`, 2-4 ms a batch on a 2-core CPU, more than a small model's
        step. Here Python draws the indices once an epoch; the gathering,
        padding and masking run in `tf.data`. `x` and `y` are copied into
        TensorFlow tensors once. A draw larger than `max_batch_size` stops
        the iteration with the RuntimeError's message, when its epoch is
        reached.

        Example:

        >>> x, y = np.arange(40.0).reshape(40, 1), np.arange(40) % 2
        >>> batches = PoissonBatches(x, y, expected_batch_size=8, seed=0)
        >>> first = next(iter(batches.tf_dataset(epochs=1)))
        >>> all(np.array_equal(a, b) for a, b in zip(first, batches[0]))
        True
        """
        epochs = check_int("epochs", epochs, minimum=1)
        first = self.epoch if first_epoch is None else first_epoch
        first = check_int("first_epoch", first, minimum=0)
        import tensorflow as tf

        steps, size = len(self), self.max_batch_size

        def epoch_table(epoch):
            rows = np.zeros((steps, size), "int32")
            counts = np.zeros(steps, "int32")
            for index in range(steps):
                drawn = self._checked(index, self.indices(index, int(epoch)))
                rows[index, : len(drawn)], counts[index] = drawn, len(drawn)
            return rows, counts

        def epoch_rows(epoch):
            rows, counts = tf.numpy_function(epoch_table, [epoch], (tf.int32, tf.int32))
            rows.set_shape((steps, size))
            counts.set_shape((steps,))
            return tf.data.Dataset.from_tensor_slices((rows, counts))

        x, y = tf.constant(self.x), tf.constant(self.y)

        def batch(rows, count):
            drawn = tf.range(size) < count

            def padded(values):
                taken = tf.gather(values, rows)
                keep = tf.reshape(drawn, (size,) + (1,) * (len(values.shape) - 1))
                return tf.where(keep, taken, tf.zeros_like(taken))

            return padded(x), padded(y), tf.cast(drawn, "float32")

        return (
            tf.data.Dataset.range(first, first + epochs)
            .flat_map(epoch_rows)
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )

    def on_epoch_end(self):
        self.epoch += 1
