"""Real training on the digits data: a setting that kills plain SGD trains
with each adaptive rule; a stable setting trains as well as plain SGD."""

import keras
import numpy as np
import pytest

from keras_harden.optimizers import AdaGC, AdaptiveGradientClipping, AutoClip, ZClip

pytestmark = pytest.mark.slow

OPTIMIZERS = {
    "plain": lambda inner: inner,
    # Small batches (32) want a looser AGC factor than NFNets' 0.01 at 4096.
    "agc": lambda inner: AdaptiveGradientClipping(inner, clip_factor=0.02),
    "autoclip": lambda inner: AutoClip(inner),
    # 126 steps in all: a 5-step warm-up instead of 25.
    "zclip": lambda inner: ZClip(inner, warmup_steps=5),
    "adagc": lambda inner: AdaGC(inner),
}


def _mlp():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    for i in range(4):
        h = keras.layers.Dense(
            32,
            activation="relu",
            kernel_initializer=keras.initializers.HeNormal(seed=i),
        )(h)
    outputs = keras.layers.Dense(
        10, kernel_initializer=keras.initializers.HeNormal(seed=99)
    )(h)
    return keras.Model(inputs, outputs)


def _accuracy(name, x, y, xt, yt):
    model = _mlp()
    model.compile(
        optimizer=OPTIMIZERS[name](keras.optimizers.SGD(0.05, momentum=0.9)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return model.evaluate(xt, yt, verbose=0)[1]


@pytest.fixture(scope="module")
def corrupted(digits):
    """3% of the training images (none in the first 8 batches) scaled by 30:
    rare outlier batches whose gradients are spikes."""
    (x, y), test = digits
    x = x.copy()
    rng = np.random.default_rng(0)
    bad = rng.choice(np.arange(256, len(x)), size=int(0.03 * len(x)), replace=False)
    x[bad] *= 30.0
    return (x, y), test


@pytest.fixture(scope="module")
def plain_results(digits, corrupted):
    (x, y), (xt, yt) = digits
    (xc, yc), _ = corrupted
    return {
        "clean": _accuracy("plain", x, y, xt, yt),
        "corrupted": _accuracy("plain", xc, yc, xt, yt),
    }


@pytest.mark.parametrize("name", ["agc", "autoclip", "zclip", "adagc"])
def test_rule_trains_where_plain_sgd_dies(name, corrupted, plain_results):
    (x, y), (xt, yt) = corrupted
    # Measured: plain 0.10 (dead), AGC 0.87, AutoClip 0.86, ZClip 0.85.
    assert plain_results["corrupted"] < 0.2
    assert _accuracy(name, x, y, xt, yt) > 0.75


@pytest.mark.parametrize("name", ["agc", "autoclip", "zclip", "adagc"])
def test_rule_trains_as_well_as_plain_when_stable(name, digits, plain_results):
    (x, y), (xt, yt) = digits
    # Measured on TensorFlow: plain 0.84, AGC 0.90, AutoClip 0.91, ZClip 0.92;
    # on JAX (other initial draws): plain 0.87, AutoClip 0.83 after 3 epochs
    # (its 10th-percentile limit slows the start).
    assert plain_results["clean"] > 0.75
    assert _accuracy(name, x, y, xt, yt) >= plain_results["clean"] - 0.05
