"""keras_harden.privacy.roc: the ROC curve, its area and the TPR at a low
FPR, against values worked by hand."""

import numpy as np
import pytest

from keras_harden.privacy.roc import auc, roc, tpr_at_fpr

# Members score 0.9, 0.6, 0.4; non-members 0.7, 0.4, 0.2, 0.1 (one tie).
SCORES = np.array([0.9, 0.6, 0.4, 0.7, 0.4, 0.2, 0.1])
MEMBER = np.array([True, True, True, False, False, False, False])


def test_auc_by_hand():
    # 3 x 4 = 12 (member, non-member) pairs; a member above counts 1, a tie 1/2:
    # 0.9 beats all 4; 0.6 beats 0.4, 0.2, 0.1 (3); 0.4 ties 0.4 (1/2) and
    # beats 0.2, 0.1 (2). (4 + 3 + 2.5) / 12 = 9.5 / 12
    assert auc(SCORES, MEMBER) == pytest.approx(9.5 / 12, rel=1e-15)
    # perfect and reversed separation, and chance when every score ties
    assert auc([2.0, 1.0], np.array([True, False])) == 1.0
    assert auc([1.0, 2.0], np.array([True, False])) == 0.0
    assert auc([1.0, 1.0, 1.0], np.array([True, False, False])) == 0.5


def test_roc_by_hand():
    # thresholds from the top: 0.9 (a member: TPR 1/3, FPR 0), 0.7 (FPR 1/4),
    # 0.6 (TPR 2/3), 0.4 (a member and a non-member: TPR 1, FPR 2/4), 0.2
    # (FPR 3/4), 0.1 (FPR 1). The last two lie on the segment from (2/4, 1)
    # to (1, 1) and are dropped (its end stays).
    fpr, tpr = roc(SCORES, MEMBER)
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])
    # the trapezoids under the curve are the AUC: 1/3 * 1/4 + 2/3 * 1/4 +
    # (2/3 + 1) / 2 * 1/4 + 1 * 1/2 = 1/12 + 2/12 + 2.5/12 + 6/12 = 9.5 / 12
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(SCORES, MEMBER))


def test_tpr_at_fpr_by_hand():
    fpr, tpr = roc(SCORES, MEMBER)
    # no false positive allowed: above 0.7, only the member 0.9 -> 1/3
    assert tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(1 / 3)
    # up to one in four: threshold 0.6 flags 0.9, 0.7 and 0.6 -> 2/3
    assert tpr_at_fpr(fpr, tpr, 0.25) == pytest.approx(2 / 3)
    assert tpr_at_fpr(fpr, tpr, 0.49) == pytest.approx(2 / 3)
    # two in four: threshold 0.4 -> every member
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0
    assert tpr_at_fpr(fpr, tpr, 1) == 1.0


def test_tpr_at_a_rate_of_exactly_k_over_n():
    # 100 non-members at 0..99, members at 98.5 and 97.5: 1% FPR is exactly
    # one false positive (99), which lets the threshold down to 98.5 -> 1/2;
    # 2% (99, 98) reaches 97.5 -> 1
    scores = np.concatenate([np.arange(100.0), [98.5, 97.5]])
    member = np.arange(102) >= 100
    fpr, tpr = roc(scores, member)
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.0099) == 0.0
    assert tpr_at_fpr(fpr, tpr, 0.02) == 1.0


@pytest.mark.parametrize(
    "scores, member, match",
    [
        ([[0.1, 0.2]], [True, False], "scores of shape \\(1, 2\\)"),
        ([0.1, np.nan], [True, False], "1 NaN or infinite"),
        ([0.1, 0.2], [1, 0], "dtype int64"),
        ([0.1, 0.2], [True], "is_member of shape \\(1,\\)"),
        ([0.1, 0.2], [True, True], "2 members of 2"),
        ([0.1, 0.2], [False, False], "0 members of 2"),
    ],
)
def test_refuses(scores, member, match):
    with pytest.raises(ValueError, match=match):
        auc(scores, np.asarray(member))
    with pytest.raises(ValueError, match=match):
        roc(scores, np.asarray(member))


@pytest.mark.parametrize("fpr", [-0.1, 1.5, float("nan"), True, "0.01"])
def test_tpr_at_fpr_refuses_a_bad_rate(fpr):
    with pytest.raises(ValueError, match="Received: fpr="):
        tpr_at_fpr([0.0, 1.0], [0.0, 1.0], fpr)


def test_tpr_at_fpr_refuses_a_curve_not_from_roc():
    with pytest.raises(ValueError, match="as long as each other"):
        tpr_at_fpr([0.0, 1.0], [1.0], 0.1)
    with pytest.raises(ValueError, match="must start at 0"):
        tpr_at_fpr([0.5, 1.0], [0.5, 1.0], 0.1)
