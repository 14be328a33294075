"""HardenedOptimizer: skipping, statistics, limits, forwarding, accumulation,
mixed precision, stateless_apply, config and errors."""

import keras
import numpy as np
import pytest

from keras_harden.optimizers import (
    ClipByGlobalNorm,
    HardenedOptimizer,
    NonFiniteGradientError,
    NonFiniteLimit,
    PercentileClip,
    PerTensorEMAClip,
    UnitwiseClip,
    ZScoreClip,
)
from tests.optimizers._helpers import snapshot
from tests.toolkit import assert_config_round_trip

NAN = float("nan")


def make(clip=None, inner=None, **kwargs):
    variables = [
        keras.Variable(np.float32([1.0, -2.0]), name="w"),
        keras.Variable(np.float32(0.5), name="b"),
    ]
    inner = inner or keras.optimizers.Adam(0.1)
    opt = HardenedOptimizer(inner, clip=clip, **kwargs)
    opt.build(variables)
    return opt, variables


def grads(a, b):
    return [
        keras.ops.convert_to_tensor(np.float32(a)),
        keras.ops.convert_to_tensor(np.float32(b)),
    ]


ALL_RULES = [
    ClipByGlobalNorm(1.0),
    UnitwiseClip(0.05),
    PercentileClip(50.0, 4),
    ZScoreClip(warmup_steps=1),
    PerTensorEMAClip(abs_clip=1.0, warmup_steps=1),
]


@pytest.mark.parametrize(
    "jit",
    [
        None,
        pytest.param(False, marks=pytest.mark.tf_only),
        pytest.param(True, marks=pytest.mark.tf_only),
    ],
    ids=["eager", "graph", "xla"],
)
def test_nonfinite_step_changes_nothing(jit):
    opt, variables = make(
        clip=[
            UnitwiseClip(0.05),
            PercentileClip(50.0, 4),
            ZScoreClip(warmup_steps=1),
            PerTensorEMAClip(warmup_steps=1),
        ]
    )

    def step(g):
        opt.apply(g, variables)

    if jit is not None:
        import tensorflow as tf

        step = tf.function(step, jit_compile=jit)
    step(grads([0.3, -0.1], 0.2))
    step(grads([0.5, 0.4], -0.3))
    before = snapshot(opt, variables)
    names = [v.path for v in list(variables) + list(opt.variables)]
    iterations = int(opt.iterations)
    for bad in (grads([NAN, 0.1], 0.2), grads([0.1, 0.1], float("inf"))):
        step(bad)
    after = snapshot(opt, variables)
    changed = {
        n
        for n, a, b in zip(names, before, after, strict=True)
        if not np.array_equal(a, b, equal_nan=True)
    }
    # Only the step statistics and counters move; weights, Adam's moments,
    # rule state and the iteration count stay bit-identical.
    assert changed <= {
        "hardened_optimizer/gradient_norm",
        "hardened_optimizer/clipped_gradient_norm",
        "hardened_optimizer/skipped_steps",
        "hardened_optimizer/consecutive_nonfinite",
    }, changed
    assert int(opt.iterations) == iterations == 2
    assert int(opt.skipped_steps) == 2 and int(opt.consecutive_nonfinite) == 2
    assert float(opt.clipped_gradient_norm) == 0.0
    assert not np.isfinite(float(opt.gradient_norm))
    step(grads([0.1, 0.1], 0.1))  # a finite step resets the run
    assert int(opt.consecutive_nonfinite) == 0 and int(opt.skipped_steps) == 2
    assert int(opt.iterations) == 3


def test_skip_nonfinite_false_applies_the_step():
    opt, variables = make(inner=keras.optimizers.SGD(1.0), skip_nonfinite=False)
    opt.apply(grads([NAN, 0.0], 0.0), variables)
    assert np.isnan(variables[0].numpy()[0])
    assert int(opt.skipped_steps) == 0 and int(opt.consecutive_nonfinite) == 1
    assert int(opt.iterations) == 1


def test_statistics_without_clipping():
    # sqrt(3^2 + 4^2 + 12^2) = 13, no rule -> clipped norm 13 too.
    opt, variables = make(inner=keras.optimizers.SGD(0.0))
    opt.apply(grads([3.0, 4.0], 12.0), variables)
    assert float(opt.gradient_norm) == pytest.approx(13.0)
    assert float(opt.clipped_gradient_norm) == pytest.approx(13.0)


def test_max_consecutive_nonfinite_eager():
    opt, variables = make(max_consecutive_nonfinite=2)
    opt.apply(grads([NAN, 0.0], 0.0), variables)
    opt.apply(grads([0.1, 0.0], 0.0), variables)  # resets
    opt.apply(grads([NAN, 0.0], 0.0), variables)
    with pytest.raises(NonFiniteGradientError, match="2 optimizer steps in a row"):
        opt.apply(grads([NAN, 0.0], 0.0), variables)


@pytest.mark.tf_only
def test_max_consecutive_nonfinite_in_graph():
    import tensorflow as tf

    opt, variables = make(max_consecutive_nonfinite=2)
    step = tf.function(lambda g: opt.apply(g, variables))
    step(grads([NAN, 0.0], 0.0))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="2 optimizer steps in a row"
    ):
        step(grads([NAN, 0.0], 0.0))


@pytest.mark.slow
def test_max_consecutive_nonfinite_under_xla_needs_the_callback(digits):
    (x, y), _ = digits
    x = x[:64].copy()
    x[:] = np.nan  # every batch gives NaN gradients
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    opt = HardenedOptimizer(keras.optimizers.SGD(0.1), max_consecutive_nonfinite=3)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    # XLA drops the in-graph assertion: without the callback training goes on.
    model.fit(x, y[:64], batch_size=8, epochs=1, verbose=0)
    assert int(opt.skipped_steps) == 8
    with pytest.raises(NonFiniteGradientError):
        model.fit(
            x, y[:64], batch_size=8, epochs=1, verbose=0, callbacks=[NonFiniteLimit()]
        )
    with pytest.raises(ValueError, match="Received: every=0"):
        NonFiniteLimit(every=0)


def test_learning_rate_and_iterations_are_the_inner_ones():
    inner = keras.optimizers.SGD(0.5)
    opt, variables = make(inner=inner)
    assert float(opt.learning_rate) == 0.5
    opt.learning_rate = 0.25
    assert float(inner.learning_rate) == 0.25
    opt.apply(grads([1.0, 0.0], 0.0), variables)
    np.testing.assert_allclose(variables[0].numpy(), [0.75, -2.0])
    assert int(opt.iterations) == int(inner.iterations) == 1


def test_schedule_does_not_advance_on_skipped_steps():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        1.0, decay_steps=1, decay_rate=0.5
    )
    opt, variables = make(inner=keras.optimizers.SGD(schedule))
    opt.apply(grads([NAN, 0.0], 0.0), variables)  # skipped: lr stays 1.0
    opt.apply(grads([1.0, 0.0], 0.0), variables)  # w0: 1 - 1.0 * 1 = 0
    opt.apply(grads([1.0, 0.0], 0.0), variables)  # w0: 0 - 0.5 * 1 = -0.5
    assert variables[0].numpy()[0] == pytest.approx(-0.5)


@pytest.mark.slow
def test_reduce_lr_on_plateau_sets_inner_learning_rate(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    inner = keras.optimizers.SGD(1e-3)
    model.compile(
        optimizer=HardenedOptimizer(inner, clip=ClipByGlobalNorm(1.0)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9
    )
    model.fit(x[:128], y[:128], batch_size=64, epochs=2, verbose=0, callbacks=[plateau])
    # Epoch 1 "improves" on +inf; epoch 2 cannot beat it by 1e9: one halving.
    assert float(inner.learning_rate) == pytest.approx(5e-4)


def test_gradient_accumulation_clips_the_average_once():
    # k = 2 micro-batches: (3, 0) then (0, 4); average (1.5, 2), norm 2.5,
    # clipped to 1 -> (0.6, 0.8). Clipping each micro-batch instead would
    # give ((1, 0) + (0, 1)) / 2 = (0.5, 0.5).
    variables = [keras.Variable(np.float32([0.0, 0.0]), name="w")]
    inner = keras.optimizers.SGD(1.0, gradient_accumulation_steps=2)
    opt = HardenedOptimizer(inner, clip=ClipByGlobalNorm(1.0))
    opt.build(variables)

    def step(g):
        opt.apply([keras.ops.convert_to_tensor(np.float32(g))], variables)

    step([3.0, 0.0])
    np.testing.assert_array_equal(variables[0].numpy(), [0.0, 0.0])
    assert float(opt.gradient_norm) == 0.0  # statistics wait for the update
    step([NAN, 0.0])  # a bad micro-batch is skipped, not accumulated
    step([0.0, 4.0])
    np.testing.assert_allclose(variables[0].numpy(), [-0.6, -0.8], rtol=1e-6)
    assert float(opt.gradient_norm) == pytest.approx(2.5)
    assert float(opt.clipped_gradient_norm) == pytest.approx(1.0)
    assert int(opt.iterations) == 1 and int(opt.skipped_steps) == 1
    # The accumulators are the wrapper's and start again from zero.
    step([2.0, 0.0])
    step([0.0, 0.0])  # average (1, 0): norm 1, not clipped
    np.testing.assert_allclose(variables[0].numpy(), [-1.6, -0.8], rtol=1e-6)
    assert int(opt.iterations) == 2


def _accumulating_fit(optimizer, jit_compile):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                4, activation="tanh", kernel_initializer=keras.initializers.Ones()
            ),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.Ones()),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    x = np.linspace(-1, 1, 48, dtype="float32").reshape(16, 3)
    y = np.sin(x.sum(axis=1, keepdims=True))
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize(
    "jit_compile",
    # JAX without jit runs op by op: slow, and the same maths as with it
    [pytest.param(False, marks=pytest.mark.tf_only), True],
    ids=["graph", "xla"],
)
def test_accumulation_without_rules_is_keras_own(jit_compile):
    # 8 micro-batches, k = 4, a learning-rate schedule that moves every
    # micro-step (Keras's schedules count micro-steps under accumulation):
    # the wrapper, which accumulates for the inner optimizer, must give
    # Keras's weights and iteration count.
    def inner():
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.9)
        return keras.optimizers.Adam(schedule, gradient_accumulation_steps=4)

    plain = inner()
    ours = HardenedOptimizer(inner())
    reference = _accumulating_fit(plain, jit_compile)
    wrapped = _accumulating_fit(ours, jit_compile)
    for a, b in zip(reference.get_weights(), wrapped.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(ours.iterations) == int(plain.iterations) == 2
    # The wrapper's copy of the sums matches Keras's accumulators: empty
    # after the last real update.
    assert all(not np.any(a.numpy()) for a in ours._accumulated.values())


def test_accumulation_refuses_a_built_inner_optimizer():
    built = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    built.build([keras.Variable(1.0)])
    with pytest.raises(
        ValueError,
        match="Received: a built inner_optimizer with gradient_accumulation_steps=2",
    ):
        HardenedOptimizer(built)


def test_refuses_loss_scale_optimizer_inside():
    lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="scaled twice.*Received: inner_optimizer="):
        HardenedOptimizer(lso)
    with pytest.raises(
        ValueError, match="Received: inner_optimizer with loss_scale_factor=128"
    ):
        HardenedOptimizer(keras.optimizers.SGD(0.1, loss_scale_factor=128.0))


@pytest.mark.slow
@pytest.mark.jax_too
def test_mixed_float16_rules_see_unscaled_gradients(digits):
    (x, y), _ = digits
    norms = {}
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    16,
                    activation="relu",
                    kernel_initializer=keras.initializers.GlorotUniform(0),
                ),
                keras.layers.Dense(
                    10, kernel_initializer=keras.initializers.GlorotUniform(1)
                ),
                keras.layers.Activation("linear", dtype="float32"),
            ]
        )
        opt = HardenedOptimizer(keras.optimizers.SGD(0.0), clip=ClipByGlobalNorm(1e6))
        model.compile(
            optimizer=opt,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        if policy == "mixed_float16":
            # compile() wrapped us once; the loss is scaled once, by it.
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            assert model.optimizer.inner_optimizer is opt
        model.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0, shuffle=False)
        norms[policy] = float(opt.gradient_norm)
    # Same gradient up to float16 rounding, not 32768 times larger.
    assert norms["mixed_float16"] == pytest.approx(norms["float32"], rel=2e-2)


class _StatelessSGD(keras.optimizers.SGD):
    """Test-only inner optimizer whose `stateless_apply` works on TensorFlow
    (Keras's TensorFlow optimizer refuses it): assignments go through
    `keras.Variable.assign`, which honours `StatelessScope`."""

    def assign(self, variable, value):
        variable.assign(value)

    def assign_add(self, variable, value):
        variable.assign_add(value)

    def assign_sub(self, variable, value):
        variable.assign_sub(value)

    def _var_key(self, variable):
        return id(variable)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        for g, v in zip(grads, trainable_variables, strict=True):
            self.update_step(g, v, learning_rate)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        mapping = list(zip(self._trainable_variables, trainable_variables, strict=True))
        mapping += list(zip(self.variables, optimizer_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.apply(grads)
        return (
            [scope.get_current_value(v) for v in self._trainable_variables],
            [scope.get_current_value(v) for v in self.variables],
        )


@pytest.mark.tf_only  # the test-only inner optimizer patches TF's optimizer
def test_stateless_apply_matches_apply():
    sequence = [
        grads([0.3, -0.1], 0.2),
        grads([2.0, 0.4], -0.3),
        grads([NAN, 0.1], 0.0),
        grads([0.5, 5.0], 0.1),
    ]
    rules = [
        UnitwiseClip(0.05),
        PercentileClip(50.0, 3),
        ZScoreClip(warmup_steps=1, max_norm=3.0),
    ]
    stateful, s_vars = make(clip=rules, inner=_StatelessSGD(0.1, momentum=0.9))
    rules2 = [
        UnitwiseClip(0.05),
        PercentileClip(50.0, 3),
        ZScoreClip(warmup_steps=1, max_norm=3.0),
    ]
    stateless, l_vars = make(clip=rules2, inner=_StatelessSGD(0.1, momentum=0.9))
    weights = [v.value for v in l_vars]
    opt_values = [v.value for v in stateless.variables]
    for g in sequence:
        stateful.apply(g, s_vars)
        weights, opt_values = stateless.stateless_apply(opt_values, g, weights)
    for a, b in zip(s_vars, weights, strict=True):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6)
    for a, b in zip(stateful.variables, opt_values, strict=True):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6)
    # The stateless run left the real variables alone.
    np.testing.assert_array_equal(l_vars[0].numpy(), [1.0, -2.0])
    assert int(stateful.skipped_steps) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(clip="clip"), "Received: clip='clip'"),
        (dict(skip_nonfinite=1), "Received: skip_nonfinite=1"),
        (dict(max_consecutive_nonfinite=0), "Received: max_consecutive_nonfinite=0"),
        (
            dict(max_consecutive_nonfinite=2.0),
            "Received: max_consecutive_nonfinite=2.0",
        ),
        (
            dict(global_clipnorm=1.0),
            "set it on the inner optimizer. Received: global_clipnorm=1.0",
        ),
        (dict(foo=1), "Received: foo=1"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardenedOptimizer(keras.optimizers.SGD(0.1), **kwargs)
    with pytest.raises(ValueError, match="Received: inner_optimizer=3"):
        HardenedOptimizer(3)


@pytest.mark.parametrize("clip", [None, ClipByGlobalNorm(1.0), ALL_RULES])
def test_config_round_trip(clip):
    opt = HardenedOptimizer(
        keras.optimizers.AdamW(1e-3), clip=clip, max_consecutive_nonfinite=5
    )
    clone = assert_config_round_trip(opt)
    assert [type(r) for r in clone.rules] == [type(r) for r in opt.rules]
    assert isinstance(clone.inner_optimizer, keras.optimizers.AdamW)


def test_builds_on_first_apply_and_supports_apply_gradients():
    w = keras.Variable(np.float32([1.0, 2.0]), name="w")
    opt = HardenedOptimizer(keras.optimizers.SGD(0.1), clip=ClipByGlobalNorm(1.0))
    opt.apply([keras.ops.convert_to_tensor(np.float32([3.0, 4.0]))], [w])
    # (3, 4) clipped to (0.6, 0.8); SGD(0.1) -> (1 - 0.06, 2 - 0.08).
    np.testing.assert_allclose(w.numpy(), [0.94, 1.92], rtol=1e-6)
    opt.apply_gradients([(keras.ops.convert_to_tensor(np.float32([0.0, 0.5])), w)])
    np.testing.assert_allclose(w.numpy(), [0.94, 1.87], rtol=1e-6)
    assert int(opt.iterations) == 2
