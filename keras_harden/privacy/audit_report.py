"""`AuditReport`: what a membership-inference audit measured, as figures,
Markdown, a log-log ROC plot or JSON."""

import json
import os

import keras

from keras_harden._plotting import pyplot, save_figure
from keras_harden.privacy.roc import tpr_at_fpr
from keras_harden.saving import write_atomically

__all__ = ["AuditReport", "FPRS", "sample_size_warnings"]

# The false-positive rates the report reads the ROC curves at.
FPRS = (0.01, 0.001)
# Marks the dict of `AuditReport.to_dict` (and its JSON file).
_FORMAT = "keras_harden.privacy.AuditReport"
_VERSION = 1


def _percent(fpr):
    return f"{fpr * 100:g}%"


def sample_size_warnings(n_non_members):
    """The report's warnings about its size: a false-positive rate below
    `1 / n_non_members` cannot be observed (it allows less than one false
    positive), so the TPR read there is the TPR at no false positive, and
    near it a single example moves it. One sentence per rate of `FPRS` that
    needs more non-members: 100 for 1%, 1,000 for 0.1%.

    >>> sample_size_warnings(300)  # doctest: +ELLIPSIS
    ['Only 300 non-members: the TPR at 0.1% FPR needs at least 1,000...']
    """
    found = []
    for fpr in FPRS:
        needed = round(1 / fpr)
        if n_non_members < needed:
            found.append(
                f"Only {n_non_members:,} non-members: the TPR at {_percent(fpr)} "
                f"FPR needs at least {needed:,}. With fewer it allows no false "
                "positive at all, so it is the TPR at zero false positives, and "
                "one example moves it."
            )
    return found


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be an integer >= 1. Received: {name}={value!r}"
        )
    return value


def _curve(name, points):
    try:
        fpr = [float(v) for v in points["fpr"]]
        tpr = [float(v) for v in points["tpr"]]
    except (TypeError, KeyError, ValueError):
        raise ValueError(
            "`roc` must map each attack to {'fpr': [...], 'tpr': [...]}. "
            f"Received: roc[{name!r}]={points!r}"
        ) from None
    ok = (
        fpr
        and len(fpr) == len(tpr)
        and all(0 <= v <= 1 for v in fpr + tpr)
        and min(fpr) == 0
    )
    if not ok:
        raise ValueError(
            "Each ROC curve needs as many TPRs as FPRs, all in [0, 1], from "
            f"FPR 0. Received: roc[{name!r}] with {len(fpr)} FPRs and "
            f"{len(tpr)} TPRs"
        )
    return {"fpr": fpr, "tpr": tpr}


@keras.saving.register_keras_serializable(package="keras_harden")
class AuditReport:
    """What a membership-inference audit measured, per attack.

    Args:
        auc: `{attack: AUC}` (0.5 is chance).
        roc: `{attack: {"fpr": [...], "tpr": [...]}}`, each attack's ROC
            curve from FPR 0 (`roc.roc`).
        n_members: the members scored.
        n_non_members: the non-members scored.
        shadow_models: the shadow models LiRA trained (0: none).
        warnings: sentences; None gives `sample_size_warnings(n_non_members)`.
        seconds: `{what: seconds}` spent.

    Attributes:
        attacks: the attack names, in order.
        tpr_at_1pct: `{attack: TPR at 1% FPR}`.
        tpr_at_0_1pct: `{attack: TPR at 0.1% FPR}`.

    Example:

    >>> report = AuditReport(
    ...     {"loss": 0.75},
    ...     {"loss": {"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0]}},
    ...     n_members=2, n_non_members=2)
    >>> report.tpr_at(0.01), report.tpr_at(0.5)
    ({'loss': 0.5}, {'loss': 1.0})
    >>> len(report.warnings)  # 2 non-members are too few for 1% and 0.1%
    2
    """

    def __init__(
        self,
        auc,
        roc,
        n_members,
        n_non_members,
        shadow_models=0,
        warnings=None,
        seconds=None,
    ):
        self.auc = {}
        for name, value in dict(auc).items():
            value = float(value)
            if not 0 <= value <= 1:
                raise ValueError(
                    f"Every AUC must be in [0, 1]. Received: auc[{name!r}]={value!r}"
                )
            self.auc[str(name)] = value
        self.roc = {str(name): _curve(name, points) for name, points in roc.items()}
        if set(self.roc) != set(self.auc):
            raise ValueError(
                "`auc` and `roc` must name the same attacks. Received: "
                f"auc for {sorted(self.auc)}, roc for {sorted(self.roc)}"
            )
        self.n_members = _count(n_members, "n_members")
        self.n_non_members = _count(n_non_members, "n_non_members")
        if (
            isinstance(shadow_models, bool)
            or not isinstance(shadow_models, int)
            or shadow_models < 0
        ):
            raise ValueError(
                "`shadow_models` must be an integer >= 0. Received: "
                f"shadow_models={shadow_models!r}"
            )
        self.shadow_models = shadow_models
        self.warnings = (
            sample_size_warnings(self.n_non_members)
            if warnings is None
            else [str(w) for w in warnings]
        )
        self.seconds = {str(k): float(v) for k, v in dict(seconds or {}).items()}

    # -- views -------------------------------------------------------------------

    @property
    def attacks(self):
        return list(self.auc)

    def tpr_at(self, fpr):
        """`{attack: TPR}` at the false-positive rate `fpr` (the largest TPR
        of the curve's points with FPR at most `fpr`)."""
        return {
            name: tpr_at_fpr(curve["fpr"], curve["tpr"], fpr)
            for name, curve in self.roc.items()
        }

    @property
    def tpr_at_1pct(self):
        return self.tpr_at(0.01)

    @property
    def tpr_at_0_1pct(self):
        return self.tpr_at(0.001)

    def _label(self, name):
        if name == "lira" and self.shadow_models:
            return f"lira ({self.shadow_models} shadows)"
        return name

    def __repr__(self):
        figures = ", ".join(
            f"{name}: AUC {self.auc[name]:.3f}, TPR@1% {self.tpr_at_1pct[name]:.3f}"
            for name in self.attacks
        )
        return (
            f"AuditReport({self.n_members} members, {self.n_non_members} "
            f"non-members; {figures}; warnings={len(self.warnings)})"
        )

    # -- output ------------------------------------------------------------------

    def to_markdown(self):
        """The report as Markdown: a row per attack (AUC, TPR at 1% and 0.1%
        FPR) and the warnings."""
        header = " | ".join(f"TPR at {_percent(f)} FPR" for f in FPRS)
        lines = [
            f"# Membership inference: {self.n_members:,} members, "
            f"{self.n_non_members:,} non-members",
            "",
            f"| attack | AUC | {header} |",
            "| --- | ---: |" + " ---: |" * len(FPRS),
        ]
        at = [self.tpr_at(f) for f in FPRS]
        for name in self.attacks:
            cells = " | ".join(f"{tpr[name]:.3f}" for tpr in at)
            lines.append(f"| {self._label(name)} | {self.auc[name]:.3f} | {cells} |")
        lines += [
            "",
            "AUC 0.5 and a TPR equal to the FPR are chance: an attacker who "
            "guesses. A TPR well above the FPR at a low FPR means some members "
            "are identified with confidence.",
        ]
        if self.warnings:
            lines += ["", *[f"- Warning: {w}" for w in self.warnings]]
        return "\n".join(lines) + "\n"

    def plot(self, path=None):
        """The ROC curves on log-log axes (as Carlini et al. 2022 draw them),
        with the diagonal of chance and the FPRs of the table marked.

        Args:
            path: where to write the figure (PNG; written atomically), or
                None to return it open.

        Returns:
            The path written, or the matplotlib figure when `path` is None.
        """
        plt = pyplot("AuditReport.plot")
        figure, axis = plt.subplots(figsize=(5, 4.5))
        low = min(1e-3, 0.5 / self.n_non_members, 0.5 / self.n_members)
        axis.plot([low, 1], [low, 1], color="grey", linestyle="--", label="chance")
        for fpr in FPRS:
            axis.axvline(fpr, color="grey", linewidth=0.6, linestyle=":")
        for name in self.attacks:
            curve = self.roc[name]
            # zeros fall off log axes: drawn at the lower edge instead
            fpr = [max(v, low) for v in curve["fpr"]]
            tpr = [max(v, low) for v in curve["tpr"]]
            axis.plot(
                fpr,
                tpr,
                drawstyle="steps-post",
                label=f"{self._label(name)} (AUC {self.auc[name]:.3f})",
            )
        axis.set(
            xscale="log",
            yscale="log",
            xlim=(low, 1),
            ylim=(low, 1.05),
            xlabel="false-positive rate",
            ylabel="true-positive rate",
            title=f"Membership inference ({self.n_members:,} members, "
            f"{self.n_non_members:,} non-members)",
        )
        axis.title.set_fontsize("medium")
        axis.legend(loc="lower right")
        axis.grid(alpha=0.3, which="both")
        figure.tight_layout()
        if path is None:
            return figure
        return save_figure(figure, path)

    # -- serialization -----------------------------------------------------------

    def to_dict(self):
        """The report as a dict of JSON types (`from_dict` takes it back)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "auc": dict(self.auc),
            "roc": {
                name: {"fpr": list(c["fpr"]), "tpr": list(c["tpr"])}
                for name, c in self.roc.items()
            },
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
            "shadow_models": self.shadow_models,
            "warnings": list(self.warnings),
            "seconds": dict(self.seconds),
        }

    @classmethod
    def from_dict(cls, data):
        """The report `to_dict` gave."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            shown = data.get("format") if isinstance(data, dict) else type(data)
            raise ValueError(
                f"`data` must be a dict from AuditReport.to_dict (format "
                f"{_FORMAT!r}). Received: format={shown!r}"
            )
        if data.get("version") != _VERSION:
            raise ValueError(
                f"This AuditReport reads version {_VERSION}. Received: "
                f"version={data.get('version')!r}"
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            return cls(**fields)
        except TypeError as error:
            raise ValueError(f"`data` is not a whole AuditReport: {error}") from None

    def get_config(self):
        return self.to_dict()

    @classmethod
    def from_config(cls, config):
        return cls.from_dict(config)

    def save(self, path):
        """Writes the report as JSON to `path`, atomically (a reader sees the
        old file or the new one). Returns `path` as a string."""
        text = json.dumps(self.to_dict(), indent=1)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")

        return write_atomically(os.fspath(path), write)

    @classmethod
    def load(cls, path):
        """The report `save` wrote to `path`; a `ValueError` naming the file
        when it is missing or not such a report."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Cannot read an AuditReport from {path!r}: {error}. "
                f"Received: path={path!r}"
            ) from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(
                f"{path!r} is not an AuditReport: {error}. Received: path={path!r}"
            ) from None
