"""The search's data: any training data `fit` takes, as an endless stream of
batches in one fixed order, and a held-out set in memory.

`fit`'s own sources are accepted: `(x, y)` (or `(x, y, sample_weight)`)
arrays, a `tf.data.Dataset` of such batches, or a `keras.utils.PyDataset`.
Arrays are split into training and held-out parts here; a dataset needs
`validation_data=` (a split of a stream that may reshuffle would leak held-out
examples into training). Non-finite values are refused with the batch that
holds them: NaN or Inf in the data is itself a cause of blow-ups.
"""

import math

import keras
import numpy as np

from keras_harden._batches import split_batch

__all__ = ["TrainingData", "prepare", "training_stream"]

# Held-out examples beyond this many only cost time when scoring candidates.
MAX_HOLDOUT = 1024


def _is_dataset(data):
    """A `tf.data.Dataset`, recognised without importing TensorFlow."""
    return hasattr(data, "as_numpy_iterator") and hasattr(data, "cardinality")


def _is_py_dataset(data):
    return isinstance(data, keras.utils.PyDataset)


def _length(x):
    leaves = keras.tree.flatten(x)
    return int(np.shape(leaves[0])[0]) if leaves else 0


def _check_finite(what, value, where):
    for leaf in keras.tree.flatten(value):
        array = np.asarray(leaf)
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            bad = int(np.sum(~np.isfinite(array)))
            raise ValueError(
                f"{where} has {bad} NaN or Inf value(s) in `{what}`: non-finite "
                "data is itself a cause of blow-ups; clean it before training."
            )


def _arrays(data, name):
    """`(x, y, sample_weight)` from an `(x, y)` / `(x, y, w)` tuple of arrays,
    checked for equal lengths and finite values."""
    if len(data) not in (2, 3):
        raise ValueError(
            f"`{name}` as a tuple must be `(x, y)` or `(x, y, sample_weight)`. "
            f"Received: {name} with {len(data)} items"
        )
    x, y, *rest = data
    weights = rest[0] if rest else None
    x = keras.tree.map_structure(np.asarray, x)
    y = np.asarray(y)
    lengths = {"x": _length(x), "y": len(y)}
    if weights is not None:
        weights = np.asarray(weights)
        lengths["sample_weight"] = len(weights)
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(
            f"`{name}`'s arrays must have the same number of samples. Received: {shown}"
        )
    if lengths["x"] == 0:
        raise ValueError(f"`{name}` has no samples. Received: 0 samples")
    for what, value in (("x", x), ("y", y), ("sample_weight", weights)):
        if value is not None:
            _check_finite(what, value, f"`{name}`")
    return x, y, weights


def _take(structure, index):
    return keras.tree.map_structure(lambda a: np.take(a, index, axis=0), structure)


class TrainingData:
    """Training batches in a fixed order, from the first step on.

    Every call of `batches()` starts again from the first batch, so each user
    of the stream (the range test, the search) sees the same sequence.
    `steps_per_epoch` is the number of batches `fit` would take in an epoch
    (`None` for an endless dataset).
    """

    def __init__(self, source, batch_size, seed, steps_per_epoch):
        self._source = source
        self._batch_size = batch_size
        self._seed = seed
        self.steps_per_epoch = steps_per_epoch

    def batches(self):
        """An endless iterator of `(x, y, sample_weight)` numpy batches."""
        kind, payload = self._source
        if kind == "arrays":
            return self._array_batches(*payload)
        if kind == "dataset":
            return self._dataset_batches(payload)
        return self._py_dataset_batches(payload)

    def _array_batches(self, x, y, weights):
        # Epoch after epoch of shuffled indices, cut into full batches (one
        # batch shape: one compiled step).
        n = len(y)
        rng = np.random.default_rng(self._seed)
        pending = np.empty(0, dtype=np.int64)
        while True:
            while len(pending) < self._batch_size:
                pending = np.concatenate([pending, rng.permutation(n)])
            index, pending = pending[: self._batch_size], pending[self._batch_size :]
            yield (
                _take(x, index),
                y[index],
                None if weights is None else weights[index],
            )

    def _dataset_batches(self, dataset):
        number = 0
        while True:
            empty = True
            for batch in dataset.as_numpy_iterator():
                empty = False
                yield self._checked(batch, number)
                number += 1
            if empty:
                raise ValueError("`data` (a tf.data.Dataset) yielded no batch.")

    def _py_dataset_batches(self, dataset):
        number = 0
        while True:
            for i in range(len(dataset)):
                yield self._checked(dataset[i], number)
                number += 1
            dataset.on_epoch_end()

    @staticmethod
    def _checked(batch, number):
        if not isinstance(batch, tuple) or len(batch) < 2:
            raise ValueError(
                "`data` must yield `(x, y)` or `(x, y, sample_weight)` batches. "
                f"Received: batch {number} of type {type(batch).__name__}"
            )
        x, y = split_batch(batch)
        weights = batch[2] if len(batch) > 2 else None
        for what, value in (("x", x), ("y", y), ("sample_weight", weights)):
            if value is not None:
                _check_finite(what, value, f"Training batch {number}")
        return x, y, weights


def _held_out_arrays(data, name):
    """`(x, y)` numpy arrays of held-out data from arrays or a dataset."""
    if isinstance(data, (tuple, list)):
        x, y, _ = _arrays(tuple(data), name)
        return x, y
    if _is_dataset(data) or _is_py_dataset(data):
        xs, ys = [], []
        source = (
            data.as_numpy_iterator()
            if _is_dataset(data)
            else (data[i] for i in range(len(data)))
        )
        for number, batch in enumerate(source):
            x, y, _ = TrainingData._checked(batch, number)
            xs.append(x)
            ys.append(np.asarray(y))
        if not xs:
            raise ValueError(f"`{name}` yielded no batch.")
        x = keras.tree.map_structure(lambda *a: np.concatenate(a), *xs)
        return x, np.concatenate(ys)
    raise ValueError(
        f"`{name}` must be `(x, y)` arrays, a tf.data.Dataset or a "
        f"keras.utils.PyDataset. Received: {name}={type(data).__name__}"
    )


def _stream(data, batch_size, seed, name="data"):
    """A `TrainingData` over all of `data` (arrays already checked)."""
    if isinstance(data, (tuple, list)):
        x, y, weights = _arrays(tuple(data), name)
        steps = math.ceil(len(y) / batch_size)
        return TrainingData(("arrays", (x, y, weights)), batch_size, seed, steps)
    if _is_py_dataset(data):
        return TrainingData(("py_dataset", data), batch_size, seed, len(data))
    if _is_dataset(data):
        cardinality = int(data.cardinality())
        steps = cardinality if cardinality > 0 else None
        return TrainingData(("dataset", data), batch_size, seed, steps)
    raise ValueError(
        f"`{name}` must be `(x, y)` arrays, a tf.data.Dataset or a "
        f"keras.utils.PyDataset. Received: {name}={type(data).__name__}"
    )


def training_stream(data, batch_size, seed):
    """All of `data` as a training stream (nothing held out)."""
    return _stream(data, batch_size, seed)


def prepare(data, batch_size, validation_data, validation_split, seed):
    """The training stream and the held-out `(x, y)` arrays.

    Arrays without `validation_data` are split: a random `validation_split`
    fraction (at most 1,024 samples) is held out, the rest trains.
    """
    if validation_data is not None:
        return _stream(data, batch_size, seed), _held_out_arrays(
            validation_data, "validation_data"
        )
    if not isinstance(data, (tuple, list)):
        if _is_dataset(data) or _is_py_dataset(data):
            raise ValueError(
                "`validation_data` is needed with a tf.data.Dataset or a "
                "PyDataset (the search scores candidates on held-out data, and "
                "a split of a stream is not reproducible). Received: "
                "validation_data=None"
            )
        return _stream(data, batch_size, seed), None  # raises the type error
    x, y, weights = _arrays(tuple(data), "data")
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(MAX_HOLDOUT, max(1, int(round(validation_split * n))))
    if n - n_val < 1:
        raise ValueError(
            "`validation_split` leaves no training sample. Received: "
            f"validation_split={validation_split} of {n} samples"
        )
    train = order[n_val:]
    parts = (_take(x, train), y[train])
    if weights is not None:
        parts += (weights[train],)
    held_out = (_take(x, order[:n_val]), y[order[:n_val]])
    return _stream(parts, batch_size, seed), held_out
