"""`kh.harden`: the choice among trials, and a real unstable net that plain
training cannot train and the prescription can."""

import math

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.diagnostics.prescribe import Trial, _best

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _trial(name, loss, accuracy=None):
    return Trial(name, name, loss, not math.isfinite(loss), accuracy)


def test_best_prefers_the_simpler_trial_within_one_percent():
    # 0.995 is within 1% of the lowest (0.99 * 1.01 = 0.9999): the earlier wins.
    trials = [_trial("plain", 0.995), _trial("clip", 0.99), _trial("agc", math.inf)]
    assert _best(trials).name == "plain"
    # 0.9 beats 1.0 by 10%: the later, more invasive one is worth it.
    assert _best([_trial("plain", 1.0), _trial("clip", 0.9)]).name == "clip"
    # all diverged: the first (plain) is reported, with the reason
    assert _best([_trial("plain", math.inf), _trial("clip", math.inf)]).name == "plain"


def test_best_classifier_goes_by_accuracy_then_loss():
    # A net collapsed to one class (loss ln 10 = 2.30, accuracy 0.1) loses to
    # those still learning; within 0.02 of the best accuracy (0.555 - 0.02
    # = 0.535) the lowest loss wins.
    trials = [
        _trial("plain", math.inf),
        _trial("collapsed", 2.30, 0.10),
        _trial("learning", 7.1, 0.55),
        _trial("agc", 5.0, 0.555),
        _trial("worse", 1.0, 0.53),
    ]
    assert _best(trials).name == "agc"
    # equal accuracy, losses 4.36 and 2.40: the loss decides
    tie = [_trial("clip a", 4.36, 0.13), _trial("clip b", 2.40, 0.13)]
    assert _best(tie).name == "clip b"


def _too_large_mlp(seed):
    """8 ReLU layers with He init scaled 1.5x: SGD with momentum blows up."""
    init = keras.initializers.VarianceScaling(
        2.0 * 1.5**2, "fan_in", "normal", seed=seed
    )
    layers = [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16.0)]
    layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(64, activation="relu", kernel_initializer=init)
        for _ in range(8)
    ]
    return keras.Sequential([*layers, keras.layers.Dense(10)])


def _fit(model, optimizer, data):
    (x, y), (xt, yt) = data
    model.compile(optimizer=optimizer, loss=LOSS)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    logits = model.predict(xt, verbose=0)
    finite = all(math.isfinite(v) for v in history.history["loss"])
    return finite and np.isfinite(logits).all(), float(np.mean(logits.argmax(-1) == yt))


def test_prescription_trains_what_plain_sgd_cannot(digits):
    # not `slow`: the JAX pass runs it too (about 40 s on 2 shared cores)
    make_sgd = lambda: keras.optimizers.SGD(0.1, momentum=0.9)  # noqa: E731
    keras.utils.set_random_seed(0)
    plain_finite, plain_accuracy = _fit(_too_large_mlp(0), make_sgd(), digits)
    assert not plain_finite or plain_accuracy < 0.2  # the failure is real

    model = _too_large_mlp(0)
    before = [w.copy() for w in model.get_weights()]
    given = make_sgd()
    rx = kh.harden(model, digits[0], given, LOSS, trial_steps=20)
    assert rx.model is model and rx.choice.name != "plain"
    assert rx.trials[0].held_out_loss > 2 * rx.choice.held_out_loss
    assert not given.built  # the user's optimizer is only read
    if not rx.changes:  # only a re-initialisation may change the weights
        for a, b in zip(before, model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert isinstance(rx.optimizer, kh.optimizers.HardenedOptimizer)
    assert "Prescription:" in str(rx) and rx.choice.description in str(rx)

    finite, accuracy = _fit(model, rx.optimizer, digits)
    assert finite and accuracy > 0.6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data": np.zeros((4, 2))}, "`data` must be an `(x, y)` pair"),
        ({"optimizer": "sgd"}, "Received: optimizer='sgd'"),
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"trial_steps": 2.5}, "Received: trial_steps=2.5"),
        ({"holdout": 1.0}, "Received: holdout=1.0"),
    ],
)
def test_argument_errors(kwargs, message):
    x = np.zeros((8, 4), "float32")
    args = {
        "model": keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
        "data": (x, np.zeros(8, "int32")),
        "optimizer": keras.optimizers.SGD(0.1),
        "loss": LOSS,
        **kwargs,
    }
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        kh.harden(**args)


@pytest.mark.slow
def test_diagnose_prescribes_on_a_copy(digits):
    (x, y), _ = digits
    model = _too_large_mlp(1)
    before = [w.copy() for w in model.get_weights()]
    report = kh.diagnostics.diagnose(
        model,
        (x, y),
        loss=LOSS,
        prescribe=True,
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
    )
    assert report.verdict == "exploding"
    rx = report.prescription
    assert rx.model is not model and rx.choice.name != "plain"
    assert report.recommendations[0].startswith("Prescribed")
    assert rx.choice.description in report.recommendations[0]
    assert "### Prescription" in report.to_markdown()
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    with pytest.raises(ValueError, match="`prescribe=True` needs `data`"):
        kh.diagnostics.diagnose(model, [(x[:8], y[:8])], loss=LOSS, prescribe=True)
