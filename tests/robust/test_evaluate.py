"""keras_harden.robust.evaluate on the worked linear model
(tests/robust/_models.py), where every figure is known in advance.

Five examples, all labelled class 0, at `x = (t, 0, 0, 0)`: the margin of
class 0 over class 1 is `z0 - z1 = 0.5 - d . x = 0.5 - t`. With
t = 0.41, 0.3, 0.1, -0.4 the margins are 0.09, 0.2, 0.4, 0.9; with t = 1 it
is -0.5 (misclassified to begin with). Without a value range, the best
L-inf perturbation lowers the margin by `eps * ||d||_1 = 4.5 eps`, which
FGSM and PGD both find on a linear model, so an example breaks exactly when
4.5 eps > its margin:

    eps     4.5 eps   broken (margins)        robust
    0.01    0.045     -                       4 of 5: 0.8
    0.05    0.225     0.09, 0.2               2 of 5: 0.4
    0.1     0.45      0.09, 0.2, 0.4          1 of 5: 0.2
    0.3     1.35      all                     0
"""

import keras
import numpy as np
import pytest

from keras_harden.robust.corruptions import CORRUPTIONS
from keras_harden.robust.evaluate import DEFAULT_ATTACKS, evaluate
from keras_harden.robust.fgsm import fgsm
from tests.robust._models import binary_linear, small_mlp

T = np.array([0.41, 0.3, 0.1, -0.4, 1.0])
X = np.zeros((5, 4), "float32")
X[:, 0] = T
Y = np.zeros(5, int)
EPSILONS = [0.01, 0.05, 0.1, 0.3]
EXPECTED = [0.8, 0.4, 0.2, 0.0]


@pytest.fixture(scope="module")
def linear():
    return binary_linear()


@pytest.fixture(scope="module")
def report(linear):
    return evaluate(
        linear, (X, Y), EPSILONS, attacks=["fgsm", "pgd"], value_range=None, verbose=0
    )


def test_every_figure_of_the_linear_model(report):
    assert report.clean_accuracy == pytest.approx(0.8)
    assert report.worst_case_accuracy == pytest.approx(EXPECTED)
    for name in ("fgsm", "pgd"):
        assert report.attack_accuracy[name] == pytest.approx(EXPECTED)
    # per example: the margins 0.09, 0.2, 0.4, 0.9 hold up to eps 0.01,
    # 0.01, 0.05, 0.1; the misclassified one never
    assert report.robust_examples.tolist() == [
        [True, False, False, False],
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [False, False, False, False],
    ]
    assert report.warnings == []
    assert report.large_eps is None and report.corruption_accuracy == {}


def test_eps_order_and_duplicates_do_not_matter(linear):
    report = evaluate(
        linear, (X, Y), [0.1, 0.01, 0.1], attacks=["fgsm"], value_range=None, verbose=0
    )
    assert report.epsilons == [0.01, 0.1]
    assert report.worst_case_accuracy == pytest.approx([0.8, 0.2])


def test_worst_case_is_per_example_over_attacks(linear):
    # Two weak attacks that each break one example of margin 0.2 or 0.4
    # only; apart, each leaves 3 of 5; together they leave 2 of 5.
    def breaks(index):
        def attack(model, x, y, eps):
            out = np.array(x)
            rows = np.flatnonzero(np.isclose(x[:, 0], T[index]))
            if rows.size:
                out[rows] = fgsm(model, x[rows], y[rows], eps, value_range=None)
            return out

        return attack

    report = evaluate(
        linear,
        (X, Y),
        [0.1],
        attacks={"a": breaks(1), "b": breaks(2)},
        value_range=None,
        verbose=0,
    )
    assert report.attack_accuracy == {"a": [0.6], "b": [0.6]}
    assert report.worst_case_accuracy == [pytest.approx(0.4)]


def test_an_example_broken_at_a_smaller_eps_stays_broken(linear):
    # This attack works only at eps 0.05; at 0.1 it returns x. The points it
    # found at 0.05 lie in the 0.1 ball, so they still count, and each run
    # gets only the examples this attack has not broken yet.
    sizes = []

    def only_at_005(model, x, y, eps):
        sizes.append(len(x))
        return fgsm(model, x, y, eps, value_range=None) if eps == 0.05 else x

    report = evaluate(
        linear,
        (X, Y),
        [0.05, 0.1],
        attacks={"odd": only_at_005},
        value_range=None,
        verbose=0,
    )
    assert report.attack_accuracy["odd"] == pytest.approx([0.4, 0.4])
    assert sizes == [4, 2]  # 4 correct; then the 2 unbroken at 0.05


def test_an_attack_leaving_the_ball_is_refused(linear):
    def cheat(model, x, y, eps):
        return x + 2 * eps

    with pytest.raises(ValueError, match="outside the eps ball"):
        evaluate(
            linear, (X, Y), [0.1], attacks={"cheat": cheat}, value_range=None, verbose=0
        )


def test_data_as_batches_and_max_examples(linear, report):
    batches = [(X[:2], Y[:2]), (X[2:], Y[2:])]
    again = evaluate(
        linear, batches, EPSILONS, attacks=["fgsm"], value_range=None, verbose=0
    )
    assert again.worst_case_accuracy == pytest.approx(EXPECTED)
    first = evaluate(
        linear,
        batches,
        [0.05],
        attacks=["fgsm"],
        value_range=None,
        max_examples=3,
        verbose=0,
    )
    # the first three: margins 0.09 and 0.2 break at 0.05, 0.4 holds
    assert first.clean_accuracy == 1.0 and first.worst_case_accuracy == [
        pytest.approx(1 / 3)
    ]


@pytest.mark.tf_only
def test_data_as_a_tf_dataset(linear):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(2)
    again = evaluate(
        linear, dataset, EPSILONS, attacks=["fgsm"], value_range=None, verbose=0
    )
    assert again.worst_case_accuracy == pytest.approx(EXPECTED)


@pytest.fixture(scope="module")
def mlp_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 4, 4, 1)).astype("float32")
    model = small_mlp(seed=1)
    y = np.asarray(model.predict(x, verbose=0)).argmax(-1)  # all correct
    return model, x, y


def test_the_full_default_evaluation(mlp_data):
    model, x, y = mlp_data
    report = evaluate(model, (x, y), [0.02, 0.3], severities=[1, 5], verbose=0, seed=3)
    assert list(report.attack_accuracy) == list(DEFAULT_ATTACKS)
    assert report.clean_accuracy == 1.0
    worst = np.array(report.worst_case_accuracy)
    for values in report.attack_accuracy.values():
        assert np.all(worst <= np.array(values) + 1e-12)  # the worst case is the min
    assert worst[1] <= worst[0]
    assert report.large_eps == 0.5 and report.large_eps_accuracy <= 0.1
    assert set(report.corruption_accuracy) == set(CORRUPTIONS)
    assert all(len(v) == 2 for v in report.corruption_accuracy.values())
    # an int seed replays the whole evaluation
    again = evaluate(model, (x, y), [0.02, 0.3], severities=[1, 5], verbose=0, seed=3)
    assert again.get_config() == {**report.get_config(), "seconds": again.seconds}


def test_verbose_two_prints_a_line_per_unit(linear, capsys):
    evaluate(linear, (X, Y), [0.05, 0.1], attacks=["fgsm"], value_range=None, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "[1/2] fgsm at eps 0.05: accuracy 0.400",
        "[2/2] fgsm at eps 0.1: accuracy 0.200",
    ]


class _Quantized(keras.layers.Layer):
    """Rounds its input to quarters with no gradient: `0 * x` keeps the
    input connected, so the gradient is exactly zero (masked)."""

    def call(self, x):
        return keras.ops.stop_gradient(keras.ops.round(x * 4) / 4) + 0 * x


def test_square_exposes_a_masked_gradient():
    # z0 = 4 q1 and z1 = 4 q0 with q the inputs rounded to quarters: every
    # input gradient is exactly zero, yet inside the 0.25 ball a quarter
    # step of either input changes the rounding, which flips the class of
    # most points in (0.3, 0.7)^2. Square's random search finds them.
    inputs = keras.Input((2,))
    q = _Quantized()(inputs)
    dense = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant([[0.0, 4.0], [4.0, 0.0]]),
        bias_initializer="zeros",
    )
    model = keras.Model(inputs, dense(q))
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (32, 2)).astype("float32")
    y = np.asarray(model.predict(x, verbose=0)).argmax(-1)
    report = evaluate(
        model,
        (x, y),
        [0.25],
        attacks=["fgsm", "square"],
        corruptions=(),
        verbose=0,
        seed=0,
    )
    assert report.attack_accuracy["fgsm"] == [1.0]  # sign(0) = 0: FGSM never moves
    assert report.attack_accuracy["square"][0] < 0.5
    assert any("square (gradient-free) is stronger" in w for w in report.warnings)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epsilons": []}, "`epsilons` must be a number > 0"),
        ({"epsilons": [0.1, -1]}, "epsilons"),
        ({"epsilons": 0}, "`epsilons` must be a number > 0"),
        ({"attacks": ["pgd", "cw"]}, "`attacks` must name attacks from"),
        ({"attacks": {"mine": 3}}, "must map names to callables"),
        ({"corruptions": ["fog-of-war"]}, "`corruptions` must name corruptions"),
        ({"severities": [0, 6]}, "`severities` must be a non-empty list"),
        ({"verbose": 3}, "`verbose` must be 'auto', 0, 1 or 2"),
        ({"norm": "l1"}, "`norm` must be 'linf' or 'l2'"),
        ({"max_examples": 0}, "max_examples"),
    ],
)
def test_bad_arguments(linear, kwargs, message):
    arguments = dict(model=linear, data=(X, Y), epsilons=[0.1])
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate(**arguments)


def test_inputs_outside_the_value_range_are_refused(linear):
    with pytest.raises(ValueError, match="within `value_range`"):
        evaluate(linear, (X, Y), [0.1], verbose=0)  # t = -0.4 is below 0
