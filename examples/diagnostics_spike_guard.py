"""Diagnose a model, then train through a corrupted batch with SpikeGuard.

`keras.callbacks.TerminateOnNaN` would stop at the corrupted batch with NaN
weights. SpikeGuard rolls back to the last good weights and optimizer state,
halves the learning rate and finishes the run; GradientMonitor puts the
gradient norm and update-to-weight ratio in the logs.

    .venv/bin/python examples/diagnostics_spike_guard.py
"""

import keras
import numpy as np

import keras_harden as kh

(x, y), (x_test, y_test) = kh.data.load_digits()
x = x.copy()
x[320:352] = np.nan  # batch 10 of every epoch is corrupted

model = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="tanh"),
        keras.layers.Dense(10),
    ]
)
model.compile(
    optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)

report = kh.diagnostics.diagnose(model, (x[:320], y[:320]), steps=5)
print(f"before training: {report.verdict}")

guard = kh.diagnostics.SpikeGuard(max_rollbacks=5)
monitor = kh.diagnostics.GradientMonitor(
    per_layer=False, every=5, data=(x_test[:64], y_test[:64])
)
history = model.fit(
    x, y, epochs=3, batch_size=32, shuffle=False, verbose=2, callbacks=[guard, monitor]
)

finite = all(np.isfinite(w).all() for w in model.get_weights())
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"rollbacks: {len(guard.events)} at steps {[e['step'] for e in guard.events]}")
print(f"learning rate now: {float(model.optimizer.learning_rate):g}")
print(f"weights finite: {finite}; test accuracy: {accuracy:.3f}")
print(f"mean gradient norm per epoch: {np.round(history.history['grad_norm'], 3)}")
