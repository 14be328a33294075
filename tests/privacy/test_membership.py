"""keras_harden.privacy.membership: the loss-threshold scores, LiRA's
logit-scaled confidence and its likelihood ratio, against values worked by
hand (the working in the comments)."""

import math

import numpy as np
import pytest

from keras_harden.privacy.membership import (
    cross_entropy,
    lira_scores,
    logit_scaled_confidence,
    loss_scores,
)


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- cross-entropy and the loss attack -------------------------------------------


def test_cross_entropy_by_hand():
    # logits (0, ln 3): softmax (1/4, 3/4); label 1: -ln(3/4) = ln(4/3)
    # logits (1, 1, 1): every class 1/3; label 2: ln 3
    logits = [[0.0, math.log(3.0)], [1.0, 1.0]]
    np.testing.assert_allclose(
        cross_entropy(logits, [1, 0], from_logits=True),
        [math.log(4 / 3), math.log(2)],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        cross_entropy([[1.0, 1.0, 1.0]], [2], from_logits=True), [math.log(3)]
    )
    # probabilities: -ln p_y; rows that do not sum to 1 are renormalised as
    # Keras does: (2, 6) -> (1/4, 3/4), label 0: ln 4
    np.testing.assert_allclose(
        cross_entropy([[0.25, 0.75], [2.0, 6.0]], [1, 0], from_logits=False),
        [math.log(4 / 3), math.log(4)],
        rtol=1e-12,
    )


def test_cross_entropy_is_stable_and_floored():
    # logits 1000 apart: log-softmax subtracts the max first, so the loss of
    # the true class is log(1 + e^-1000) = 0 and of the other 1000, no inf
    np.testing.assert_allclose(
        cross_entropy([[1000.0, 0.0], [1000.0, 0.0]], [0, 1], from_logits=True),
        [0.0, 1000.0],
    )
    # a probability of exactly 0 counts as 1e-30: -ln 1e-30 = 69.0776
    np.testing.assert_allclose(
        cross_entropy([[1.0, 0.0]], [1], from_logits=False), [30 * math.log(10)]
    )


def test_loss_scores_are_the_negated_losses_and_agree_with_keras():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 5)) * 3
    labels = rng.integers(0, 5, size=16)
    scores = loss_scores(logits, labels, from_logits=True)
    np.testing.assert_array_equal(
        scores, -cross_entropy(logits, labels, from_logits=True)
    )
    keras_loss = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(
            labels, logits.astype("float32"), from_logits=True
        )
    )
    np.testing.assert_allclose(-scores, keras_loss, rtol=1e-5)
    # the same outputs as probabilities give the same scores
    np.testing.assert_allclose(
        loss_scores(_softmax(logits), labels, from_logits=False), scores, rtol=1e-9
    )


# -- the logit-scaled confidence ----------------------------------------------------


def test_phi_by_hand():
    # logits (2, 0, 0), label 0: phi = 2 - ln(e^0 + e^0) = 2 - ln 2 = 1.30685
    # label 1: phi = 0 - ln(e^2 + e^0) = -ln(e^2 + 1) = -2.12693
    np.testing.assert_allclose(
        logit_scaled_confidence([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]], [0, 1], True),
        [2 - math.log(2), -math.log(math.e**2 + 1)],
        rtol=1e-12,
    )
    # probabilities (0.8, 0.15, 0.05), label 0: ln(0.8 / (0.15 + 0.05)) = ln 4;
    # label 2: ln(0.05 / 0.95) = -ln 19
    np.testing.assert_allclose(
        logit_scaled_confidence([[0.8, 0.15, 0.05]] * 2, [0, 2], False),
        [math.log(4), -math.log(19)],
        rtol=1e-12,
    )


def test_phi_is_the_logit_of_the_true_class_probability():
    # phi = ln(p / (1 - p)): the same from logits and from their softmax
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(32, 10)) * 4
    labels = rng.integers(0, 10, size=32)
    from_logits = logit_scaled_confidence(logits, labels, from_logits=True)
    p = _softmax(logits)[np.arange(32), labels]
    np.testing.assert_allclose(from_logits, np.log(p / (1 - p)), rtol=1e-9)
    np.testing.assert_allclose(
        logit_scaled_confidence(_softmax(logits), labels, from_logits=False),
        from_logits,
        rtol=1e-9,
    )


def test_phi_stays_finite_when_the_model_is_sure():
    # logits (100, 0): phi = 100 - ln(e^0) = 100 exactly, where 1 - p rounds
    # to 0 (p = 1 - 3.7e-44) and a naive ln(p / (1 - p)) is inf
    assert logit_scaled_confidence([[100.0, 0.0]], [0], True).tolist() == [100.0]
    # from probabilities: the other classes' mass summed directly keeps
    # 1e-20 (1 - p_y would round it to 0): ln(1 / 1e-20) = 46.0517
    np.testing.assert_allclose(
        logit_scaled_confidence([[1.0, 1e-20, 0.0]], [0], False), [20 * math.log(10)]
    )
    # an exact 1 against zeros: ln 1 - ln 1e-30 = 69.0776, and the reverse
    np.testing.assert_allclose(
        logit_scaled_confidence([[1.0, 0.0], [1.0, 0.0]], [0, 1], False),
        [30 * math.log(10), -30 * math.log(10)],
    )


@pytest.mark.parametrize(
    "outputs, labels, match",
    [
        ([0.5, 0.5], [0], "outputs of shape \\(2,\\)"),
        ([[1.0]], [0], "outputs of shape \\(1, 1\\)"),
        ([[np.nan, 0.0]], [0], "1 NaN or infinite"),
        ([[0.5, 0.5]], [0, 1], "labels of shape \\(2,\\)"),
        ([[0.5, 0.5]], [0.5], "dtype float64"),
        ([[0.5, 0.5]], [2], "labels from 2 to 2"),
        ([[0.5, 0.5]], [-1], "labels from -1 to -1"),
    ],
)
def test_bad_outputs_or_labels(outputs, labels, match):
    with pytest.raises(ValueError, match=match):
        logit_scaled_confidence(outputs, labels, from_logits=True)


def test_probabilities_must_be_non_negative_and_from_logits_a_bool():
    with pytest.raises(ValueError, match="Received: from_logits=False"):
        cross_entropy([[-1.0, 2.0]], [0], from_logits=False)
    with pytest.raises(ValueError, match="Received: from_logits=None"):
        loss_scores([[0.5, 0.5]], [0], from_logits=None)


def test_labels_may_be_a_column_or_whole_floats():
    expected = cross_entropy([[0.0, 1.0]], [1], True)
    np.testing.assert_array_equal(cross_entropy([[0.0, 1.0]], [[1]], True), expected)
    np.testing.assert_array_equal(cross_entropy([[0.0, 1.0]], [1.0], True), expected)


# -- LiRA ------------------------------------------------------------------------

# Two examples, four shadows. Example 0: IN values 3, 5 (mean 4), OUT 0, 2
# (mean 1). Example 1: IN values 1, 2 (mean 1.5), OUT 0, 0 (mean 0).
SHADOW = np.array([[3.0, 1.0], [5.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
SHADOW_IN = np.array([[True, True], [True, False], [False, True], [False, False]])


def _log_density(x, mean, variance):
    return -0.5 * ((x - mean) ** 2 / variance + math.log(2 * math.pi * variance))


def test_online_lira_with_a_global_variance_by_hand():
    # IN deviations: example 0: -1, +1; example 1: -0.5, +0.5. Pooled:
    # (1 + 1 + 0.25 + 0.25) / (4 values - 2 means) = 2.5 / 2 = 1.25.
    # OUT deviations: -1, +1 and 0, 0: (1 + 1) / 2 = 1.
    # Target phi (4, 0):
    # example 0: log N(4; 4, 1.25) - log N(4; 1, 1) = -0.5 ln(2 pi 1.25)
    #            - (-4.5 - 0.5 ln(2 pi)) = 4.5 - 0.5 ln 1.25 = 4.38843
    # example 1: log N(0; 1.5, 1.25) - log N(0; 0, 1) = -2.25 / 2.5
    #            - 0.5 ln 1.25 = -0.9 - 0.11157 = -1.01157
    scores = lira_scores([4.0, 0.0], SHADOW, SHADOW_IN)
    np.testing.assert_allclose(
        scores, [4.5 - 0.5 * math.log(1.25), -0.9 - 0.5 * math.log(1.25)], rtol=1e-12
    )
    # "auto" below 64 shadows is the global variance
    np.testing.assert_array_equal(
        lira_scores([4.0, 0.0], SHADOW, SHADOW_IN, variance="global"), scores
    )
    # a higher confidence on example 0 only pushes toward IN up to its mean
    assert lira_scores([3.0, 0.0], SHADOW, SHADOW_IN)[0] < scores[0]


def test_online_lira_with_a_variance_per_example_by_hand():
    # example 0: IN variance (1 + 1) / (2 - 1) = 2, OUT 2: the example of the
    # docstring, at phi 4: (0 + 9) / (2 * 2) = 2.25.
    # example 1 has OUT values 0, 0 (variance 0): floored at 1e-12, so a
    # target exactly at the OUT mean is far likelier OUT than IN
    # (IN variance (0.25 + 0.25) / 1 = 0.5, mean 1.5).
    scores = lira_scores([4.0, 0.0], SHADOW, SHADOW_IN, variance="per_example")
    assert scores[0] == pytest.approx(2.25, rel=1e-12)
    # log N(0; 1.5, 0.5) - log N(0; 0, 1e-12)
    #   = -2.25 - 0.5 ln(2 pi 0.5) + 0.5 ln(2 pi 1e-12) = -2.25 + 0.5 ln(2e-12)
    assert scores[1] == pytest.approx(-2.25 + 0.5 * math.log(2e-12), rel=1e-12)


def test_auto_variance_is_per_example_from_64_shadows():
    rng = np.random.default_rng(0)
    shadow = rng.normal(size=(64, 5))
    shadow_in = np.arange(64)[:, None] % 2 == np.arange(5)[None, :] % 2
    target = rng.normal(size=5)
    np.testing.assert_array_equal(
        lira_scores(target, shadow, shadow_in),
        lira_scores(target, shadow, shadow_in, variance="per_example"),
    )
    np.testing.assert_array_equal(
        lira_scores(target, shadow[:63], shadow_in[:63]),
        lira_scores(target, shadow[:63], shadow_in[:63], variance="global"),
    )


def test_offline_lira_by_hand():
    # mode="offline" ignores the IN values. OUT: example 0 mean 1, example 1
    # mean 0; pooled variance 1 (above). Score: ln Phi((phi - mean) / 1):
    # phi (1, 1.644854): ln Phi(0) = ln 0.5; ln Phi(1.644854) = ln 0.95
    scores = lira_scores([1.0, 1.6448536269514722], SHADOW, SHADOW_IN, mode="offline")
    np.testing.assert_allclose(scores, [math.log(0.5), math.log(0.95)], rtol=1e-9)
    # far below OUT the score stays finite (log_ndtr, not ln of a 0)
    assert np.isfinite(
        lira_scores([-60.0, 0.0], SHADOW, SHADOW_IN, mode="offline")
    ).all()


def test_auto_mode_is_offline_only_where_no_shadow_trained_on_the_example():
    # example 1 now IN for no shadow: offline for it, online for example 0
    shadow_in = SHADOW_IN.copy()
    shadow_in[:, 1] = False
    mixed = lira_scores([4.0, 0.0], SHADOW, shadow_in)
    # OUT values: example 0: 0, 2 (mean 1, squared deviations 1 + 1 = 2);
    # example 1: 1, 0, 2, 0 (mean 0.75; 0.0625 + 0.5625 + 1.5625 + 0.5625 =
    # 2.75). Pooled: (2 + 2.75) / (6 values - 2 means) = 1.1875.
    # IN, example 0 alone: 3, 5, variance 2.
    # example 0, online: log N(4; 4, 2) - log N(4; 1, 1.1875)
    #   = 9 / (2 * 1.1875) - 0.5 ln(2 / 1.1875)
    assert mixed[0] == pytest.approx(9 / 2.375 - 0.5 * math.log(2 / 1.1875), rel=1e-12)
    # example 1, offline: ln Phi((0 - 0.75) / sqrt(1.1875))
    from scipy.special import log_ndtr

    assert mixed[1] == pytest.approx(log_ndtr(-0.75 / math.sqrt(1.1875)), rel=1e-12)
    with pytest.raises(ValueError, match="IN for no shadow"):
        lira_scores([4.0, 0.0], SHADOW, shadow_in, mode="online")


@pytest.mark.parametrize(
    "target, shadow, shadow_in, kwargs, match",
    [
        ([[1.0]], SHADOW, SHADOW_IN, {}, "target_confidence of shape \\(1, 1\\)"),
        ([1.0, 2.0], SHADOW[:, :1], SHADOW_IN, {}, "shadow_confidence of shape"),
        ([1.0, 2.0], SHADOW, SHADOW_IN.astype(int), {}, "dtype int64"),
        ([1.0, np.inf], SHADOW, SHADOW_IN, {}, "`target_confidence` must be finite"),
        ([1.0, 2.0], SHADOW, SHADOW_IN, {"variance": "pooled"}, "variance='pooled'"),
        ([1.0, 2.0], SHADOW, SHADOW_IN, {"mode": "both"}, "mode='both'"),
        ([1.0, 2.0], SHADOW, np.ones((4, 2), bool), {}, "an OUT shadow"),
        (
            [1.0, 2.0],
            SHADOW[:3],
            SHADOW_IN[:3],
            {"variance": "per_example"},
            "at least 2 IN and 2 OUT",
        ),
    ],
)
def test_lira_refuses(target, shadow, shadow_in, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lira_scores(target, shadow, shadow_in, **kwargs)


def test_lira_separates_synthetic_members():
    # confidences drawn as LiRA assumes: IN ~ N(mu_j + 2, 1), OUT ~ N(mu_j, 1)
    # per example; the target trained on the first half
    rng = np.random.default_rng(0)
    n, k = 400, 8
    mu = rng.normal(scale=3, size=n)
    shadow_in = rng.random((k, n)) < 0.5
    shadow_in[0], shadow_in[1] = True, False  # every example IN and OUT
    shadow = mu + 2 * shadow_in + rng.normal(size=(k, n))
    member = np.arange(n) < n // 2
    target = mu + 2 * member + rng.normal(size=n)
    scores = lira_scores(target, shadow, shadow_in)
    from sklearn.metrics import roc_auc_score

    # the ratio removes the per-example difficulty mu: far better than the
    # confidence itself (measured 0.913 against 0.716)
    assert roc_auc_score(member, scores) > 0.9 > 0.75 > roc_auc_score(member, target)
