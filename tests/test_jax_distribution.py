"""`keras.distribution` on JAX with two CPU devices (the conftest asks XLA for
two host devices before JAX starts): under `DataParallel` each adaptive rule
gives the weights of the one-device run; under `ModelParallel`, with kernels
sharded across the devices by a `LayoutMap`, every rule gives the one-device
weights and statistics and the kernels stay sharded."""

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


ALL_RULES = {
    "value": lambda: kh.optimizers.ClipByValue(0.05),
    "norm": lambda: kh.optimizers.ClipByNorm(0.2),
    "global_norm": lambda: kh.optimizers.ClipByGlobalNorm(0.3),
    "unitwise": lambda: kh.optimizers.UnitwiseClip(0.05),
    "percentile": lambda: kh.optimizers.PercentileClip(25.0, history=4),
    "zscore": lambda: kh.optimizers.ZScoreClip(warmup_steps=2, z_threshold=0.5),
    "per_tensor_ema": lambda: kh.optimizers.PerTensorEMAClip(
        abs_clip=0.3, warmup_steps=2
    ),
}


def _model_parallel():
    mesh = keras.distribution.DeviceMesh(
        (1, 2), ["batch", "model"], keras.distribution.list_devices("cpu")
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*dense.*kernel"] = (None, "model")
    layout_map[".*dense.*bias"] = ("model",)
    return keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )


def _train_sharded(rule, distribution):
    rng = np.random.RandomState(0)
    x = rng.randn(96, 6).astype("float32") * 3.0
    y = rng.randint(0, 4, size=(96,)).astype("int32")
    with distribution.scope():
        init = keras.initializers.GlorotUniform(seed=1)
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="tanh", kernel_initializer=init),
                keras.layers.Dense(4, kernel_initializer=init),
            ]
        )
        optimizer = kh.optimizers.HardenedOptimizer(
            keras.optimizers.SGD(0.5), clip=ALL_RULES[rule]()
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model, optimizer


@pytest.mark.parametrize("rule", sorted(ALL_RULES))
def test_model_parallel_equals_one_device_and_stays_sharded(rule):
    from jax.sharding import PartitionSpec

    one, one_opt = _train_sharded(
        rule,
        keras.distribution.DataParallel(
            devices=keras.distribution.list_devices("cpu")[:1]
        ),
    )
    sharded, sharded_opt = _train_sharded(rule, _model_parallel())
    for a, b in zip(sharded.weights, one.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5
        )
    # The statistics and every rule's state are the one-device values.
    for a, b in zip(sharded_opt.variables, one_opt.variables, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            atol=1e-5,
            rtol=1e-5,
            err_msg=a.path,
        )
    assert float(sharded_opt.clipped_gradient_norm) <= float(
        sharded_opt.gradient_norm
    )
    # Training kept the layout: each kernel is split by columns across the
    # two devices, not replicated.
    for layer in sharded.layers:
        assert layer.kernel.value.sharding.spec == PartitionSpec(None, "model")
        shards = layer.kernel.value.addressable_shards
        assert len(shards) == 2
        assert shards[0].data.shape == (layer.kernel.shape[0], layer.units // 2)
