"""keras_harden.privacy.audit_report.AuditReport: its views, warnings,
Markdown, log-log plot and JSON round trip."""

import json

import keras
import pytest

from keras_harden.privacy.audit_report import AuditReport, sample_size_warnings


def _report(n_non_members=2000, **kwargs):
    return AuditReport(
        auc={"loss": 0.625, "lira": 0.75},
        roc={
            # loss: TPR 0.02 up to FPR 0.005, 0.1 at 0.01, 1 at 1
            "loss": {"fpr": [0, 0.005, 0.01, 1], "tpr": [0, 0.02, 0.1, 1]},
            "lira": {"fpr": [0, 0, 0.0005, 0.02, 1], "tpr": [0, 0.05, 0.2, 0.4, 1]},
        },
        n_members=1500,
        n_non_members=n_non_members,
        shadow_models=8,
        seconds={"predict": 0.5, "lira": 30.0},
        **kwargs,
    )


def test_views():
    report = _report()
    assert report.attacks == ["loss", "lira"]
    # the largest TPR among the points with FPR <= 1%: loss 0.1 (at 0.01
    # itself), lira 0.2 (at 0.0005; the next point is at 0.02)
    assert report.tpr_at_1pct == {"loss": 0.1, "lira": 0.2}
    # <= 0.1%: loss only (0, 0) -> 0; lira 0.2 at 0.0005
    assert report.tpr_at_0_1pct == {"loss": 0.0, "lira": 0.2}
    assert report.tpr_at(0.0) == {"loss": 0.0, "lira": 0.05}
    assert report.warnings == []  # 2,000 non-members are enough for both
    assert "lira: AUC 0.750, TPR@1% 0.200" in repr(report)


@pytest.mark.parametrize(
    "n, rates",
    [(2000, []), (1000, []), (999, ["0.1%"]), (100, ["0.1%"]), (99, ["1%", "0.1%"])],
)
def test_warnings_for_too_few_non_members(n, rates):
    found = sample_size_warnings(n)
    assert [w.split("TPR at ")[1].split(" ")[0] for w in found] == rates
    for sentence in found:
        assert sentence.startswith(f"Only {n:,} non-members")
    assert _report(n_non_members=n).warnings == found


def test_markdown_holds_every_figure():
    text = _report(n_non_members=500).to_markdown()
    assert text.startswith("# Membership inference: 1,500 members, 500 non-members\n")
    assert "| attack | AUC | TPR at 1% FPR | TPR at 0.1% FPR |" in text
    assert "| loss | 0.625 | 0.100 | 0.000 |" in text
    assert "| lira (8 shadows) | 0.750 | 0.200 | 0.200 |" in text
    assert "- Warning: Only 500 non-members: the TPR at 0.1% FPR needs at least" in text
    assert "Warning" not in _report().to_markdown()


def test_dict_and_json_round_trip(tmp_path):
    report = _report(n_non_members=50)
    data = report.to_dict()
    json.dumps(data)  # JSON types only
    again = AuditReport.from_dict(data)
    assert again.to_dict() == data and again.to_markdown() == report.to_markdown()
    path = report.save(tmp_path / "out" / "audit.json")
    assert path == str(tmp_path / "out" / "audit.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["audit.json"]
    loaded = AuditReport.load(path)
    assert loaded.to_dict() == data
    assert loaded.warnings == report.warnings and len(loaded.warnings) == 2
    # and through Keras's serialization, as every public class of the package
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(report)
    )
    assert isinstance(revived, AuditReport) and revived.to_dict() == data


def test_load_names_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match="missing.json"):
        AuditReport.load(missing)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="other.json' is not an AuditReport"):
        AuditReport.load(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=f"Received: path='{broken}'"):
        AuditReport.load(broken)


def test_from_dict_refuses_other_versions_and_missing_fields():
    data = _report().to_dict()
    with pytest.raises(ValueError, match="Received: version=2"):
        AuditReport.from_dict({**data, "version": 2})
    del data["n_members"]
    with pytest.raises(ValueError, match="not a whole AuditReport"):
        AuditReport.from_dict(data)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"auc": {"loss": 1.5}}, "auc\\['loss'\\]=1.5"),
        ({"auc": {"lira": 0.5}}, "must name the same attacks"),
        ({"roc": {"loss": {"fpr": [0, 1]}}}, "roc\\['loss'\\]="),
        ({"roc": {"loss": {"fpr": [0.1, 1], "tpr": [0, 1]}}}, "from FPR 0"),
        ({"roc": {"loss": {"fpr": [0, 1], "tpr": [0, 2]}}}, "all in \\[0, 1\\]"),
        ({"n_members": 0}, "Received: n_members=0"),
        ({"shadow_models": -1}, "Received: shadow_models=-1"),
    ],
)
def test_refuses(kwargs, match):
    arguments = {
        "auc": {"loss": 0.5},
        "roc": {"loss": {"fpr": [0, 1], "tpr": [0, 1]}},
        "n_members": 10,
        "n_non_members": 10,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        AuditReport(**arguments)


def test_plot_writes_a_png_atomically(tmp_path):
    path = _report().plot(tmp_path / "roc.png")
    assert path == str(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]
    figure = _report().plot()
    (axis,) = figure.axes
    assert axis.get_xscale() == axis.get_yscale() == "log"
    labels = [line.get_label() for line in axis.get_lines()]
    assert labels[0] == "chance"
    assert "loss (AUC 0.625)" in labels and "lira (8 shadows) (AUC 0.750)" in labels
    import matplotlib.pyplot as plt

    plt.close(figure)
