import re

import pytest

from tests.toolkit import run_example


@pytest.mark.slow
def test_spike_guard_example_runs():
    out = run_example("diagnostics_spike_guard.py")
    assert "before training: healthy" in out
    # batch 10 of each of the 3 epochs (43 batches each) is corrupted
    assert "rollbacks: 3 at steps [10, 53, 96]" in out
    assert "learning rate now: 0.0125" in out
    accuracy = float(
        re.search(r"weights finite: True; test accuracy: ([\d.]+)", out)[1]
    )
    assert accuracy > 0.8
