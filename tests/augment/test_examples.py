"""The augmentation examples run as a user would run them."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.tf_only
def test_augment_digits_example_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "augment_digits.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same output on every call: True; equals predict: True" in result.stdout
    accuracy = float(
        result.stdout.split("test accuracy after 8 epochs: ")[1].split()[0]
    )
    assert accuracy > 0.5  # ten classes: chance is 0.1
