"""keras_harden.robust.gradient_masking: the three symptoms, each flagged
exactly past its threshold and never on consistent figures."""

import pytest

from keras_harden.robust.gradient_masking import (
    LARGE_EPS_ACCURACY,
    TOLERANCE,
    gradient_masking_warnings,
)

CONSISTENT = {
    "fgsm": {0.1: 0.60, 0.2: 0.30},
    "pgd": {0.1: 0.50, 0.2: 0.10},
    "apgd-ce": {0.1: 0.48, 0.2: 0.08},
    "square": {0.1: 0.55, 0.2: 0.20},
}


def test_consistent_figures_flag_nothing():
    assert gradient_masking_warnings(CONSISTENT, 0.5, 0.0) == []


def test_iterative_weaker_than_one_step():
    accuracy = dict(CONSISTENT, pgd={0.1: 0.50, 0.2: 0.35})  # 0.35 > 0.30 + 0.01
    (warning,) = gradient_masking_warnings(accuracy)
    assert warning.startswith(
        "pgd leaves a higher accuracy than one FGSM step at eps 0.2"
    )
    assert "(0.350 > 0.300)" in warning


def test_differences_within_the_tolerance_are_noise():
    # pgd 0.31 against fgsm 0.30: 0.01 is not more than TOLERANCE = 0.01
    assert TOLERANCE == 0.01
    accuracy = dict(CONSISTENT, pgd={0.1: 0.50, 0.2: 0.31})
    assert gradient_masking_warnings(accuracy) == []
    # square 0.07 against the best gradient attack's 0.08: within 0.01
    accuracy = dict(CONSISTENT, square={0.1: 0.55, 0.2: 0.07})
    assert gradient_masking_warnings(accuracy) == []


def test_gradient_free_stronger_than_every_gradient_attack():
    accuracy = dict(CONSISTENT, square={0.1: 0.30, 0.2: 0.20})  # 0.30 < 0.48 - 0.01
    (warning,) = gradient_masking_warnings(accuracy)
    assert warning.startswith("square (gradient-free) is stronger than every gradient")
    assert "eps 0.1 (0.300 < 0.480)" in warning


def test_large_eps_accuracy_not_near_zero():
    assert LARGE_EPS_ACCURACY == 0.1
    assert gradient_masking_warnings(CONSISTENT, 0.5, 0.1) == []  # at the limit
    (warning,) = gradient_masking_warnings(CONSISTENT, 0.5, 0.25)
    assert warning.startswith("Accuracy is still 0.250 at eps 0.5")


def test_without_fgsm_or_square_only_the_large_eps_check_applies():
    accuracy = {"pgd": {0.1: 0.9}, "apgd-dlr": {0.1: 0.95}}
    assert gradient_masking_warnings(accuracy, 0.5, 0.0) == []
    assert len(gradient_masking_warnings(accuracy, 0.5, 0.5)) == 1


@pytest.mark.parametrize("tolerance", [0.0, 0.05])
def test_tolerance_is_honoured(tolerance):
    accuracy = {"fgsm": {0.1: 0.40}, "pgd": {0.1: 0.44}}
    flagged = gradient_masking_warnings(accuracy, tolerance=tolerance)
    assert len(flagged) == (1 if tolerance < 0.04 else 0)
