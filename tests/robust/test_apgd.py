"""keras_harden.robust.apgd: the schedule and the halving rule by hand, the
attack on the worked linear models (tests/robust/_models.py), on the
session's backend."""

import keras
import numpy as np
import pytest

from keras_harden.robust import apgd
from keras_harden.robust.apgd import checkpoints, halve
from tests.robust._models import (
    CENTRE,
    D_L1,
    D_L2,
    D,
    binary_linear,
    predict,
    small_mlp,
    three_corners,
)


def test_checkpoints_are_the_papers():
    # Croce and Hein: p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99,
    # the interval shrinking by 0.03 from 0.22 down to 0.06
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # 1000 steps: intervals 220, 190, 160, 130, 100, 70, 60, 60
    assert checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    # tiny runs: every interval is at least one step
    assert checkpoints(1) == [1]
    assert checkpoints(5) == [1, 2, 3, 4, 5]


def test_halving_conditions_by_hand():
    # 4 steps since the last checkpoint; rho = 0.75 halves at <= 3 rises
    history = np.array(
        [
            [1.0, 1.0, 1.0],
            [2.0, 2.0, 0.5],
            [3.0, 1.5, 0.6],
            [4.0, 2.5, 0.7],
            [5.0, 3.0, 0.8],
        ]
    )
    # rises: 4, 3, 3 -> condition 1 halves the last two
    halved_last = np.array([False, True, True])
    improved = np.array([1.0, 1.0, 1.0]), np.array([5.0, 3.0, 1.0])
    assert halve(history, 0.75, halved_last, *improved).tolist() == [False, True, True]
    # condition 2: not halved last time and the best did not improve
    stalled = np.array([5.0, 3.0, 1.0]), np.array([5.0, 3.0, 1.0])
    assert halve(history, 0.75, halved_last, *stalled).tolist() == [True, True, True]
    # ... but not twice in a row on that ground alone
    assert halve(history, 0.75, np.ones(3, bool), *stalled).tolist() == [
        False,
        True,
        True,
    ]


def test_linf_finds_the_optimal_corner():
    # The first step, 2 * eps * sign(d) from a point of the boundary, lands
    # beyond the corner x + eps * sign(d) and is projected onto it; every
    # later step and the momentum keep it there.
    model = binary_linear()
    x_adv = apgd(model, CENTRE, [0], eps=0.05, steps=10, seed=0)
    np.testing.assert_allclose(x_adv, [[0.55, 0.45, 0.55, 0.55]], atol=1e-6)


def test_l2_finds_the_optimal_direction():
    # the optimum x + 0.05 * d / 2.5 = (0.52, 0.46, 0.51, 0.52); the search
    # settles within ~1e-5 of it (float32 losses stop telling points apart)
    model = binary_linear(softmax=True)
    x_adv = apgd(model, CENTRE, [0], eps=0.05, norm="l2", steps=20, seed=0)
    np.testing.assert_allclose(x_adv, [[0.52, 0.46, 0.51, 0.52]], atol=1e-4)


@pytest.mark.parametrize("norm, dual", [("linf", D_L1), ("l2", D_L2)])
def test_a_large_enough_eps_flips_every_prediction(norm, dual):
    # as for PGD (tests/robust/test_pgd.py): the smallest eps flipping all
    # is max |0.5 - d . x| / ||d||_dual; 2% above it every prediction flips
    model = binary_linear()
    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(32, 4)).astype("float32")
    y = predict(model, x)
    threshold = np.abs(0.5 - x.astype(np.float64) @ D).max() / dual
    x_adv = apgd(model, x, y, eps=1.02 * threshold, norm=norm, steps=20, seed=0)
    assert np.all(predict(model, x_adv) != y)


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 0.8)])
def test_targeted_reaches_every_target(norm, eps):
    # three_corners: each class wins somewhere in each ball (see test_pgd)
    model = three_corners()
    x = np.random.default_rng(1).uniform(0.3, 0.7, size=(24, 2)).astype("float32")
    target = (predict(model, x) + 1 + np.arange(24) % 2) % 3
    x_adv = apgd(model, x, target, eps=eps, norm=norm, targeted=True, steps=20, seed=0)
    np.testing.assert_array_equal(predict(model, x_adv), target)


def test_dlr_breaks_every_example_of_three_corners():
    # untargeted: another class wins somewhere in each ball
    model = three_corners()
    x = np.random.default_rng(2).uniform(0.3, 0.7, size=(24, 2)).astype("float32")
    y = predict(model, x)
    x_adv = apgd(model, x, y, eps=0.5, loss="dlr", steps=20, seed=0)
    assert np.all(predict(model, x_adv) != y)


def test_an_int_seed_repeats_and_a_seed_generator_moves_on():
    model = small_mlp(seed=3)
    x = np.random.default_rng(3).uniform(size=(8, 4, 4, 1)).astype("float32")
    y = predict(model, x)
    kwargs = dict(eps=0.1, steps=2)
    np.testing.assert_array_equal(
        apgd(model, x, y, seed=5, **kwargs), apgd(model, x, y, seed=5, **kwargs)
    )
    generator = keras.random.SeedGenerator(5)
    first = apgd(model, x, y, seed=generator, **kwargs)
    assert not np.array_equal(first, apgd(model, x, y, seed=generator, **kwargs))


def test_argument_errors():
    model = binary_linear()
    with pytest.raises(ValueError, match="Received: loss='cw'"):
        apgd(model, CENTRE, [0], eps=0.1, loss="cw")
    with pytest.raises(ValueError, match="Received: num_classes=2"):
        apgd(model, CENTRE, [0], eps=0.1, loss="dlr")
    with pytest.raises(ValueError, match="Received: loss='dlr', targeted=True"):
        apgd(three_corners(), np.full((1, 2), 0.5), [0], 0.1, loss="dlr", targeted=True)
    with pytest.raises(ValueError, match="Received: rho=1"):
        apgd(model, CENTRE, [0], eps=0.1, rho=1)
    with pytest.raises(ValueError, match="Received: alpha=0"):
        apgd(model, CENTRE, [0], eps=0.1, alpha=0)
    with pytest.raises(ValueError, match="Received: steps=0"):
        apgd(model, CENTRE, [0], eps=0.1, steps=0)
