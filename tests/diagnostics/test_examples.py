import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_spike_guard_example_runs():
    script = os.path.join(ROOT, "examples", "diagnostics_spike_guard.py")
    result = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "before training: healthy" in out
    # batch 10 of each of the 3 epochs (43 batches each) is corrupted
    assert "rollbacks: 3 at steps [10, 53, 96]" in out
    assert "learning rate now: 0.0125" in out
    accuracy = float(
        re.search(r"weights finite: True; test accuracy: ([\d.]+)", out)[1]
    )
    assert accuracy > 0.8
