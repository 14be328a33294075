import warnings

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.fusion import average_weights, greedy_soup, repair
from keras_harden.fusion.align import Analysis, apply_permutations
from keras_harden.fusion.repair import preactivation_moments
from tests.fusion.conftest import assert_same_weights, trained_mlps, weights_of


def net(hidden=(1,), inputs=2, outputs=1, use_bias=True):
    layers = [keras.Input((inputs,))]
    layers += [
        keras.layers.Dense(units, activation="relu", use_bias=use_bias)
        for units in hidden
    ]
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


def with_weights(model, values):
    model.set_weights([np.asarray(v, "float32") for v in values])
    return model


def randomized(build, seed):
    keras.utils.set_random_seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype):
            value = rng.normal(size=variable.shape)
            if "variance" in variable.path:
                value = np.abs(value) + 0.5
            variable.assign(value.astype("float32"))
    return model


# -- REPAIR by hand ------------------------------------------------------------


def test_one_unit_by_hand():
    # Inputs (1, 0), (0, 1), (-1, 0), (0, -1); a unit z = w . x + b takes the
    # values w1 + b, w2 + b, -w1 + b, -w2 + b: mean b, variance (w1² + w2²) / 2.
    #   a: w = (1, 0), b = 0 -> mean 0, std sqrt(1/2)
    #   b: w = (0, 1), b = 2 -> mean 2, std sqrt(1/2)
    #   target: mean 1, std sqrt(1/2)
    #   average: w = (0.5, 0.5), b = 1 -> mean 1, std sqrt(0.25) = 0.5
    # scale s = sqrt(1/2) / 0.5 = sqrt(2); shift = 1 - s * 1:
    #   kernel sqrt(2) * (0.5, 0.5) = (sqrt(1/2), sqrt(1/2)); bias s * 1 + 1 - s = 1
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], "float32")
    head = ([[2.0]], [0.5])
    a = with_weights(net(), [[[1], [0]], [0], *head])
    b = with_weights(net(), [[[0], [1]], [2], *head])
    merged = with_weights(net(), [[[0.5], [0.5]], [1], *head])
    repaired = repair(merged, [a, b], x, epsilon=0.0)
    kernel, bias, head_kernel, head_bias = repaired.get_weights()
    np.testing.assert_allclose(kernel.ravel(), [0.5**0.5, 0.5**0.5], rtol=1e-6)
    np.testing.assert_allclose(bias, [1.0], rtol=1e-6)
    # the output layer is not touched
    np.testing.assert_array_equal(head_kernel, [[2.0]])
    np.testing.assert_array_equal(head_bias, [0.5])
    # nor is `merged`
    np.testing.assert_array_equal(merged.get_weights()[0].ravel(), [0.5, 0.5])


def numpy_repair(endpoints, mixture, merged, x, epsilon):
    """REPAIR of a ReLU MLP in NumPy: layer by layer, the merged model's
    pre-activation mean and std are set to the endpoints' mixture."""

    def preactivations(weights, layer):
        h = x.astype("float64")
        for index in range(0, 2 * layer, 2):
            h = np.maximum(h @ weights[index] + weights[index + 1], 0.0)
        return h @ weights[2 * layer] + weights[2 * layer + 1]

    weights = [w.astype("float64") for w in merged]
    hidden = len(weights) // 2 - 1
    for layer in range(hidden):
        mean_t = sum(
            c * preactivations(e, layer).mean(0)
            for c, e in zip(mixture, endpoints, strict=True)
        )
        std_t = sum(
            c * preactivations(e, layer).std(0)
            for c, e in zip(mixture, endpoints, strict=True)
        )
        z = preactivations(weights, layer)
        scale = std_t / np.sqrt(z.var(0) + epsilon)
        weights[2 * layer] = weights[2 * layer] * scale
        weights[2 * layer + 1] = (
            scale * weights[2 * layer + 1] + mean_t - scale * z.mean(0)
        )
    return weights


def test_two_layers_against_numpy():
    def build():
        return net(hidden=(5, 4), inputs=3, outputs=2)

    a, b = randomized(build, 1), randomized(build, 2)
    x = np.random.default_rng(3).normal(size=(50, 3)).astype("float32")
    mixture = [0.75, 0.25]
    merged = build()
    merged.set_weights(
        [
            0.75 * u + 0.25 * v
            for u, v in zip(a.get_weights(), b.get_weights(), strict=True)
        ]
    )
    expected = numpy_repair(
        [[w.astype("float64") for w in m.get_weights()] for m in (a, b)],
        mixture,
        merged.get_weights(),
        x,
        1e-5,
    )
    repaired = repair(merged, [a, b], x, weights=[3, 1], batch_size=16)
    for got, want in zip(repaired.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def conv_net():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def test_conv_statistics_reach_the_targets():
    a, b = randomized(conv_net, 4), randomized(conv_net, 5)
    x = np.random.default_rng(6).normal(size=(40, 6, 6, 2)).astype("float32")
    merged = average_weights([a, b], align=True)
    repaired = repair(merged, [a, b], x, epsilon=0.0)
    convs = [
        layer for layer in repaired.layers if isinstance(layer, keras.layers.Conv2D)
    ]
    got = preactivation_moments(repaired, convs, x, None, 64)
    # the targets: the endpoints' per-channel moments (each spatial position a
    # sample), averaged
    targets = [
        preactivation_moments(m, [m.layers[0], m.layers[1]], x, None, 64)
        for m in (a, b)
    ]
    for index, (mean, std) in enumerate(got):
        want_mean = (targets[0][index][0] + targets[1][index][0]) / 2
        want_std = (targets[0][index][1] + targets[1][index][1]) / 2
        np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(std, want_std, rtol=1e-4, atol=1e-5)
    # before: collapsed spread
    before = preactivation_moments(merged, [merged.layers[0]], x, None, 64)[0][1]
    assert np.all(before < (targets[0][0][1] + targets[1][0][1]) / 2)


def test_batchnorm_is_recalibrated_and_its_input_layer_left_alone():
    def build():
        return keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Dense(5, activation="relu"),
                keras.layers.Dense(2),
            ]
        )

    a, b = randomized(build, 7), randomized(build, 8)
    merged = randomized(build, 9)
    x = np.random.default_rng(10).normal(size=(30, 3)).astype("float32")
    repaired = repair(merged, [a, b], x)
    first, bn = repaired.layers[0], repaired.layers[1]
    np.testing.assert_array_equal(first.kernel.numpy(), merged.layers[0].kernel.numpy())
    z = x @ first.kernel.numpy() + first.bias.numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), z.var(0), rtol=1e-4, atol=1e-5
    )
    # the Dense after the batch norm is repaired
    assert not np.array_equal(
        repaired.layers[3].kernel.numpy(), merged.layers[3].kernel.numpy()
    )


def test_errors():
    a, b = net(hidden=(3,)), net(hidden=(3,))
    x = np.zeros((4, 2), "float32")
    no_bias = [net(hidden=(3,), use_bias=False) for _ in range(3)]
    hidden = no_bias[0].layers[0].name
    with pytest.raises(ValueError, match=f"{hidden!r} has none"):
        repair(no_bias[0], no_bias[1:], x)
    with pytest.raises(ValueError, match=r"Received: weights=\[1, -1\]"):
        repair(a, [a, b], x, weights=[1, -1])
    with pytest.raises(ValueError, match=r"Received: data=None"):
        repair(a, [a, b], None)
    with pytest.raises(ValueError, match=r"Received: epsilon=-1"):
        repair(a, [a, b], x, epsilon=-1)
    with pytest.raises(ValueError, match="not compatible"):
        repair(a, [net(hidden=(4,))], x)
    with pytest.raises(ValueError, match="give `repair` or `recalibrate`"):
        average_weights([a, b], repair=x, recalibrate=x)
    with pytest.raises(ValueError, match=r"Received: align='yes'"):
        average_weights([a, b], align="yes")


# -- merging aligned models ----------------------------------------------------


def shuffled(model, seed):
    """`model` with its hidden units in a random order (the same function)."""
    analysis = Analysis(model)
    rng = np.random.default_rng(seed)
    return apply_permutations(
        model, analysis, [rng.permutation(n) for n in analysis.group_sizes]
    )


def test_average_of_aligned_permuted_copies_is_the_model():
    model = randomized(lambda: net(hidden=(6, 5), inputs=4, outputs=3), 11)
    copies = [shuffled(model, seed) for seed in (12, 13)]
    before = [weights_of(m) for m in copies]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no shared-start warning
        soup = average_weights([model, *copies], align=True)
    for got, want in zip(soup.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for copy, saved in zip(copies, before, strict=True):
        assert_same_weights(saved, copy)
    # unaligned, the same average is another function
    with pytest.warns(UserWarning, match="share a start"):
        naive = average_weights([model, *copies])
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    assert not np.allclose(naive(x), model(x), atol=1e-3)


def test_average_aligned_by_activations():
    def build():
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(6, activation="tanh"),
                keras.layers.Dense(3),
            ]
        )

    model = randomized(build, 19)
    copy = shuffled(model, 20)
    x = np.random.default_rng(2).normal(size=(64, 4)).astype("float32")
    soup = average_weights([model, copy], align=True, align_data=x)
    for got, want in zip(soup.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"needs `align=True`. Received: align=False"):
        average_weights([model, copy], align_data=x)
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    soup, _ = greedy_soup([copy, model], (x, y), align=True, align_data=x)
    np.testing.assert_allclose(soup(x), model(x), rtol=1e-5, atol=1e-5)


def test_greedy_soup_aligns_to_the_best():
    model = randomized(lambda: net(hidden=(6,), inputs=4, outputs=3), 14)
    copy = shuffled(model, 15)
    x = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    soup, report = greedy_soup([copy, model], (x, y), align=True)
    assert report.kept == [report.order[0], report.order[1]]  # both kept
    np.testing.assert_allclose(soup(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"Received: align=1"):
        greedy_soup([copy, model], (x, y), align=1)


def test_repaired_average_saves_and_loads_in_safe_mode(tmp_path):
    a, b = randomized(conv_net, 16), randomized(conv_net, 17)
    x = np.random.default_rng(18).normal(size=(16, 6, 6, 2)).astype("float32")
    merged = average_weights([a, b], align=True, repair=x)
    path = kh.save_model(merged, tmp_path / "repaired.keras")
    loaded = kh.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), merged.predict(x, verbose=0), atol=1e-6
    )


# -- on trained models ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_mlps(digits):
    """Two MLPs (64-64-64-10) trained on the digits from different seeds."""
    return trained_mlps(digits, seeds=(0, 1), epochs=10)


@pytest.mark.slow
def test_alignment_and_repair_recover_the_midpoint(two_mlps):
    models, (x, _), (xt, yt) = two_mlps

    def accuracy(model):
        return float(np.mean(np.argmax(model.predict(xt, verbose=0), -1) == yt))

    ends = [accuracy(m) for m in models]
    with pytest.warns(UserWarning, match="share a start"):
        naive = accuracy(average_weights(models))
    aligned = accuracy(average_weights(models, align=True))
    repaired = accuracy(average_weights(models, align=True, repair=x))
    assert min(ends) > 0.9
    assert aligned > naive + 0.05
    assert repaired >= aligned - 0.01
    assert repaired > np.mean(ends) - 0.05
