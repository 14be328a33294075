"""`AdversarialTraining` on a worked linear model (one SGD step against a
float64 NumPy reference, under every setting a user keeps: XLA, a
keras_harden optimizer wrapper, mixed precision, `tf.distribute`), its
argument checks, serialization and the Keras model methods, and a digits
run where PGD training beats standard training under attack.

The worked case is `tests/robust/_models.binary_linear`: logits `z = W x +
b`, `z1 - z0 = d . x - 0.5` with `d = (1, -2, 0.5, 1)`. For label 0 the
cross-entropy's input gradient is `sigmoid(z1 - z0) * d`, for label 1 minus
that: always along `+-d`, so from any start in the ball `steps` sign steps
whose total length reaches `2 eps` end at the corner `x +- eps * sign(d)`,
whatever the random start. PGD with 2 steps of `1.25 eps` (the default step
`2.5 eps / steps`) gets there (`|start| <= eps`, `-eps + 2.5 eps > eps`).
TRADES ascends `KL(p(x) || p(x_adv))`, whose input gradient is `(q1 - p1) *
d` (`p1`, `q1` the class-1 probabilities): the first step goes to whichever
side the 0.001 start fell on and the divergence then grows that way, so its
10 steps of `0.226 eps` (2.26 eps in all) end at one of the two corners of
each example.
"""

import itertools
import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_harden.robust import pgd as pgd_attack
from keras_harden.robust.adversarial_training import (
    AdversarialTraining,
    _from_logits_of,
)
from tests.robust import _models
from tests.toolkit import assert_config_round_trip

BACKEND = keras.backend.backend()

# Two examples inside (0, 1) by more than eps, both classified right:
# z1 - z0 = d . x - 0.5 is 0.25 - 0.5 = -0.25 (class 0, label 0) and
# 0.6 - 0.8 + 0.25 + 0.6 - 0.5 = 0.15 (class 1, label 1). At their corners
# the margin moves by eps * ||d||_1 = 0.45 against the label: 0.2 and -0.3,
# both misclassified.
X = np.array([[0.5, 0.5, 0.5, 0.5], [0.6, 0.4, 0.5, 0.6]], "float32")
Y = np.array([0, 1])
EPS = 0.1
LR = 0.5
SIGN_D = np.sign(_models.D)  # (+1, -1, +1, +1)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- the float64 reference -------------------------------------------------------


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _params():
    return np.stack([_models.W0, _models.W1], 1), _models.B.copy()


def _logits(params, x):
    kernel, bias = params
    return x.astype(np.float64) @ kernel + bias


def _cross_entropy(params, x, y):
    return -_log_softmax(_logits(params, x))[np.arange(len(y)), y]


def _kl(params, x, x_adv):
    log_p = _log_softmax(_logits(params, x))
    log_q = _log_softmax(_logits(params, x_adv))
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def _gradient(loss, params, h=1e-6):
    """Central differences of `loss(params)` in float64 (error ~1e-10 on
    these smooth losses)."""
    grads = []
    for i, p in enumerate(params):
        g = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            up = [q.copy() for q in params]
            down = [q.copy() for q in params]
            up[i][index] += h
            down[i][index] -= h
            g[index] = (loss(up) - loss(down)) / (2 * h)
        grads.append(g)
    return grads


def _corners(signs):
    """The corner `x + s_i * eps * sign(d)` of each example, in float32 as
    the model computes it (then widened)."""
    signs = np.asarray(signs, np.float32)[:, None]
    return (X + np.float32(EPS) * signs * SIGN_D.astype(np.float32)).astype(np.float64)


# label 0 climbs along +d, label 1 along -d
PGD_CORNERS = _corners([1, -1])


def _pgd_step(lr=LR, clip=None):
    """Parameters after one SGD step on the mean cross-entropy at the PGD
    corners (the global norm of the gradient clipped to `clip`)."""
    params = _params()

    def loss(p):
        return _cross_entropy(p, PGD_CORNERS, Y).mean()

    grads = _gradient(loss, params)
    if clip is not None:
        total = np.sqrt(sum((g**2).sum() for g in grads))
        grads = [g * min(1.0, clip / total) for g in grads]
    return [p - lr * g for p, g in zip(params, grads, strict=True)], loss(params)


def _trades_step(signs, beta):
    params = _params()
    corners = _corners(signs)

    def loss(p):
        natural = _cross_entropy(p, X, Y).mean()
        return natural + beta * _kl(p, X, corners).mean()

    grads = _gradient(loss, params)
    return [p - LR * g for p, g in zip(params, grads, strict=True)]


def _weights(model):
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]


def _trainer(method="pgd", optimizer=None, jit_compile="auto", **kwargs):
    kwargs.setdefault("steps", 2 if method == "pgd" else None)
    model = _models.binary_linear()
    trainer = AdversarialTraining(model, method, eps=EPS, seed=0, **kwargs)
    trainer.compile(
        optimizer or keras.optimizers.SGD(LR),
        LOSS,
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return trainer


# -- one training step against the reference -----------------------------------


def _check_pgd_step(trainer, atol=1e-5, clip=None):
    logs = trainer.train_on_batch(X, Y, return_dict=True)
    expected, loss = _pgd_step(clip=clip)
    for actual, wanted in zip(_weights(trainer.model), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, atol=atol)
    # the loss is the adversarial one; the compiled metric is clean (both
    # right at x), the adversarial accuracy is at the corners (both wrong)
    assert logs["loss"] == pytest.approx(loss, abs=atol)
    assert logs["accuracy"] == pytest.approx(1.0)
    assert logs["adversarial_accuracy"] == pytest.approx(0.0)


def test_pgd_step_is_the_gradient_at_the_corners():
    _check_pgd_step(_trainer("pgd"))


def test_pgd_step_run_eagerly():
    _check_pgd_step(_trainer("pgd", jit_compile=False))
    trainer = _trainer("pgd")
    trainer.run_eagerly = True
    _check_pgd_step(trainer)


def test_pgd_step_under_xla():
    _check_pgd_step(_trainer("pgd", jit_compile=True))


def test_pgd_step_through_a_keras_harden_optimizer_wrapper():
    from keras_harden.optimizers import GradientClipping

    optimizer = GradientClipping(keras.optimizers.SGD(LR), global_clipnorm=0.1)
    _check_pgd_step(_trainer("pgd", optimizer=optimizer), clip=0.1)


def test_fast_with_a_step_of_two_eps_reaches_the_corner():
    # one step of 2.5 eps from any start in the ball reaches the corner
    _check_pgd_step(_trainer("fast", step_size=2.5 * EPS))


def _two_replicas(tf):
    """Two CPU replicas that reduce through one device, not collective ops:
    TensorFlow keys collective ops by device set and a counter that every
    new strategy restarts, so collectives of other shapes here would clash
    with a later strategy test in the same process ("Shape mismatch in the
    collective instance")."""
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


@pytest.mark.tf_only
def test_pgd_step_under_mirrored_strategy():
    # Two replicas of one example each: the corners do not depend on the
    # random starts, so the summed step is the single-device step.
    import tensorflow as tf

    strategy = _two_replicas(tf)
    with strategy.scope():
        trainer = _trainer("pgd")
    assert strategy.num_replicas_in_sync == 2
    _check_pgd_step(trainer)


@pytest.mark.tf_only
def test_pgd_step_under_mirrored_strategy_trades():
    import tensorflow as tf

    strategy = _two_replicas(tf)
    with strategy.scope():
        trainer = _trainer("trades", beta=2.0)
    _check_trades_step(trainer, beta=2.0)


@pytest.mark.tf_only
def test_pgd_step_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    trainer = _trainer("pgd")
    assert trainer.model.layers[0].compute_dtype == "float16"
    # float16 logits: about 3 decimal digits
    _check_pgd_step(trainer, atol=3e-3)


def _check_trades_step(trainer, beta):
    trainer.train_on_batch(X, Y)
    actual = _weights(trainer.model)
    errors = {}
    for signs in itertools.product([1, -1], repeat=2):
        expected = _trades_step(signs, beta)
        errors[signs] = max(
            float(np.abs(a - e).max()) for a, e in zip(actual, expected, strict=True)
        )
    assert min(errors.values()) < 1e-5, errors
    if beta:  # the corners' reference steps differ: a match picks one of them
        assert sorted(errors.values())[1] > 1e-3, errors


@pytest.mark.parametrize("beta", [0.0, 6.0])
def test_trades_step_is_clean_loss_plus_beta_kl(beta):
    _check_trades_step(_trainer("trades", beta=beta), beta)


def test_sample_weight_weights_the_adversarial_loss():
    # Weights (1, 0): the mean over the batch of w * CE, i.e. half of
    # example 0's cross-entropy at its corner.
    trainer = _trainer("pgd")
    trainer.train_on_batch(X, Y, sample_weight=np.array([1.0, 0.0]))
    params = _params()

    def loss(p):
        return _cross_entropy(p, PGD_CORNERS, Y)[0] / 2

    grads = _gradient(loss, params)
    for actual, p, g in zip(_weights(trainer.model), params, grads, strict=True):
        np.testing.assert_allclose(actual, p - LR * g, atol=1e-5)


def test_one_hot_labels_and_probability_outputs():
    # The same step with one-hot targets and a softmax model compiled with
    # categorical cross-entropy by name (from_logits False: probabilities).
    model = _models.binary_linear(softmax=True)
    trainer = AdversarialTraining(model, "pgd", eps=EPS, steps=2, seed=0)
    trainer.compile(keras.optimizers.SGD(LR), "categorical_crossentropy")
    trainer.train_on_batch(X, np.eye(2)[Y])
    expected, _ = _pgd_step()
    for actual, wanted in zip(_weights(model), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


def test_evaluate_is_clean():
    trainer = _trainer("pgd")
    logs = trainer.evaluate(X, Y, return_dict=True, verbose=0)
    clean = _cross_entropy(_params(), X, Y).mean()
    assert logs["loss"] == pytest.approx(clean, abs=1e-6)
    assert logs["accuracy"] == 1.0
    assert "adversarial_accuracy" not in logs


def test_adversarial_examples_are_the_corners_and_stay_inside():
    trainer = _trainer("pgd")
    x_adv = keras.ops.convert_to_numpy(trainer.adversarial_examples(X, Y))
    np.testing.assert_allclose(x_adv, PGD_CORNERS, atol=1e-7)
    # a random conv net at eps 0.05, inputs at the range's edges
    model = _models.small_conv(softmax=False)
    trainer = AdversarialTraining(model, "trades", eps=0.05, steps=3, seed=1)
    trainer.compile("sgd", LOSS)
    x = np.random.default_rng(0).choice([0.0, 0.02, 0.5, 1.0], (16, 4, 4, 1))
    x = x.astype("float32")
    for method in ("pgd", "trades", "fast"):
        trainer.method = method
        x_adv = keras.ops.convert_to_numpy(
            trainer.adversarial_examples(x, np.arange(16) % 5)
        ).astype(np.float64)
        assert np.abs(x_adv - x).max() <= 0.05 + 1e-7
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert np.abs(x_adv - x).max() > 0.04  # it moved


def test_the_seed_fixes_the_random_starts():
    # fast with a short step stays off the corners: its point depends on
    # the start. Same seed, same points; the next draw differs.
    def draws(seed):
        model = _models.binary_linear()
        trainer = AdversarialTraining(
            model, "fast", eps=EPS, step_size=0.01, seed=seed, from_logits=True
        )
        return [
            keras.ops.convert_to_numpy(trainer.adversarial_examples(X, Y))
            for _ in range(2)
        ]

    first, second = draws(3)
    again, _ = draws(3)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - second).max() > 1e-3


# -- from_logits ---------------------------------------------------------------


def test_from_logits_comes_from_the_compiled_loss():
    assert _from_logits_of(keras.losses.SparseCategoricalCrossentropy(True)) is True
    assert _from_logits_of(keras.losses.CategoricalCrossentropy()) is False
    assert _from_logits_of("sparse_categorical_crossentropy") is False
    assert _from_logits_of(keras.losses.sparse_categorical_crossentropy) is False
    assert _from_logits_of(lambda y, p: p) is None
    assert _from_logits_of(keras.losses.MeanSquaredError()) is None


def test_an_unreadable_loss_needs_from_logits():
    def custom(y, outputs):
        return keras.losses.sparse_categorical_crossentropy(
            y, outputs, from_logits=True
        )

    trainer = AdversarialTraining(_models.binary_linear(), eps=EPS, steps=2)
    trainer.compile(keras.optimizers.SGD(LR), custom)
    with pytest.raises(ValueError, match="pass `from_logits`"):
        trainer.train_on_batch(X, Y)
    trainer = AdversarialTraining(
        _models.binary_linear(), eps=EPS, steps=2, from_logits=True
    )
    trainer.compile(keras.optimizers.SGD(LR), custom)
    trainer.train_on_batch(X, Y)
    expected, _ = _pgd_step()
    for actual, wanted in zip(_weights(trainer.model), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


def test_from_logits_contradicting_the_loss_is_refused():
    trainer = AdversarialTraining(
        _models.binary_linear(), eps=EPS, steps=2, from_logits=False
    )
    trainer.compile(keras.optimizers.SGD(LR), LOSS)
    with pytest.raises(ValueError, match="Received: from_logits=False"):
        trainer.train_on_batch(X, Y)


def test_compiling_without_a_loss_is_refused():
    trainer = AdversarialTraining(_models.binary_linear(), eps=EPS, from_logits=True)
    trainer.compile(keras.optimizers.SGD(LR))
    with pytest.raises(ValueError, match="Received: loss=None"):
        trainer.train_on_batch(X, Y)


# -- arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -1}, "Received: eps=-1"),
        ({"eps": 0}, "Received: eps=0"),
        ({"eps": True}, "Received: eps=True"),
        ({"eps": 0.1, "method": "free"}, "Received: method='free'"),
        ({"eps": 0.1, "steps": 0}, "Received: steps=0"),
        ({"eps": 0.1, "method": "fast", "steps": 3}, "Received: steps=3"),
        ({"eps": 0.1, "step_size": 0}, "Received: step_size=0"),
        ({"eps": 0.1, "beta": -1}, "Received: beta=-1"),
        ({"eps": 0.1, "value_range": (1, 0)}, r"Received: value_range=\(1, 0\)"),
        ({"eps": 0.1, "from_logits": "yes"}, "Received: from_logits='yes'"),
        ({"eps": 0.1, "seed": -1}, "Received: seed=-1"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialTraining(_models.binary_linear(), **kwargs)


def test_model_must_be_a_keras_model():
    with pytest.raises(ValueError, match="Received: model="):
        AdversarialTraining(keras.layers.Dense(2), eps=0.1)
    inner = AdversarialTraining(_models.binary_linear(), eps=0.1)
    with pytest.raises(ValueError, match="not an AdversarialTraining"):
        AdversarialTraining(inner, eps=0.1)


def test_defaults_of_each_method():
    model = _models.binary_linear()
    pgd = AdversarialTraining(model, "pgd", eps=0.2)
    assert (pgd.attack_steps, pgd.attack_step_size) == (10, pytest.approx(0.05))
    # TRADES's reference: 0.007 at eps 0.031, 10 steps; 0.2 * 0.007 / 0.031
    trades = AdversarialTraining(model, "trades", eps=0.2)
    assert (trades.attack_steps, trades.attack_step_size) == (
        10,
        pytest.approx(0.2 * 0.007 / 0.031),
    )
    # 5 steps cover the same 2.26 eps: twice the step
    trades = AdversarialTraining(model, "trades", eps=0.2, steps=5)
    assert trades.attack_step_size == pytest.approx(0.4 * 0.007 / 0.031)
    fast = AdversarialTraining(model, "fast", eps=0.2)
    assert (fast.attack_steps, fast.attack_step_size) == (1, pytest.approx(0.25))
    assert AdversarialTraining(model, eps=0.2, steps=4).attack_step_size == 0.125


# -- serialization and the Keras model methods ---------------------------------


def test_config_is_the_constructor_arguments():
    trainer = AdversarialTraining(
        _models.binary_linear(),
        "trades",
        eps=0.3,
        steps=4,
        step_size=0.1,
        beta=2.0,
        value_range=(0, 255),
        from_logits=True,
        seed=7,
        name="robust",
    )
    config = trainer.get_config()
    assert sorted(config) == sorted(
        [
            "name",
            "model",
            "method",
            "eps",
            "steps",
            "step_size",
            "beta",
            "value_range",
            "from_logits",
            "seed",
        ]
    )
    revived = assert_config_round_trip(trainer)
    assert revived.value_range == (0.0, 255.0)
    assert revived.model.get_config() == trainer.model.get_config()


def test_wrapper_saves_and_loads_with_its_optimizer_state(tmp_path):
    trainer = _trainer("pgd", optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(X, Y, epochs=2, verbose=0)
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AdversarialTraining)

    def as_json(config):  # the saved config has lists where tuples were
        return json.loads(json.dumps(config))

    assert as_json(loaded.get_config()) == as_json(trainer.get_config())
    for a, b in zip(_weights(loaded), _weights(trainer), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations) == int(trainer.optimizer.iterations) == 2
    for a, b in zip(
        loaded.optimizer.variables, trainer.optimizer.variables, strict=True
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )
    # both continue alike (the PGD corners do not depend on the starts)
    trainer.train_on_batch(X, Y)
    loaded.train_on_batch(X, Y)
    for a, b in zip(_weights(loaded), _weights(trainer), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_inner_model_saves_as_a_plain_keras_model(tmp_path):
    trainer = _trainer("pgd")
    trainer.train_on_batch(X, Y)
    path = tmp_path / "model.keras"
    trainer.model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "keras_harden" not in config and "AdversarialTraining" not in config
    json.loads(config)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is keras.Sequential
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), trainer.model.predict(X, verbose=0), atol=1e-6
    )
    expected, _ = _pgd_step()
    for actual, wanted in zip(_weights(loaded), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, atol=1e-5)


def test_keras_model_methods_work_on_the_wrapper(tmp_path):
    trainer = _trainer("pgd")
    model = trainer.model
    np.testing.assert_allclose(
        trainer.predict(X, verbose=0), model.predict(X, verbose=0), atol=0
    )
    np.testing.assert_allclose(
        trainer.predict_on_batch(X), _logits(_params(), X), atol=1e-6
    )
    assert trainer.count_params() == model.count_params() == 10
    assert len(trainer.weights) == 2 and trainer.layers == [model]
    weights = trainer.get_weights()
    trainer.set_weights([w * 2 for w in weights])
    np.testing.assert_array_equal(model.get_weights()[0], weights[0] * 2)
    trainer.set_weights(weights)
    lines = []
    trainer.summary(print_fn=lines.append)
    assert "Total params: 10" in "\n".join(lines)
    weights_path = os.fspath(tmp_path / "w.weights.h5")
    trainer.save_weights(weights_path)
    trainer.train_on_batch(X, Y)
    trainer.load_weights(weights_path)
    np.testing.assert_array_equal(trainer.get_weights()[0], weights[0])
    logs = trainer.test_on_batch(X, Y, return_dict=True)
    assert logs["accuracy"] == 1.0 and "adversarial_accuracy" not in logs
    assert json.loads(trainer.to_json())["class_name"] == "AdversarialTraining"
    # the classifier's signature
    assert trainer.inputs == model.inputs and trainer.outputs == model.outputs
    assert trainer.compute_output_shape((None, 4)) == (None, 2)
    clone = keras.models.clone_model(trainer)
    assert isinstance(clone, AdversarialTraining) and clone.model is not model
    assert clone.get_config()["eps"] == EPS


def test_fit_with_callbacks_logs_and_restores():
    trainer = _trainer("pgd", optimizer=keras.optimizers.Adam(0.01))
    seen = []
    callbacks = [
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs)),
        keras.callbacks.EarlyStopping(
            "val_loss", patience=1, restore_best_weights=True
        ),
    ]
    history = trainer.fit(
        X, Y, epochs=3, verbose=0, validation_data=(X, Y), callbacks=callbacks
    )
    assert sorted(history.history) == [
        "accuracy",
        "adversarial_accuracy",
        "loss",
        "val_accuracy",
        "val_loss",
    ]
    assert len(seen) == len(history.history["loss"])
    # the adversarial batch at the corners is misclassified in the first
    # epoch (the weights are the worked ones)
    assert history.history["adversarial_accuracy"][0] == 0.0


# -- on the digits -------------------------------------------------------------


def _digits_net(seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ]
    )


@pytest.mark.slow
@pytest.mark.jax_too
def test_pgd_training_resists_pgd_better_than_standard_training(digits):
    (x, y), (x_test, y_test) = digits
    x, x_test = x[:600] / 255.0, x_test[:200] / 255.0
    y, y_test = y[:600], y_test[:200]
    eps = 0.15

    def robust_accuracy(model):
        x_adv = pgd_attack(model, x_test, y_test, eps, steps=10, seed=0)
        return float(np.mean(_models.predict(model, x_adv) == y_test))

    standard = _digits_net(0)
    standard.compile(keras.optimizers.Adam(3e-3), LOSS)
    standard.fit(x, y, epochs=10, batch_size=64, verbose=0)
    model = _digits_net(0)
    trainer = AdversarialTraining(model, "pgd", eps=eps, steps=5, seed=0)
    trainer.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    history = trainer.fit(x, y, epochs=10, batch_size=64, verbose=0)
    clean = float(np.mean(_models.predict(model, x_test) == y_test))
    assert clean > 0.8
    robust, baseline = robust_accuracy(model), robust_accuracy(standard)
    print(f"clean {clean:.3f} robust {robust:.3f} standard {baseline:.3f}")
    assert robust > baseline + 0.2
    logged = history.history["adversarial_accuracy"]
    assert logged[-1] > logged[0]
    assert logged[-1] < history.history["accuracy"][-1]
