"""Golden sequences for the stateful rules (AutoClip's ring buffer, ZClip's
warm-up and EMA), driven through the wrapper with SGD(1.0) on one scalar, so
the gradient norm is |g| and the applied step is minus the clipped gradient."""

import keras
import numpy as np
import pytest

from keras_harden.optimizers import (
    HardenedOptimizer,
    PercentileClip,
    PerTensorEMAClip,
    ZScoreClip,
)
from tests.toolkit import assert_config_round_trip


def run(rule, norms):
    w = keras.Variable(np.float32(0.0), name="w")
    opt = HardenedOptimizer(keras.optimizers.SGD(1.0), clip=rule)
    opt.build([w])
    applied = []
    for g in norms:
        before = float(w.numpy())
        opt.apply([keras.ops.convert_to_tensor(np.float32(g))], [w])
        applied.append(before - float(w.numpy()))
    return applied, opt


def test_percentile_clip_ring_buffer_golden():
    # history 3, median (linear interpolation over the filled part):
    # 4 -> [4]        p50 4  -> 4 stays
    # 2 -> [4, 2]     p50 3  -> 2 stays
    # 6 -> [4, 2, 6]  p50 4  -> 6 clipped to 4
    # 1 -> [1, 2, 6]  p50 2  -> 1 stays (slot 0 overwritten)
    # 10 -> [1, 10, 6] p50 6 -> 10 clipped to 6
    applied, opt = run(PercentileClip(50.0, history=3), [4.0, 2.0, 6.0, 1.0, 10.0])
    np.testing.assert_allclose(applied, [4.0, 2.0, 4.0, 1.0, 6.0], rtol=1e-6)
    rule = opt.rules[0]
    np.testing.assert_allclose(rule.norm_history.numpy(), [1.0, 10.0, 6.0])
    assert int(rule.norm_count.numpy()) == 5
    assert float(opt.clipped_gradient_norm) == pytest.approx(6.0)


def test_percentile_clip_default_low_percentile():
    # p10 of (4, 2): rank 0.1 -> 2 + 0.1 * 2 = 2.2; the second step (2) stays.
    # Third step 5: window (4, 2, 5), sorted (2, 4, 5), rank 0.2 -> 2.4.
    applied, _ = run(PercentileClip(), [4.0, 2.0, 5.0])
    np.testing.assert_allclose(applied, [4.0, 2.0, 2.4], rtol=1e-6)


def test_zscore_clip_golden():
    # alpha 0.5, z_t 1, warm-up 2.
    # 2:    warm-up mean 2, var 0
    # 4:    warm-up mean 3, var ((2-3)^2 + (4-3)^2) / 2 = 1
    # 3.5:  z = 0.5 <= 1, kept; mean 0.5*3 + 0.5*3.5 = 3.25,
    #       var 0.5*1 + 0.5*(3.5-3.25)^2 = 0.53125
    # 6.25: excess 3, 9 > 0.53125 -> spike; limit 3.25 + 0.53125/3
    #       = 3.4270833; mean 0.5*3.25 + 0.5*3.4270833 = 3.3385417,
    #       var 0.5*0.53125 + 0.5*(3.4270833-3.3385417)^2 = 0.2695448
    applied, opt = run(
        ZScoreClip(alpha=0.5, z_threshold=1.0, warmup_steps=2), [2.0, 4.0, 3.5, 6.25]
    )
    np.testing.assert_allclose(applied, [2.0, 4.0, 3.5, 3.4270833], rtol=1e-6)
    rule = opt.rules[0]
    assert float(rule.norm_mean.numpy()) == pytest.approx(3.3385417, rel=1e-6)
    assert float(rule.norm_var.numpy()) == pytest.approx(0.2695448, rel=1e-5)
    assert int(rule.norm_count.numpy()) == 2  # saturates at warmup_steps


def test_zscore_clip_max_norm_applies_during_warmup():
    # max_norm 1 caps from the first step; warm-up statistics use raw norms.
    applied, opt = run(ZScoreClip(warmup_steps=5, max_norm=1.0), [2.0, 0.5])
    np.testing.assert_allclose(applied, [1.0, 0.5], rtol=1e-6)
    assert float(opt.rules[0].norm_mean.numpy()) == pytest.approx(0.75)  # (1 + 0.5) / 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PercentileClip(percentile=0), "Received: percentile=0"),
        (lambda: PercentileClip(percentile=101.0), "Received: percentile=101.0"),
        (lambda: PercentileClip(history=0), "Received: history=0"),
        (lambda: PercentileClip(history=2.5), "Received: history=2.5"),
        (lambda: ZScoreClip(alpha=1.0), "Received: alpha=1.0"),
        (lambda: ZScoreClip(z_threshold=-1), "Received: z_threshold=-1"),
        (lambda: ZScoreClip(warmup_steps=0), "Received: warmup_steps=0"),
        (lambda: ZScoreClip(max_norm=0.0), "Received: max_norm=0.0"),
        (lambda: ZScoreClip(max_weight_ratio=-1), "Received: max_weight_ratio=-1"),
        (lambda: PerTensorEMAClip(abs_clip=0), "Received: abs_clip=0"),
        (lambda: PerTensorEMAClip(rel_clip="x"), "Received: rel_clip='x'"),
        (lambda: PerTensorEMAClip(beta=1.0), "Received: beta=1.0"),
        (lambda: PerTensorEMAClip(beta="0.9"), "Received: beta='0.9'"),
        (lambda: PerTensorEMAClip(warmup_steps=-1), "Received: warmup_steps=-1"),
        (lambda: PerTensorEMAClip(warmup_steps=True), "Received: warmup_steps=True"),
    ],
)
def test_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "rule", [PercentileClip(25.0, 10), ZScoreClip(0.9, 3.0, 5, 10.0)]
)
def test_config_round_trip(rule):
    assert_config_round_trip(rule)


def test_rules_are_pure_transforms_on_numpy():
    # No optimizer, no variable: state values in, new state values out.
    # ZScoreClip(warmup 2) on norms 2 then 4, then the EMA step of 3.5 as in
    # the golden sequence above; the state threads through by hand.
    rule = ZScoreClip(alpha=0.5, z_threshold=1.0, warmup_steps=2)
    state = rule.initial_state()
    assert [s.dtype for s in state] == ["float32", "float32", "int32"]
    weights = [np.zeros(1, "float32")]
    for g in (2.0, 4.0, 3.5):
        grads = [np.float32([g])]
        _, _, state = rule(grads, weights, np.float32(g), state)
    mean, var, count = (float(keras.ops.convert_to_numpy(s)) for s in state)
    assert (mean, var, count) == pytest.approx((3.25, 0.53125, 2))


@pytest.mark.parametrize(
    "rule", [ZScoreClip(max_weight_ratio=0.1), PercentileClip(max_weight_ratio=0.1)]
)
def test_weight_ratio_caps_from_the_first_step(rule):
    # weights (3, 4): norm 5, cap 0.1 * 5 = 0.5; gradient (6, 8), norm 10,
    # is scaled by 0.05 to (0.3, 0.4) on the very first step, and the state
    # records the capped norm 0.5, not 10.
    weights = [np.float32([3.0, 4.0])]
    state = rule.initial_state(weights)
    grads, norm, state = rule(
        [np.float32([6.0, 8.0])], weights, np.float32(10.0), state
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(grads[0]), [0.3, 0.4], rtol=1e-6
    )
    assert float(norm) == pytest.approx(0.5)
    recorded = keras.ops.convert_to_numpy(state[0]).reshape(-1)[0]
    assert float(recorded) == pytest.approx(0.5)


def test_per_tensor_ema_clip_golden_on_numpy():
    # abs_clip 1, rel_clip 2, beta 0.5, warm-up 2; two one-entry tensors a, b.
    # 1 (warm-up): (3, 4), global norm 5 -> scaled 0.2 -> (0.6, 0.8);
    #              gammas start at the clipped norms (0.6, 0.8)
    # 2 (warm-up): (0.3, 0), norm 0.3 <= 1 kept; gamma_a = min(0.6, 0.3)
    #              = 0.3; b's zero norm leaves gamma_b at 0.8
    # 3: a = 1 > 2 * 0.3 -> 0.6; gamma_a = 0.5 * 0.3 + 0.5 * 0.6 = 0.45
    #    b = -1, |b| <= 2 * 0.8 kept; gamma_b = 0.5 * 0.8 + 0.5 * 1 = 0.9
    #    clipped global norm sqrt(0.6^2 + 1^2) = 1.1661904
    rule = PerTensorEMAClip(abs_clip=1.0, rel_clip=2.0, beta=0.5, warmup_steps=2)
    weights = [np.zeros(1, "float32"), np.zeros(1, "float32")]
    state = rule.initial_state(weights)
    outputs = []
    for a, b in ((3.0, 4.0), (0.3, 0.0), (1.0, -1.0)):
        grads = [np.float32([a]), np.float32([b])]
        norm = np.float32(np.hypot(a, b))
        grads, new_norm, state = rule(grads, weights, norm, state)
        outputs.append([float(keras.ops.convert_to_numpy(g)[0]) for g in grads])
    np.testing.assert_allclose(
        outputs, [[0.6, 0.8], [0.3, 0.0], [0.6, -1.0]], rtol=1e-6
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(state[0]), [0.45, 0.9])
    assert float(new_norm) == pytest.approx(1.1661904, rel=1e-6)
    assert int(state[1]) == 2


def test_per_tensor_ema_clip_through_the_wrapper():
    # Same rule on one scalar through AdaGC(SGD(1)): warm-up caps at 1.
    applied, opt = run(PerTensorEMAClip(warmup_steps=1), [4.0, 1.0, 3.0])
    # 4 -> 1 (gamma 1); 1 <= 1.05 kept (gamma 0.98 + 0.02 * 1 = 1);
    # 3 -> 1.05 (gamma 0.98 * 1 + 0.02 * 1.05 = 1.001)
    np.testing.assert_allclose(applied, [1.0, 1.0, 1.05], rtol=1e-6)
    assert float(opt.rules[0].tensor_norm_average.numpy()[0]) == pytest.approx(1.001)
