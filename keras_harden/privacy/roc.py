"""How well membership scores separate members from non-members: the ROC
curve, its area and the true-positive rate at a low false-positive rate.

Pure NumPy on scikit-learn's `roc_curve` and `roc_auc_score`. A score is
higher for a likelier member; an example counts as flagged at a threshold
when its score is at least the threshold.

The area under the curve averages over every false-positive rate, most of
which no attacker would accept; Carlini et al. (2022) argue for the
true-positive rate at a low false-positive rate (1%, 0.1%), read on a
log-log ROC curve: an attack that confidently identifies a few members is a
real leak even when its AUC is near 0.5.
"""

import math
import numbers

import numpy as np

__all__ = ["auc", "roc", "tpr_at_fpr"]


def _scores_and_labels(scores, is_member):
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1:
        raise ValueError(
            f"`scores` must be one score per example, shape (n,). Received: "
            f"scores of shape {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(
            "`scores` must be finite. Received: scores with "
            f"{int(np.sum(~np.isfinite(s)))} NaN or infinite values"
        )
    if m.shape != s.shape or m.dtype != bool:
        raise ValueError(
            f"`is_member` must be {len(s)} bools, one per score. Received: "
            f"is_member of shape {m.shape} and dtype {m.dtype}"
        )
    if m.all() or not m.any():
        raise ValueError(
            "`is_member` must hold both members (True) and non-members "
            f"(False). Received: {int(m.sum())} members of {len(m)}"
        )
    return s, m


def roc(scores, is_member):
    """The ROC curve of membership scores.

    Args:
        scores: `n` finite scores, higher for a likelier member.
        is_member: `n` bools, True for a member.

    Returns:
        `(fpr, tpr)`, float64 arrays from `(0, 0)` to `(1, 1)`: at each
        distinct score taken as the threshold, the share of non-members and
        of members scoring at least it (scikit-learn's `roc_curve`, without
        the points that lie on a straight segment between two others).

    Example:

    >>> fpr, tpr = roc([0.9, 0.7, 0.6, 0.3], np.array([True, False, True, False]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    from sklearn.metrics import roc_curve

    s, m = _scores_and_labels(scores, is_member)
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=True)
    return fpr.astype(np.float64), tpr.astype(np.float64)


def auc(scores, is_member):
    """The area under the ROC curve: the chance that a random member scores
    above a random non-member (ties count half). 0.5 is chance.

    Args:
        scores: `n` finite scores, higher for a likelier member.
        is_member: `n` bools, True for a member.

    Returns:
        The AUC as a float (scikit-learn's `roc_auc_score`).

    Example:

    >>> # members 0.9, 0.6 above the non-member 0.3; 0.6 below 0.7: 3 of 4
    >>> auc([0.9, 0.7, 0.6, 0.3], np.array([True, False, True, False]))
    0.75
    """
    from sklearn.metrics import roc_auc_score

    s, m = _scores_and_labels(scores, is_member)
    return float(roc_auc_score(m, s))


def check_fpr(fpr):
    """`fpr` as a float in [0, 1]."""
    if (
        isinstance(fpr, bool)
        or not isinstance(fpr, numbers.Real)
        or not math.isfinite(fpr)
        or not 0 <= fpr <= 1
    ):
        raise ValueError(f"`fpr` must be a number in [0, 1]. Received: fpr={fpr!r}")
    return float(fpr)


def tpr_at_fpr(fpr_curve, tpr_curve, fpr):
    """The true-positive rate at a false-positive rate: the largest TPR of
    the ROC points whose FPR is at most `fpr`.

    Args:
        fpr_curve: the curve's false-positive rates (from `roc`), starting
            at 0.
        tpr_curve: its true-positive rates, as many.
        fpr: the false-positive rate allowed, in [0, 1].

    Returns:
        The TPR as a float. With `n` non-members the FPRs come in steps of
        `1 / n`, so below `1 / n` this is the TPR at no false positive.

    Example:

    >>> fpr, tpr = roc([0.9, 0.7, 0.6, 0.3], np.array([True, False, True, False]))
    >>> tpr_at_fpr(fpr, tpr, 0.1), tpr_at_fpr(fpr, tpr, 0.5)
    (0.5, 1.0)
    """
    f = np.asarray(fpr_curve, dtype=np.float64)
    t = np.asarray(tpr_curve, dtype=np.float64)
    if f.ndim != 1 or f.shape != t.shape or not len(f):
        raise ValueError(
            "`fpr_curve` and `tpr_curve` must be one-dimensional and as long "
            f"as each other. Received: shapes {f.shape} and {t.shape}"
        )
    fpr = check_fpr(fpr)
    allowed = f <= fpr
    if not allowed.any():
        raise ValueError(
            "`fpr_curve` must start at 0 (as `roc` returns it). Received: "
            f"fpr_curve starting at {f.min():g}"
        )
    return float(t[allowed].max())
