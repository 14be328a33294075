import pytest

from tests.toolkit import run_example


@pytest.mark.slow
def test_deep_mlp_example_runs():
    out = run_example("initializers_deep_mlp.py")
    lines = [line for line in out.splitlines() if "test accuracy" in line]
    assert len(lines) == 3, out
    assert "layers converged" in out
