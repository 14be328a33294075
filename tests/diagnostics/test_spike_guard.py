import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.diagnostics import SpikeGuard
from tests.toolkit import assert_config_round_trip

BATCH = 32


def _sync(model):
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


class Recorder(keras.callbacks.Callback):
    """Copies the weights and optimizer state at every batch end."""

    def __init__(self):
        super().__init__()
        self.weights, self.optimizer, self.lr = {}, {}, {}
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        _sync(self.model)
        opt = self.model.optimizer
        self.weights[self.step] = [np.array(w) for w in self.model.get_weights()]
        self.optimizer[self.step] = [
            np.array(keras.ops.convert_to_numpy(v))
            for v in opt.variables
            if "learning_rate" not in v.path
        ]
        self.lr[self.step] = float(keras.ops.convert_to_numpy(opt.learning_rate))
        self.step += 1


def _model():
    init = keras.initializers.GlorotUniform(seed=1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="tanh", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(digits, bad_batches, how):
    """16 batches of digits; the `bad_batches` get NaN pixels ("nan") or a
    sample weight of 50 ("spike": that batch's loss and gradient jump 50x)."""
    (x, y), _ = digits
    x, y = x[: 16 * BATCH].copy(), y[: 16 * BATCH]
    weights = np.ones(len(x), dtype="float32")
    for b in bad_batches:
        rows = slice(b * BATCH, (b + 1) * BATCH)
        if how == "nan":
            x[rows] = np.nan
        else:
            weights[rows] = 50.0
    return x, y, weights


def _fit(model, x, y, weights, callbacks):
    before, after = Recorder(), Recorder()
    model.fit(
        x,
        y,
        sample_weight=weights,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[before, *callbacks, after],
    )
    return before, after


def _assert_rolled_back_to_last_good(step, before, after):
    # The loss of batch `step` was computed with the weights of step - 1, so
    # the last verified weights are those after step - 2.
    for got, want in zip(after.weights[step], before.weights[step - 2], strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(
        after.optimizer[step], before.optimizer[step - 2], strict=True
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.jax_too
@pytest.mark.parametrize("how", ["nan", "spike"])
def test_rolls_back_to_last_good_state_and_lowers_lr(digits, how):
    x, y, w = _data(digits, bad_batches=[8], how=how)
    model = _model()
    start = model.evaluate(x[: 8 * BATCH], y[: 8 * BATCH], verbose=0)
    guard = SpikeGuard(threshold=4.0, verbose=0)
    before, after = _fit(model, x, y, w, [guard])
    assert [e["step"] for e in guard.events] == [8]
    reason = guard.events[0]["reason"]
    assert ("non-finite loss" if how == "nan" else "loss spike") in reason
    _assert_rolled_back_to_last_good(8, before, after)
    assert after.lr[8] == pytest.approx(0.025)
    assert guard.events[0]["learning_rate"] == pytest.approx(0.025)
    assert after.lr[15] == pytest.approx(0.025)
    weights = model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    # it kept training after the rollback: the last weights moved on
    assert not np.array_equal(weights[0], after.weights[8][0])
    assert model.evaluate(x[: 8 * BATCH], y[: 8 * BATCH], verbose=0) < start - 0.2


@pytest.mark.slow
def test_terminate_on_nan_loses_the_same_run(digits):
    x, y, w = _data(digits, bad_batches=[8], how="nan")
    model = _model()
    before, _ = _fit(model, x, y, w, [keras.callbacks.TerminateOnNaN()])
    assert max(before.weights) == 8  # stopped at the NaN batch
    assert not all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.slow
def test_gives_up_after_max_rollbacks_with_the_last_good_weights(digits, capsys):
    x, y, w = _data(digits, bad_batches=range(4, 16), how="nan")
    model = _model()
    guard = SpikeGuard(max_rollbacks=2)
    before, after = _fit(model, x, y, w, [guard])
    assert [e["step"] for e in guard.events] == [4, 5]
    assert [e["learning_rate"] for e in guard.events] == pytest.approx([0.025, 0.0125])
    assert "gave up at step 6" in guard.gave_up and "max_rollbacks=2" in guard.gave_up
    err = capsys.readouterr().err
    assert "SpikeGuard: non-finite loss" in err and guard.gave_up in err
    assert max(after.weights) == 6  # training stopped there
    # Batches 4, 5 and 6 all fail; the verified state stays the one after
    # step 2 (its loss, batch 3, was good), restored each time.
    for step in (4, 5, 6):
        for got, want in zip(after.weights[step], before.weights[2], strict=True):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(after.optimizer[step], before.optimizer[2], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_steps_a_hardened_optimizer_skipped_need_no_rollback(digits):
    if not hasattr(kh.optimizers, "HardenedOptimizer"):
        pytest.skip("kh.optimizers.HardenedOptimizer has not landed yet")
    x, y, w = _data(digits, bad_batches=[8], how="nan")
    model = _model()
    model.compile(
        optimizer=kh.optimizers.HardenedOptimizer(keras.optimizers.SGD(0.05)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    guard = SpikeGuard(verbose=0)
    before, _ = _fit(model, x, y, w, [guard])
    assert guard.events == []
    for got, want in zip(before.weights[8], before.weights[7], strict=True):
        np.testing.assert_array_equal(got, want)  # the optimizer skipped it
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 1.0}, "threshold=1.0"),
        ({"patience": -1}, "patience=-1"),
        ({"lr_factor": 0.0}, "lr_factor=0.0"),
        ({"max_rollbacks": 1.5}, "max_rollbacks=1.5"),
        ({"window": 0}, "window=0"),
        ({"verbose": 2}, "verbose=2"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpikeGuard(**kwargs)


def test_config_round_trip():
    assert_config_round_trip(SpikeGuard(threshold=3.0, patience=2, max_rollbacks=1))


@pytest.mark.slow
def test_patience_tolerates_a_single_spike_but_not_two(digits):
    x, y, w = _data(digits, bad_batches=[8], how="spike")
    guard = SpikeGuard(patience=1, verbose=0)
    _fit(_model(), x, y, w, [guard])
    assert guard.events == []
    x, y, w = _data(digits, bad_batches=[8, 9], how="spike")
    guard = SpikeGuard(patience=1, verbose=0)
    before, after = _fit(_model(), x, y, w, [guard])
    assert [e["step"] for e in guard.events] == [9]
    # batch 8's loss (weights after step 7) was a spike, so the verified state
    # is the one after step 6 (confirmed by batch 7's loss)
    for got, want in zip(after.weights[9], before.weights[6], strict=True):
        np.testing.assert_array_equal(got, want)
