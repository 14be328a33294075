"""The optimizer example runs as a user would run it."""

import pytest

from tests.toolkit import run_example


@pytest.mark.slow
def test_quickstart_example_runs():
    out = run_example("optimizers_quickstart.py")
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert float(lines["test accuracy"]) > 0.8
    assert lines["NaN batch skipped"].strip().startswith("True, skipped_steps=1")
    assert "AdaptiveGradientClipping, skipped_steps=1" in lines["reloaded optimizer"]
