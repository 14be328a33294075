import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_deep_mlp_example_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "initializers_deep_mlp.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "test accuracy" in line]
    assert len(lines) == 3, result.stdout
    assert "layers converged" in result.stdout
