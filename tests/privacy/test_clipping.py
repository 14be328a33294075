import numpy as np
import pytest
from keras import ops

from keras_harden.privacy import clipping


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


# -- squared_norms ---------------------------------------------------------------


def test_squared_norms_sums_over_every_variable_and_axis():
    # variable 1, (batch, 2, 2):  example 0: 1 + 4 + 0 + 4 = 9
    #                             example 1: 0 + 0 + 9 + 0 = 9
    # variable 2, (batch, 3):     example 0: 4 + 0 + 16 = 20
    #                             example 1: 1 + 1 + 1 = 3
    # totals: 9 + 20 = 29 and 9 + 3 = 12
    kernel = np.array([[[1.0, -2.0], [0.0, 2.0]], [[0.0, 0.0], [-3.0, 0.0]]])
    bias = np.array([[2.0, 0.0, -4.0], [1.0, 1.0, -1.0]])
    out = _np(clipping.squared_norms([kernel, bias]))
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [29.0, 12.0], rtol=1e-6)


def test_squared_norms_of_one_variable_and_integers():
    # integers are cast to float32: 3^2 + 4^2 = 25, 0, 1 + 1 = 2
    g = np.array([[3, 4], [0, 0], [1, -1]], dtype="int32")
    np.testing.assert_allclose(_np(clipping.squared_norms([g])), [25.0, 0.0, 2.0])


def test_squared_norms_keep_non_finite_values():
    # example 0 has a NaN, example 1 an inf: they stay non-finite
    g = np.array([[np.nan, 1.0], [np.inf, 0.0], [1.0, 2.0]], "float32")
    out = _np(clipping.squared_norms([g]))
    assert np.isnan(out[0]) and np.isposinf(out[1])
    assert out[2] == 5.0


# -- clip_factors ------------------------------------------------------------------


def test_clip_factors_hand_worked():
    # norms sqrt(25) = 5, sqrt(0.25) = 0.5, sqrt(4) = 2, sqrt(1) = 1 with C = 2:
    # 5 > 2 -> 2 / 5 = 0.4; 0.5 <= 2 -> 1; 2 is not above 2 -> 1; 1 -> 1
    out = _np(clipping.clip_factors(np.array([25.0, 0.25, 4.0, 1.0]), 2.0))
    np.testing.assert_allclose(out, [0.4, 1.0, 1.0, 1.0], rtol=1e-6)


def test_clip_factors_with_weights_hand_worked():
    # factor = w min(1, C / (w ||g||)) with C = 1:
    #   ||g|| 5,   w 1   -> 1 * 1 / 5          = 0.2
    #   ||g|| 0.5, w 3   -> w ||g|| = 1.5 > 1  -> 3 * 1 / 1.5 = 2
    #                       (factor * ||g|| = 2 * 0.5 = 1 = C)
    #   ||g|| 0.5, w 0.5 -> w ||g|| = 0.25     -> 0.5
    #   ||g|| 2,   w 0   -> padding            -> 0
    norms2 = np.array([25.0, 0.25, 0.25, 4.0])
    weights = np.array([1.0, 3.0, 0.5, 0.0])
    out = _np(clipping.clip_factors(norms2, 1.0, weights))
    np.testing.assert_allclose(out, [0.2, 2.0, 0.5, 0.0], rtol=1e-6)


def test_clip_factors_zero_norm_is_one():
    # a zero gradient: no division, factor 1 (times its weight 0.5)
    np.testing.assert_allclose(_np(clipping.clip_factors(np.zeros(2), 1.0)), [1, 1])
    out = clipping.clip_factors(np.zeros(1), 1.0, np.array([0.5]))
    np.testing.assert_allclose(_np(out), [0.5])


def test_clip_factors_accept_column_weights_and_return_float32():
    # weights (batch, 1), as a mask from a data set can come: reshaped to (batch,)
    out = clipping.clip_factors(np.array([16.0, 1.0]), 1.0, np.array([[1.0], [1.0]]))
    assert ops.convert_to_numpy(out).dtype == np.float32
    np.testing.assert_allclose(_np(out), [0.25, 1.0], rtol=1e-6)


def test_nan_norm_keeps_its_weight_so_nan_reaches_the_sum():
    # a NaN norm is not "over" C: factor w (1, then 0.5), and the NaN is summed
    factors = clipping.clip_factors(np.array([np.nan, 1.0]), 1.0)
    np.testing.assert_allclose(_np(factors), [1.0, 1.0])
    weighted = clipping.clip_factors(np.array([np.nan, 1.0]), 1.0, np.array([0.5, 1]))
    np.testing.assert_allclose(_np(weighted), [0.5, 1.0])
    g = np.array([[np.nan, 0.0], [1.0, 0.0]], "float32")
    (total,) = clipping.clipped_sum([g], factors)
    assert np.isnan(_np(total)[0])


def test_inf_gradient_reaches_the_sum_as_nan_or_inf():
    # an infinite gradient must not vanish from the sum: whatever its factor,
    # the sum is non-finite for the optimizer's own non-finite check to see
    g = np.array([[np.inf, 0.0], [1.0, 0.0]], "float32")
    factors = clipping.clip_factors(clipping.squared_norms([g]), 1.0)
    (total,) = clipping.clipped_sum([g], factors)
    assert not np.isfinite(_np(total)[0])


def test_an_infinite_norm_gets_factor_zero():
    # inf > C, so the factor is C / inf = 0 (a NaN norm keeps its weight)
    factors = clipping.clip_factors(np.array([np.inf, np.nan, 1.0]), 1.0)
    np.testing.assert_array_equal(_np(factors), [0.0, 1.0, 1.0])


def test_overflowing_finite_gradient_never_exceeds_the_clip():
    # entries 1e20 are finite, but ||g||^2 = 3e40 overflows float32 to inf:
    # whatever happens, this example must not add more than C = 1 to the sum
    g = np.full((1, 3), 1e20, "float32")
    factors = clipping.clip_factors(clipping.squared_norms([g]), 1.0)
    (total,) = clipping.clipped_sum([g], factors)
    assert np.linalg.norm(_np(total)) <= 1.0 + 1e-6


def test_an_overflowing_finite_gradient_is_left_out_of_the_sum():
    # entries 1e20: ||g||^2 = 3e40 overflows float32 to inf, factor 0: the
    # example adds nothing (documented), the other example its clipped share
    g = np.array([[1e20, 1e20, 1e20], [3.0, 4.0, 0.0]], "float32")
    factors = clipping.clip_factors(clipping.squared_norms([g]), 1.0)
    (total,) = clipping.clipped_sum([g], factors)
    np.testing.assert_allclose(_np(total), [0.6, 0.8, 0.0], rtol=1e-6)


def test_weight_zero_gives_zero_even_for_non_finite_norms():
    # padding: w = 0 -> 0, whether the norm is inf (0 * inf = NaN inside) or NaN
    norms2 = np.array([np.inf, np.nan, 4.0, 0.0])
    out = _np(clipping.clip_factors(norms2, 1.0, np.zeros(4)))
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.0])


def test_factors_times_norms_never_exceed_the_clip():
    rng = np.random.default_rng(20240611)
    for _ in range(20):
        batch = 64
        # norms over many orders of magnitude, some zero, weights 0 to 3
        norms = 10.0 ** rng.uniform(-4, 4, batch)
        norms[rng.random(batch) < 0.1] = 0.0
        weights = rng.uniform(0, 3, batch)
        weights[rng.random(batch) < 0.2] = 0.0
        clip = float(10.0 ** rng.uniform(-2, 2))
        for w in (None, weights):
            factors = _np(clipping.clip_factors(norms**2, clip, w))
            assert np.all(factors >= 0)
            assert np.all(factors * norms <= clip * (1 + 1e-5))
            # and it is exactly min(w ||g||, C): clipping never shrinks more
            w_ = np.ones(batch) if w is None else w
            np.testing.assert_allclose(
                factors * norms, np.minimum(w_ * norms, clip), rtol=1e-5, atol=1e-30
            )


# -- clipped_sum -------------------------------------------------------------------


def test_clipped_sum_hand_worked():
    # kernel (batch 3, 2, 1), bias (batch 3, 1); factors 0.5, 1, 0:
    # kernel: 0.5 (2, 4) + 1 (1, -1) + 0 (7, 7) = (2, 1)
    # bias:   0.5 (6)    + 1 (3)     + 0 (9)    = (6)
    kernel = np.array([[[2.0], [4.0]], [[1.0], [-1.0]], [[7.0], [7.0]]])
    bias = np.array([[6.0], [3.0], [9.0]])
    k, b = clipping.clipped_sum([kernel, bias], np.array([0.5, 1.0, 0.0]))
    assert _np(k).shape == (2, 1) and _np(b).shape == (1,)
    np.testing.assert_allclose(_np(k), [[2.0], [1.0]])
    np.testing.assert_allclose(_np(b), [6.0])


def test_clip_then_sum_bounds_each_example():
    # two examples of norm 5 and 0.5, C = 1: the first is scaled to norm 1
    # (3, 4) / 5 = (0.6, 0.8), the second kept: (0.6 + 0.3, 0.8 + 0.4)
    g = [np.array([[3.0, 4.0], [0.3, 0.4]])]
    factors = clipping.clip_factors(clipping.squared_norms(g), 1.0)
    (total,) = clipping.clipped_sum(g, factors)
    np.testing.assert_allclose(_np(total), [0.9, 1.2], rtol=1e-6)


# -- noisy_mean --------------------------------------------------------------------


def test_noisy_mean_hand_worked():
    # (summed + stddev * draws) / normalizer, stddev = 1.5 (noise 1.5 x C 1), B = 4
    # kernel: ([2, -2] + 1.5 [2, 0]) / 4 = [5, -2] / 4 = [1.25, -0.5]
    # bias:   ([1] + 1.5 [-2]) / 4      = [-2] / 4    = [-0.5]
    summed = [np.array([2.0, -2.0]), np.array([1.0])]
    draws = [np.array([2.0, 0.0]), np.array([-2.0])]
    kernel, bias = clipping.noisy_mean(summed, draws, 1.5, 4)
    np.testing.assert_allclose(_np(kernel), [1.25, -0.5])
    np.testing.assert_allclose(_np(bias), [-0.5])
    assert ops.convert_to_numpy(kernel).dtype == np.float32


def test_noisy_mean_zero_draws_is_the_plain_mean():
    # a replica that adds no noise passes zeros: summed / B, here [3, 6] / 3
    (out,) = clipping.noisy_mean([np.array([3.0, 6.0])], [np.zeros(2)], 10.0, 3)
    np.testing.assert_allclose(_np(out), [1.0, 2.0])


def test_noisy_mean_noise_has_the_requested_stddev():
    # standard-normal draws times noise_multiplier * C = 0.8, over B = 2:
    # the mean of a zero sum has stddev 0.4
    draws = np.random.default_rng(0).standard_normal(200_000)
    (out,) = clipping.noisy_mean([np.zeros(200_000)], [draws], 0.8, 2)
    assert abs(np.std(_np(out)) - 0.4) < 0.004


def test_noisy_mean_rejects_mismatched_lists():
    with pytest.raises(ValueError):
        clipping.noisy_mean([np.zeros(2), np.zeros(1)], [np.zeros(2)], 1.0, 1)
