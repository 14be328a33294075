"""Report: what `diagnose` found, as Markdown or a PNG."""

import math

import keras

from keras_harden._plotting import pyplot, save_figure

__all__ = ["Report"]

VERDICTS = ("healthy", "exploding", "vanishing", "non-finite")


def _fmt(value):
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.3g}"


@keras.saving.register_keras_serializable(package="keras_harden")
class Report:
    """The findings of `diagnose`: verdict, per-layer figures, advice.

    Args:
        verdict: one of `"healthy"`, `"exploding"`, `"vanishing"`,
            `"non-finite"`.
        layers: names of the layers responsible for the verdict (empty when
            healthy).
        stats: one dict per layer with weights, in model order: `layer`,
            `grad_norm` (mean over the steps), `weight_norm`, `grad_to_weight`
            (`grad_norm / weight_norm`), `update_ratio` (`||update|| /
            ||weights||` for one step of the optimizer) and `activation_rms`
            (root mean square of the layer's output, inference mode; None when
            the model's layers cannot be tapped).
        loss: mean loss over the steps.
        grad_norm: mean global gradient norm over the steps.
        recommendations: list of strings naming keras_harden pieces.
        optimizer: name of the optimizer the update ratios are for.
        steps: number of batches used.
        loss_name: which loss was differentiated (the compiled one, the one
            given, or the default and why).

    Example:

    >>> report = kh.diagnostics.diagnose(model, (x, y))  # doctest: +SKIP
    >>> report.verdict, report.layers  # doctest: +SKIP
    ('exploding', ['dense_3', 'dense_4'])
    >>> print(report.to_markdown())  # doctest: +SKIP
    >>> report.plot("diagnosis.png")  # doctest: +SKIP

    References:
        Glorot and Bengio, "Understanding the difficulty of training deep
        feedforward neural networks" (AISTATS 2010): per-layer activation and
        gradient scales as the symptom of exploding and vanishing signals.
    """

    def __init__(
        self,
        verdict,
        layers=(),
        stats=(),
        loss=None,
        grad_norm=None,
        recommendations=(),
        optimizer=None,
        steps=0,
        loss_name=None,
    ):
        if verdict not in VERDICTS:
            raise ValueError(
                f"`verdict` must be one of {VERDICTS}. Received: verdict={verdict!r}"
            )
        self.verdict = verdict
        self.layers = list(layers)
        self.stats = [dict(s) for s in stats]
        self.loss = loss
        self.grad_norm = grad_norm
        self.recommendations = list(recommendations)
        self.optimizer = optimizer
        self.steps = steps
        self.loss_name = loss_name

    def get_config(self):
        return {
            "verdict": self.verdict,
            "layers": list(self.layers),
            "stats": [dict(s) for s in self.stats],
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "recommendations": list(self.recommendations),
            "optimizer": self.optimizer,
            "steps": self.steps,
            "loss_name": self.loss_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"Report(verdict={self.verdict!r}, layers={self.layers!r})"

    def to_markdown(self):
        """The report as a Markdown string: verdict, per-layer table, advice."""
        lines = [
            f"## Diagnosis: **{self.verdict}**",
            "",
            f"- batches: {self.steps}; mean loss: {_fmt(self.loss)}; mean global "
            f"gradient norm: {_fmt(self.grad_norm)}",
            f"- loss: {self.loss_name or '-'}",
            f"- update ratios are for one step of: {self.optimizer or '-'}",
        ]
        if self.layers:
            lines.append(f"- layers responsible: {', '.join(self.layers)}")
        lines += [
            "",
            "| layer | grad norm | weight norm | grad/weight | update/weight "
            "| activation rms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in self.stats:
            mark = " **!**" if s["layer"] in self.layers else ""
            lines.append(
                f"| {s['layer']}{mark} | {_fmt(s.get('grad_norm'))} | "
                f"{_fmt(s.get('weight_norm'))} | {_fmt(s.get('grad_to_weight'))} | "
                f"{_fmt(s.get('update_ratio'))} | {_fmt(s.get('activation_rms'))} |"
            )
        if self.recommendations:
            lines += ["", "### Recommendations", ""]
            lines += [f"- {r}" for r in self.recommendations]
        return "\n".join(lines) + "\n"

    def plot(self, path):
        """Writes a PNG: per-layer gradient/weight ratio, update ratio and
        activation scale on log axes. Needs matplotlib (`pip install
        keras-harden[plot]`).

        Args:
            path: the `.png` file to write.

        Returns:
            The path written.
        """
        plt = pyplot("Report.plot")
        names = [s["layer"].rsplit("/", 1)[-1] for s in self.stats]
        index = list(range(len(names)))
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, label in (
            ("grad_to_weight", "gradient / weight norm"),
            ("update_ratio", "update / weight norm"),
        ):
            values = [_positive(s.get(key)) for s in self.stats]
            axes[0].plot(index, values, marker="o", label=label)
        axes[0].set_yscale("log")
        axes[0].set_title(f"verdict: {self.verdict}")
        axes[0].legend()
        acts = [_positive(s.get("activation_rms")) for s in self.stats]
        axes[1].plot(index, acts, marker="o", color="tab:green")
        axes[1].set_yscale("log")
        axes[1].set_title("activation rms (inference)")
        for ax in axes:
            ax.set_xticks(index)
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.grid(alpha=0.3)
        figure.tight_layout()
        return save_figure(figure, path)


def _positive(value):
    if value is None or not math.isfinite(value) or value <= 0:
        return float("nan")
    return value
