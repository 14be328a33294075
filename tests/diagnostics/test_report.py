import pytest

from keras_harden.diagnostics import Report
from tests.toolkit import assert_config_round_trip

STATS = [
    {
        "layer": "model/dense",
        "grad_norm": 8.0,
        "weight_norm": 2.0,
        "grad_to_weight": 4.0,
        "update_ratio": 0.5,
        "activation_rms": 3.0,
    },
    {
        "layer": "model/head",
        "grad_norm": 0.5,
        "weight_norm": 1.0,
        "grad_to_weight": 0.5,
        "update_ratio": None,
        "activation_rms": float("nan"),
    },
]


def _report():
    return Report(
        verdict="exploding",
        layers=["model/dense"],
        stats=STATS,
        loss=12.5,
        grad_norm=8.0156,
        recommendations=["Clip: `kh.optimizers.AdaptiveGradientClipping`."],
        optimizer="Adam",
        steps=3,
        loss_name="sparse categorical cross-entropy on logits",
    )


def test_markdown_lists_verdict_layers_and_advice():
    text = _report().to_markdown()
    assert "## Diagnosis: **exploding**" in text
    assert "layers responsible: model/dense" in text
    assert "| model/dense **!** | 8 | 2 | 4 | 0.5 | 3 |" in text
    assert "| model/head | 0.5 | 1 | 0.5 | - | nan |" in text
    assert "- Clip: `kh.optimizers.AdaptiveGradientClipping`." in text
    assert "batches: 3; mean loss: 12.5; mean global gradient norm: 8.02" in text
    assert "- loss: sparse categorical cross-entropy on logits" in text


def test_plot_writes_a_png(tmp_path):
    path = _report().plot(tmp_path / "sub" / "report.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_config_round_trip():
    revived = assert_config_round_trip(_report())
    assert revived.to_markdown() == _report().to_markdown()


def test_bad_verdict():
    with pytest.raises(ValueError, match="verdict='fine'"):
        Report(verdict="fine")
