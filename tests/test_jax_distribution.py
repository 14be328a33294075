"""`keras.distribution.DataParallel` on JAX with two CPU devices: each adaptive
rule gives the weights of the one-device run (the conftest asks XLA for two
host devices before JAX starts)."""

import keras
import numpy as np
import pytest

import keras_harden as kh

pytestmark = pytest.mark.jax_only

RULES = {
    "agc": lambda inner: kh.optimizers.AdaptiveGradientClipping(
        inner, clip_factor=0.05
    ),
    "autoclip": lambda inner: kh.optimizers.AutoClip(inner, history=8),
    "zclip": lambda inner: kh.optimizers.ZClip(inner, warmup_steps=2, z_threshold=1.0),
    "adagc": lambda inner: kh.optimizers.AdaGC(inner, abs_clip=0.5, warmup_steps=2),
}


def _train(rule, distribution=None, jit_compile=True):
    rng = np.random.RandomState(0)
    x = rng.randn(96, 6).astype("float32") * 3.0
    y = rng.randint(0, 3, size=(96,)).astype("int32")

    def build():
        init = keras.initializers.GlorotUniform(seed=1)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="tanh", kernel_initializer=init),
                keras.layers.Dense(3, kernel_initializer=init),
            ]
        )
        model.compile(
            optimizer=RULES[rule](keras.optimizers.SGD(0.5)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    if distribution is None:
        return build()
    with distribution.scope():
        return build()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_data_parallel_equals_one_device(rule):
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2
    # the reference runs on one of the same CPU devices (also where a GPU is
    # the default device)
    expected = _train(rule, keras.distribution.DataParallel(devices=devices[:1]))
    actual = _train(rule, keras.distribution.DataParallel(devices=devices))
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_uses_stateless_apply_with_and_without_jit(jit_compile):
    # Keras's JAX trainer steps through `optimizer.stateless_apply`; the run
    # must train (finite, changed weights) in both modes and agree between them.
    weights = _train("zclip", jit_compile=jit_compile)
    reference = _train("zclip", jit_compile=not jit_compile)
    for a, b in zip(weights, reference, strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=1e-5)
