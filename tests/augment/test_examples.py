"""The augmentation examples run as a user would run them."""

import pytest

from tests.toolkit import run_example


@pytest.mark.slow
@pytest.mark.tf_only
def test_augment_digits_example_runs():
    out = run_example("augment_digits.py", timeout=120)
    assert "same output on every call: True; equals predict: True" in out
    accuracy = float(out.split("test accuracy after 8 epochs: ")[1].split()[0])
    assert accuracy > 0.5  # ten classes: chance is 0.1
