import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.fusion.align import (
    Analysis,
    align,
    apply_permutations,
    expand,
    permute,
)
from tests.fusion.conftest import assert_same_weights, weights_of

# -- models of each layer family ---------------------------------------------------


def mlp():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(7, activation="relu"),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


def conv1d_net():
    return keras.Sequential(
        [
            keras.Input((12, 3)),
            keras.layers.Conv1D(8, 3, activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(6, 3, padding="same"),
            keras.layers.LeakyReLU(0.1),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )


def conv2d_flatten_net():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Rescaling(0.5),
            keras.layers.Conv2D(5, 3, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Flatten(),  # 4 * 4 positions of 5 channels
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def depthwise_net():
    return keras.Sequential(
        [
            keras.Input((7, 7, 2)),
            keras.layers.Conv2D(6, 1),
            keras.layers.DepthwiseConv2D(3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(4, 3, strides=2),
            keras.layers.ZeroPadding2D(1),
            keras.layers.AveragePooling2D(2),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(3),
        ]
    )


def batchnorm_net():
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3),
        ]
    )


def layernorm_net():
    return keras.Sequential(
        [
            keras.Input((4, 5)),
            keras.layers.Dense(8),
            keras.layers.LayerNormalization(),
            keras.layers.Activation("gelu"),
            keras.layers.Dense(6),
            keras.layers.RMSNormalization(),
            keras.layers.PReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def residual_net():
    """A stem, two residual blocks with batch norm (one residual stream), a
    head; functional, with a nested Sequential block."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    for index in range(2):
        y = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.Conv2D(6, 3, padding="same")(y)
        y = keras.layers.BatchNormalization()(y)
        x = keras.layers.ReLU()(keras.layers.Add(name=f"join_{index}")([x, y]))
    inner = keras.Sequential(
        [keras.Input((8, 8, 6)), keras.layers.Conv2D(4, 1, activation="relu")],
        name="inner",
    )
    x = inner(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


FAMILIES = {
    "dense": (mlp, (5,)),
    "conv1d": (conv1d_net, (12, 3)),
    "conv2d_flatten": (conv2d_flatten_net, (6, 6, 2)),
    "depthwise": (depthwise_net, (7, 7, 2)),
    "batchnorm": (batchnorm_net, (5,)),
    "layernorm": (layernorm_net, (4, 5)),
    "residual_batchnorm": (residual_net, (8, 8, 1)),
}


def randomized(build, seed):
    """`build()` with every weight drawn at random (batch-norm variances
    positive), so that no unit is like another and batch norm is not the
    identity."""
    keras.utils.set_random_seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue  # seed states
        value = rng.normal(size=variable.shape)
        if "variance" in variable.path:
            value = np.abs(value) + 0.5
        variable.assign(value.astype("float32"))
    return model


def float_weights(model):
    return [w for w in weights_of(model) if w.dtype.kind == "f"]


def inputs_for(shape, n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def random_permutations(analysis, seed):
    rng = np.random.default_rng(seed)
    return [rng.permutation(size) for size in analysis.group_sizes]


# -- pure helpers ------------------------------------------------------------------


def test_expand_by_hand():
    # 2 positions of 3 channels, index p * 3 + c; channels (2, 0, 1):
    # position 0 -> 2, 0, 1; position 1 -> 5, 3, 4
    assert expand(np.array([2, 0, 1]), 2).tolist() == [2, 0, 1, 5, 3, 4]


def test_permute_by_hand():
    value = np.arange(6).reshape(2, 3)
    # columns (group 0) reordered 2, 0, 1; rows (group 1) swapped
    got = permute(value, [(1, 0, 1), (0, 1, 1)], [np.array([2, 0, 1]), [1, 0]])
    assert got.tolist() == [[5, 3, 4], [2, 0, 1]]
    # the skipped axis stays
    got = permute(value, [(1, 0, 1), (0, 1, 1)], [np.array([2, 0, 1]), [1, 0]], 0)
    assert got.tolist() == [[3, 4, 5], [0, 1, 2]]


def test_groups_of_a_residual_net():
    analysis = Analysis(residual_net())
    # stem (6, joined by both Adds into one residual stream), the blocks'
    # inner convs (5 each), the nested model's conv (4); the head is fixed
    assert sorted(analysis.group_sizes) == [4, 5, 5, 6]


# -- align keeps the function -------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_align_keeps_the_function(family):
    build, shape = FAMILIES[family]
    reference, model = randomized(build, 1), randomized(build, 2)
    before = weights_of(model)
    aligned = align(reference, model)
    x = inputs_for(shape)
    np.testing.assert_allclose(
        predict(aligned, x), predict(model, x), rtol=1e-4, atol=1e-4
    )
    assert aligned is not model
    assert_same_weights(before, model)
    # it did reorder units, and towards the reference: the summed inner
    # product of matching kernels grew
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(weights_of(aligned), before, strict=True)
    ]
    assert any(changed)

    def overlap(m):
        return sum(
            float(np.sum(u * v))
            for u, v in zip(weights_of(reference), weights_of(m), strict=True)
            if u.ndim >= 2 and u.dtype.kind == "f"
        )

    assert overlap(aligned) > overlap(model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_weight_matching_undoes_a_random_permutation(family):
    build, shape = FAMILIES[family]
    reference = randomized(build, 3)
    analysis = Analysis(reference)
    shuffled = apply_permutations(reference, analysis, random_permutations(analysis, 4))
    x = inputs_for(shape)
    np.testing.assert_allclose(
        predict(shuffled, x), predict(reference, x), rtol=1e-4, atol=1e-4
    )
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(weights_of(shuffled), weights_of(reference), strict=True)
    )
    aligned = align(reference, shuffled)
    for a, b in zip(float_weights(aligned), float_weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_known_permutation_of_an_mlp_by_hand():
    reference = randomized(mlp, 5)
    k1, b1, k2, b2, k3, b3 = reference.get_weights()
    p = np.array([3, 0, 6, 1, 5, 2, 4])  # new unit i = old unit p[i]
    q = np.array([5, 4, 3, 2, 0, 1])
    model = mlp()
    model.set_weights([k1[:, p], b1[p], k2[p][:, q], b2[q], k3[q], b3])
    aligned = align(reference, model)
    for a, b in zip(aligned.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_known_permutation_through_flatten_by_hand():
    reference = randomized(conv2d_flatten_net, 6)
    conv_k, conv_b, dense_k, dense_b, head_k, head_b = reference.get_weights()
    p = np.array([4, 2, 0, 3, 1])
    # the flattened index is position * 5 + channel: permute channels within
    # each of the 16 positions
    rows = dense_k.reshape(16, 5, 4)[:, p, :].reshape(80, 4)
    model = conv2d_flatten_net()
    model.set_weights([conv_k[..., p], conv_b[p], rows, dense_b, head_k, head_b])
    x = inputs_for((6, 6, 2))
    np.testing.assert_allclose(
        predict(model, x), predict(reference, x), rtol=1e-5, atol=1e-5
    )
    aligned = align(reference, model)
    for a, b in zip(aligned.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_activation_matching_undoes_a_known_permutation():
    reference = randomized(mlp, 7)
    analysis = Analysis(reference)
    shuffled = apply_permutations(reference, analysis, random_permutations(analysis, 8))
    x = inputs_for((5,), n=200)
    aligned = align(reference, shuffled, data=x, batch_size=64)
    for a, b in zip(float_weights(aligned), float_weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_activation_matching_keeps_the_function():
    reference, model = randomized(residual_net, 9), randomized(residual_net, 10)
    x = inputs_for((8, 8, 1), n=32)
    aligned = align(reference, model, data=(x, np.zeros(32)), steps=1, batch_size=16)
    np.testing.assert_allclose(
        predict(aligned, x), predict(model, x), rtol=1e-4, atol=1e-4
    )


def test_seed_and_determinism():
    reference, model = randomized(residual_net, 11), randomized(residual_net, 12)
    one, two = align(reference, model, seed=3), align(reference, model, seed=3)
    for a, b in zip(weights_of(one), weights_of(two), strict=True):
        np.testing.assert_array_equal(a, b)


def test_weightless_unknown_layer_on_the_inputs_is_fine():
    def build():
        return keras.Sequential(
            [
                keras.Input((4, 3)),
                keras.layers.Reshape((12,)),  # only ever sees the inputs
                keras.layers.Dense(6, activation="relu"),
                keras.layers.Dense(2),
            ]
        )

    reference, model = randomized(build, 13), randomized(build, 14)
    x = inputs_for((4, 3))
    np.testing.assert_allclose(
        predict(align(reference, model), x), predict(model, x), rtol=1e-5, atol=1e-5
    )


def test_shared_layer_gets_one_permutation():
    def build():
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(6, activation="relu")
        shared = keras.layers.Dense(6, activation="tanh")
        x = shared(hidden(inputs))
        x = shared(x)  # the same layer twice: input and output units are one
        return keras.Model(inputs, keras.layers.Dense(2)(x))

    reference, model = randomized(build, 15), randomized(build, 16)
    assert Analysis(reference).group_sizes == [6]
    x = inputs_for((4,))
    np.testing.assert_allclose(
        predict(align(reference, model), x), predict(model, x), rtol=1e-5, atol=1e-5
    )


# -- what align refuses ------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_harden_tests")
class Mixer(keras.layers.Layer):
    """A custom layer with a weight: align cannot know how to permute it."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


def _with(layer, shape=(6,)):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6)(inputs)
    if isinstance(layer, keras.layers.LSTM):
        x = keras.layers.Reshape((2, 3))(x)
    x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize(
    "layer, match",
    [
        (lambda: keras.layers.LSTM(3, name="recurrent"), "'recurrent' \\(LSTM\\)"),
        (lambda: Mixer(name="mixer"), "'mixer' \\(Mixer\\)"),
        (lambda: keras.layers.Reshape((3, 2), name="reshape_it"), "'reshape_it'"),
    ],
)
def test_unsupported_layer_is_named(layer, match):
    reference, model = _with(layer()), _with(layer())
    with pytest.raises(ValueError, match=match) as error:
        align(reference, model)
    assert "Received: model=" in str(error.value)


def test_concatenate_is_refused():
    def build():
        inputs = keras.Input((4,))
        a = keras.layers.Dense(3)(inputs)
        b = keras.layers.Dense(3)(inputs)
        x = keras.layers.Concatenate(name="joined")([a, b])
        return keras.Model(inputs, keras.layers.Dense(2)(x))

    with pytest.raises(ValueError, match="'joined' \\(Concatenate\\)"):
        align(build(), build())


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    a, b = Net(), Net()
    a(np.zeros((1, 3))), b(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="subclassed"):
        align(a, b)


def test_argument_errors():
    a, b = mlp(), mlp()
    with pytest.raises(ValueError, match=r"Received: rounds=0"):
        align(a, b, rounds=0)
    with pytest.raises(ValueError, match=r"Received: seed='x'"):
        align(a, b, seed="x")
    with pytest.raises(ValueError, match="not compatible"):
        align(a, conv1d_net())
    with pytest.raises(ValueError, match=r"Received: reference="):
        align("model", b)


# -- round trip ------------------------------------------------------------------


def test_aligned_model_saves_and_loads_in_safe_mode(tmp_path):
    reference, model = randomized(residual_net, 17), randomized(residual_net, 18)
    aligned = align(reference, model)
    path = kh.save_model(aligned, tmp_path / "aligned.keras")
    loaded = kh.load_model(path)
    x = inputs_for((8, 8, 1))
    np.testing.assert_allclose(predict(loaded, x), predict(aligned, x), atol=1e-6)
