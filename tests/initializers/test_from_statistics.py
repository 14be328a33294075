import keras
import numpy as np
import pytest

from keras_harden.initializers import FromStatistics
from tests.toolkit import assert_config_round_trip, assert_save_load_identical


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float64")))


def test_of_measures_per_channel_and_global_statistics():
    # Columns [1, 3] and [3, 5]: means 2 and 4, population stds 1 and 1.
    init = FromStatistics.of(np.array([[1.0, 3.0], [3.0, 5.0]]))
    assert init.mean == [2.0, 4.0] and init.stddev == [1.0, 1.0]
    # All four values 1, 3, 3, 5: mean 3, variance (4 + 0 + 0 + 4) / 4 = 2.
    init = FromStatistics.of(np.array([[1.0, 3.0], [3.0, 5.0]]), per_channel=False)
    assert init.mean == 3.0 and init.stddev == pytest.approx(2.0**0.5)
    # Rank 1 (a bias) cannot be per channel: one pair.
    assert FromStatistics.of(np.array([1.0, 3.0])).mean == 2.0


@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
def test_draw_reproduces_reference_statistics_within_sampling_error(distribution):
    rng = np.random.default_rng(0)
    means = np.linspace(-0.5, 0.5, 8)
    stds = np.linspace(0.01, 0.2, 8)
    reference = rng.normal(means, stds, size=(3, 3, 16, 8))  # a conv kernel
    init = FromStatistics.of(reference, distribution=distribution, seed=1)
    ref_flat = reference.reshape(-1, 8)
    n = 4096
    w = _np(init((n, 8)))
    # Standard error of a mean: s / sqrt(n); of a standard deviation about
    # s / sqrt(2 n) (exact for a normal; the truncated normal and the uniform
    # have lighter tails, so it is an upper bound). Allow 4 standard errors.
    np.testing.assert_allclose(
        w.mean(0), ref_flat.mean(0), atol=4 * ref_flat.std(0).max() / n**0.5
    )
    se = 4 * ref_flat.std(0) / (2 * n) ** 0.5
    assert np.all(np.abs(w.std(0) - ref_flat.std(0)) <= se)


def test_draw_uses_the_layout_last_axis_for_conv_kernels():
    init = FromStatistics(mean=[0.0, 10.0], stddev=[1.0, 0.0], seed=0)
    w = _np(init((3, 3, 4, 2)))
    assert np.all(w[..., 1] == 10.0) and abs(w[..., 0].mean()) < 1.0
    with pytest.raises(ValueError, match=r"Received: shape=\(3, 3\)"):
        init((3, 3))


def test_seeds():
    a = FromStatistics(seed=3)
    np.testing.assert_array_equal(_np(a((6, 6))), _np(a((6, 6))))
    g = FromStatistics(seed=keras.random.SeedGenerator(3))
    assert not np.allclose(_np(g((6, 6))), _np(g((6, 6))))
    u = FromStatistics()
    assert not np.allclose(_np(u((6, 6))), _np(u((6, 6))))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes(dtype):
    w = FromStatistics(mean=1.0, stddev=0.1, seed=0)((64, 32), dtype=dtype)
    assert keras.backend.standardize_dtype(w.dtype) == dtype
    assert abs(_np(w).mean() - 1.0) < 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stddev": -1.0}, "Received: stddev=-1.0"),
        ({"mean": [0.0, 1.0], "stddev": [1.0]}, r"Received: stddev=\[1.0\]"),
        ({"distribution": "cauchy"}, "Received: distribution='cauchy'"),
        ({"mean": "zero"}, "Received: mean='zero'"),
        ({"mean": float("nan")}, "Received: mean=nan"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FromStatistics(**kwargs)


def test_config_round_trip_and_keras_file(tmp_path):
    init = FromStatistics.of(np.random.default_rng(0).normal(size=(5, 3)), seed=4)
    assert set(init.get_config()) == {"mean", "stddev", "distribution", "seed"}
    revived = assert_config_round_trip(init)
    np.testing.assert_array_equal(_np(revived((5, 3))), _np(init((5, 3))))
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3, kernel_initializer=init)],
        name="from_statistics_model",
    )
    x = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    loaded = assert_save_load_identical(model, x, tmp_path)
    assert loaded.layers[0].kernel_initializer.get_config() == init.get_config()
