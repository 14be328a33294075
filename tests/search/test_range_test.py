"""The range test: the analysis by hand, and a linear model whose stable
rate is known exactly."""

import math

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.search.range_test import analyse, geometric_rates


def test_analyse_reads_the_last_update_that_lowered_the_loss():
    rates = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    # losses before each update: the updates at 0.1..0.4 lower it, 0.8 raises
    # it (lowest at step 3 -> rate[2] = 0.4 was the last stable one)
    stable, suggested, falling = analyse(rates, [5.0, 4.0, 2.0, 1.0, 3.0, math.nan])
    assert (stable, suggested, falling) == (0.4, pytest.approx(0.04), False)
    # still falling at the end of the range: the edge lies above it
    assert analyse(rates[:3], [3.0, 2.0, 1.0]) == (0.2, pytest.approx(0.02), True)
    # a centred window of 3 smooths a single noisy dip away: the means are
    # 4.5, 4, 4.33, 3.33, 2.33, 3, 4 -> lowest at step 4 -> rates[3]
    noisy = [5.0, 4.0, 3.0, 6.0, 1.0, 0.0, 8.0]
    assert analyse([1, 2, 3, 4, 5, 6, 7], noisy, smoothing=3)[0] == 4


def test_range_test_finds_the_divergence_threshold_of_a_linear_model():
    # L(w) = mean((w x - y)^2) with y = 3 x: L = a (w - 3)^2, a = mean(x^2),
    # Hessian 2a. A full-batch SGD step multiplies w - 3 by (1 - 2 a r): the
    # loss falls exactly while r < 1 / a (= 2 / the Hessian's eigenvalue).
    x = np.array([[1.0], [-1.0], [2.0], [-2.0]], np.float32)  # a = 2.5
    y = 3.0 * x
    a = float(np.mean(x**2))
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros"),
        ]
    )
    before = model.get_weights()
    # rates 0.01 * 1.5^i / (2a): 2 a r_13 = 1.946 < 2 < 2 a r_14 = 2.919
    rates = geometric_rates(0.01 / (2 * a), 0.01 * 1.5**19 / (2 * a), 20)
    assert np.allclose(rates[1:] / rates[:-1], 1.5)
    test = kh.lr_range_test(
        model,
        (x, y),
        keras.optimizers.SGD(1.0),
        "mean_squared_error",
        min_rate=float(rates[0]),
        max_rate=float(rates[-1]),
        steps=20,
        batch_size=4,
        smoothing=1,
    )
    assert test.max_stable_rate == pytest.approx(float(rates[13]), rel=1e-6)
    assert test.max_stable_rate < 1 / a <= test.rates[14]
    assert test.suggested_rate == pytest.approx(test.max_stable_rate / 10)
    assert not test.still_falling
    # the gradient at w = 0 is 2 mean(x (0 - 3x)) = -6 a = -15: norm 15
    assert test.gradient_norms[0] == pytest.approx(15.0, rel=1e-5)
    # the model itself is untouched
    assert np.array_equal(model.get_weights()[0], before[0])


def test_range_test_defaults_around_the_optimizers_rate(digits, tmp_path):
    (x, y), _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    test = kh.lr_range_test(
        model,
        (x, y),
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps=30,
    )
    # 1e-6 .. 1 in 30 steps, a constant factor 10^(6/29)
    assert test.rates[0] == pytest.approx(1e-6)
    assert np.allclose(np.diff(np.log10(test.rates)), 6 / 29)
    assert test.reference_rate == pytest.approx(1e-2)
    assert 1e-5 < test.max_stable_rate <= 1.0
    assert "largest stable rate" in str(test)
    path = test.plot(tmp_path / "range.png")
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_range_test_argument_errors():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    data = (np.ones((4, 1)), np.ones((4, 1)))
    sgd = keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="Received: steps=2"):
        kh.lr_range_test(model, data, sgd, "mse", steps=2)
    with pytest.raises(ValueError, match="`smoothing` must be odd"):
        kh.lr_range_test(model, data, sgd, "mse", smoothing=4)
    with pytest.raises(ValueError, match="min_rate=0.1, max_rate=0.01"):
        kh.lr_range_test(model, data, sgd, "mse", min_rate=0.1, max_rate=0.01)
    with pytest.raises(ValueError, match="must be a keras.optimizers.Optimizer"):
        kh.lr_range_test(model, data, "sgd", "mse")
