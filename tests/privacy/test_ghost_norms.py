import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_harden import _gradients
from keras_harden.privacy import clipping, ghost_norms, per_example


def _np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


# -- brute force in NumPy ------------------------------------------------------------


def _dense_brute_force(a, g, use_bias=True):
    """||a_i^T g_i||_F^2 (+ ||sum_t g_it||^2) per example, forming each
    example's `d x k` kernel gradient."""
    a = np.asarray(a, np.float64).reshape(len(a), -1, np.shape(a)[-1])
    g = np.asarray(g, np.float64).reshape(len(g), -1, np.shape(g)[-1])
    kernel = np.einsum("btd,btk->bdk", a, g)
    out = np.sum(kernel**2, axis=(1, 2))
    if use_bias:
        out = out + np.sum(g.sum(axis=1) ** 2, axis=1)
    return out


def _out_and_pad(size, kernel, stride, dilation, padding):
    """TensorFlow's / XLA's output length and leading padding of one axis."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    out = math.ceil(size / stride)
    return out, max((out - 1) * stride + span - size, 0) // 2


def _numpy_patches(x, kernel_size, strides, padding, dilation_rate):
    """Channels-last 2D patches `(batch, oh, ow, kh * kw * c)` by index
    arithmetic, with zero padding; 1D goes through a height of 1."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation_rate
    batch, h, w, c = x.shape
    oh, ph = _out_and_pad(h, kh, sh, dh, padding)
    ow, pw = _out_and_pad(w, kw, sw, dw, padding)
    padded = np.zeros((batch, h + 2 * kh * dh, w + 2 * kw * dw, c))
    padded[:, kh * dh : kh * dh + h, kw * dw : kw * dw + w] = x
    out = np.zeros((batch, oh, ow, kh, kw, c))
    for i in range(oh):
        for j in range(ow):
            for u in range(kh):
                for v in range(kw):
                    row = kh * dh + i * sh + u * dh - ph
                    col = kw * dw + j * sw + v * dw - pw
                    out[:, i, j, u, v] = padded[:, row, col]
    return out.reshape(batch, oh, ow, kh * kw * c)


def _embedding_brute_force(ids, g, vocabulary):
    """Each example's full `(vocabulary, dim)` table gradient, rows
    accumulated with `np.add.at`."""
    ids = np.asarray(ids).reshape(len(ids), -1)
    g = np.asarray(g, np.float64).reshape(len(g), ids.shape[1], -1)
    out = []
    for ids_i, g_i in zip(ids, g, strict=True):
        table = np.zeros((vocabulary, g.shape[-1]))
        np.add.at(table, ids_i, g_i)
        out.append(np.sum(table**2))
    return np.array(out)


# -- dense_squared_norms --------------------------------------------------------------


def test_dense_hand_worked():
    # one position: ||a||^2 ||g||^2 + ||g||^2
    #   example 0: a (1, 2, 2), g (1, -1): 9 * 2 + 2 = 20
    #   example 1: a (0, 0, 3), g (2, 0):  9 * 4 + 4 = 40
    a = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, 3.0]])
    g = np.array([[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(_np(ghost_norms.dense_squared_norms(a, g)), [20, 40])
    out = ghost_norms.dense_squared_norms(a, g, use_bias=False)
    np.testing.assert_allclose(_np(out), [18, 36])


def test_dense_two_positions_hand_worked():
    # T = 2, d = 1, k = 1: a = (1, 2), g = (3, -1) at the two positions
    # kernel gradient a^T g = 1 * 3 + 2 * (-1) = 1 -> 1; bias 3 - 1 = 2 -> 4
    # (the cross term matters: sum_t ||a_t||^2 ||g_t||^2 would give 13)
    a = np.array([[[1.0], [2.0]]])
    g = np.array([[[3.0], [-1.0]]])
    np.testing.assert_allclose(_np(ghost_norms.dense_squared_norms(a, g)), [5.0])


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize(
    "positions, d, k",
    [
        ((), 5, 3),  # (batch, d): one position
        ((1,), 5, 3),  # (batch, 1, d): one position too
        ((3,), 4, 5),  # T^2 = 9 <= d k = 20: the Gram form
        ((6,), 2, 3),  # T^2 = 36 > d k = 6: the per-example product
        ((2, 3), 4, 5),  # T = 6 positions over two axes: 36 > 20
        ((2, 2), 4, 5),  # T = 4 over two axes: 16 <= 20
        # (on JAX every kernel above, d k <= 512, takes the broadcast form)
        ((3,), 24, 24),  # d k = 576 > 512 on JAX too: T^2 = 9, the Gram form
        ((30,), 24, 24),  # T^2 = 900 > 576: the per-example product
    ],
)
def test_dense_matches_brute_force(positions, d, k, use_bias):
    rng = np.random.default_rng([*positions, d, k])
    a = rng.standard_normal((4, *positions, d)).astype("float32")
    g = rng.standard_normal((4, *positions, k)).astype("float32")
    out = _np(ghost_norms.dense_squared_norms(a, g, use_bias))
    assert out.shape == (4,)
    np.testing.assert_allclose(out, _dense_brute_force(a, g, use_bias), rtol=1e-5)


def test_dense_zero_gradient_is_zero():
    a = np.ones((2, 3, 4), "float32")
    g = np.zeros((2, 3, 2), "float32")
    np.testing.assert_array_equal(_np(ghost_norms.dense_squared_norms(a, g)), [0, 0])


# -- conv_patches ---------------------------------------------------------------------


def test_conv_patches_hand_worked_1d():
    # sequence 0 1 2 3 4, kernel 3, "same", stride 1: one zero on each side
    # patches (0 0 1) (0 1 2) (1 2 3) (2 3 4) (3 4 0)
    x = np.arange(5.0, dtype="float32").reshape(1, 5, 1)
    out = _np(ghost_norms.conv_patches(x, (3,), (1,), "same", (1,)))
    expected = [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0]]
    np.testing.assert_array_equal(out[0], expected)
    # dilation 2, "valid": taps t, t + 2, t + 4 -> only (0 2 4)
    out = _np(ghost_norms.conv_patches(x, (3,), (1,), "valid", (2,)))
    np.testing.assert_array_equal(out[0], [[0, 2, 4]])


def test_conv_patches_hand_worked_2d():
    # 3 x 3 image 0..8, 2 x 2 kernel, stride 1, "valid": 4 patches
    #   0 1 2      (0 1 3 4) (1 2 4 5)
    #   3 4 5  ->  (3 4 6 7) (4 5 7 8)
    #   6 7 8
    x = np.arange(9.0, dtype="float32").reshape(1, 3, 3, 1)
    out = _np(ghost_norms.conv_patches(x, (2, 2), (1, 1), "valid", (1, 1)))
    assert out.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(
        out.reshape(4, 4),
        [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]],
    )


CONV1D = [
    # (length, kernel, strides, padding, dilation)
    (9, 3, 1, "valid", 1),
    (9, 3, 1, "same", 1),
    (9, 4, 1, "same", 1),  # even kernel: uneven "same" padding
    (9, 4, 2, "valid", 1),
    (10, 3, 2, "same", 1),
    (9, 4, 2, "same", 1),
    (9, 3, 1, "valid", 2),
    (9, 2, 1, "same", 2),
]
CONV2D = [
    # ((h, w), kernel, strides, padding, dilation)
    ((5, 6), (3, 3), (1, 1), "valid", (1, 1)),
    ((5, 6), (2, 2), (1, 1), "same", (1, 1)),
    ((5, 6), (3, 2), (2, 2), "same", (1, 1)),
    ((6, 5), (2, 3), (2, 1), "valid", (1, 1)),
    ((6, 6), (3, 3), (1, 1), "same", (2, 2)),
    ((6, 7), (2, 3), (1, 1), "valid", (2, 1)),
]


@pytest.mark.parametrize("length, kernel, strides, padding, dilation", CONV1D)
def test_conv1d_ghost_norm_matches_brute_force(
    length, kernel, strides, padding, dilation
):
    rng = np.random.default_rng(length * 100 + kernel * 10 + strides + dilation)
    x = rng.standard_normal((3, length, 2)).astype("float32")
    reference = _numpy_patches(
        x[:, None], (1, kernel), (1, strides), padding, (1, dilation)
    )[:, 0]
    patches = _np(
        ghost_norms.conv_patches(x, (kernel,), (strides,), padding, (dilation,))
    )
    assert patches.shape == reference.shape
    g = rng.standard_normal((*reference.shape[:-1], 4)).astype("float32")
    out = _np(ghost_norms.dense_squared_norms(patches, g))
    np.testing.assert_allclose(out, _dense_brute_force(reference, g), rtol=1e-5)


@pytest.mark.parametrize("size, kernel, strides, padding, dilation", CONV2D)
def test_conv2d_ghost_norm_matches_brute_force(
    size, kernel, strides, padding, dilation
):
    rng = np.random.default_rng(sum(size) + 7 * sum(kernel) + sum(strides))
    x = rng.standard_normal((3, *size, 2)).astype("float32")
    reference = _numpy_patches(x, kernel, strides, padding, dilation)
    patches = _np(ghost_norms.conv_patches(x, kernel, strides, padding, dilation))
    assert patches.shape == reference.shape
    g = rng.standard_normal((*reference.shape[:-1], 3)).astype("float32")
    out = _np(ghost_norms.dense_squared_norms(patches, g, use_bias=False))
    expected = _dense_brute_force(reference, g, use_bias=False)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "size, kernel, strides, padding, dilation",
    [((s,), (k,), (st,), p, (d,)) for s, k, st, p, d in CONV1D] + CONV2D,
)
def test_conv_patches_are_in_the_kernel_layout(
    size, kernel, strides, padding, dilation
):
    # patches @ kernel (flattened) is the convolution itself, so the clipped
    # sum can reshape patches^T g into the kernel
    rng = np.random.default_rng(len(size) + sum(kernel) + sum(strides))
    x = rng.standard_normal((2, *size, 3)).astype("float32")
    w = rng.standard_normal((*kernel, 3, 4)).astype("float32")
    patches = _np(ghost_norms.conv_patches(x, kernel, strides, padding, dilation))
    conv = keras.ops.conv(
        x, w, strides=strides, padding=padding, dilation_rate=dilation
    )
    np.testing.assert_allclose(
        patches @ w.reshape(-1, 4), _np(conv), rtol=1e-4, atol=1e-5
    )


# -- embedding_squared_norms ----------------------------------------------------------


def test_embedding_hand_worked_repeated_ids():
    # example 0: ids 2 2 2, g (1, 0) (0, 1) (1, 1): row 2 gets (2, 2) -> 8
    #   (not 1 + 1 + 2 = 4: repeated ids add up before squaring)
    # example 1: ids 0 1 0, g (1, 2) (3, 0) (-1, 2): row 0 (0, 4) -> 16,
    #   row 1 (3, 0) -> 9; total 25
    ids = np.array([[2, 2, 2], [0, 1, 0]])
    g = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[1, 2], [3, 0], [-1, 2]]])
    out = _np(ghost_norms.embedding_squared_norms(ids, g))
    np.testing.assert_allclose(out, [8.0, 25.0])


@pytest.mark.parametrize("id_shape", [(7,), (2, 4)])
def test_embedding_matches_brute_force(id_shape):
    rng = np.random.default_rng(len(id_shape))
    ids = rng.integers(0, 4, (5, *id_shape))  # 4 rows: many repeats
    g = rng.standard_normal((5, *id_shape, 3)).astype("float32")
    out = _np(ghost_norms.embedding_squared_norms(ids, g))
    np.testing.assert_allclose(out, _embedding_brute_force(ids, g, 4), rtol=1e-5)


# -- the ghost path equals the vectorized one, on Keras models ------------------


def _seeded(model, seed):
    """`model` with NumPy-drawn weights: its layers are built with zeros
    (Keras's random initializers cost seconds per model on JAX)."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.standard_normal(w.shape).astype("float32")
            / np.sqrt(max(np.prod(w.shape[:-1]), 1))
            for w in model.get_weights()
        ]
    )
    return model


def _conv_model(config):
    """A small Conv -> Flatten -> Dense classifier for one configuration."""
    kind, size, kernel, strides, padding, dilation, use_bias = config
    layer = (keras.layers.Conv1D if kind == "1d" else keras.layers.Conv2D)(
        3,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        activation="tanh",
        use_bias=use_bias,
        kernel_initializer="zeros",
    )
    shape = (*(size if kind == "2d" else (size,)), 2)
    model = keras.Sequential(
        [
            keras.Input(shape),
            layer,
            keras.layers.Flatten(),
            keras.layers.Dense(4, kernel_initializer="zeros"),
        ]
    )
    return _seeded(model, 1)


def _dense_positions_model():
    """Dense on 3 positions (T^2 = 9 <= d k = 4 * 5) and on 6 (36 > 2 * 3),
    without a bias, then a plain Dense."""
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            keras.layers.Dense(2, "tanh", kernel_initializer="zeros"),
            keras.layers.Reshape((3, 4)),
            keras.layers.Dense(5, "tanh", use_bias=False, kernel_initializer="zeros"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, kernel_initializer="zeros"),
        ]
    )
    return _seeded(model, 3)


def _embedding_model():
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(5, 3, embeddings_initializer="zeros"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, kernel_initializer="zeros"),
        ]
    )
    return _seeded(model, 4)


CONV_MODELS = [
    ("1d", 9, 3, 1, "valid", 1, True),
    ("1d", 9, 4, 1, "same", 1, True),
    ("1d", 10, 3, 2, "same", 1, True),
    ("1d", 9, 4, 2, "valid", 1, False),
    ("1d", 9, 3, 1, "same", 2, True),
    ("1d", 9, 2, 1, "valid", 2, True),
    ("2d", (5, 6), (3, 3), (1, 1), "valid", (1, 1), True),
    ("2d", (5, 6), (2, 2), (2, 2), "same", (1, 1), True),
    ("2d", (6, 6), (3, 2), (1, 1), "same", (2, 2), False),
]


@pytest.fixture(scope="module")
def models():
    """Every end-to-end model, built once for the module."""
    built = {config: _conv_model(config) for config in CONV_MODELS}
    built["dense positions"] = _dense_positions_model()
    built["embedding"] = _embedding_model()
    return built


def _loss(y, logits):
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _compiled(function):
    """`function` as a compiled training step runs it: `jax.jit` or
    `tf.function`."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function)


def _both_norms(model, x, y):
    """`(ghost, vectorized)` squared norms of each example's gradient."""
    variables = model.trainable_variables
    method, layers = per_example.choose_method(model, "ghost")
    assert method == "ghost"
    shapes = per_example.probe_shapes(layers, x.shape)

    def norms(values, x, y):
        probes = [ops.zeros(shape, "float32") for shape in shapes]

        def forward(probes):
            outputs, taps = per_example.ghost_forward(layers, x, probes)
            return _loss(y, outputs), (outputs, taps)

        _, (outputs, taps), pullback = _gradients.losses_and_pullback(
            forward, variables, values, probes
        )
        _, probe_gradients = pullback(ops.ones((x.shape[0],)))
        ghost = per_example.squared_norms(taps, probe_gradients)

        def one(x_i, y_i):
            out = model(x_i)
            return _loss(y_i, out)[0], out

        _, _, grads = _gradients.per_example_gradients(one, variables, values, x, y)
        return ghost, clipping.squared_norms(grads), outputs

    values = [v.value for v in variables]
    ghost, vectorized, outputs = _compiled(norms)(values, x, y)
    # the ghost forward pass is the model's own with zero probes
    np.testing.assert_allclose(_np(outputs), _np(model(x)), rtol=1e-5, atol=1e-6)
    return _np(ghost), _np(vectorized)


def _check(model, x, y):
    ghost, vectorized = _both_norms(model, x, y)
    assert ghost.shape == (len(x),)
    assert np.all(vectorized > 0)
    np.testing.assert_allclose(ghost, vectorized, rtol=1e-4)


@pytest.mark.parametrize("config", CONV_MODELS, ids=str)
def test_conv_ghost_path_equals_vectorized(models, config):
    model = models[config]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, *model.input_shape[1:])).astype("float32")
    _check(model, x, np.array([0, 1, 2, 3]))


def test_dense_positions_ghost_path_equals_vectorized(models):
    x = np.random.default_rng(6).standard_normal((4, 6, 4)).astype("float32")
    _check(models["dense positions"], x, np.array([3, 2, 1, 0]))


def test_embedding_ghost_path_equals_vectorized(models):
    # ids repeat within each example (5 rows, 6 positions)
    x = np.array([[0, 0, 1, 4, 4, 4], [2, 2, 2, 2, 2, 2], [0, 1, 2, 3, 4, 0]], "int32")
    _check(models["embedding"], x, np.array([1, 0, 3]))
