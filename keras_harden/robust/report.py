"""`RobustnessReport`: what `evaluate` measured, as figures, Markdown or a PNG."""

import math

import keras
import numpy as np

from keras_harden._plotting import pyplot, save_figure
from keras_harden.robust.corruptions import mean_corruption_accuracy

__all__ = ["RobustnessReport"]


def _fmt(value):
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _float_list(values, name):
    values = [float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"`{name}` must hold finite numbers. Received: {name}={values}"
        )
    return values


@keras.saving.register_keras_serializable(package="keras_harden")
class RobustnessReport:
    """The robustness of a classifier: clean, under attack, under corruption.

    Args:
        clean_accuracy: accuracy on the clean inputs.
        epsilons: the attack radii, ascending.
        attack_accuracy: `{attack name: [accuracy at each eps]}`, each
            attack on its own.
        worst_case_accuracy: `[accuracy at each eps]` when every example
            counts as broken as soon as one attack (at this eps or a
            smaller one) breaks it.
        norm: `"linf"` or `"l2"`.
        robust_examples: per example and eps, whether the prediction held
            against every attack (a list of lists of bools, `(examples,
            epsilons)`); None when not kept.
        large_eps: the large radius of the gradient-masking check, or None.
        large_eps_accuracy: the accuracy PGD left at `large_eps`, or None.
        severities: the corruption severities, ascending.
        corruption_accuracy: `{corruption name: [accuracy at each
            severity]}` (empty: no corruption measured).
        warnings: the gradient-masking warnings (sentences).
        seconds: `{what: seconds}` spent per attack and on corruptions.

    Attributes:
        accuracy: `{attack: {eps: accuracy}}`.
        worst_case: `{eps: worst-case accuracy}`.
        mean_corruption_accuracy: the mean over corruptions of each one's
            mean over severities (`corruptions.mean_corruption_accuracy`),
            or None.

    Example:

    >>> report = RobustnessReport(
    ...     0.98, [0.1], {"fgsm": [0.70], "pgd": [0.55]}, [0.52],
    ...     severities=[1, 2], corruption_accuracy={"gaussian_noise": [0.9, 0.8]})
    >>> report.worst_case, report.accuracy["pgd"]
    ({0.1: 0.52}, {0.1: 0.55})
    >>> round(report.mean_corruption_accuracy, 3)
    0.85
    """

    def __init__(
        self,
        clean_accuracy,
        epsilons,
        attack_accuracy,
        worst_case_accuracy,
        norm="linf",
        robust_examples=None,
        large_eps=None,
        large_eps_accuracy=None,
        severities=(),
        corruption_accuracy=None,
        warnings=(),
        seconds=None,
    ):
        self.clean_accuracy = float(clean_accuracy)
        self.epsilons = _float_list(epsilons, "epsilons")
        self.attack_accuracy = {
            str(name): _float_list(values, "attack_accuracy")
            for name, values in dict(attack_accuracy).items()
        }
        self.worst_case_accuracy = _float_list(
            worst_case_accuracy, "worst_case_accuracy"
        )
        for name, values in [
            *self.attack_accuracy.items(),
            ("worst case", self.worst_case_accuracy),
        ]:
            if len(values) != len(self.epsilons):
                raise ValueError(
                    f"Every accuracy list needs one entry per eps "
                    f"({len(self.epsilons)}). Received: {name} with {len(values)}"
                )
        self.norm = norm
        self.robust_examples = (
            None
            if robust_examples is None
            else np.asarray(robust_examples, bool).reshape(-1, len(self.epsilons))
        )
        self.large_eps = None if large_eps is None else float(large_eps)
        self.large_eps_accuracy = (
            None if large_eps_accuracy is None else float(large_eps_accuracy)
        )
        self.severities = [int(s) for s in severities]
        self.corruption_accuracy = {
            str(name): _float_list(values, "corruption_accuracy")
            for name, values in dict(corruption_accuracy or {}).items()
        }
        for name, values in self.corruption_accuracy.items():
            if len(values) != len(self.severities):
                raise ValueError(
                    "Every corruption needs one accuracy per severity "
                    f"({len(self.severities)}). Received: {name} with {len(values)}"
                )
        self.warnings = [str(w) for w in warnings]
        self.seconds = {str(k): float(v) for k, v in dict(seconds or {}).items()}

    # -- views -------------------------------------------------------------------

    @property
    def accuracy(self):
        return {
            name: dict(zip(self.epsilons, values, strict=True))
            for name, values in self.attack_accuracy.items()
        }

    @property
    def worst_case(self):
        return dict(zip(self.epsilons, self.worst_case_accuracy, strict=True))

    @property
    def mean_corruption_accuracy(self):
        if not self.corruption_accuracy:
            return None
        return mean_corruption_accuracy(self.corruption_accuracy)

    def __repr__(self):
        worst = ", ".join(f"{e:g}: {a:.3f}" for e, a in self.worst_case.items())
        text = (
            f"RobustnessReport(clean={self.clean_accuracy:.3f}, worst_case={{{worst}}}"
        )
        if self.mean_corruption_accuracy is not None:
            text += f", mean_corruption={self.mean_corruption_accuracy:.3f}"
        return text + f", warnings={len(self.warnings)})"

    # -- output ------------------------------------------------------------------

    def to_markdown(self):
        """The report as Markdown: the attack table, the corruption table and
        the gradient-masking checks."""
        n = (
            ""
            if self.robust_examples is None
            else f" on {len(self.robust_examples)} examples"
        )
        lines = [
            f"# Robustness{n}",
            "",
            f"Clean accuracy: {_fmt(self.clean_accuracy)}",
            "",
            f"## Accuracy under attack ({self.norm})",
            "",
            "| attack | " + " | ".join(f"eps {e:g}" for e in self.epsilons) + " |",
            "| --- |" + " ---: |" * len(self.epsilons),
        ]
        for name, values in self.attack_accuracy.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |")
        lines.append(
            "| **worst case** | "
            + " | ".join(f"**{_fmt(v)}**" for v in self.worst_case_accuracy)
            + " |"
        )
        lines += [
            "",
            "Worst case: an example counts as broken when any attack breaks it at "
            "this eps or a smaller one.",
        ]
        if self.corruption_accuracy:
            lines += [
                "",
                "## Accuracy under corruption",
                "",
                "| corruption | "
                + " | ".join(f"severity {s}" for s in self.severities)
                + " | mean |",
                "| --- |" + " ---: |" * (len(self.severities) + 1),
            ]
            for name, values in self.corruption_accuracy.items():
                lines.append(
                    f"| {name} | "
                    + " | ".join(_fmt(v) for v in values)
                    + f" | {_fmt(float(np.mean(values)))} |"
                )
            lines += [
                "",
                "Mean corruption accuracy: "
                f"**{_fmt(self.mean_corruption_accuracy)}** (clean "
                f"{_fmt(self.clean_accuracy)}).",
            ]
        lines += ["", "## Gradient-masking checks", ""]
        if self.large_eps_accuracy is not None:
            lines.append(
                f"PGD at eps {self.large_eps:g}: accuracy "
                f"{_fmt(self.large_eps_accuracy)} (a working attack reaches about 0)."
            )
            lines.append("")
        if self.warnings:
            lines += [f"- {w}" for w in self.warnings]
        else:
            lines.append("None flagged.")
        return "\n".join(lines) + "\n"

    def plot(self, path=None):
        """The robustness curve (accuracy against eps, per attack and worst
        case) and, when measured, accuracy against corruption severity.

        Args:
            path: where to write the figure (PNG; written atomically), or
                None to return it open.

        Returns:
            The path written, or the matplotlib figure when `path` is None.
        """
        plt = pyplot("RobustnessReport.plot")
        panels = 2 if self.corruption_accuracy else 1
        figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
        curve = axes[0, 0]
        eps = [0.0, *self.epsilons]
        for name, values in self.attack_accuracy.items():
            curve.plot(eps, [self.clean_accuracy, *values], marker="o", label=name)
        curve.plot(
            eps,
            [self.clean_accuracy, *self.worst_case_accuracy],
            marker="s",
            color="black",
            linewidth=2.5,
            label="worst case",
        )
        curve.set(
            xlabel=f"eps ({self.norm})",
            ylabel="accuracy",
            ylim=(-0.02, 1.02),
            title="Accuracy under attack",
        )
        curve.legend()
        curve.grid(alpha=0.3)
        if self.corruption_accuracy:
            corrupted = axes[0, 1]
            for name, values in self.corruption_accuracy.items():
                corrupted.plot(self.severities, values, marker=".", label=name)
            corrupted.axhline(
                self.clean_accuracy, color="black", linestyle="--", label="clean"
            )
            corrupted.set(
                xlabel="severity",
                ylabel="accuracy",
                ylim=(-0.02, 1.02),
                xticks=self.severities,
                title=f"Corruptions (mean {_fmt(self.mean_corruption_accuracy)})",
            )
            corrupted.legend(fontsize="small", ncol=2)
            corrupted.grid(alpha=0.3)
        figure.tight_layout()
        if path is None:
            return figure
        return save_figure(figure, path)

    # -- serialization -----------------------------------------------------------

    def get_config(self):
        return {
            "clean_accuracy": self.clean_accuracy,
            "epsilons": list(self.epsilons),
            "attack_accuracy": {k: list(v) for k, v in self.attack_accuracy.items()},
            "worst_case_accuracy": list(self.worst_case_accuracy),
            "norm": self.norm,
            "robust_examples": None
            if self.robust_examples is None
            else self.robust_examples.tolist(),
            "large_eps": self.large_eps,
            "large_eps_accuracy": self.large_eps_accuracy,
            "severities": list(self.severities),
            "corruption_accuracy": {
                k: list(v) for k, v in self.corruption_accuracy.items()
            },
            "warnings": list(self.warnings),
            "seconds": dict(self.seconds),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
