import doctest
import math
import sys

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.fusion import average_weights, merge
from keras_harden.fusion.merge import disjoint_mean, drop_and_rescale, slerp, trim
from tests.fusion.conftest import assert_same_weights, weights_of

# -- tiny Dense(2) models on 2 inputs, weights set by hand ---------------------
#
# base kernel K0 = [[1, 1], [1, 1]], bias [0, 0]; task vectors (kernel | bias):
#   A: [[2, -1], [0, 0.5]] | [1, 0.5]
#   B: [[1, 3], [-2, 0]]   | [-3, 0]
#   C: [[-1, 2], [0.5, 0.25]] | [3, 0]
K0 = np.ones((2, 2))
TAUS = {
    "A": (np.array([[2.0, -1.0], [0.0, 0.5]]), np.array([1.0, 0.5])),
    "B": (np.array([[1.0, 3.0], [-2.0, 0.0]]), np.array([-3.0, 0.0])),
    "C": (np.array([[-1.0, 2.0], [0.5, 0.25]]), np.array([3.0, 0.0])),
}


def dense(kernel, bias, name=None):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)], name=name)
    model.set_weights([np.array(kernel, "float32"), np.array(bias, "float32")])
    return model


def base_and_tunes(*names):
    base = dense(K0, [0.0, 0.0], name="base")
    tunes = [dense(K0 + TAUS[n][0], TAUS[n][1], name=f"tune_{n}") for n in names]
    return base, tunes


def kernel_and_bias(model):
    layer = model.layers[0]
    return (
        keras.ops.convert_to_numpy(layer.kernel),
        keras.ops.convert_to_numpy(layer.bias),
    )


# -- the maths on arrays ------------------------------------------------------------


def test_trim_keeps_the_largest_magnitudes_first_on_ties():
    # ceil(0.5 * 4) = 2 kept; |.| = [1, 0.5, 1, 0.25]: the two 1s, the first
    # of equal magnitudes winning over any later one
    np.testing.assert_array_equal(
        trim(np.array([-1.0, 0.5, 1.0, 0.25]), 0.5), [-1.0, 0.0, 1.0, 0.0]
    )
    # ceil(0.2 * 3) = 1 kept, shape kept
    np.testing.assert_array_equal(
        trim(np.array([[0.1, -3.0, 2.0]]), 0.2), [[0.0, -3.0, 0.0]]
    )
    x = np.array([3.0, -1.0])
    np.testing.assert_array_equal(trim(x, 1.0), x)


def test_disjoint_mean_by_hand():
    taus = [np.array([2.0, -1.0, 1.0]), np.array([1.0, 3.0, -1.0])]
    # entry 0: sum 3 > 0, both agree: (2 + 1) / 2 = 1.5
    # entry 1: sum 2 > 0, only 3 agrees: 3
    # entry 2: sum 0: no elected sign, nothing agrees: 0
    np.testing.assert_array_equal(disjoint_mean(taus), [1.5, 3.0, 0.0])
    # zeros never count: mean of the one non-zero entry, not of two
    np.testing.assert_array_equal(
        disjoint_mean([np.array([4.0]), np.array([0.0])]), [4.0]
    )


def test_drop_and_rescale_by_hand():
    tau = np.array([1.0, -2.0, 3.0, 4.0])
    draws = np.array([0.1, 0.5, 0.75, 0.49])
    # drop_rate 0.5: draws below 0.5 drop (entries 0, 3); survivors / (1 - 0.5)
    np.testing.assert_array_equal(
        drop_and_rescale(tau, draws, 0.5), [0.0, -4.0, 6.0, 0.0]
    )
    np.testing.assert_array_equal(drop_and_rescale(tau, draws, 0.0), tau)


def test_slerp_by_hand():
    a, b = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-12)
    # angle pi/4; at t = 0.5 both coefficients are sin(pi/8) / sin(pi/4)
    # = 0.38268 / 0.70711 = 0.541196: 0.541196 * ([1, 0] + [1, 1])
    c = math.sin(math.pi / 8) / math.sin(math.pi / 4)
    np.testing.assert_allclose(slerp(a, b, 0.5), [2 * c, c], rtol=1e-12)
    # orthogonal unit vectors: sqrt(2)/2 each, norm 1 (the lerp has norm 0.707)
    middle = slerp(np.array([0.6, 0.8]), np.array([0.8, -0.6]), 0.5)
    np.testing.assert_allclose(middle, np.sqrt(0.5) * np.array([1.4, 0.2]))
    np.testing.assert_allclose(np.linalg.norm(middle), 1.0)
    # nearly parallel (cosine 0.9999995 > 0.9995) and zero vectors: linear
    np.testing.assert_allclose(
        slerp(np.array([1.0, 0.0]), np.array([2.0, 2e-3]), 0.5), [1.5, 1e-3]
    )
    np.testing.assert_array_equal(
        slerp(np.zeros(2), np.array([2.0, 4.0]), 0.25), [0.5, 1.0]
    )


# -- merge on models ------------------------------------------------------------


def test_task_arithmetic_by_hand():
    base, tunes = base_and_tunes("A", "B")
    merged = merge(base, tunes, "task_arithmetic", scaling=0.5)
    # kernel: K0 + 0.5 * (A + B) = 1 + 0.5 * [[3, 2], [-2, 0.5]] = [[2.5, 2], [0, 1.25]]
    # bias:   0 + 0.5 * ([1, 0.5] + [-3, 0]) = [-1, 0.25]
    kernel, bias = kernel_and_bias(merged)
    np.testing.assert_array_equal(kernel, [[2.5, 2.0], [0.0, 1.25]])
    np.testing.assert_array_equal(bias, [-1.0, 0.25])
    # x = [1, 1]: [2.5 + 0, 2 + 1.25] + [-1, 0.25] = [1.5, 3.5]
    np.testing.assert_allclose(merged(np.ones((1, 2))), [[1.5, 3.5]])
    # the default scaling is 1.5 / k = 0.75 (half a step past the soup):
    # 1 + 0.75 * [[3, 2], [-2, 0.5]] = [[3.25, 2.5], [-0.5, 1.375]]
    default = kernel_and_bias(merge(base, tunes))[0]
    np.testing.assert_array_equal(default, [[3.25, 2.5], [-0.5, 1.375]])


@pytest.mark.filterwarnings("ignore:average_weights. models")  # tunes A, B, C
def test_task_arithmetic_at_one_over_k_is_the_uniform_soup():
    base, tunes = base_and_tunes("A", "B", "C")
    merged = merge(base, tunes, scaling=1 / 3)
    soup = average_weights(tunes)
    for a, b in zip(kernel_and_bias(merged), kernel_and_bias(soup), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_ties_by_hand():
    base, tunes = base_and_tunes("A", "B", "C")
    merged = merge(base, tunes, "ties", density=0.5, scaling=1.0)
    # kernels flattened, keep ceil(0.5 * 4) = 2 largest |.| per tune:
    #   A [2, -1, 0, 0.5]    -> [2, -1, 0, 0]
    #   B [1, 3, -2, 0]      -> [0, 3, -2, 0]
    #   C [-1, 2, 0.5, 0.25] -> [-1, 2, 0, 0]
    # elected signs (sign of the sums 1, 4, -2, 0): +, +, -, none
    # disjoint means: {2} -> 2; {3, 2} -> 2.5 (A's -1 left out); {-2} -> -2; 0
    # kernel: 1 + [[2, 2.5], [-2, 0]] = [[3, 3.5], [-1, 1]]
    # biases, keep ceil(0.5 * 2) = 1: A [1, 0], B [-3, 0], C [3, 0];
    # entry 0 sum 1 -> +, mean of {1, 3} = 2; entry 1: 0
    kernel, bias = kernel_and_bias(merged)
    np.testing.assert_array_equal(kernel, [[3.0, 3.5], [-1.0, 1.0]])
    np.testing.assert_array_equal(bias, [2.0, 0.0])
    # scaling multiplies the merged task vector: 1 + 0.5 * [[2, 2.5], [-2, 0]]
    half = merge(base, tunes, "ties", density=0.5, scaling=0.5)
    np.testing.assert_array_equal(kernel_and_bias(half)[0], [[2.0, 2.25], [0.0, 1.0]])


def test_ties_at_full_density_is_the_disjoint_mean():
    base, tunes = base_and_tunes("A", "B")
    merged = merge(base, tunes, "ties", density=1.0)
    # kernel entries: A [2, -1, 0, 0.5], B [1, 3, -2, 0]; sums 3, 2, -2, 0.5
    # -> (2 + 1) / 2, 3, -2, 0.5; default scaling 1
    np.testing.assert_array_equal(kernel_and_bias(merged)[0], [[2.5, 4.0], [-1.0, 1.5]])


def _dare_reference(tunes_names, drop_rate, seed, ties):
    """The merge recomputed in NumPy from the same draws: one uniform tensor
    per variable (kernel, then bias) and per tune, in that order, from one
    SeedGenerator."""
    generator = keras.random.SeedGenerator(seed)
    expected = []
    for index, start in enumerate((K0, np.zeros(2))):
        taus = []
        for name in tunes_names:
            tau = TAUS[name][index]
            draws = keras.ops.convert_to_numpy(
                keras.random.uniform(tau.shape, dtype="float32", seed=generator)
            ).astype("float64")
            kept = draws >= drop_rate
            taus.append(np.where(kept, tau / (1 - drop_rate), 0.0))
        combined = disjoint_mean(taus) if ties else np.sum(taus, axis=0)
        expected.append(start + combined)
    return expected


@pytest.mark.parametrize("method", ["dare", "dare_ties"])
def test_dare_matches_numpy_with_the_same_draws(method):
    base, tunes = base_and_tunes("A", "B", "C")
    merged = merge(base, tunes, method, drop_rate=0.5, scaling=1.0, seed=7)
    expected = _dare_reference("ABC", 0.5, 7, ties=method == "dare_ties")
    for value, reference in zip(kernel_and_bias(merged), expected, strict=True):
        np.testing.assert_allclose(value, reference, rtol=1e-6)
    # the draws did drop something and keep something (6 tensors, 18 entries)
    dropped = merge(base, tunes, "dare", drop_rate=0.5, scaling=1.0, seed=7)
    plain = merge(base, tunes, "task_arithmetic", scaling=1.0)
    assert not np.array_equal(kernel_and_bias(dropped)[0], kernel_and_bias(plain)[0])


def test_dare_seeds():
    base, tunes = base_and_tunes("A", "B")
    first = kernel_and_bias(merge(base, tunes, "dare", drop_rate=0.5, seed=3))
    again = kernel_and_bias(merge(base, tunes, "dare", drop_rate=0.5, seed=3))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)  # an int seed is reproducible
    generator = keras.random.SeedGenerator(3)
    draws = [
        kernel_and_bias(merge(base, tunes, "dare", drop_rate=0.5, seed=generator))
        for _ in range(4)
    ]
    # a SeedGenerator draws new masks each call: 4 calls, not all alike
    assert len({d[0].tobytes() + d[1].tobytes() for d in draws}) > 1
    # drop_rate 0: nothing dropped, nothing rescaled: task arithmetic
    none_dropped = merge(base, tunes, "dare", drop_rate=0.0, scaling=0.5, seed=0)
    plain = merge(base, tunes, "task_arithmetic", scaling=0.5)
    for a, b in zip(kernel_and_bias(none_dropped), kernel_and_bias(plain), strict=True):
        np.testing.assert_array_equal(a, b)


def test_slerp_on_models():
    base = dense([[1.0, 1.0], [0.0, 0.0]], [1.0, 0.0])
    # kernels [1, 0, 0, 0] and [0, 1, 0, 0], biases [0.6, 0.8] and
    # [0.8, -0.6]: orthogonal unit vectors, tensor by tensor
    a = dense([[1.0, 0.0], [0.0, 0.0]], [0.6, 0.8])
    b = dense([[0.0, 1.0], [0.0, 0.0]], [0.8, -0.6])
    for t, endpoint in ((0.0, a), (1.0, b)):
        for got, want in zip(
            kernel_and_bias(merge(base, [a, b], "slerp", t=t)),
            kernel_and_bias(endpoint),
            strict=True,
        ):
            np.testing.assert_allclose(got, want, atol=1e-7)
    kernel, bias = kernel_and_bias(merge(base, [a, b], "slerp"))  # t = 0.5
    # sqrt(2)/2 of each: kernel [[0.7071, 0.7071], [0, 0]], norm 1
    np.testing.assert_allclose(kernel, [[np.sqrt(0.5), np.sqrt(0.5)], [0, 0]])
    np.testing.assert_allclose(bias, np.sqrt(0.5) * np.array([1.4, 0.2]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(kernel), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(bias), 1.0, rtol=1e-6)


def test_batchnorm_recalibrated_inputs_untouched_and_saved(fine_tunes, tmp_path):
    start, tunes = fine_tunes.start, fine_tunes.tunes
    before = [weights_of(m) for m in (start, *tunes)]
    x = fine_tunes.x_fit[:256]
    merged = merge(start, tunes, "ties", recalibrate=x)
    for model, saved in zip((start, *tunes), before, strict=True):
        assert_same_weights(saved, model)
    assert merged is not start and merged.compiled
    # the statistics are those of the merged weights: recalibrating again
    # on the same data changes nothing
    bn = [v for v in merged.weights if "moving" in v.path]
    stats = [keras.ops.convert_to_numpy(v) for v in bn]
    kh.fusion.recalibrate_batchnorm(merged, x)
    for v, s in zip(bn, stats, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), s, rtol=1e-5)
    assert merged.evaluate(fine_tunes.x_val, fine_tunes.y_val, verbose=0)[1] > 0.8
    with pytest.warns(UserWarning, match="merge: the model has batch-norm"):
        merge(start, tunes)
    path = kh.save_model(merged, tmp_path / "merged.keras")
    loaded = kh.load_model(path)  # safe mode
    x_test = fine_tunes.x_test[:32]
    np.testing.assert_allclose(
        loaded.predict(x_test, verbose=0), merged.predict(x_test, verbose=0), atol=1e-6
    )


def test_warns_when_a_tune_is_not_a_fine_tune_of_base():
    base = dense(K0, [0.0, 0.0])
    # kernel [1, -1, -1, 1] is orthogonal to the base's [1, 1, 1, 1]: cosine 0
    stranger = dense([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])
    with pytest.warns(UserWarning, match="merge: models 0 and 1 do not seem to share"):
        merge(base, [stranger])


def test_docstring_example():
    module = sys.modules["keras_harden.fusion.merge"]
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "mean"}, r"`method` must be one of .* Received: method='mean'"),
        ({"method": "ties", "density": 0.0}, r"Received: density=0\.0$"),
        (
            {"method": "ties", "density": 1.5},
            r"\(0, 1\]\. Received: density=1\.5",
        ),
        ({"method": "task_arithmetic", "density": 0.2}, r"read by method 'ties' only"),
        ({"method": "dare", "drop_rate": 1.0}, r"Received: drop_rate=1\.0$"),
        ({"method": "dare", "seed": "x"}, r"Received: seed='x'$"),
        ({"method": "ties", "scaling": float("nan")}, r"Received: scaling=nan$"),
        ({"method": "slerp", "t": 1.5}, r"Received: t=1\.5$"),
        ({"method": "slerp", "scaling": 2.0}, r"Received: scaling=2\.0$"),
        (
            {"method": "slerp", "tunes": "ABC"},
            r"exactly two .* Received: tunes=\['tune_A', 'tune_B', 'tune_C'\]$",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = dict(kwargs)
    base, tunes = base_and_tunes(*kwargs.pop("tunes", "AB"))
    with pytest.raises(ValueError, match=message):
        merge(base, tunes, **kwargs)


def test_bad_models():
    base, tunes = base_and_tunes("A")
    with pytest.raises(ValueError, match=r"Received: base=\[<"):
        merge([base], tunes)
    with pytest.raises(ValueError, match=r"at least 1 .* Received: tunes=\[\]"):
        merge(base, [])
    wider = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="wider")
    with pytest.raises(
        ValueError, match=r"shapes \(2, 2\) and \(2, 3\)\. Received: tunes=\['wider'\]"
    ):
        merge(base, [wider])
