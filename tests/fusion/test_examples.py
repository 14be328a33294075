import os

import pytest

from tests.toolkit import run_example


@pytest.mark.slow
def test_fusion_soup_example_runs(tmp_path):
    out = run_example("fusion_soup.py", "--out", str(tmp_path))
    assert out.count("reloaded identical: True") == 3
    assert sorted(os.listdir(tmp_path)) == [
        "ensemble.keras",
        "soup.keras",
        "stack.keras",
    ]
