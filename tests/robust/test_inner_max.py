"""keras_harden.robust.inner_max: the traceable inner maximisation, against a
NumPy reference with the same draws, its ball/range invariant (eagerly and
traced), and the objectives on hand-worked values."""

import math

import keras
import numpy as np
import pytest

from keras_harden._gradients import input_gradient, loss_and_input_gradients
from keras_harden.robust import inner_max
from tests.robust import _models

BACKEND = keras.backend.backend()


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _traced(function):
    """`function` compiled as a training step would be: `jax.jit` or a
    `tf.function`."""
    if BACKEND == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function)


# -- step sizes ----------------------------------------------------------------


def test_step_sizes():
    assert inner_max.default_step_size(0.1, 10) == pytest.approx(0.025)  # 2.5 eps / 10
    assert inner_max.fast_step_size(0.2) == pytest.approx(0.25)  # 1.25 eps
    # TRADES's reference: 0.007 at eps 0.031, 10 steps from 0.001 N(0, 1)
    assert inner_max.trades_step_size(0.031) == pytest.approx(0.007)
    assert inner_max.TRADES_STEPS == 10
    assert inner_max.TRADES_START_SCALE == 0.001


# -- projection and the ascent -------------------------------------------------


def test_project_linf_by_hand():
    x = np.array([[0.5, 0.95, 0.02]], "float32")
    points = np.array([[0.9, 1.2, -0.5]], "float32")
    # ball [0.4, 0.6], [0.85, 1.05], [-0.08, 0.12]; range cuts at 1 and 0
    out = _np(inner_max.project_linf(points, x, 0.1, (0, 1)))
    np.testing.assert_allclose(out, [[0.6, 1.0, 0.0]], atol=1e-7)
    free = _np(inner_max.project_linf(points, x, 0.1, None))
    np.testing.assert_allclose(free, [[0.6, 1.05, -0.08]], atol=1e-7)


def _reference_pgd(gradient_fn, x, noise, eps, step, steps, value_range):
    """The same iteration in float64 NumPy; `gradient_fn` gives NumPy."""
    x64 = x.astype(np.float64)

    def project(p):
        p = np.clip(p, x64 - eps, x64 + eps)
        return p if value_range is None else np.clip(p, *value_range)

    point = project(x64 + noise)
    for _ in range(steps):
        point = project(point + step * np.sign(gradient_fn(point.astype(x.dtype))))
    return point


def _ce_gradient(model):
    def numpy_gradient(points, labels):
        return loss_and_input_gradients(
            model,
            points,
            labels,
            lambda y, o: inner_max.cross_entropy(y, o, from_logits=True),
        )[1]

    return numpy_gradient


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize("value_range", [(0, 1), None])
def test_linf_pgd_matches_a_numpy_reference(steps, value_range):
    model = _models.small_mlp(seed=1)
    rng = np.random.default_rng(0)
    x = rng.choice([0.0, 0.03, 0.5, 0.98, 1.0], size=(8, 4, 4, 1)).astype("float32")
    labels = np.arange(8) % 5
    eps, step = 0.05, 0.02
    noise = rng.uniform(-eps, eps, size=x.shape).astype("float32")

    def gradient_fn(points):
        return input_gradient(
            model,
            points,
            labels,
            lambda y, o: inner_max.cross_entropy(y, o, from_logits=True),
        )

    out = _np(inner_max.linf_pgd(gradient_fn, x, noise, eps, step, steps, value_range))
    numpy_gradient = _ce_gradient(model)
    expected = _reference_pgd(
        lambda p: numpy_gradient(p, labels), x, noise, eps, step, steps, value_range
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32
    # inside the ball (up to the rounding of x + eps in float32) and range
    assert np.abs(out.astype(np.float64) - x).max() <= eps + 1e-7
    if value_range is not None:
        assert out.min() >= 0.0 and out.max() <= 1.0
    if steps:
        # the gradient points somewhere: every example moved
        moved = np.abs(out - x).reshape(8, -1).max(axis=1)
        assert np.all(moved > 0)


def test_linf_pgd_traced_equals_eager():
    model = _models.small_mlp(seed=2)
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 4, 4, 1)).astype("float32")
    labels = np.arange(6) % 5
    noise = rng.uniform(-0.1, 0.1, size=x.shape).astype("float32")

    def attack(x, noise):
        def gradient_fn(points):
            return input_gradient(
                model,
                points,
                labels,
                lambda y, o: inner_max.cross_entropy(y, o, from_logits=True),
            )

        return inner_max.linf_pgd(gradient_fn, x, noise, 0.1, 0.03, 4, (0, 1))

    eager = _np(attack(keras.ops.convert_to_tensor(x), noise))
    traced = _np(_traced(attack)(keras.ops.convert_to_tensor(x), noise))
    np.testing.assert_allclose(traced, eager, atol=1e-6)


def test_linf_pgd_on_the_worked_linear_model_reaches_the_corner():
    # The cross-entropy of label 0 rises along d = (1, -2, 0.5, 1) whatever
    # the point: 3 steps of 0.1 from any start in the 0.1 ball end at
    # x + 0.1 * sign(d).
    model = _models.binary_linear()
    x = _models.CENTRE

    def gradient_fn(points):
        return input_gradient(
            model,
            points,
            np.array([0]),
            lambda y, o: inner_max.cross_entropy(y, o, from_logits=True),
        )

    for noise in (np.full_like(x, -0.1), np.full_like(x, 0.07)):
        out = _np(inner_max.linf_pgd(gradient_fn, x, noise, 0.1, 0.1, 3, (0, 1)))
        np.testing.assert_allclose(out, x + 0.1 * np.sign(_models.D), atol=1e-7)


def test_a_zero_gradient_does_not_move():
    x = np.full((2, 3), 0.5, "float32")
    noise = np.array([[0.05, -0.05, 0.0], [0.0, 0.0, 0.2]], "float32")
    out = _np(inner_max.linf_pgd(keras.ops.zeros_like, x, noise, 0.1, 0.05, 3, (0, 1)))
    # only the projected start: the 0.2 draw is clipped to the ball
    np.testing.assert_allclose(out, [[0.55, 0.45, 0.5], [0.5, 0.5, 0.6]], atol=1e-7)


# -- the objectives ------------------------------------------------------------


def test_cross_entropy_by_hand():
    # logits (0, log 3): p = (1/4, 3/4)
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], "float32")
    ce = _np(inner_max.cross_entropy(np.array([1, 0]), logits, from_logits=True))
    np.testing.assert_allclose(ce, [-math.log(0.75), -math.log(0.25)], rtol=1e-6)
    probabilities = np.array([[0.25, 0.75]], "float32")
    ce = _np(inner_max.cross_entropy(np.array([1]), probabilities, from_logits=False))
    np.testing.assert_allclose(ce, [-math.log(0.75)], rtol=1e-6)


def test_kl_divergence_by_hand():
    # KL((1/2, 1/2) || (1/4, 3/4)) = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3);
    # KL(p || p) = 0
    p = np.array([[0.5, 0.5], [0.25, 0.75]], "float32")
    q = np.array([[0.25, 0.75], [0.25, 0.75]], "float32")
    kl = _np(inner_max.kl_divergence(p, q, from_logits=False))
    np.testing.assert_allclose(kl, [0.5 * math.log(4 / 3), 0.0], atol=1e-7)
    kl = _np(inner_max.kl_divergence(np.log(p), np.log(q), from_logits=True))
    np.testing.assert_allclose(kl, [0.5 * math.log(4 / 3), 0.0], atol=1e-6)


def test_kl_divergence_input_gradient_by_hand():
    # For two classes, d KL(p || q) / d (z1 - z0) of the adversarial logits
    # is q1 - p1 (q1, p1 the class-1 probabilities). On the worked linear
    # model z1 - z0 = d . x - 0.5, so the input gradient is (q1 - p1) d.
    model = _models.binary_linear()
    x = _models.CENTRE  # margin -0.25
    clean = model(x)
    x_adv = x + np.float32(0.1) * np.sign(_models.D).astype("float32")  # +0.45
    gradient = _np(
        input_gradient(
            model,
            x_adv,
            clean,
            lambda c, o: inner_max.kl_divergence(c, o, from_logits=True),
        )
    )

    def sigmoid(m):
        return 1 / (1 + math.exp(-m))

    expected = (sigmoid(0.2) - sigmoid(-0.25)) * _models.D
    np.testing.assert_allclose(gradient[0], expected, rtol=1e-5)


def test_integer_labels():
    def labels(y, n):
        return _np(inner_max.integer_labels(np.asarray(y), n)).tolist()

    assert labels([2, 0], 3) == [2, 0]
    assert labels([[2], [0]], 3) == [2, 0]
    assert labels([[0.1, 0.9], [1.0, 0.0]], 2) == [1, 0]
    with pytest.raises(ValueError, match=r"Received: y.shape=\(2, 3\)"):
        inner_max.integer_labels(np.zeros((2, 3)), 4)
