"""The shared batching: which examples each batch holds, worked out by hand."""

import numpy as np
import pytest

from keras_harden._batches import first_inputs, iterate_batches

X = np.arange(5)[:, None] * 10  # five examples: 0, 10, 20, 30, 40
Y = np.arange(5)


def rows(batches):
    return [(x[:, 0].tolist(), None if y is None else y.tolist()) for x, y in batches]


def test_consecutive_batches_end_with_the_partial_one():
    assert rows(iterate_batches((X, Y), batch_size=2)) == [
        ([0, 10], [0, 1]),
        ([20, 30], [2, 3]),
        ([40], [4]),
    ]
    assert rows(iterate_batches(X, batch_size=4, steps=1)) == [([0, 10, 20, 30], None)]


def test_cycling_wraps_around_and_follows_an_order():
    assert rows(iterate_batches((X, Y), 2, steps=4, cycle=True)) == [
        ([0, 10], [0, 1]),
        ([20, 30], [2, 3]),
        ([40, 0], [4, 0]),
        ([10, 20], [1, 2]),
    ]
    order = [4, 2, 0, 1, 3]
    assert rows(iterate_batches((X, Y), 3, steps=2, order=order, cycle=True)) == [
        ([40, 20, 0], [4, 2, 0]),
        ([10, 30, 40], [1, 3, 4]),
    ]
    # fewer examples than a batch: every batch is the whole set
    assert rows(iterate_batches((X, Y), 8, steps=2, cycle=True)) == [
        ([0, 10, 20, 30, 40], [0, 1, 2, 3, 4])
    ] * 2


def test_iterables_give_their_own_batches_and_cycle():
    # (a list at the top is the inputs of a multi-input model; a list batch
    # from an iterable is (x, y))
    source = iter([(X[:2], Y[:2]), [X[2:], Y[2:]]])
    assert rows(iterate_batches(source, steps=3, cycle=True)) == [
        ([0, 10], [0, 1]),
        ([20, 30, 40], [2, 3, 4]),
        ([0, 10], [0, 1]),
    ]
    multi = {"a": X, "b": X + 1}
    (batch, labels), *_ = iterate_batches(multi, batch_size=2)
    assert batch["b"][:, 0].tolist() == [1, 11] and labels is None


def test_first_inputs():
    assert first_inputs(X) is not None and first_inputs(X).tolist() == X.tolist()
    assert first_inputs((X, Y)).tolist() == X.tolist()
    assert first_inputs(iter([(X[:2], Y[:2])])).tolist() == [[0], [10]]


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (None, {}, "`data` must not be None. Received: data=None"),
        (X[:0], {}, "`data` must hold at least one example"),
        (3, {}, "`data` must be arrays, an \\(x, y\\) tuple"),
        (X, {"labels": True}, "must give `\\(x, y\\)` batches with labels"),
        ([], {"steps": 2, "cycle": True}, "must hold at least one example"),
        (iter([]), {"steps": 2, "cycle": True}, "yielded no batches"),
    ],
)
def test_refusals(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        list(iterate_batches(data, **kwargs))
