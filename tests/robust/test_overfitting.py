"""`CatastrophicOverfittingGuard` and its decision `collapse_epoch`: scripted
sequences of accuracies, the PGD accuracy it logs on a worked linear model,
and a collapse forced in the middle of `fit` (on the digits, fast training
at eps up to 0.3 and steps up to 4 eps did not collapse in 20 epochs, so the
collapse is made by scrambling the weights)."""

import keras
import numpy as np
import pytest

from keras_harden.robust.adversarial_training import AdversarialTraining
from keras_harden.robust.overfitting import (
    CatastrophicOverfittingGuard,
    collapse_epoch,
)
from tests.robust import _models
from tests.toolkit import assert_config_round_trip

# -- the decision -----------------------------------------------------------------


@pytest.mark.parametrize(
    "accuracies, drop, expected",
    [
        ([], 0.2, None),
        ([0.1], 0.2, None),
        # best 0.6 at epoch 1; 0.39 is 0.21 below it
        ([0.4, 0.6, 0.39], 0.2, 2),
        # 0.41 is 0.19 below 0.6: no collapse; nor is a slow rise
        ([0.4, 0.6, 0.41, 0.42], 0.2, None),
        # two falls of 0.15 each: the previous epoch never falls by 0.2, the
        # best so far does at epoch 3 (0.6 - 0.3 = 0.3 > 0.2)
        ([0.4, 0.6, 0.45, 0.3], 0.2, 3),
        # the first collapse counts, not the later ones
        ([0.8, 0.1, 0.0], 0.5, 1),
        # drop 0: any fall below the best
        ([0.5, 0.5, 0.49], 0.0, 2),
        # Wong et al.'s pattern on CIFAR-10: PGD accuracy ~0.4 then ~0.0
        ([0.30, 0.38, 0.41, 0.43, 0.02], 0.2, 4),
    ],
)
def test_collapse_epoch(accuracies, drop, expected):
    assert collapse_epoch(accuracies, drop) == expected


# -- the callback -----------------------------------------------------------------

# The worked linear model (tests/robust/_models.py): margins z1 - z0 =
# d . x - 0.5 with ||d||_1 = 4.5. At x = 0.5 * ones the margin is -0.25
# (class 0, right for label 0): PGD at eps breaks it when eps * 4.5 > 0.25,
# i.e. eps > 0.0556.
CENTRE = np.full((4, 4), 0.5, "float32")
LABELS = np.zeros(4, int)


def _linear_guard(eps, **kwargs):
    guard = CatastrophicOverfittingGuard(CENTRE, LABELS, eps=eps, steps=5, **kwargs)
    guard.set_model(_models.binary_linear())
    return guard


def test_pgd_accuracy_on_the_worked_model():
    assert _linear_guard(0.05).pgd_accuracy() == 1.0  # margin 0.25 - 0.225 > 0
    assert _linear_guard(0.06).pgd_accuracy() == 0.0  # 0.25 - 0.27 < 0


def test_the_wrapped_classifier_is_attacked():
    model = _models.binary_linear()
    guard = CatastrophicOverfittingGuard(CENTRE, LABELS, eps=0.06, steps=5)
    guard.set_model(AdversarialTraining(model, "fast", eps=0.06))
    assert guard._classifier() is model
    assert guard.pgd_accuracy() == 0.0


class _Scramble(keras.callbacks.Callback):
    """At the end of epoch `at`, negates the model's weights: the worked
    model's margins flip sign and every example is misclassified."""

    def __init__(self, model, at):
        super().__init__()
        self.target, self.at = model, at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            self.target.set_weights([-w for w in self.target.get_weights()])


def _fit_with_collapse(restore_best_weights=True):
    model = _models.binary_linear()
    trainer = AdversarialTraining(model, "fast", eps=0.02, seed=0)
    # a zero learning rate: the weights change only by the scramble
    trainer.compile(keras.optimizers.SGD(0.0), _common_loss())
    guard = CatastrophicOverfittingGuard(
        CENTRE, LABELS, eps=0.02, steps=5, restore_best_weights=restore_best_weights
    )
    original = [w.copy() for w in model.get_weights()]
    with pytest.warns(UserWarning) as caught:
        history = trainer.fit(
            CENTRE,
            LABELS,
            epochs=6,
            verbose=0,
            callbacks=[_Scramble(model, at=2), guard],
        )
    messages = [str(w.message) for w in caught if "Catastrophic" in str(w.message)]
    return model, guard, history, original, messages


def _common_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_a_collapse_restores_the_best_epoch_and_stops():
    model, guard, history, original, messages = _fit_with_collapse()
    # epochs 0 and 1 at accuracy 1 (margin 0.25 - 0.09 at eps 0.02); the
    # scramble at the end of epoch 2 flips every margin: accuracy 0
    assert history.history["pgd_accuracy"] == [1.0, 1.0, 0.0]
    assert guard.accuracies == [1.0, 1.0, 0.0]
    assert (guard.best, guard.best_epoch, guard.stopped_epoch) == (1.0, 1, 2)
    for actual, wanted in zip(model.get_weights(), original, strict=True):
        np.testing.assert_array_equal(actual, wanted)
    assert messages == [
        "Catastrophic overfitting at epoch 3: PGD accuracy on the held batch "
        "fell to 0.000 from 1.000 at epoch 2; training stopped, epoch 2's "
        "weights restored."
    ]


def test_a_collapse_without_restoring_keeps_the_weights():
    model, guard, history, original, messages = _fit_with_collapse(False)
    assert guard.stopped_epoch == 2 and len(history.history["loss"]) == 3
    for actual, wanted in zip(model.get_weights(), original, strict=True):
        np.testing.assert_array_equal(actual, -wanted)
    assert len(messages) == 1 and "the weights left as they are" in messages[0]


def test_no_collapse_trains_every_epoch_and_logs_the_accuracy(digits):
    (x, y), _ = digits
    x, y = x[:256] / 255.0, y[:256]
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    trainer = AdversarialTraining(model, "fast", eps=0.05, seed=0)
    trainer.compile(keras.optimizers.Adam(1e-2), _common_loss())
    guard = CatastrophicOverfittingGuard(x[:64], y[:64], eps=0.05, steps=5)
    history = trainer.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[guard])
    assert guard.stopped_epoch is None
    assert len(history.history["pgd_accuracy"]) == 3
    assert history.history["pgd_accuracy"] == guard.accuracies
    # the logged value is the attack's accuracy on the held batch now
    assert guard.pgd_accuracy() == guard.accuracies[-1]
    assert guard.accuracies[-1] > guard.accuracies[0]


# -- arguments and config ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -1}, "Received: eps=-1"),
        ({"eps": 0.1, "steps": 0}, "Received: steps=0"),
        ({"eps": 0.1, "step_size": 0}, "Received: step_size=0"),
        ({"eps": 0.1, "drop": 1.5}, "Received: drop=1.5"),
        ({"eps": 0.1, "restore_best_weights": 1}, "Received: restore_best_weights=1"),
        ({"eps": 0.1, "value_range": (1, 1)}, r"Received: value_range=\(1, 1\)"),
        ({"eps": 0.1, "seed": None}, "Received: seed=None"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CatastrophicOverfittingGuard(CENTRE, LABELS, **kwargs)


def test_the_batch_must_match_its_labels():
    with pytest.raises(ValueError, match=r"Received: x.shape=\(4, 4\), y.shape=\(3,\)"):
        CatastrophicOverfittingGuard(CENTRE, LABELS[:3], eps=0.1)


def test_config_round_trip():
    guard = CatastrophicOverfittingGuard(
        CENTRE, LABELS, eps=0.1, steps=3, drop=0.3, value_range=None, seed=4
    )
    revived = assert_config_round_trip(guard)
    np.testing.assert_array_equal(revived.x, CENTRE)
    np.testing.assert_array_equal(revived.y, LABELS)
    assert sorted(guard.get_config()) == sorted(
        [
            "x",
            "y",
            "eps",
            "steps",
            "step_size",
            "drop",
            "restore_best_weights",
            "value_range",
            "from_logits",
            "seed",
            "verbose",
        ]
    )
