"""keras_harden.robust.steps: the step maths on NumPy arrays, hand-worked."""

import numpy as np
import pytest

from keras_harden.robust import steps


def test_sign_step_per_example_sizes():
    # step sizes (0.1, 0.2) for the two rows; sign(0) = 0 does not move
    x = np.full((2, 3), 0.5)
    g = np.array([[1.0, -3.0, 0.0], [-1e-9, 2.0, 5.0]])
    np.testing.assert_allclose(
        steps.sign_step(x, g, np.array([0.1, 0.2])),
        [[0.6, 0.4, 0.5], [0.3, 0.7, 0.7]],
    )


def test_l2_step_is_the_unit_gradient_times_the_size():
    # rows (3, 4) and (0, -2) have norms 5 and 2; a zero gradient stays put
    x = np.zeros((3, 2))
    g = np.array([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0]])
    np.testing.assert_allclose(
        steps.l2_step(x, g, 0.5), [[0.3, 0.4], [0.0, -0.5], [0.0, 0.0]]
    )


def test_l2_norm_over_all_axes_but_the_first():
    a = np.zeros((2, 2, 2))
    a[0, 0, 0], a[0, 1, 1] = 3.0, 4.0  # sqrt(9 + 16) = 5
    np.testing.assert_allclose(steps.l2_norms(a), [5.0, 0.0])


def test_projections_by_hand():
    x = np.array([[0.5, 0.5]])
    # L-inf, eps 0.1: (0.9, 0.45) -> (0.6, 0.45)
    np.testing.assert_allclose(
        steps.project_linf(np.array([[0.9, 0.45]]), x, 0.1), [[0.6, 0.45]]
    )
    # L2, eps 0.1: delta (0.3, 0.4) has length 0.5, scaled by 0.2 to
    # (0.06, 0.08); a delta inside is kept
    np.testing.assert_allclose(
        steps.project_l2(np.array([[0.8, 0.9]]), x, 0.1), [[0.56, 0.58]]
    )
    np.testing.assert_allclose(
        steps.project_l2(np.array([[0.55, 0.5]]), x, 0.1), [[0.55, 0.5]]
    )


def test_project_lands_in_the_ball_and_the_range():
    rng = np.random.default_rng(0)
    x = np.clip(rng.uniform(-0.2, 1.2, size=(50, 3, 3)), 0, 1)
    far = x + rng.normal(scale=2.0, size=x.shape)
    for norm, eps in (("linf", 0.1), ("l2", 0.3)):
        out = steps.project(far, x, eps, norm, (0, 1))
        assert out.min() >= 0 and out.max() <= 1
        delta = (out - x).reshape(50, -1)
        size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
        assert np.all(size <= eps * (1 + 1e-12))


def test_clipping_to_the_range_only_shortens_an_l2_perturbation():
    # x = (0.9, 0.5), the L2 ball of radius 0.5 reaches (1.3, 0.8): the clip
    # to [0, 1] brings it to (1.0, 0.8), length sqrt(0.01 + 0.09) < 0.5
    x, far = np.array([[0.9, 0.5]]), np.array([[1.3, 0.8]])
    out = steps.project(far, x, 0.5, "l2", (0, 1))
    np.testing.assert_allclose(out, [[1.0, 0.8]])


def test_no_range_leaves_the_values():
    out = steps.project(np.array([[3.0]]), np.array([[2.5]]), 1.0, "linf", None)
    np.testing.assert_allclose(out, [[3.0]])


@pytest.mark.parametrize("on_boundary", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_points_lie_in_the_ball(norm, on_boundary):
    rng = np.random.default_rng(3)
    x = np.zeros((400, 2, 5))
    delta = (steps.random_point(x, 0.2, norm, rng, on_boundary) - x).reshape(400, -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
    assert np.all(size <= 0.2 + 1e-12)
    if on_boundary:
        np.testing.assert_allclose(size, 0.2)
    elif norm == "linf":
        # uniform on the cube: a coordinate's mean |delta| is eps / 2
        assert abs(np.abs(delta).mean() - 0.1) < 0.005
    else:
        # uniform in the 10-dim ball: P(radius <= r eps) = r^10, the median
        # radius is eps * 0.5^(1/10) = 0.1866
        assert abs(np.median(size) - 0.2 * 0.5**0.1) < 0.005


def test_random_points_are_reproducible_from_the_generator_seed():
    x = np.zeros((3, 4))
    a = steps.random_point(x, 0.1, "l2", np.random.default_rng(5))
    b = steps.random_point(x, 0.1, "l2", np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_cast_inside_repairs_the_rounding_of_float32():
    # A float64 point exactly on the boundary (x + eps) can round outward in
    # float32: float32(0.5 + 0.1) = 0.6000000238, 2.4e-8 beyond. The float64
    # comparison must hold after the cast, every entry within one float32
    # unit of the float64 point.
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(200, 8)).astype("float32")
    for norm, eps in (("linf", 0.1), ("linf", 1 / 255), ("l2", 0.3)):
        wanted = steps.project(x + rng.normal(size=x.shape), x, eps, norm, (0, 1))
        out = steps.cast_inside(wanted, x, eps, norm, (0, 1))
        assert out.dtype == np.float32
        delta = out.astype(np.float64) - x.astype(np.float64)
        if norm == "linf":
            assert np.abs(delta).max() <= eps
            # only rounding moved: within one float32 unit of the float64 point
            np.testing.assert_allclose(out, wanted, atol=1.2e-7)
        else:
            assert np.sqrt((delta**2).sum(1)).max() <= eps
            np.testing.assert_allclose(out, wanted, atol=1e-6)
        assert out.min() >= 0 and out.max() <= 1


def test_cast_inside_falls_back_to_x_when_nothing_else_fits():
    # 0.7 is far outside the ball [0.4, 0.6], not by a rounding: a few
    # one-unit nudges towards x do not get it in, so x itself is returned
    x = np.array([[0.5]], "float32")
    out = steps.cast_inside(np.array([[0.7]]), x, 0.1, "linf", (0, 1))
    np.testing.assert_array_equal(out, x)


def test_improves_keeps_the_first_success_then_the_higher_objective():
    # (new success, new objective) against (best success, best objective):
    # a success beats a failure whatever the loss; a failure never beats a
    # success; a success does not replace a success; between failures the
    # higher objective wins.
    np.testing.assert_array_equal(
        steps.improves(
            np.array([True, False, True, False, False]),
            np.array([0.0, 5.0, 9.0, 1.0, 0.2]),
            np.array([False, True, True, False, False]),
            np.array([9.0, 0.0, 2.0, 0.5, 0.3]),
        ),
        [True, False, False, True, False],
    )
