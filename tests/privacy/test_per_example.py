import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_harden.privacy import per_example

# Zeros initializers: only the structure matters here, and Keras's random
# initializers cost seconds per model on JAX.
Z = {"kernel_initializer": "zeros"}


def _mlp():
    return keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(3, "tanh", **Z),
            layers.Dropout(0.5),
            layers.Dense(2, **Z),
        ]
    )


def _functional_chain():
    inputs = keras.Input((6, 2))
    h = layers.Conv1D(3, 2, activation="relu", **Z)(inputs)
    h = layers.Flatten()(h)
    outputs = layers.Dense(2, **Z)(h)
    return keras.Model(inputs, outputs)


def _residual():
    inputs = keras.Input((4,))
    h = layers.Dense(4, "relu", **Z)(inputs)
    h = layers.Add()([inputs, h])
    return keras.Model(inputs, layers.Dense(2, **Z)(h))


def _layer_norm():
    return keras.Sequential(
        [keras.Input((4,)), layers.Dense(4, **Z), layers.LayerNormalization()]
    )


def _shared_layer():
    inputs = keras.Input((4,))
    dense = layers.Dense(4, **Z)
    return keras.Model(inputs, dense(dense(inputs)))


def _two_inputs():
    a, b = keras.Input((2,)), keras.Input((2,))
    return keras.Model([a, b], layers.Dense(1, **Z)(layers.Concatenate()([a, b])))


def _nested_sequential():
    inner = keras.Sequential([layers.Dense(3, "tanh", **Z), layers.Dense(3, **Z)])
    return keras.Sequential([keras.Input((4,)), inner, layers.Dense(2, **Z)])


def _frozen_layer_norm():
    return keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(4, **Z),
            layers.LayerNormalization(trainable=False),
            layers.Dense(2, **Z),
        ]
    )


def _embedding():
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            layers.Embedding(7, 3, embeddings_initializer="zeros"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2, **Z),
        ]
    )


def _lora():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, **Z)])
    model.layers[0].enable_lora(2)
    return model


def _masked_embedding():
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            layers.Embedding(7, 3, mask_zero=True, embeddings_initializer="zeros"),
            layers.GlobalAveragePooling1D(),
        ]
    )


def _grouped_conv():
    return keras.Sequential([keras.Input((6, 4)), layers.Conv1D(4, 2, groups=2, **Z)])


def _causal_conv():
    return keras.Sequential(
        [keras.Input((6, 2)), layers.Conv1D(3, 2, padding="causal", **Z)]
    )


BUILDERS = {
    "mlp": _mlp,
    "functional chain": _functional_chain,
    "residual": _residual,
    "layer norm": _layer_norm,
    "shared layer": _shared_layer,
    "two inputs": _two_inputs,
    "nested sequential": _nested_sequential,
    "frozen layer norm": _frozen_layer_norm,
    "embedding": _embedding,
    "lora": _lora,
    "masked embedding": _masked_embedding,
    "grouped conv": _grouped_conv,
    "causal conv": _causal_conv,
}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in BUILDERS.items()}


# -- choose_method --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mlp", "ghost"),
        ("functional chain", "ghost"),
        ("nested sequential", "ghost"),
        ("frozen layer norm", "ghost"),  # no trainable variables: a plain layer
        ("embedding", "ghost"),
        ("residual", "vectorized"),
        ("layer norm", "vectorized"),
        ("shared layer", "vectorized"),
        ("two inputs", "vectorized"),
        ("lora", "vectorized"),
        ("masked embedding", "vectorized"),
        ("grouped conv", "vectorized"),
        ("causal conv", "vectorized"),
    ],
)
def test_choose_method_auto(models, name, expected):
    method, chain = per_example.choose_method(models[name])
    assert method == expected
    assert (chain is None) == (expected == "vectorized")


def test_ghost_chain_is_the_layers_in_order(models):
    mlp = models["mlp"]
    _, chain = per_example.choose_method(mlp)
    assert chain == list(mlp.layers)  # Dense, Dropout, Dense
    functional = models["functional chain"]
    _, chain = per_example.choose_method(functional)
    assert [type(layer).__name__ for layer in chain] == ["Conv1D", "Flatten", "Dense"]
    # a Sequential inside a Sequential is flattened into one chain
    _, chain = per_example.choose_method(models["nested sequential"])
    assert [layer.units for layer in chain] == [3, 3, 2]


def test_vectorized_on_request_even_for_a_chain(models):
    assert per_example.choose_method(models["mlp"], "vectorized") == (
        "vectorized",
        None,
    )


def test_ghost_on_request(models):
    method, chain = per_example.choose_method(models["mlp"], "ghost")
    assert method == "ghost" and len(chain) == 3


@pytest.mark.parametrize(
    "name, reason",
    [
        ("residual", "the model is not a chain of layers"),
        ("layer norm", "(LayerNormalization) has trainable variables but no ghost"),
        ("lora", "(Dense) has trainable variables but no ghost norm"),
    ],
)
def test_ghost_on_an_unsupported_model_raises(models, name, reason):
    with pytest.raises(ValueError) as error:
        per_example.choose_method(models[name], "ghost")
    message = str(error.value)
    assert message.startswith("Ghost clipping needs Dense, Conv1D/Conv2D or Embedding")
    assert reason in message
    assert "Use per_example='vectorized'" in message
    assert message.endswith("Received: per_example='ghost'")


@pytest.mark.parametrize("bad", ["fast", "Ghost", None, 1])
def test_bad_per_example_value(models, bad):
    with pytest.raises(ValueError) as error:
        per_example.choose_method(models["mlp"], bad)
    assert str(error.value) == (
        "`per_example` must be one of 'auto', 'ghost', 'vectorized'. "
        f"Received: per_example={bad!r}"
    )


# -- check_model ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "layer norm", "residual", "embedding"])
def test_check_model_accepts_per_example_layers(models, name):
    per_example.check_model(models[name])


def _bn_message(error):
    message = str(error.value)
    assert message.startswith("Batch normalization mixes the examples of a batch")
    assert "GroupNormalization" in message
    return message


def test_check_model_refuses_batch_normalization():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            layers.Dense(2, **Z),
            layers.BatchNormalization(name="bn"),
        ]
    )
    with pytest.raises(ValueError) as error:
        per_example.check_model(model)
    assert _bn_message(error).endswith("Received: layer='bn' (BatchNormalization)")


def test_check_model_refuses_nested_batch_normalization():
    # inside a functional sub-model that sits inside a Sequential
    inner_in = keras.Input((3,))
    inner = keras.Model(
        inner_in, layers.BatchNormalization(name="deep_bn")(inner_in), name="block"
    )
    model = keras.Sequential([keras.Input((3,)), inner, layers.Dense(1, **Z)])
    with pytest.raises(ValueError) as error:
        per_example.check_model(model)
    assert _bn_message(error).endswith("Received: layer='deep_bn' (BatchNormalization)")
    # and two levels down, in a Sequential inside a Sequential
    deeper = keras.Sequential(
        [
            keras.Input((3,)),
            keras.Sequential(
                [keras.Sequential([layers.BatchNormalization(name="bn2")])]
            ),
        ]
    )
    with pytest.raises(ValueError, match="layer='bn2'"):
        per_example.check_model(deeper)


def test_check_model_refuses_a_kernel_regularizer():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            layers.Dense(2, kernel_regularizer="l2", name="decayed", **Z),
        ]
    )
    with pytest.raises(ValueError) as error:
        per_example.check_model(model)
    message = str(error.value)
    assert message.startswith("DP training does not take regularization losses")
    assert "AdamW" in message
    assert "Received: layer='decayed' with kernel_regularizer=" in message


def test_check_model_refuses_other_regularizers():
    for attribute in ("bias_regularizer", "activity_regularizer"):
        model = keras.Sequential(
            [keras.Input((3,)), layers.Dense(2, **{attribute: "l1"}, **Z)]
        )
        with pytest.raises(ValueError, match=f"with {attribute}="):
            per_example.check_model(model)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            layers.Embedding(4, 2, embeddings_regularizer="l2"),
        ]
    )
    with pytest.raises(ValueError, match="with embeddings_regularizer="):
        per_example.check_model(model)


# -- probe_shapes, ghost_forward, sublayers ------------------------------------------


def test_probe_shapes_one_per_ghost_layer(models):
    _, chain = per_example.choose_method(models["functional chain"])
    # Conv1D(3, 2) on (8, 6, 2): (8, 5, 3); Flatten has no probe; Dense (8, 2)
    assert per_example.probe_shapes(chain, (8, 6, 2)) == [(8, 5, 3), (8, 2)]
    _, chain = per_example.choose_method(models["embedding"])
    assert per_example.probe_shapes(chain, (2, 5)) == [(2, 5, 3), (2, 2)]


def test_ghost_forward_with_zero_probes_is_the_model():
    model = _frozen_layer_norm()
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape) for w in model.get_weights()])
    _, chain = per_example.choose_method(model)
    x = rng.standard_normal((3, 4)).astype("float32")
    probes = [ops.zeros(s) for s in per_example.probe_shapes(chain, x.shape)]
    outputs, taps = per_example.ghost_forward(chain, x, probes, training=False)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs), ops.convert_to_numpy(model(x)), rtol=1e-5
    )
    assert [(kind, layer.name) for kind, layer, _ in taps] == [
        ("dense", chain[0].name),
        ("dense", chain[2].name),
    ]
    # the second Dense's tap is its input, the layer norm's output
    np.testing.assert_allclose(
        ops.convert_to_numpy(taps[1][2]),
        ops.convert_to_numpy(chain[1](chain[0](x))),
        rtol=1e-5,
        atol=1e-6,
    )


def test_ghost_forward_adds_each_probe_before_the_activation(models):
    # Dense(3, tanh) then Dropout (off) then Dense(2); weights zero, biases
    # zero: the first output is tanh(0 + p1) and the model's output p2
    _, chain = per_example.choose_method(models["mlp"])
    p1 = np.array([[0.5, -1.0, 2.0]], "float32")
    p2 = np.array([[3.0, -4.0]], "float32")
    outputs, taps = per_example.ghost_forward(
        chain, np.ones((1, 4), "float32"), [p1, p2], training=False
    )
    np.testing.assert_allclose(ops.convert_to_numpy(outputs), p2)
    np.testing.assert_allclose(ops.convert_to_numpy(taps[1][2]), np.tanh(p1), rtol=1e-6)


def test_sublayers_depth_first(models):
    names = [
        type(layer).__name__
        for layer in per_example.sublayers(models["nested sequential"])
    ]
    assert names == ["Sequential", "Dense", "Dense", "Dense"]
