"""Compiled steps ready for TPU: with `jit_compile=True` a hardened optimizer's
train step is traced once, across steps, epochs, a learning-rate change and a
skipped non-finite step. Runs on every backend (under JAX, tracing with
`jax.jit` also proves the step holds no host sync: a `.numpy()` or a Python
branch on a traced value would raise)."""

import keras
import numpy as np
import pytest

import keras_harden as kh


class TraceCounter(keras.layers.Layer):
    """Identity layer whose Python body runs once per trace of the step."""

    traces = 0

    def call(self, x):
        TraceCounter.traces += 1
        return x


RULES = {
    "global_norm": lambda inner: kh.optimizers.GradientClipping(
        inner, global_clipnorm=1.0
    ),
    "agc": lambda inner: kh.optimizers.AdaptiveGradientClipping(inner),
    "autoclip": lambda inner: kh.optimizers.AutoClip(inner, history=16),
    "zclip": lambda inner: kh.optimizers.ZClip(inner, warmup_steps=2),
    "adagc": lambda inner: kh.optimizers.AdaGC(inner, warmup_steps=2),
}


class RecordTracesAfterFirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "after_first_step"):
            self.after_first_step = TraceCounter.traces


class HalveLearningRate(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate) / 2
        )


@pytest.mark.parametrize("rule", sorted(RULES))
def test_train_step_is_traced_once(rule):
    rng = np.random.RandomState(0)
    x = rng.randn(64, 5).astype("float32")
    y = rng.randn(64, 2).astype("float32")
    x[20] = np.nan  # batch 2 of epoch 1 has a non-finite gradient: skipped
    model = keras.Sequential([keras.Input((5,)), TraceCounter(), keras.layers.Dense(2)])
    optimizer = RULES[rule](keras.optimizers.SGD(0.01))
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    TraceCounter.traces = 0
    record = RecordTracesAfterFirstStep()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[record, HalveLearningRate()],
    )
    assert record.after_first_step >= 1
    assert TraceCounter.traces == record.after_first_step
    assert int(keras.ops.convert_to_numpy(optimizer.skipped_steps)) == 3
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 3 * 8 - 3
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(optimizer.learning_rate), 0.01 / 8, rtol=1e-6
    )
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
