"""keras_harden.privacy.audit: membership inference against a real digits
model overfit to 300 examples, held out against 300 others; LiRA with a few
shadow models, by a given `train_fn` and by the default one; the report;
the arguments it refuses."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_harden.data import load_digits
from keras_harden.privacy import membership
from keras_harden.privacy.audit import (
    _default_train_fn,
    _shadow_split,
    audit,
    resolve_from_logits,
)
from keras_harden.privacy.audit_report import AuditReport

N = 300
LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def splits():
    """`(members, non_members)`: 300 digits of the training split and 300
    of the test split, pixels in [0, 1]."""
    (x, y), (xt, yt) = load_digits()
    return (x[:N] / 255, y[:N]), (xt[:N] / 255, yt[:N])


def _train(x, y, seed, epochs=10):
    """A 256-unit ReLU MLP, Adam 1e-2, on `x` repeated 30 times per epoch
    (30 passes an epoch: Keras pays a start-up per epoch, not per pass), so
    `epochs=10` is 300 passes, to a training loss about 4e-5."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), LOGITS)
    model.fit(
        np.tile(x, (30, 1, 1, 1)),
        np.tile(y, 30),
        epochs=epochs,
        batch_size=32,
        verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def target(splits):
    (x, y), _ = splits
    return _train(x, y, seed=0)


@pytest.fixture(scope="module")
def report(target, splits):
    """Both attacks; LiRA's 4 shadows trained like the target but for 2
    epochs (60 passes) instead of 10."""
    members, non_members = splits
    return audit(
        target,
        members,
        non_members,
        attacks=["loss", "lira"],
        train_fn=lambda x, y, seed: _train(x, y, seed, epochs=2),
        shadow_models=4,
        seed=0,
    )


def test_the_loss_attack_separates_members_of_an_overfit_model(report, splits):
    # measured: AUC 0.620 on TensorFlow, 0.610 on JAX
    assert report.auc["loss"] >= 0.6
    assert report.n_members == report.n_non_members == N


def test_the_loss_scores_are_keras_s_losses(target, splits):
    # the audit's AUC is that of membership.loss_scores on the outputs, whose
    # losses are Keras's own per-example cross-entropies
    (xm, ym), (xn, yn) = splits
    x, y = np.concatenate([xm, xn]), np.concatenate([ym, yn])
    outputs = target.predict(x, verbose=0)
    scores = membership.loss_scores(outputs, y, from_logits=True)
    losses = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, outputs, from_logits=True)
    )
    np.testing.assert_allclose(-scores, losses, rtol=1e-4, atol=1e-6)
    member = np.arange(2 * N) < N
    report = audit(target, (xm, ym), (xn, yn))
    assert report.attacks == ["loss"] and report.shadow_models == 0
    assert report.auc["loss"] == roc_auc_score(member, scores)
    # Keras's float32 losses tie below about 1e-7 (measured AUC 0.616 on
    # TensorFlow); the float64 ones keep the order there (0.620)
    assert report.auc["loss"] >= roc_auc_score(member, -losses) - 0.01


def test_lira_with_four_shadows_beats_chance(report):
    # measured: AUC 0.62 (TensorFlow), TPR at 1% FPR 0.09 against the loss
    # attack's 0.013
    assert report.auc["lira"] > 0.5
    assert report.shadow_models == 4
    assert report.tpr_at_1pct["lira"] > 0.01
    assert set(report.seconds) == {"predict", "lira"}


def test_the_report_round_trip_and_plot(report, tmp_path):
    path = report.save(tmp_path / "audit.json")
    loaded = AuditReport.load(path)
    assert loaded.to_dict() == report.to_dict()
    assert loaded.to_markdown() == report.to_markdown()
    # 300 non-members: enough for 1% (3 false positives), not for 0.1%
    assert len(report.warnings) == 1 and "0.1% FPR" in report.warnings[0]
    assert "| lira (4 shadows) |" in report.to_markdown()
    report.plot(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


# -- LiRA's shadow training sets ---------------------------------------------------


def test_every_example_is_in_half_the_shadows():
    rng = np.random.default_rng(0)
    split = _shadow_split(1000, 4, rng)
    assert split.shape == (4, 1000) and split.dtype == bool
    assert (split.sum(axis=0) == 2).all()
    # each shadow gets about half the examples: 500 +- 3 standard deviations
    assert (abs(split.sum(axis=1) - 500) < 3 * np.sqrt(1000 * 0.75 / 4)).all()
    # odd counts: 2 or 3 of 5, about as often
    odd = _shadow_split(1000, 5, np.random.default_rng(1)).sum(axis=0)
    assert set(odd.tolist()) == {2, 3} and 400 < (odd == 3).sum() < 600
    np.testing.assert_array_equal(
        split, _shadow_split(1000, 4, np.random.default_rng(0))
    )


class _Recorder:
    """A `train_fn` that records what it was given and returns `model`
    untrained (every shadow then agrees with the target: LiRA scores 0)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, x, y, seed):
        self.calls.append((x.copy(), y.copy(), seed))
        return self.model


def _tiny(outputs="logits", compiled=True):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                10, activation="softmax" if outputs == "probs" else None
            ),
        ]
    )
    if compiled:
        loss = LOGITS if outputs == "logits" else "sparse_categorical_crossentropy"
        model.compile(keras.optimizers.Adam(1e-2), loss)
    return model


def test_train_fn_gets_the_halves_and_seeds_that_follow_from_seed(splits):
    members, non_members = splits
    small = (
        (members[0][:20], members[1][:20]),
        (non_members[0][:30], non_members[1][:30]),
    )
    model = _tiny()

    def run(seed):
        recorder = _Recorder(model)
        report = audit(model, *small, attacks="lira", train_fn=recorder, seed=seed)
        return recorder.calls, report

    calls, report = run(seed=3)
    assert len(calls) == 4 and report.attacks == ["lira"]
    pool = np.concatenate([small[0][0], small[1][0]]).reshape(50, -1)
    counts = np.zeros(50, int)
    for x, y, _ in calls:
        rows = [
            int(np.flatnonzero((pool == row).all(axis=1))[0])
            for row in x.reshape(len(x), -1)
        ]
        counts[rows] += 1
        np.testing.assert_array_equal(
            y, np.concatenate([small[0][1], small[1][1]])[rows]
        )
    assert (counts == 2).all()  # each example IN for 2 of the 4
    assert report.auc["lira"] == 0.5  # identical shadows: nothing to tell
    again, _ = run(seed=3)
    assert [c[2] for c in again] == [c[2] for c in calls]
    for (x1, _, _), (x2, _, _) in zip(again, calls, strict=True):
        np.testing.assert_array_equal(x1, x2)
    other, _ = run(seed=4)
    assert [c[2] for c in other] != [c[2] for c in calls]


def test_the_default_train_fn_clones_and_compiles_like_the_target(splits):
    members, non_members = splits
    small = (
        (members[0][:60], members[1][:60]),
        (non_members[0][:60], non_members[1][:60]),
    )
    model = _tiny("probs")
    model.fit(*small[0], epochs=2, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    report = audit(
        model, *small, attacks=["loss", "lira"], shadow_models=2, shadow_epochs=2
    )
    assert report.attacks == ["loss", "lira"] and report.shadow_models == 2
    assert 0 <= report.auc["lira"] <= 1
    # the target is left as it was
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)


def test_the_default_train_fn_trains_a_fresh_clone_compiled_like_the_target(splits):
    (x, y), _ = splits
    model = _tiny("probs")
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.5), "sparse_categorical_crossentropy"
    )
    model.fit(x[:50], y[:50], epochs=1, verbose=0)
    train = _default_train_fn(model, epochs=3, batch_size=16)
    shadow = train(x[:40], y[:40], 7)
    assert shadow is not model
    assert [type(layer) for layer in shadow.layers] == [
        type(layer) for layer in model.layers
    ]
    assert isinstance(shadow.optimizer, keras.optimizers.SGD)
    assert shadow.optimizer is not model.optimizer
    assert float(shadow.optimizer.learning_rate) == pytest.approx(0.05)
    assert float(shadow.optimizer.momentum) == 0.5
    assert shadow.loss == "sparse_categorical_crossentropy"
    # 3 epochs of ceil(40 / 16) = 3 batches
    assert int(shadow.optimizer.iterations) == 9
    # a fresh start, replayed by the seed
    again = train(x[:40], y[:40], 7)
    for a, b in zip(shadow.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(shadow.get_weights()[0], model.get_weights()[0])


def test_the_default_train_fn_needs_a_compiled_target(splits):
    model = _tiny(compiled=False)
    with pytest.raises(ValueError, match="not compiled.*Received: train_fn=None"):
        audit(model, *splits, attacks="lira", from_logits=True)


# -- logits or probabilities ----------------------------------------------------------


def test_from_logits_comes_from_the_compiled_loss():
    assert resolve_from_logits(_tiny("logits")) is True
    assert resolve_from_logits(_tiny("probs")) is False
    model = _tiny("probs", compiled=False)
    model.compile("adam", keras.losses.sparse_categorical_crossentropy)
    assert resolve_from_logits(model) is False
    assert resolve_from_logits(_tiny(compiled=False), from_logits=True) is True
    with pytest.raises(ValueError, match="not compiled.*Received: from_logits=None"):
        resolve_from_logits(_tiny(compiled=False))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="loss 'mse'.*Received: from_logits=None"):
        resolve_from_logits(model)


def test_probabilities_and_logits_give_the_same_audit(target, splits):
    # the target's logits and a model ending in their softmax: same scores
    probabilities = keras.Sequential([target, keras.layers.Softmax()])
    expected = audit(target, *splits).auc["loss"]
    assert audit(probabilities, *splits, from_logits=False).auc[
        "loss"
    ] == pytest.approx(expected, abs=1e-3)


def test_logits_said_to_be_probabilities_are_refused(target, splits):
    with pytest.raises(ValueError, match="not probabilities.*from_logits=False"):
        audit(target, *splits, from_logits=False)


# -- arguments ---------------------------------------------------------------------

X = np.zeros((4, 8, 8, 1), "float32")
Y = np.zeros(4, "int32")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attacks": "shadow"}, "Received: attacks='shadow'"),
        ({"attacks": []}, "Received: attacks=\\[\\]"),
        ({"members": X}, "`members` must be a tuple"),
        ({"members": (X, Y[:3])}, "y of shape \\(3,\\)"),
        ({"non_members": (X, Y + 0.5)}, "`non_members` must pair"),
        ({"non_members": (X[:0], Y[:0])}, "at least one example"),
        ({"non_members": (X[..., 0], Y)}, "inputs of one shape"),
        ({"train_fn": "fit"}, "Received: train_fn='fit'"),
        ({"shadow_models": 1}, "Received: shadow_models=1"),
        ({"shadow_epochs": 0}, "Received: shadow_epochs=0"),
        ({"seed": -1}, "Received: seed=-1"),
        ({"seed": 1.5}, "Received: seed=1.5"),
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"verbose": 2}, "Received: verbose=2"),
        ({"from_logits": "yes"}, "Received: from_logits='yes'"),
    ],
)
def test_refuses(kwargs, match):
    arguments = {"members": (X, Y), "non_members": (X, Y), **kwargs}
    with pytest.raises(ValueError, match=match):
        audit(_tiny(), **arguments)


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="class indices in \\[0, 10\\)"):
        audit(_tiny(), (X, Y + 10), (X, Y))
