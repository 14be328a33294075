"""The wrappers keep the whole `keras.optimizers.Optimizer` contract: every
public method is forwarded to the inner optimizer, honoured, or refused.

| public member | what the wrapper does |
| --- | --- |
| `apply`, `apply_gradients`, `stateless_apply`, `build` | honoured (rules, skipping) |
| `iterations`, `learning_rate` | the inner optimizer's (settable) |
| `exclude_from_weight_decay`, `update_step`, `finalize_variable_values` | forwarded |
| `variables`, `save_own_variables`, `load_own_variables`, `set_weights` | own + inner |
| `use_ema` on the inner optimizer, `SwapEMAWeights` | honoured by the inner |
| inner `gradient_accumulation_steps` | honoured; the rules see the average |
| base arguments (`clipnorm`, `weight_decay`, ...) on the wrapper | refused |
| attributes particular to the inner optimizer (`momentum`, ...) | read through |
"""

import keras
import numpy as np
import pytest

from keras_harden.optimizers import (
    AdaGC,
    AdaptiveGradientClipping,
    AutoClip,
    GradientClipping,
    HardenedOptimizer,
    ZClip,
)

WRAPPERS = {
    "hardened": lambda opt: HardenedOptimizer(opt),
    "gradient_clipping": lambda opt: GradientClipping(opt, global_clipnorm=1.0),
    "agc": lambda opt: AdaptiveGradientClipping(opt),
    "autoclip": lambda opt: AutoClip(opt),
    "zclip": lambda opt: ZClip(opt),
    "adagc": lambda opt: AdaGC(opt),
}


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_exclude_from_weight_decay_reaches_the_inner_optimizer(name):
    # AdamW(1.0, weight_decay=0.004), zero gradient: decay alone moves a
    # weight, 2 - 2 * 0.004 * 1.0 = 1.992; Adam's own step is 0 / (0 + eps).
    # Excluded by name or by variable, a weight stays 2.0.
    decayed = keras.Variable(2.0, name="decayed")
    by_name = keras.Variable(2.0, name="exclude_me")
    by_variable = keras.Variable(2.0, name="other")
    opt = WRAPPERS[name](keras.optimizers.AdamW(1.0, weight_decay=0.004))
    opt.exclude_from_weight_decay(var_list=[by_variable], var_names=["exclude"])
    zero = keras.ops.zeros(())
    opt.apply([zero, zero, zero], [decayed, by_name, by_variable])
    assert float(decayed.numpy()) == pytest.approx(1.992, abs=1e-6)
    assert float(by_name.numpy()) == 2.0
    assert float(by_variable.numpy()) == 2.0


def test_update_step_is_the_inner_optimizers():
    # SGD(0.5): w - lr * g with the learning rate given, no clip, no skip.
    w = keras.Variable(np.float32([1.0, 2.0]))
    opt = HardenedOptimizer(keras.optimizers.SGD(0.5))
    opt.build([w])
    opt.update_step(keras.ops.convert_to_tensor(np.float32([2.0, 4.0])), w, 0.25)
    np.testing.assert_allclose(w.numpy(), [0.5, 1.0])


def test_apply_gradients_returns_the_inner_iterations():
    w = keras.Variable(np.float32([1.0]))
    opt = HardenedOptimizer(keras.optimizers.SGD(0.5))
    count = opt.apply_gradients([(keras.ops.ones((1,)), w)])
    assert int(count) == 1 == int(opt.inner_optimizer.iterations)


def test_attributes_of_the_inner_optimizer_read_through():
    opt = HardenedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    assert opt.momentum == 0.9 and opt.nesterov is True
    with pytest.raises(AttributeError, match="no attribute 'not_there'"):
        _ = opt.not_there
    with pytest.raises(AttributeError, match="no attribute '_private'"):
        _ = opt._private  # private members are never forwarded


def _ema_fit(optimizer, swap):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.Ones()),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    x = np.linspace(-1, 1, 24, dtype="float32").reshape(8, 3)
    y = np.stack([x.sum(axis=1), -x[:, 0]], axis=1)
    history = model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(x, y),
        callbacks=[keras.callbacks.SwapEMAWeights()] if swap else [],
    )
    return history.history["val_loss"], model.get_weights()


def test_inner_ema_and_swap_ema_weights_work_through_the_wrapper():
    def inner():
        return keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)

    plain_loss, plain_weights = _ema_fit(inner(), swap=True)
    loss, weights = _ema_fit(HardenedOptimizer(inner()), swap=True)
    raw_loss, raw_end_weights = _ema_fit(HardenedOptimizer(inner()), swap=False)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for a, b in zip(plain_weights, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # With the callback, validation saw the moving average, not the raw
    # weights; at the end of fit both runs hold the average.
    assert not np.allclose(loss, raw_loss)
    for a, b in zip(raw_end_weights, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_finalize_variable_values_writes_the_inner_average():
    # SGD(1.0), gradient 1: w 1 -> 0 -> -1. Keras's average takes the first
    # value as is (0), then 0.5 * 0 + 0.5 * (-1) = -0.5.
    w = keras.Variable(np.float32([1.0]))
    opt = HardenedOptimizer(keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5))
    opt.apply([keras.ops.ones((1,))], [w])
    opt.apply([keras.ops.ones((1,))], [w])
    np.testing.assert_allclose(w.numpy(), [-1.0])
    opt.finalize_variable_values([w])
    np.testing.assert_allclose(w.numpy(), [-0.5])


def test_own_variables_round_trip_through_a_store():
    w = keras.Variable(np.float32([1.0, 2.0]))
    opt = GradientClipping(keras.optimizers.Adam(0.1), global_clipnorm=1.0)
    opt.apply([keras.ops.convert_to_tensor(np.float32([3.0, 4.0]))], [w])
    store = {}
    opt.save_own_variables(store)
    twin_w = keras.Variable(np.float32([1.0, 2.0]))
    twin = GradientClipping(keras.optimizers.Adam(0.1), global_clipnorm=1.0)
    twin.build([twin_w])
    twin.load_own_variables(store)
    for a, b in zip(opt.variables, twin.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    assert float(twin.gradient_norm) == pytest.approx(5.0)
    assert int(twin.iterations) == 1
