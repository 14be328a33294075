"""keras_harden.robust.report.RobustnessReport: its views, Markdown, plot
and serialization round trip."""

import keras
import numpy as np
import pytest

from keras_harden.robust.report import RobustnessReport


def _report():
    return RobustnessReport(
        clean_accuracy=0.95,
        epsilons=[0.05, 0.1],
        attack_accuracy={"fgsm": [0.8, 0.6], "pgd": [0.7, 0.4]},
        worst_case_accuracy=[0.65, 0.35],
        robust_examples=[[True, True], [True, False], [False, False]],
        large_eps=0.5,
        large_eps_accuracy=0.0,
        severities=[1, 3],
        corruption_accuracy={"gaussian_noise": [0.9, 0.7], "contrast": [0.94, 0.8]},
        warnings=["something flagged"],
        seconds={"fgsm": 0.5, "pgd": 2.0},
    )


def test_views():
    report = _report()
    assert report.worst_case == {0.05: 0.65, 0.1: 0.35}
    assert report.accuracy == {
        "fgsm": {0.05: 0.8, 0.1: 0.6},
        "pgd": {0.05: 0.7, 0.1: 0.4},
    }
    # (0.9 + 0.7 + 0.94 + 0.8) / 4 = 3.34 / 4
    assert report.mean_corruption_accuracy == pytest.approx(0.835)
    assert report.robust_examples.tolist() == [
        [True, True],
        [True, False],
        [False, False],
    ]
    assert "worst_case={0.05: 0.650, 0.1: 0.350}" in repr(report)


def test_markdown_holds_every_figure():
    text = _report().to_markdown()
    assert "# Robustness on 3 examples" in text
    assert "| attack | eps 0.05 | eps 0.1 |" in text
    assert "| pgd | 0.700 | 0.400 |" in text
    assert "| **worst case** | **0.650** | **0.350** |" in text
    # the row mean: (0.94 + 0.8) / 2 = 0.87
    assert "| contrast | 0.940 | 0.800 | 0.870 |" in text
    assert "Mean corruption accuracy: **0.835**" in text
    assert "PGD at eps 0.5: accuracy 0.000" in text
    assert "- something flagged" in text


def test_markdown_without_corruptions_or_warnings():
    report = RobustnessReport(0.9, [0.1], {"pgd": [0.5]}, [0.5])
    text = report.to_markdown()
    assert "corruption" not in text.lower()
    assert "None flagged." in text
    assert report.mean_corruption_accuracy is None


def test_round_trip():
    report = _report()
    config = keras.saving.serialize_keras_object(report)
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, RobustnessReport)
    assert again.get_config() == report.get_config()
    assert again.to_markdown() == report.to_markdown()


def test_plot_writes_a_png(tmp_path):
    path = _report().plot(tmp_path / "robustness.png")
    data = (tmp_path / "robustness.png").read_bytes()
    assert str(path).endswith("robustness.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "robustness.png"]  # atomic
    figure = _report().plot()
    assert len(figure.axes) == 2  # the curve and the corruptions


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attack_accuracy": {"pgd": [0.5]}}, "one entry per eps"),
        ({"worst_case_accuracy": [0.5, 0.4, 0.3]}, "one entry per eps"),
        (
            {"corruption_accuracy": {"blur": [0.5]}, "severities": [1, 2]},
            "one accuracy per severity",
        ),
        ({"worst_case_accuracy": [np.nan, 0.5]}, "finite"),
    ],
)
def test_inconsistent_figures_are_refused(kwargs, message):
    arguments = dict(
        clean_accuracy=0.9,
        epsilons=[0.1, 0.2],
        attack_accuracy={"pgd": [0.5, 0.4]},
        worst_case_accuracy=[0.5, 0.4],
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RobustnessReport(**arguments)
