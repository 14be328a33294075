"""keras_harden.robust.fgsm on the worked linear model (tests/robust/_models.py),
on the session's backend."""

import numpy as np
import pytest

from keras_harden.robust import fgsm
from tests.robust._models import CENTRE, D_L1, D_L2, D, binary_linear, predict


@pytest.mark.parametrize("softmax", [False, True])
def test_the_linf_step_is_the_optimal_corner(softmax):
    # eps 0.05: x + 0.05 * sign(d) = (0.55, 0.45, 0.55, 0.55); the margin
    # 0.25 shrinks by 0.05 * 4.5 = 0.225 to 0.025, still class 0.
    model = binary_linear(softmax)
    x_adv = fgsm(model, CENTRE, [0], eps=0.05)
    np.testing.assert_allclose(x_adv, [[0.55, 0.45, 0.55, 0.55]], atol=1e-6)
    assert predict(model, x_adv).tolist() == [0]


@pytest.mark.parametrize("softmax", [False, True])
def test_the_l2_step_is_the_optimal_direction(softmax):
    # eps 0.05: x + 0.05 * d / 2.5 = x + 0.02 * (1, -2, 0.5, 1)
    #         = (0.52, 0.46, 0.51, 0.52); margin 0.25 - 0.05 * 2.5 = 0.125
    model = binary_linear(softmax)
    x_adv = fgsm(model, CENTRE, [0], eps=0.05, norm="l2")
    np.testing.assert_allclose(x_adv, [[0.52, 0.46, 0.51, 0.52]], atol=1e-6)


def test_the_label_decides_the_direction_and_one_hot_works():
    # true class 1: the step goes the other way, x - eps * sign(d)
    x_adv = fgsm(binary_linear(), CENTRE, np.array([[0.0, 1.0]]), eps=0.05)
    np.testing.assert_allclose(x_adv, [[0.45, 0.55, 0.45, 0.45]], atol=1e-6)


def test_flips_just_past_the_worked_threshold():
    # the margin 0.25 is gone at eps = 0.25 / 4.5 = 0.0556 (L-inf) and
    # 0.25 / 2.5 = 0.1 (L2): 2% below it holds, 2% above it flips
    model = binary_linear()
    for norm, threshold in (("linf", 0.25 / D_L1), ("l2", 0.25 / D_L2)):
        below = fgsm(model, CENTRE, [0], eps=0.98 * threshold, norm=norm)
        above = fgsm(model, CENTRE, [0], eps=1.02 * threshold, norm=norm)
        assert predict(model, below).tolist() == [0]
        assert predict(model, above).tolist() == [1]


def test_targeted_goes_down_the_target_loss():
    # target 1 from class 0: the same step as untargeted (towards class 1)
    x_adv = fgsm(binary_linear(), CENTRE, [1], eps=0.05, targeted=True)
    np.testing.assert_allclose(x_adv, CENTRE + 0.05 * np.sign(D), atol=1e-6)


def test_the_value_range_clips_the_step():
    # x at the top of the range: the + coordinates of sign(d) stay at 1
    x = np.ones((1, 4), "float32")
    x_adv = fgsm(binary_linear(), x, [0], eps=0.1)
    np.testing.assert_allclose(x_adv, [[1.0, 0.9, 1.0, 1.0]], atol=1e-6)


def test_eps_zero_returns_x():
    np.testing.assert_array_equal(fgsm(binary_linear(), CENTRE, [0], eps=0), CENTRE)
