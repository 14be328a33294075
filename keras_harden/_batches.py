"""Turning the package's `data` arguments into batches, in one place.

`data` may be arrays `x` (a list or dict of arrays is the inputs of a
multi-input model), an `(x, y)` or `(x, y, sample_weight)` tuple of arrays,
a `tf.data.Dataset`, or any iterable of such batches.
"""

import keras
import numpy as np

__all__ = ["first_inputs", "iterate_batches", "split_batch"]


def split_batch(batch):
    """`(x, y)` from a batch that is `x`, `(x,)`, `(x, y)` or `(x, y, w)`."""
    if isinstance(batch, tuple):
        if len(batch) == 1:
            return batch[0], None
        return batch[0], batch[1]
    return batch, None


def _is_arrays(data):
    return isinstance(data, (np.ndarray, list, dict)) or hasattr(data, "shape")


def _count(x):
    leaves = keras.tree.flatten(x)
    return int(leaves[0].shape[0]) if leaves else 0


def _array_batches(x, y, batch_size, order, cycle):
    n = _count(x)
    size = n if batch_size is None else min(batch_size, n)
    start = 0
    while cycle or start < n:
        if order is None and (start + size <= n or not cycle):
            part = slice(start, start + size)  # slices work on tensors too
        elif order is None:
            part = np.arange(start, start + size) % n
        else:
            part = np.take(order, range(start, start + size), mode="wrap")
        if isinstance(part, slice):
            yield (
                keras.tree.map_structure(lambda a, p=part: a[p], x),
                None if y is None else y[part],
            )
        else:
            yield (
                keras.tree.map_structure(lambda a, p=part: np.take(a, p, 0), x),
                None if y is None else np.take(y, part, 0),
            )
        start += size
        if cycle:
            start %= n


def iterate_batches(
    data,
    batch_size=32,
    steps=None,
    *,
    order=None,
    cycle=False,
    labels=False,
    name="data",
):
    """Yields `(x, y)` batches (`y` is `None` without labels) from `data`.

    Arrays are cut into consecutive batches of `batch_size` (`None`: one
    batch of everything; a set smaller than `batch_size` is one batch),
    following `order` (a permutation of the indices) when given. An iterable
    yields its own batches.

    Args:
        data: see the module docstring.
        batch_size: int, or `None` for one batch of all the arrays.
        steps: at most this many batches (`None`: until the data ends).
        order: optional index order for arrays.
        cycle: start again from the first batch when the data ends (needs
            `steps`).
        labels: require a `y` in every batch.
        name: the argument's name, for errors.
    """
    if data is None:
        raise ValueError(f"`{name}` must not be None. Received: {name}=None")
    if cycle and steps is None:
        raise ValueError("`cycle=True` needs `steps`.")
    if _is_arrays(data) or isinstance(data, tuple):
        x, y = split_batch(data) if isinstance(data, tuple) else (data, None)
        if _count(x) == 0:
            raise ValueError(
                f"`{name}` must hold at least one example. Received: 0 examples"
            )
        batches = _array_batches(x, y, batch_size, order, cycle)
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise ValueError(
                f"`{name}` must be arrays, an (x, y) tuple, a tf.data.Dataset or "
                f"an iterable of batches. Received: {name}={type(data).__name__}"
            ) from None
        batches = _iterable_batches(iterator, cycle, name)
    for step, (x, y) in enumerate(batches):
        if steps is not None and step >= steps:
            return
        if labels and y is None:
            raise ValueError(
                f"`{name}` must give `(x, y)` batches with labels. "
                f"Received: {name} without labels"
            )
        yield x, y


def _iterable_batches(iterator, cycle, name):
    seen = []
    for batch in iterator:
        batch = split_batch(tuple(batch) if isinstance(batch, list) else batch)
        if cycle:
            seen.append(batch)
        yield batch
    if cycle and not seen:
        raise ValueError(f"`{name}` yielded no batches. Received: {name}=empty")
    while cycle:
        yield from seen


def first_inputs(data, name="data"):
    """The model inputs of `data`: arrays as given, `x` of an `(x, y)` pair,
    or `x` of the first batch of an iterable."""
    for x, _ in iterate_batches(data, batch_size=None, steps=1, name=name):
        return x
    raise ValueError(f"`{name}` yielded no batches. Received: {name}=empty")
