"""Golden values for the pure gradient maths (worked by hand in comments)."""

import keras
import numpy as np
import pytest

from keras_harden.optimizers import gradient_ops as go


def t(x):
    return keras.ops.convert_to_tensor(np.asarray(x, "float32"))


def n(x):
    return keras.ops.convert_to_numpy(x)


def test_global_norm_and_finite_one_pass():
    # sqrt(1 + 4 + 4) = 3; None contributes nothing.
    norm, finite = go.global_norm_and_finite([t([1.0, 2.0]), None, t([[2.0]])])
    assert float(n(norm)) == pytest.approx(3.0)
    assert bool(n(finite))
    for bad in (np.nan, np.inf, -np.inf):
        _, finite = go.global_norm_and_finite([t([1.0, bad]), t([0.0])])
        assert not bool(n(finite))


def test_global_norm_of_no_gradients_is_zero_and_finite():
    norm, finite = go.global_norm_and_finite([None])
    assert float(n(norm)) == 0.0 and bool(n(finite))


def test_clip_by_global_norm():
    # ||(3, 4, 0, 12)|| = 13 -> factor 1/13.
    clipped, new_norm = go.clip_by_global_norm([t([3.0, 4.0]), t([0.0, 12.0])], 1.0)
    np.testing.assert_allclose(n(clipped[0]), [3 / 13, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(n(clipped[1]), [0.0, 12 / 13], rtol=1e-6)
    assert float(n(new_norm)) == pytest.approx(1.0)
    # Below the limit: untouched; zero gradient: no division by zero.
    same, _ = go.clip_by_global_norm([t([0.3, 0.4])], 1.0)
    np.testing.assert_array_equal(n(same[0]), np.float32([0.3, 0.4]))
    zero, zn = go.clip_by_global_norm([t([0.0, 0.0])], 1.0)
    np.testing.assert_array_equal(n(zero[0]), [0.0, 0.0])
    assert float(n(zn)) == 0.0


def test_clip_by_norm_and_value():
    # (3, 4) has norm 5 -> (0.6, 0.8); (0.3, 0.4) has norm 0.5 -> unchanged.
    np.testing.assert_allclose(n(go.clip_by_norm(t([3.0, 4.0]), 1.0)), [0.6, 0.8])
    np.testing.assert_allclose(n(go.clip_by_norm(t([0.3, 0.4]), 1.0)), [0.3, 0.4])
    np.testing.assert_array_equal(
        n(go.clip_by_value(t([1.0, -2.0, 0.3]), 0.5)), np.float32([0.5, -0.5, 0.3])
    )


def test_unit_axes_follow_keras_layouts():
    assert go.unit_axes(0) == ()
    assert go.unit_axes(1) == (0,)  # a bias is one unit
    assert go.unit_axes(2) == (0,)  # Dense (in, out)
    assert go.unit_axes(3) == (0, 1)  # Conv1D (k, in, out), not optax's axis 0
    assert go.unit_axes(4) == (0, 1, 2)  # Conv2D (h, w, in, out)
    assert go.unit_axes(4, transposed=True) == (0, 1, 3)  # (h, w, out, in)


def test_unitwise_norm_dense_and_transposed():
    # Dense kernel (in=2, out=2): columns (3, 4) and (0, 1) -> norms 5 and 1.
    np.testing.assert_allclose(
        n(go.unitwise_norm(t([[3.0, 0.0], [4.0, 1.0]]))), [[5.0, 1.0]]
    )
    # Conv2DTranspose kernel (1, 1, out=2, in=3): unit 0 = (1, 2, 2) -> 3,
    # unit 1 = (0, 0, 4) -> 4.
    kernel = t([[[[1.0, 2.0, 2.0], [0.0, 0.0, 4.0]]]])
    norms = n(go.unitwise_norm(kernel, transposed=True))
    assert norms.shape == (1, 1, 2, 1)
    np.testing.assert_allclose(norms.ravel(), [3.0, 4.0])


def test_unitwise_clip_golden():
    # W columns: (3, 4) -> 5, (0, 0) -> max(0, eps=1e-3) = 1e-3.
    # clip_factor 0.1 -> limits 0.5 and 1e-4.
    # G columns: (0.6, 0.8) -> 1.0, scale 0.5; (0.3, 0.4) -> 0.5, scale 2e-4.
    w = t([[3.0, 0.0], [4.0, 0.0]])
    g = t([[0.6, 0.3], [0.8, 0.4]])
    out = n(go.unitwise_clip(g, w, 0.1, 1e-3))
    np.testing.assert_allclose(out, [[0.3, 6e-5], [0.4, 8e-5]], rtol=1e-5)
    # Bias (one unit): ||w|| = 5 -> limit 0.5; g = (0, 2) -> (0, 0.5).
    np.testing.assert_allclose(
        n(go.unitwise_clip(t([0.0, 2.0]), t([3.0, 4.0]), 0.1, 1e-3)), [0.0, 0.5]
    )


def test_masked_percentile_golden_and_numpy():
    # Filled part (4, 2): rank 0.1 * (2 - 1) = 0.1 -> 2 + 0.1 * (4 - 2) = 2.2.
    window = t([4.0, 2.0, 99.0])
    assert float(n(go.masked_percentile(window, 2, 10.0))) == pytest.approx(2.2)
    assert float(n(go.masked_percentile(window, 1, 50.0))) == pytest.approx(4.0)
    rng = np.random.default_rng(0)
    values = rng.random(7).astype("float32")
    for q in (1.0, 10.0, 50.0, 90.0, 100.0):
        got = float(n(go.masked_percentile(t(values), 5, q)))
        assert got == pytest.approx(np.percentile(values[:5], q), rel=1e-5)
