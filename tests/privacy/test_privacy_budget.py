import warnings

import dp_accounting
import keras
import numpy as np
import pytest

from keras_harden.privacy import PrivacyBudget
from tests.toolkit import assert_config_round_trip

N, BATCH = 640, 32  # 20 steps per epoch, sampling rate 0.05
NOISE, RATE, DELTA = 1.0, BATCH / N, 1e-5


def _dp_accounting_epsilon(steps, accountant="rdp"):
    """dp-accounting's epsilon for `steps` DP-SGD steps, computed directly."""
    if accountant == "rdp":
        ledger = dp_accounting.rdp.RdpAccountant()
    else:
        ledger = dp_accounting.pld.PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        RATE, dp_accounting.GaussianDpEvent(NOISE)
    )
    ledger.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return ledger.get_epsilon(DELTA)


@pytest.fixture(scope="module")
def data(digits):
    (x, y), _ = digits
    return x[:N].reshape(N, -1) / 255.0, y[:N]


def _model(seed=0):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                10, kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _fit(model, data, callback, epochs, **kwargs):
    x, y = data
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, callbacks=[callback], verbose=0, **kwargs
    )


def test_history_holds_the_epsilon_of_the_steps_taken(data):
    callback = PrivacyBudget(NOISE, RATE, DELTA)
    history = _fit(_model(), data, callback, epochs=3)
    expected = [_dp_accounting_epsilon(20 * k) for k in (1, 2, 3)]
    assert history.history["epsilon"] == expected
    assert callback.steps == 60 and callback.epsilon == expected[-1]
    assert expected[0] < expected[1] < expected[2]


@pytest.mark.slow
def test_history_with_the_pld_accountant(data):
    callback = PrivacyBudget(NOISE, RATE, DELTA, accountant="pld")
    history = _fit(_model(), data, callback, epochs=2)
    expected = [_dp_accounting_epsilon(s, "pld") for s in (20, 40)]
    assert history.history["epsilon"] == expected
    assert expected[1] < _dp_accounting_epsilon(40)  # tighter than RDP


def test_stops_exactly_before_the_target_is_exceeded(data):
    after_3, after_4 = _dp_accounting_epsilon(60), _dp_accounting_epsilon(80)
    target = (after_3 + after_4) / 2  # 3 epochs fit, a 4th would not
    callback = PrivacyBudget(NOISE, RATE, DELTA, target_epsilon=target)
    model = _model()
    with pytest.warns(UserWarning) as caught:
        history = _fit(model, data, callback, epochs=10)
    assert history.history["epsilon"] == [
        _dp_accounting_epsilon(s) for s in (20, 40, 60)
    ]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 60
    assert history.history["epsilon"][-1] <= target < after_4
    (message,) = [
        str(w.message) for w in caught if str(w.message).startswith("PrivacyBudget")
    ]
    assert "\n" not in message and message == callback.stop_reason
    assert message == (
        f"PrivacyBudget: stopping after epoch 3: epsilon {after_3:.4g} spent in "
        f"60 steps (delta=1e-05); one more epoch would reach {after_4:.4g} > "
        f"target_epsilon={target:g}."
    )


def test_no_warning_when_the_last_epoch_ends_within_the_target(data):
    target = (_dp_accounting_epsilon(60) + _dp_accounting_epsilon(80)) / 2
    callback = PrivacyBudget(NOISE, RATE, DELTA, target_epsilon=target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _fit(_model(), data, callback, epochs=3)
    assert not [w for w in caught if "PrivacyBudget" in str(w.message)]
    assert len(history.history["epsilon"]) == 3 and callback.stop_reason is None


def test_a_resumed_run_counts_on_from_the_saved_optimizer(data, tmp_path):
    model = _model()
    _fit(model, data, PrivacyBudget(NOISE, RATE, DELTA), epochs=2)
    path = tmp_path / "dp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 40
    callback = PrivacyBudget(NOISE, RATE, DELTA)
    history = _fit(loaded, data, callback, epochs=2)
    assert history.history["epsilon"] == [
        _dp_accounting_epsilon(60),
        _dp_accounting_epsilon(80),
    ]


def test_a_spent_budget_refuses_to_take_a_step(data):
    model = _model()
    _fit(model, data, PrivacyBudget(NOISE, RATE, DELTA), epochs=2)  # 40 steps
    weights = [w.copy() for w in model.get_weights()]
    # 40 steps fit within the target, 60 (one more epoch) would not
    target = (_dp_accounting_epsilon(40) + _dp_accounting_epsilon(60)) / 2
    callback = PrivacyBudget(NOISE, RATE, DELTA, target_epsilon=target)
    with pytest.raises(RuntimeError, match="one more epoch \\(20 steps\\)"):
        _fit(model, data, callback, epochs=1)
    # already past it
    low = PrivacyBudget(NOISE, RATE, DELTA, target_epsilon=target / 10)
    with pytest.raises(RuntimeError, match="the budget is spent before training"):
        _fit(model, data, low, epochs=1)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_counts_steps_per_execution(data):
    model = _model()
    model.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=2,
    )
    history = _fit(model, data, PrivacyBudget(NOISE, RATE, DELTA), epochs=2)
    assert history.history["epsilon"] == [
        _dp_accounting_epsilon(20),
        _dp_accounting_epsilon(40),
    ]


def test_config_round_trip_and_spent():
    callback = PrivacyBudget(1.1, 0.01, 1e-6, target_epsilon=4, accountant="pld")
    assert callback.get_config() == {
        "noise_multiplier": 1.1,
        "sampling_rate": 0.01,
        "delta": 1e-6,
        "target_epsilon": 4.0,
        "accountant": "pld",
    }
    revived = assert_config_round_trip(callback)
    assert revived.spent(0) == 0.0
    assert PrivacyBudget(NOISE, RATE, DELTA).spent(7) == _dp_accounting_epsilon(7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_multiplier": 0}, "Received: noise_multiplier=0"),
        ({"sampling_rate": 0}, "Received: sampling_rate=0"),
        ({"sampling_rate": 2}, "Received: sampling_rate=2"),
        ({"delta": 1}, "Received: delta=1"),
        ({"target_epsilon": -1.0}, "Received: target_epsilon=-1.0"),
        ({"accountant": "gdp"}, "Received: accountant='gdp'"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "delta": 1e-5}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"{message}$"):
        PrivacyBudget(**arguments)


def test_callbacks_after_it_see_the_epsilon_in_the_epoch_logs(data):
    # what keras.callbacks.TensorBoard, CSVLogger or EarlyStopping placed
    # after it read (TensorBoard itself is not installed here)
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(logs.get("epsilon"))
    )
    x, y = data
    callbacks = [PrivacyBudget(NOISE, RATE, DELTA), recorder]
    _model().fit(x, y, batch_size=BATCH, epochs=2, callbacks=callbacks, verbose=0)
    assert seen == [_dp_accounting_epsilon(20), _dp_accounting_epsilon(40)]
