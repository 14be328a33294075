import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_fusion_soup_example_runs(tmp_path):
    run = subprocess.run(
        [sys.executable, "examples/fusion_soup.py", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("reloaded identical: True") == 3
    assert sorted(os.listdir(tmp_path)) == [
        "ensemble.keras",
        "soup.keras",
        "stack.keras",
    ]
