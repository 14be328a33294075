"""Successive halving's schedule, paired noise test and survivors, by hand."""

import math

import pytest

from keras_harden.search.halving import Round, beats, rank_scores, schedule, survivors


def test_schedule_nine_candidates_thirds():
    # k = floor(log3 9) + 1 = 3 rounds ending at 900/9, 900/3, 900; keeps
    # ceil(9/3) = 3 after the first, then 1, and the last trains 1 to the end.
    assert schedule(900, 9) == [Round(100, 3), Round(300, 1), Round(900, 1)]
    # cost in steps: 9*100 + 3*200 + 1*600 = 2100 = 2.33 runs of 900
    rounds = schedule(900, 9)
    alive, start, cost = 9, 0, 0
    for planned in rounds:
        cost += alive * (planned.end - start)
        alive, start = planned.keep, planned.end
    assert cost == 2100


def test_schedule_two_halving_factor_and_short_runs():
    # eta 2, 8 candidates: 4 rounds at 100/8, 100/4, 100/2, 100 -> 13, 25, 50, 100
    assert schedule(100, 8, eta=2) == [
        Round(12, 4),  # round(12.5) = 12 (banker's rounding)
        Round(25, 2),
        Round(50, 1),
        Round(100, 1),
    ]
    # every round ends by total_steps, and a 3-step run is one round
    assert schedule(3, 9, min_steps=10) == [Round(3, 1)]
    with pytest.raises(ValueError, match="n_candidates=0"):
        schedule(10, 0)


def test_beats_is_a_paired_two_standard_error_test():
    # 100 examples, the challenger right on 10 more and wrong on none more:
    # d = 1 on 10, 0 on 90: mean 0.1, sd = sqrt((10*0.81 + 90*0.01)/99) =
    # sqrt(9/99) = 0.3015, se = 0.03015; 0.1 > 2 * 0.03015 -> beats.
    assert beats([1] * 10 + [0] * 90, [0] * 100)
    # 3 more of 100: mean 0.03, sd = sqrt((3*0.9409 + 97*0.0009)/99) =
    # 0.1714, se 0.01714; 0.03 < 0.0343 -> noise.
    assert not beats([1] * 3 + [0] * 97, [0] * 100)
    # the same with z = 1.5: 0.03 > 0.0257 -> beats
    assert beats([1] * 3 + [0] * 97, [0] * 100, z=1.5)
    # worse never beats
    assert not beats([0] * 100, [1] * 100)


def test_survivors_protects_plain_unless_beaten():
    # plain (0) is third of four: kept only while not beaten beyond noise
    close = [[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert survivors(
        [0.75, 1.0, 0.75, 0.0], keep=1, protected=0, per_example=close
    ) == [1, 0]
    crushed = [[0] * 50, [1] * 50, [1] * 50]
    assert survivors([0.0, 1.0, 1.0], keep=1, protected=0, per_example=crushed) == [1]
    # a diverged plain is not protected; diverged candidates never survive
    assert survivors([-math.inf, 0.5, float("nan")], keep=2, protected=0) == [1]
    # ties go to the lower index (the less invasive candidate)
    assert survivors([0.5, 0.9, 0.9, 0.9], keep=2) == [1, 2]


def test_rank_scores_lets_the_loss_break_accuracy_ties():
    # 150 held-out examples, 15, 17 and 18 right: the best (2) is 3 examples
    # ahead of 0: d = 1 on 3, 0 on 147: mean 0.02, sd = sqrt((3 * 0.98^2 +
    # 147 * 0.02^2) / 149) = 0.1404, se = 0.0115; 0.02 < 2 se = 0.023: a tie,
    # as is 1 (one example behind). The lowest loss (1: 2.2) ranks first.
    correct = [[1] * 15 + [0] * 135, [1] * 17 + [0] * 133, [1] * 18 + [0] * 132]
    ranked = rank_scores([0.10, 0.113, 0.12], [9e3, 2.2, 2.3], correct)
    assert ranked == [-9e3, -2.2, -2.3]
    assert survivors(ranked, keep=1) == [1]
    # 60 examples more of 150 is far beyond the noise: accuracy decides
    # (mean 0.4, sd 0.49, se 0.04), however low the worse one's loss.
    clear = [[0] * 150, [1] * 60 + [0] * 90]
    ranked = rank_scores([0.0, 0.4], [0.1, 5.0], clear)
    assert survivors(ranked, keep=1) == [1]
    # a diverged candidate stays out
    assert (
        rank_scores([-math.inf, 0.5], [math.inf, 1.0], [None, [1, 0]])[0] == -math.inf
    )
