"""Successive halving as pure functions: the schedule of rounds, the paired
noise test on held-out examples, and who survives a round.

Successive halving (Jamieson and Talwalkar 2016) trains many candidates for a
short budget, keeps the best `1 / eta` of them and lets the survivors
*continue* for a longer budget, until one is left. Here the last round ends at
the user's whole run, so the winner's last round is its full training.

Nothing here knows about Keras: the search in `harden.py` feeds these
functions numbers and per-example scores.
"""

import math
from typing import NamedTuple

import numpy as np

__all__ = ["Round", "beats", "rank_scores", "schedule", "survivors"]


class Round(NamedTuple):
    """One round: train the survivors up to step `end` (counted from the
    start of the run), then keep `keep` of them."""

    end: int
    keep: int


def schedule(total_steps, n_candidates, eta=3, min_steps=1):
    """The rounds of a successive-halving search that ends at `total_steps`.

    With `k = floor(log_eta(n_candidates)) + 1` rounds, round `i`
    (from 0) ends at `total_steps / eta**(k - 1 - i)` and keeps
    `ceil(n_candidates / eta**(i + 1))` candidates, the last two 1 (the last
    round trains the winner alone). While the first round would end before
    `min_steps`, there is one round fewer: a short run has fewer, longer
    rounds.

    >>> schedule(900, 9)                 # 9 -> 3 -> 1, ending at 100, 300, 900
    [Round(end=100, keep=3), Round(end=300, keep=1), Round(end=900, keep=1)]
    >>> schedule(900, 12)                # 12 -> 4 -> 1
    [Round(end=100, keep=4), Round(end=300, keep=1), Round(end=900, keep=1)]
    >>> schedule(68, 12, min_steps=10)   # 68 / 9 < 10: two rounds
    [Round(end=23, keep=1), Round(end=68, keep=1)]
    >>> schedule(50, 1)
    [Round(end=50, keep=1)]
    """
    if n_candidates < 1 or total_steps < 1:
        raise ValueError(
            "`total_steps` and `n_candidates` must be >= 1. Received: "
            f"total_steps={total_steps}, n_candidates={n_candidates}"
        )
    k = math.floor(math.log(n_candidates, eta) + 1e-9) + 1
    # fewer, longer rounds when the first would be shorter than `min_steps`
    while k > 1 and total_steps / eta ** (k - 1) < min_steps:
        k -= 1
    rounds = []
    for i in range(k):
        end = max(1, round(total_steps / eta ** (k - 1 - i)))
        keep = 1 if i >= k - 2 else math.ceil(n_candidates / eta ** (i + 1))
        rounds.append(Round(end, keep))
    rounds[-1] = Round(total_steps, 1)
    return rounds


def beats(challenger, incumbent, z=2.0):
    """Whether `challenger` scores higher than `incumbent` beyond the noise of
    the held-out set.

    Both are per-example scores on the same held-out examples (higher is
    better: 1/0 for a correct/wrong prediction, or minus the example's loss).
    The test is paired: the mean of the differences must exceed `z` standard
    errors of that mean.

    >>> beats([1, 1, 1, 1], [0, 0, 0, 0])
    True
    >>> beats([1, 0, 1, 0], [0, 1, 0, 1])   # as good on average
    False
    >>> beats([1.0] * 100, [1.0] * 99 + [0.0])  # one example of 100: noise
    False
    """
    diff = np.asarray(challenger, np.float64) - np.asarray(incumbent, np.float64)
    if diff.size == 0 or not np.all(np.isfinite(diff)):
        # a non-finite score (a diverged candidate) is decided by its mean
        return bool(np.nan_to_num(np.mean(diff), nan=-np.inf) > 0)
    mean = float(np.mean(diff))
    if diff.size == 1:
        return mean > 0
    stderr = float(np.std(diff, ddof=1)) / math.sqrt(diff.size)
    return mean > 0 and mean > z * stderr


def rank_scores(scores, losses, per_example, z=2.0):
    """Scores that rank a classifier's candidates by accuracy, with held-out
    accuracies within the noise of the best counted as ties that the lower
    held-out loss breaks.

    Early in training, or when every candidate is still near chance, the
    accuracies differ by noise while the losses already tell a net that is
    learning from one that is not. A candidate the best `beats` (on
    `per_example` correctness) ranks below every tie.

    Args:
        scores: held-out accuracy per candidate (`-inf`: diverged).
        losses: held-out loss per candidate.
        per_example: per-example correctness per candidate (None if diverged).

    Returns:
        A score per candidate, higher is better, for `survivors`.

    >>> rank_scores([0.10, 0.12, 0.11], [9e3, 2.3, 2.2],
    ...             [[0] * 90 + [1] * 10, [0] * 88 + [1] * 12, [0] * 89 + [1] * 11])
    [-9000.0, -2.3, -2.2]
    >>> rank_scores([0.1, 0.9], [0.5, 1.0], [[0] * 9 + [1], [0] + [1] * 9], z=1.0)
    [-1000000000.5, -1.0]
    """
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        return [-math.inf] * len(scores)
    best = max(finite, key=lambda i: (scores[i], -i))
    ranked = []
    for i, score in enumerate(scores):
        if not math.isfinite(score):
            ranked.append(-math.inf)
        elif i == best or not beats(per_example[best], per_example[i], z):
            ranked.append(-float(losses[i]))
        else:  # significantly less accurate: below every tie
            ranked.append(-1e9 - float(losses[i]))
    return ranked


def survivors(scores, keep, protected=None, per_example=None, z=2.0):
    """The indices that go on to the next round, best first.

    Args:
        scores: a score per candidate, higher is better (`-inf` or NaN for a
            diverged one, which never survives). Ties go to the lower index
            (the candidates are listed from the least invasive).
        keep: how many of the best survive.
        protected: an index (plain training) that also survives, unless it
            diverged or the round's best `beats` it on `per_example` scores.
        per_example: a list of per-example score arrays, one per candidate,
            for the protection test.
        z: the test's threshold in standard errors.

    >>> survivors([0.5, 0.9, 0.7, float("-inf")], keep=2)
    [1, 2]
    >>> survivors([0.5, 0.9, 0.7], keep=1, protected=0,
    ...           per_example=[[1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    [1, 0]
    """
    clean = [-math.inf if not math.isfinite(s) else float(s) for s in scores]
    order = sorted(
        (i for i in range(len(clean)) if clean[i] > -math.inf),
        key=lambda i: (-clean[i], i),
    )
    kept = order[:keep]
    if protected is not None and protected not in kept and clean[protected] > -math.inf:
        leader = kept[0]
        if not beats(per_example[leader], per_example[protected], z):
            kept.append(protected)
    return kept
