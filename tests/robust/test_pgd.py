"""keras_harden.robust.pgd on the worked linear models
(tests/robust/_models.py), on the session's backend."""

import keras
import numpy as np
import pytest

from keras_harden.robust import pgd
from keras_harden.robust.pgd import default_step_size
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


def test_default_step_is_madry():
    assert default_step_size(0.1, 20) == pytest.approx(0.0125)  # 2.5 * 0.1 / 20


@pytest.mark.parametrize("softmax", [False, True])
def test_linf_reaches_the_optimal_corner_from_a_random_start(softmax):
    # The gradient always points along d, so each step moves every
    # coordinate by 2.5 * 0.05 / 20 = 0.00625 towards x + 0.05 * sign(d):
    # from anywhere in the cube it is reached within 0.1 / 0.00625 = 16 of
    # the 20 steps. No flip at eps 0.05 (margin 0.25 - 0.225), so the point
    # kept is the one of highest loss: the corner.
    model = binary_linear(softmax)
    x_adv = pgd(model, CENTRE, [0], eps=0.05, seed=0)
    np.testing.assert_allclose(x_adv, [[0.55, 0.45, 0.55, 0.55]], atol=1e-6)


def test_l2_reaches_the_optimal_direction():
    # From x, steps of 0.00625 along d / ||d||: after 8 of them the length
    # is 0.05 = eps, and the later ones are projected back onto the same
    # point x + 0.05 * d / 2.5 = (0.52, 0.46, 0.51, 0.52).
    model = binary_linear()
    x_adv = pgd(model, CENTRE, [0], eps=0.05, norm="l2", random_start=False)
    np.testing.assert_allclose(x_adv, [[0.52, 0.46, 0.51, 0.52]], atol=1e-6)
    # From a random start, once on the sphere each step of eps / 4 along d
    # and back shrinks the part across d by about 1 / 1.25: after 40 steps
    # it is ~1e-4 of eps.
    x_adv = pgd(
        model, CENTRE, [0], eps=0.05, norm="l2", steps=40, step_size=0.0125, seed=1
    )
    delta = (x_adv - CENTRE)[0]
    cosine = delta @ D / (np.linalg.norm(delta) * D_L2)
    assert cosine > 0.999 and np.linalg.norm(delta) == pytest.approx(0.05, rel=1e-5)


@pytest.mark.parametrize("norm, dual", [("linf", D_L1), ("l2", D_L2)])
def test_a_large_enough_eps_flips_every_prediction(norm, dual):
    # x uniform in [0.4, 0.6]^4, labels the model's own predictions. An
    # example's margin |z0 - z1| = |0.5 - d . x| falls by at most eps * 4.5
    # (L-inf) or eps * 2.5 (L2), attained by the optimal step, so the
    # smallest eps that flips them all is max |margin| / ||d||_dual. Here
    # d . x lies in 0.25 +- 0.1 * 4.5, |margin| <= 0.7: eps <= 0.7 / 2.5 =
    # 0.28 moves a coordinate by at most 0.28 * 0.8 (L2) or 0.16 (L-inf),
    # so the range [0, 1] never binds. 2% above the bound every prediction
    # flips; 2% below it the example with the largest margin holds. (L2
    # starts at x: from a random start 20 steps of eps / 8 turn the
    # perturbation towards d only to within a few degrees, more than the 2%.)
    model = binary_linear()
    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(32, 4)).astype("float32")
    y = predict(model, x)
    margins = np.abs(0.5 - x.astype(np.float64) @ D)
    threshold = margins.max() / dual
    assert threshold <= 0.7 / dual
    kwargs = dict(norm=norm, random_start=norm == "linf", seed=0)
    x_adv = pgd(model, x, y, eps=1.02 * threshold, **kwargs)
    assert np.all(predict(model, x_adv) != y)
    x_adv = pgd(model, x, y, eps=0.98 * threshold, **kwargs)
    hardest = int(np.argmax(margins))
    assert predict(model, x_adv)[hardest] == y[hardest]


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 0.8)])
def test_targeted_reaches_every_target(norm, eps):
    # three_corners: from any x in [0.3, 0.7]^2 the L-inf ball of radius 0.5
    # (clipped to [0, 1]) holds (0.8, 0.2), (0.2, 0.8) and (0.2, 0.2), where
    # classes 0, 1 and 2 win; the L2 ball of radius 0.8 holds them too
    # (the farthest is sqrt(0.5^2 + 0.5^2) = 0.71 away).
    model = three_corners()
    x = np.random.default_rng(1).uniform(0.3, 0.7, size=(24, 2)).astype("float32")
    target = (predict(model, x) + 1 + np.arange(24) % 2) % 3
    x_adv = pgd(model, x, target, eps=eps, norm=norm, targeted=True, steps=40, seed=0)
    np.testing.assert_array_equal(predict(model, x_adv), target)


def test_an_example_already_wrong_is_returned_as_it_is():
    # true label 1 where the model says 0: nothing to attack
    x_adv = pgd(binary_linear(), CENTRE, [1], eps=0.05, seed=0)
    np.testing.assert_array_equal(x_adv, CENTRE)


def test_restarts_attack_only_the_unbroken_and_never_weaken():
    model = small_mlp(seed=2)
    x = np.random.default_rng(2).uniform(size=(40, 4, 4, 1)).astype("float32")
    y = predict(model, x)
    one = pgd(model, x, y, eps=0.03, steps=5, seed=0)
    three = pgd(model, x, y, eps=0.03, steps=5, restarts=3, seed=0)
    broken_one = predict(model, one) != y
    broken_three = predict(model, three) != y
    # the first run draws the same starts, so what it broke stays broken
    assert np.all(broken_three[broken_one])
    np.testing.assert_array_equal(three[broken_one], one[broken_one])
    assert broken_three.sum() >= broken_one.sum()


def test_an_int_seed_repeats_and_a_seed_generator_moves_on():
    model = small_mlp(seed=3)
    x = np.random.default_rng(3).uniform(size=(8, 4, 4, 1)).astype("float32")
    y = predict(model, x)
    kwargs = dict(eps=0.1, steps=1)
    np.testing.assert_array_equal(
        pgd(model, x, y, seed=7, **kwargs), pgd(model, x, y, seed=7, **kwargs)
    )
    generator = keras.random.SeedGenerator(7)
    first = pgd(model, x, y, seed=generator, **kwargs)
    second = pgd(model, x, y, seed=generator, **kwargs)
    assert not np.array_equal(first, second)
    # None follows keras.utils.set_random_seed
    keras.utils.set_random_seed(11)
    a = pgd(model, x, y, **kwargs)
    keras.utils.set_random_seed(11)
    np.testing.assert_array_equal(a, pgd(model, x, y, **kwargs))


def test_batches_give_the_same_attack_without_random_start():
    # Deterministic steps: the batch size changes nothing but the batching.
    # (On the linear model no gradient coordinate is near 0, where the
    # rounding of a different batch shape could flip a sign.)
    model = binary_linear()
    x = np.random.default_rng(4).uniform(0.2, 0.8, size=(10, 4)).astype("float32")
    y = predict(model, x)
    kwargs = dict(eps=0.05, steps=3, random_start=False)
    np.testing.assert_allclose(
        pgd(model, x, y, batch_size=3, **kwargs),
        pgd(model, x, y, batch_size=10, **kwargs),
        atol=1e-6,
    )


def test_restarts_need_a_random_start():
    with pytest.raises(ValueError, match="Received: restarts=2"):
        pgd(binary_linear(), CENTRE, [0], eps=0.1, restarts=2, random_start=False)
