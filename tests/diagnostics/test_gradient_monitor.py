import math
import os

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.diagnostics import GradientMonitor
from tests.toolkit import assert_config_round_trip, small_classifier


def _linear_model():
    """y = x . w with w = [1, 2] (no bias): gradients are easy by hand."""
    inputs = keras.Input((2,))
    dense = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant([[1.0], [2.0]]),
        name="dense",
    )
    return keras.Model(inputs, dense(inputs))


X = np.array([[1.0, 1.0]], dtype="float32")
Y = np.array([[0.0]], dtype="float32")

# Worked by hand, MSE loss L = (x.w - y)^2, dL/dw = 2 (x.w - y) x, SGD lr 0.1:
# step 0: w0 = [1, 2], pred 3, g0 = [6, 6], ||g0|| = 6 sqrt(2) = 8.48528;
#         dw = -0.6 [1, 1], ||dw|| = 0.6 sqrt(2), ||w0|| = sqrt(5):
#         ratio0 = 0.6 sqrt(2) / sqrt(5) = 0.379473.
# step 1: w1 = [0.4, 1.4], pred 1.8, g1 = [3.6, 3.6], ||g1|| = 3.6 sqrt(2) = 5.09117;
#         dw = -0.36 [1, 1], ||w1|| = sqrt(0.16 + 1.96) = 1.456022:
#         ratio1 = 0.36 sqrt(2) / 1.456022 = 0.349666.
GRAD = [6 * math.sqrt(2), 3.6 * math.sqrt(2)]
RATIO = [0.6 * math.sqrt(2) / math.sqrt(5), 0.36 * math.sqrt(2) / math.sqrt(2.12)]


def test_plain_optimizer_norms_match_hand_computation():
    model = _linear_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    monitor = GradientMonitor(data=(X, Y))
    history = model.fit(X, Y, epochs=2, batch_size=1, verbose=0, callbacks=[monitor])
    assert [r["step"] for r in monitor.records] == [0, 1]
    for record, grad, ratio in zip(monitor.records, GRAD, RATIO, strict=True):
        assert record["grad_norm"] == pytest.approx(grad, rel=1e-6)
        assert record["grad_norm/dense"] == pytest.approx(grad, rel=1e-6)
        assert record["update_ratio"] == pytest.approx(ratio, rel=1e-5)
        assert record["update_ratio/dense"] == pytest.approx(ratio, rel=1e-5)
    # One step per epoch: the epoch means in History are the step values.
    np.testing.assert_allclose(history.history["grad_norm"], GRAD, rtol=1e-6)
    np.testing.assert_allclose(history.history["update_ratio/dense"], RATIO, rtol=1e-5)


def test_probe_leaves_non_trainable_state_alone():
    inputs = keras.Input((2,))
    h = keras.layers.BatchNormalization(name="bn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.array([[1.0, 3.0], [3.0, 5.0]], dtype="float32")
    y = np.zeros((2, 1), dtype="float32")
    # lr 0: only fit's own forward pass moves the moving mean, by
    # momentum 0.99: mean = 0.01 * batch mean = 0.01 * [2, 4].
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=2,
        verbose=0,
        callbacks=[GradientMonitor(data=(x * 100, y))],
    )
    moving_mean = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)
    np.testing.assert_allclose(moving_mean, [0.02, 0.04], rtol=1e-5)


def test_without_data_or_hardened_optimizer_logs_exact_update_ratios_only():
    model = _linear_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    monitor = GradientMonitor(per_layer=False)
    with pytest.warns(UserWarning, match="update-to-weight ratios"):
        model.fit(X, Y, epochs=2, batch_size=1, verbose=0, callbacks=[monitor])
    assert set(monitor.records[0]) == {"step", "update_ratio"}
    np.testing.assert_allclose(
        [r["update_ratio"] for r in monitor.records], RATIO, rtol=1e-5
    )


def test_every_samples_one_batch_in_n(digits):
    (x, y), _ = digits
    model = small_classifier()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    monitor = GradientMonitor(every=3, data=(x[:32], y[:32]))
    model.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert [r["step"] for r in monitor.records] == [0, 3, 6, 9]
    layers = {
        k.split("/", 1)[1] for k in monitor.records[0] if k.startswith("grad_norm/")
    }
    assert layers == {"conv2d", "dense"}
    for record in monitor.records:
        assert all(np.isfinite(v) for v in record.values())
        # the global norm is the root of the sum of squared layer norms
        by_layer = [record[f"grad_norm/{n}"] for n in layers]
        assert record["grad_norm"] == pytest.approx(
            math.sqrt(sum(v * v for v in by_layer))
        )


def test_reads_hardened_optimizer_statistics():
    optimizers = kh.optimizers
    if not hasattr(optimizers, "HardenedOptimizer"):
        pytest.skip("kh.optimizers.HardenedOptimizer has not landed yet")
    model = _linear_model()
    model.compile(
        optimizer=optimizers.HardenedOptimizer(keras.optimizers.SGD(0.1)), loss="mse"
    )
    monitor = GradientMonitor()  # no data: the optimizer's own figures
    model.fit(X, Y, epochs=2, batch_size=1, verbose=0, callbacks=[monitor])
    np.testing.assert_allclose(
        [r["grad_norm"] for r in monitor.records], GRAD, rtol=1e-5
    )
    assert [r["skipped_steps"] for r in monitor.records] == [0.0, 0.0]
    np.testing.assert_allclose(
        [r["update_ratio"] for r in monitor.records], RATIO, rtol=1e-5
    )


@pytest.mark.tf_only
def test_tensorboard_scalars(tmp_path):
    import tensorflow as tf

    model = _linear_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    monitor = GradientMonitor(log_dir=tmp_path, data=(X, Y))
    model.fit(X, Y, epochs=2, batch_size=1, verbose=0, callbacks=[monitor])
    files = os.listdir(tmp_path / "train")
    assert files
    tags = {}
    for name in files:
        for event in tf.compat.v1.train.summary_iterator(
            str(tmp_path / "train" / name)
        ):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(
                    float(tf.make_ndarray(value.tensor))
                )
    np.testing.assert_allclose(tags["batch_grad_norm"], GRAD, rtol=1e-6)
    np.testing.assert_allclose(tags["epoch_update_ratio/dense"], RATIO, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every": 0}, "every=0"),
        ({"per_layer": "yes"}, "per_layer='yes'"),
        ({"log_dir": 3}, "log_dir=3"),
        ({"data": np.zeros(3)}, "data=ndarray"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradientMonitor(**kwargs)


def test_config_round_trip():
    assert_config_round_trip(GradientMonitor(log_dir="logs", per_layer=False, every=4))
