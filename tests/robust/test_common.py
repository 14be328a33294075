"""The checks every attack shares (keras_harden/robust/_common.py): clear
errors for bad arguments and models, labels in either form, probabilities
detected, on the session's backend."""

import keras
import numpy as np
import pytest

from keras_harden.robust import _common, apgd, fgsm, pgd
from tests.robust._models import CENTRE, binary_linear, predict, small_mlp

ATTACKS = [fgsm, pgd, apgd]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -0.1}, "Received: eps=-0.1"),
        ({"eps": float("nan")}, "Received: eps=nan"),
        ({"norm": "l3"}, "Received: norm='l3'"),
        ({"norm": np.inf}, "Received: norm=inf"),
        ({"value_range": (1, 0)}, r"Received: value_range=\(1, 0\)"),
        ({"value_range": (0.5, 0.5)}, r"Received: value_range=\(0.5, 0.5\)"),
        ({"value_range": (0, 1, 2)}, r"Received: value_range=\(0, 1, 2\)"),
        ({"from_logits": "yes"}, "Received: from_logits='yes'"),
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"targeted": 1}, "Received: targeted=1"),
    ],
)
def test_bad_arguments_are_named(attack, kwargs, message):
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        attack(binary_linear(), CENTRE, [0], **kwargs)


@pytest.mark.parametrize("attack", [pgd, apgd])
def test_a_bad_seed_is_named(attack):
    with pytest.raises(ValueError, match="Received: seed=1.5"):
        attack(binary_linear(), CENTRE, [0], eps=0.1, seed=1.5)


def test_inputs_outside_the_value_range_are_refused():
    # the usual slip: images in [0, 255] with the default range (0, 1)
    with pytest.raises(ValueError, match="Received: x from 0.0 to 255.0"):
        fgsm(binary_linear(), np.array([[0.0, 255.0, 3.0, 4.0]]), [0], eps=8)


@pytest.mark.parametrize(
    "output, shape",
    [
        (keras.layers.Dense(1), r"\(1, 1\)"),  # one unit: a regression
        (keras.layers.Reshape((2, 2)), r"\(1, 2, 2\)"),  # not (batch, classes)
    ],
)
def test_a_model_that_is_not_a_classifier(output, shape):
    model = keras.Sequential([keras.Input((4,)), output])
    with pytest.raises(ValueError, match="must be a classifier.*" + shape):
        pgd(model, CENTRE, [0], eps=0.1)


def test_a_model_with_two_outputs_or_inputs_or_none_at_all():
    inputs = keras.Input((4,))
    two_out = keras.Model(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)]
    )
    with pytest.raises(ValueError, match="must be a classifier"):
        fgsm(two_out, CENTRE, [0], eps=0.1)
    a, b = keras.Input((4,)), keras.Input((4,))
    two_in = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    with pytest.raises(ValueError, match="Received: model with 2 inputs"):
        fgsm(two_in, CENTRE, [0], eps=0.1)
    with pytest.raises(ValueError, match="must be a Keras model"):
        fgsm(lambda x: x, CENTRE, [0], eps=0.1)


@pytest.mark.parametrize(
    "y, message",
    [
        ([0, 1], r"Received: y.shape=\(2,\)"),  # two labels, one example
        ([2], "Received: y from 2 to 2"),  # class 2 of 2
        ([-1], "Received: y from -1 to -1"),
        ([0.5], "Received: y from 0.5 to 0.5"),
        (np.array(["a"]), "Received: y.dtype=<U1"),
    ],
)
def test_bad_labels_are_named(y, message):
    with pytest.raises(ValueError, match=message):
        fgsm(binary_linear(), CENTRE, y, eps=0.1)


def test_labels_as_integers_columns_or_one_hot_agree():
    model = small_mlp()
    x = np.random.default_rng(0).uniform(size=(6, 4, 4, 1)).astype("float32")
    y = predict(model, x)
    as_int = fgsm(model, x, y, eps=0.1)
    np.testing.assert_array_equal(fgsm(model, x, y[:, None], eps=0.1), as_int)
    np.testing.assert_array_equal(fgsm(model, x, np.eye(5)[y], eps=0.1), as_int)


def test_probabilities_are_detected_and_from_logits_overrides():
    x = np.random.default_rng(0).uniform(size=(6, 4, 4, 1)).astype("float32")
    logits, probabilities = small_mlp(), small_mlp(softmax=True)
    y = [0] * 6
    assert _common.Task(logits, x, y, 0.1, "linf", (0, 1), None, 8).from_logits
    task = _common.Task(probabilities, x, y, 0.1, "linf", (0, 1), None, 8)
    assert not task.from_logits
    assert task.loss_fn is _common.cross_entropy_probabilities
    forced = _common.Task(probabilities, x, y, 0.1, "linf", (0, 1), True, 8)
    assert forced.from_logits


def test_a_confident_softmax_keeps_its_gradient():
    # z = (30 x, 0): at x = 1, p1 = e^-30 = 9.4e-14 and p0 rounds to 1.0 in
    # float32, where -log p0 is flat (as is Keras's loss, clipping p0 to
    # 1 - 1e-7). Taken as -log1p(-p1) the loss keeps its gradient: the step
    # goes down x, towards class 1.
    dense = keras.layers.Dense(
        2,
        activation="softmax",
        kernel_initializer=keras.initializers.Constant([[30.0, 0.0]]),
    )
    model = keras.Sequential([keras.Input((1,)), dense])
    x_adv = fgsm(model, np.ones((1, 1), "float32"), [0], eps=0.25)
    np.testing.assert_allclose(x_adv, [[0.75]])


def test_integer_images_come_back_as_floats_inside_their_range():
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Rescaling(1 / 255), *small_mlp().layers]
    )
    x = np.random.default_rng(0).integers(0, 256, size=(6, 4, 4, 1)).astype("uint8")
    x_adv = pgd(model, x, predict(model, x), eps=8, value_range=(0, 255), seed=0)
    assert x_adv.dtype == np.float32
    assert x_adv.min() >= 0 and x_adv.max() <= 255
    assert np.abs(x_adv - x.astype(np.float64)).max() <= 8


def test_the_model_is_left_untouched():
    model = small_mlp()
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).uniform(size=(6, 4, 4, 1)).astype("float32")
    apgd(model, x, predict(model, x), eps=0.1, steps=3, seed=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
