import math

import numpy as np
import pytest
from scipy import stats

from keras_harden.privacy import PoissonBatches
from keras_harden.privacy.poisson_batches import (
    OVERFLOW_PROBABILITY,
    default_max_batch_size,
)


def _data(n=100):
    x = np.arange(1.0, n + 1.0, dtype="float32").reshape(n, 1)  # no row is 0
    y = np.arange(1, n + 1)
    return x, y


def _same(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# -- the batches ----------------------------------------------------------------------


def test_same_seed_same_batches_in_any_order():
    x, y = _data()
    first = PoissonBatches(x, y, expected_batch_size=10, seed=7)
    second = PoissonBatches(x, y, expected_batch_size=10, seed=7)
    forward = [first[i] for i in range(len(first))]
    backward = [second[i] for i in reversed(range(len(second)))][::-1]
    for a, b in zip(forward, backward, strict=True):
        _same(a, b)
    # a batch read twice is the same batch
    _same(first[3], first[3])
    # and batches differ from one another
    assert not np.array_equal(first.indices(0), first.indices(1))


def test_different_seeds_differ():
    x, y = _data()
    a = PoissonBatches(x, y, expected_batch_size=10, seed=1)
    b = PoissonBatches(x, y, expected_batch_size=10, seed=2)
    assert any(not np.array_equal(a.indices(i), b.indices(i)) for i in range(len(a)))


def test_no_seed_draws_fresh_batches():
    x, y = _data()
    a = PoissonBatches(x, y, expected_batch_size=10)
    b = PoissonBatches(x, y, expected_batch_size=10)
    assert a.seed is None
    assert any(not np.array_equal(a.indices(i), b.indices(i)) for i in range(len(a)))


def test_mask_counts_the_drawn_rows_and_padding_is_zero():
    x, y = _data()
    batches = PoissonBatches(x, y, expected_batch_size=10, seed=3)
    for i in range(len(batches)):
        xb, yb, mask = batches[i]
        drawn = batches.indices(i)
        size = batches.max_batch_size
        assert xb.shape == (size, 1) and yb.shape == (size,) and mask.shape == (size,)
        assert xb.dtype == x.dtype and yb.dtype == y.dtype
        assert mask.dtype == np.float32
        assert int(mask.sum()) == len(drawn)
        # the first rows are the drawn examples, mask 1; then zeros, mask 0
        np.testing.assert_array_equal(mask[: len(drawn)], 1.0)
        np.testing.assert_array_equal(mask[len(drawn) :], 0.0)
        np.testing.assert_array_equal(xb[: len(drawn)], x[drawn])
        np.testing.assert_array_equal(yb[: len(drawn)], y[drawn])
        assert np.all(xb[len(drawn) :] == 0) and np.all(yb[len(drawn) :] == 0)
        # each example at most once
        assert len(np.unique(drawn)) == len(drawn)


def test_multidimensional_inputs_keep_their_shape():
    x = np.ones((50, 3, 2), "float32")
    y = np.ones((50, 4), "float32")
    xb, yb, mask = PoissonBatches(x, y, expected_batch_size=5, seed=0)[0]
    size = len(mask)
    assert xb.shape == (size, 3, 2) and yb.shape == (size, 4)


def test_mean_batch_size_is_the_expected_one():
    # 2,000 batches of n = 1000, q = 0.05: sizes Binomial(1000, 0.05), mean 50,
    # variance n q (1 - q) = 47.5; the mean of 2,000 sizes has standard error
    # sqrt(47.5 / 2000) = 0.154
    n, expected, steps = 1000, 50, 2000
    x, y = _data(n)
    batches = PoissonBatches(
        x, y, expected_batch_size=expected, steps_per_epoch=steps, seed=11
    )
    sizes = np.array([len(batches.indices(i)) for i in range(steps)])
    q = expected / n
    standard_error = math.sqrt(n * q * (1 - q) / steps)
    assert abs(sizes.mean() - expected) < 4 * standard_error
    # and the spread is the binomial's: sample variance within 20% of 47.5
    assert abs(sizes.var(ddof=1) / (n * q * (1 - q)) - 1) < 0.2
    # every example is drawn about q * steps = 100 times
    counts = np.bincount(
        np.concatenate([batches.indices(i) for i in range(steps)]), minlength=n
    )
    assert counts.sum() == sizes.sum()
    assert counts.min() > 0


def test_epochs_differ():
    x, y = _data()
    batches = PoissonBatches(x, y, expected_batch_size=10, seed=5)
    epoch0 = [batches.indices(i) for i in range(len(batches))]
    batches.on_epoch_end()
    assert batches.epoch == 1
    epoch1 = [batches.indices(i) for i in range(len(batches))]
    assert all(not np.array_equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))
    # still reproducible: a second instance at epoch 1 draws the same
    other = PoissonBatches(x, y, expected_batch_size=10, seed=5)
    other.on_epoch_end()
    for a, b in zip(epoch1, (other.indices(i) for i in range(len(other))), strict=True):
        np.testing.assert_array_equal(a, b)


def test_len_and_sampling_rate():
    x, y = _data(100)
    batches = PoissonBatches(x, y, expected_batch_size=30, seed=0)
    assert batches.sampling_rate == 0.3  # 30 / 100
    assert len(batches) == 4  # ceil(100 / 30) = ceil(3.33)
    assert batches.n_examples == 100
    assert len(PoissonBatches(x, y, expected_batch_size=25, seed=0)) == 4
    fixed = PoissonBatches(x, y, expected_batch_size=30, steps_per_epoch=9, seed=0)
    assert len(fixed) == 9
    assert len(PoissonBatches(x, y, expected_batch_size=100, seed=0)) == 1


def test_index_out_of_range():
    x, y = _data()
    batches = PoissonBatches(x, y, expected_batch_size=50, seed=0)  # 2 batches
    with pytest.raises(IndexError):
        batches[2]
    with pytest.raises(IndexError):
        batches[-1]


def test_overflow_raises_instead_of_dropping():
    # max_batch_size = expected = 10: about half the draws of Binomial(100, 0.1)
    # exceed it; seed 0's first such batch must raise, smaller ones not
    x, y = _data()
    batches = PoissonBatches(
        x, y, expected_batch_size=10, max_batch_size=10, steps_per_epoch=20, seed=0
    )
    sizes = [len(batches.indices(i)) for i in range(len(batches))]
    over = [i for i, s in enumerate(sizes) if s > 10]
    fits = [i for i, s in enumerate(sizes) if s <= 10]
    assert over and fits
    with pytest.raises(RuntimeError) as error:
        batches[over[0]]
    message = str(error.value)
    assert f"drew {sizes[over[0]]} examples for batch {over[0]}" in message
    assert "more than max_batch_size=10" in message
    assert "Pass a larger max_batch_size" in message
    xb, _, mask = batches[fits[0]]
    assert xb.shape == (10, 1) and int(mask.sum()) == sizes[fits[0]]


# -- default_max_batch_size -----------------------------------------------------------


def _least_safe_multiple_of_8(n, q):
    """By hand: the least multiple of 8, m, with P(Binomial(n, q) > m) <=
    1e-12, i.e. `binom.sf(m) <= 1e-12`; never more than n rounded up to 8."""
    m = 8
    while stats.binom.sf(m, n, q) > OVERFLOW_PROBABILITY and m < n:
        m += 8
    return m


@pytest.mark.parametrize(
    "n, q",
    [
        (1400, 256 / 1400),  # mean 256, sd 14.5
        (1000, 0.5),
        (100, 0.01),
        (5000, 0.2),
    ],
)
def test_default_max_batch_size_against_the_binomial(n, q):
    size = default_max_batch_size(n, q)
    assert size % 8 == 0
    assert stats.binom.sf(size, n, q) <= OVERFLOW_PROBABILITY
    assert size == _least_safe_multiple_of_8(n, q)


def test_default_max_batch_size_hand_worked():
    # n 1400, q 256 / 1400: the docstring's 368 = 256 + 7.7 sd. P(X > 368)
    # <= 1e-12 but P(X > 360) is not: 360 is 7.2 sd above the mean
    assert default_max_batch_size(1400, 256 / 1400) == 368
    assert stats.binom.sf(368, 1400, 256 / 1400) <= 1e-12
    assert stats.binom.sf(360, 1400, 256 / 1400) > 1e-12
    # capped at n rounded up to 8: n = 16, q = 0.5 can draw all 16
    # (P(X > 15) = 2^-16 > 1e-12), and 16 is the cap
    assert default_max_batch_size(16, 0.5) == 16
    assert default_max_batch_size(10, 0.9) == 16


@pytest.mark.parametrize(
    "n, q", [(50, 0.5), (300, 0.05), (300, 0.1), (1000, 0.9), (60000, 256 / 60000)]
)
def test_default_max_batch_size_is_the_least_multiple_of_8(n, q):
    assert default_max_batch_size(n, q) == _least_safe_multiple_of_8(n, q)


def test_default_max_batch_size_is_used():
    x, y = _data(1000)
    batches = PoissonBatches(x, y, expected_batch_size=50, seed=0)
    assert batches.max_batch_size == default_max_batch_size(1000, 0.05)
    assert batches[0][0].shape[0] == batches.max_batch_size


# -- argument checks ------------------------------------------------------------------


def test_expected_batch_size_above_n():
    x, y = _data(100)
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, y, expected_batch_size=101)
    assert str(error.value) == (
        "`expected_batch_size` must be at most the 100 examples. "
        "Received: expected_batch_size=101"
    )


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_expected_batch_size_not_a_positive_int(bad):
    x, y = _data()
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, y, expected_batch_size=bad)
    assert str(error.value) == (
        "`expected_batch_size` must be an integer >= 1. "
        f"Received: expected_batch_size={bad!r}"
    )


def test_mismatched_x_and_y():
    x, _ = _data(100)
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, np.zeros(99), expected_batch_size=10)
    assert str(error.value) == (
        "`x` and `y` must be arrays with the same number of examples (at least "
        "1). Received: x.shape=(100, 1), y.shape=(99,)"
    )
    with pytest.raises(ValueError, match="at least 1"):
        PoissonBatches(np.zeros((0, 1)), np.zeros(0), expected_batch_size=1)
    with pytest.raises(ValueError, match=r"x.shape=\(\)"):
        PoissonBatches(np.float32(1.0), np.zeros(1), expected_batch_size=1)


def test_max_batch_size_below_expected():
    x, y = _data()
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, y, expected_batch_size=10, max_batch_size=9)
    assert str(error.value) == (
        "`max_batch_size` must be an integer >= 10. Received: max_batch_size=9"
    )


def test_bad_steps_per_epoch_and_seed():
    x, y = _data()
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, y, expected_batch_size=10, steps_per_epoch=0)
    assert str(error.value) == (
        "`steps_per_epoch` must be None or an integer >= 1. Received: steps_per_epoch=0"
    )
    with pytest.raises(ValueError) as error:
        PoissonBatches(x, y, expected_batch_size=10, seed=-3)
    assert str(error.value) == (
        "`seed` must be None or an integer >= 0. Received: seed=-3"
    )


# -- tf_dataset: the same batches, read without Python a batch ----------------------


def test_tf_dataset_yields_the_batches_of_indexing_epoch_by_epoch():
    pytest.importorskip("tensorflow")
    x = np.arange(1.0, 61.0, dtype="float32").reshape(20, 3)
    y = np.arange(20) % 4
    batches = PoissonBatches(x, y, expected_batch_size=5, seed=7)
    served = list(batches.tf_dataset(epochs=2, first_epoch=3))
    assert batches.epoch == 0  # reading the dataset left the counter alone
    assert len(served) == 2 * len(batches)
    expected = []
    for epoch in (3, 4):
        batches.epoch = epoch
        expected.extend(batches[i] for i in range(len(batches)))
    for got, want in zip(served, expected, strict=True):
        _same([np.asarray(t) for t in got], want)
        assert got[1].dtype == want[1].dtype


def test_tf_dataset_starts_at_the_current_epoch():
    pytest.importorskip("tensorflow")
    x, y = _data()
    batches = PoissonBatches(x, y, expected_batch_size=10, seed=1)
    batches.on_epoch_end()
    first = next(iter(batches.tf_dataset(epochs=1)))
    _same([np.asarray(t) for t in first], batches[0])


def test_tf_dataset_stops_on_an_overflow_with_the_message():
    tf = pytest.importorskip("tensorflow")
    x, y = _data()
    batches = PoissonBatches(
        x, y, expected_batch_size=10, max_batch_size=10, steps_per_epoch=20, seed=0
    )
    with pytest.raises(tf.errors.OpError, match="Pass a larger max_batch_size"):
        list(batches.tf_dataset(epochs=1))


@pytest.mark.parametrize(
    "kwargs, named",
    [({"epochs": 0}, "epochs=0"), ({"epochs": 1, "first_epoch": -1}, "first_epoch=-1")],
)
def test_tf_dataset_bad_arguments(kwargs, named):
    x, y = _data()
    with pytest.raises(ValueError, match=named):
        PoissonBatches(x, y, expected_batch_size=10).tf_dataset(**kwargs)
