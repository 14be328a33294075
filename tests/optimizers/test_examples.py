"""The optimizer example runs as a user would run it."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_example_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "optimizers_quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(
        line.split(":", 1) for line in result.stdout.splitlines() if ":" in line
    )
    assert float(lines["test accuracy"]) > 0.8
    assert lines["NaN batch skipped"].strip().startswith("True, skipped_steps=1")
    assert "AdaptiveGradientClipping, skipped_steps=1" in lines["reloaded optimizer"]
