"""The invariant of every attack: no returned point leaves the eps ball
around its input or the value range, compared in float64, whatever the
model, the labels, the norm or the rounding. Random data on the session's
backend (the suite runs on TensorFlow and again with KERAS_BACKEND=jax)."""

import numpy as np
import pytest

from keras_harden.robust import apgd, fgsm, pgd
from tests.robust._models import predict, small_conv, small_mlp

ATTACKS = {
    "fgsm": lambda *a, **k: fgsm(*a, **{n: v for n, v in k.items() if n != "seed"}),
    "pgd": lambda *a, **k: pgd(*a, steps=5, **k),
    "pgd-restarts": lambda *a, **k: pgd(*a, steps=3, restarts=2, **k),
    "apgd": lambda *a, **k: apgd(*a, steps=6, **k),
    "apgd-dlr": lambda *a, **k: apgd(*a, steps=6, loss="dlr", **k),
}


def _sizes(x_adv, x, norm):
    delta = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    if norm == "linf":
        return np.abs(delta).max(1)
    return np.sqrt((delta**2).sum(1))


def _data(seed, n=20, shape=(4, 4, 1)):
    # uniform on [-0.3, 1.3] clipped: many entries sit exactly on 0 and 1
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(-0.3, 1.3, size=(n, *shape)), 0, 1).astype("float32")


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("linf", 1 / 255), ("l2", 0.3)])
@pytest.mark.parametrize("model_kind", ["mlp-logits", "conv-probabilities"])
def test_never_outside_the_ball_or_the_range(name, norm, eps, model_kind):
    seed = sorted(ATTACKS).index(name)
    if model_kind == "mlp-logits":
        model = small_mlp(seed=seed)
    else:
        model = small_conv(seed=seed)
    x = _data(seed)
    y = predict(model, x)
    labels = np.eye(5)[y] if seed % 2 else y  # one-hot for every other attack
    x_adv = ATTACKS[name](model, x, labels, eps, norm=norm, batch_size=8, seed=seed)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.all(np.isfinite(x_adv))
    assert _sizes(x_adv, x, norm).max() <= eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_targeted_and_other_ranges_stay_inside(name):
    # a range that is not [0, 1], bounds that are not float32 numbers, and
    # the targeted attacks (no DLR: it is untargeted only)
    if name == "apgd-dlr":
        pytest.skip("the DLR loss is untargeted")
    model = small_mlp(seed=5)
    low, high = -0.3, 0.7
    x = np.clip(_data(5) - 0.3, low, high).astype("float32")
    target = (predict(model, x) + 1) % 5
    for norm, eps in (("linf", 0.07), ("l2", 0.2)):
        x_adv = ATTACKS[name](
            model,
            x,
            target,
            eps,
            norm=norm,
            targeted=True,
            value_range=(low, high),
            seed=1,
        )
        assert _sizes(x_adv, x, norm).max() <= eps
        assert x_adv.min() >= low and x_adv.max() <= high


def test_no_range_only_the_ball():
    model = small_mlp(seed=6)
    x = np.random.default_rng(6).normal(size=(10, 4, 4, 1)).astype("float32")
    x_adv = pgd(model, x, predict(model, x), 0.5, value_range=None, seed=0)
    assert _sizes(x_adv, x, "linf").max() <= 0.5
    assert x_adv.max() > 1 or x_adv.min() < 0  # nothing clipped it to [0, 1]


def test_the_attacks_do_break_something():
    # a sanity floor, not a benchmark: at eps 0.3 on an untrained net most
    # predictions change under each attack
    model = small_mlp(seed=7)
    x = _data(7, n=32)
    y = predict(model, x)
    for name, attack in ATTACKS.items():
        x_adv = attack(model, x, y, 0.3, seed=0)
        assert np.mean(predict(model, x_adv) != y) > 0.5, name
