"""What `harden` found: every candidate's curve and rounds, the winner, and
why it won."""

import math

import numpy as np

from keras_harden._plotting import pyplot, save_figure

__all__ = ["Contestant", "Prescription"]


class Contestant:
    """One candidate in the search: its own copy of the model, its training
    loss at every step it trained, and its held-out score after each round.

    Attributes:
        candidate: the `Candidate` (rate, clip, re-initialisation).
        model: its copy of the model (None once it stopped).
        losses: training loss per step.
        held_out: one dict per round it finished: `step`, `score`, `loss`
            and, for a classifier, `accuracy`.
        diverged: its loss or held-out loss was not finite.
        stopped_at: the step after which it stopped (None: it ran to the end).
    """

    def __init__(self, candidate, model):
        self.candidate = candidate
        self.model = model
        self.losses = []
        self.held_out = []
        self.diverged = False
        self.stopped_at = None
        self.last_score = -math.inf
        self.last_per_example = None

    @property
    def name(self):
        return self.candidate.name

    @property
    def description(self):
        return self.candidate.description

    def train_on_batch(self, x, y, sample_weight):
        if self.diverged:
            return
        value = float(self.model.train_on_batch(x, y, sample_weight=sample_weight))
        self.losses.append(value)
        if not math.isfinite(value):
            self.diverged = True

    def stop(self, step):
        """Out of the search after `step`: its copy of the model is let go
        (memory), its curve and scores stay."""
        self.stopped_at = step
        self.model = None

    def recent_loss(self, window=10):
        recent = [v for v in self.losses[-window:] if math.isfinite(v)]
        return float(np.mean(recent)) if recent else math.nan

    def score(self, scorer, step):
        """Scores the model on the held-out set after `step` steps."""
        result = None if self.diverged else scorer(self.model)
        if result is None:
            self.diverged = True
            self.last_score, self.last_per_example = -math.inf, None
            self.held_out.append({"step": step, "score": -math.inf})
            return
        self.last_score = result["score"]
        self.last_per_example = result.pop("per_example")
        self.held_out.append({"step": step, **result})


def _score_text(record):
    if not math.isfinite(record.get("score", -math.inf)):
        return "diverged"
    if "accuracy" in record:
        return f"accuracy {record['accuracy']:.3f}"
    return f"loss {record['loss']:.4g}"


class Prescription:
    """The outcome of `harden`.

    Attributes:
        optimizer: the winner's optimizer, compiled into `model` with the
            winner's state (compile a fresh copy with `fresh_optimizer()`).
        model: the model passed in, now trained by the winner.
        choice: the winning `Contestant` (`.name`, `.description`,
            `.held_out`, `.losses`).
        contestants: every candidate, in the order they were built (the first
            is plain training).
        rounds: the successive-halving schedule (`halving.Round`s).
        range_test: the `RangeTest` (None for a rate that is not a number).
        run_steps: the steps of the run the winner trained for.
        seconds: the search's wall time, the winner's training included.
    """

    def __init__(
        self,
        optimizer,
        model,
        choice,
        contestants,
        rounds,
        range_test,
        run_steps,
        seconds,
        noise_z,
    ):
        self.optimizer = optimizer
        self.model = model
        self.choice = choice
        self.contestants = contestants
        self.rounds = rounds
        self.range_test = range_test
        self.run_steps = run_steps
        self.seconds = seconds
        self.noise_z = noise_z

    @property
    def plain(self):
        return self.contestants[0]

    @property
    def search_steps(self):
        """Training steps taken in all: every candidate's, plus the range
        test's."""
        tested = 0 if self.range_test is None else len(self.range_test.rates)
        return tested + sum(len(c.losses) for c in self.contestants)

    @property
    def why(self):
        """One sentence on why the choice won."""
        plain, choice = self.plain, self.choice
        if all(c.diverged for c in self.contestants):
            return (
                "every candidate diverged: look for NaN/Inf-prone layers or "
                "data, or lower the learning rate further"
            )
        finalists = [
            c
            for c in self.contestants
            if c.held_out and c.held_out[-1]["step"] == self.run_steps
        ]
        if choice is plain:
            rivals = [c for c in finalists if c is not plain]
            if not rivals:
                return "plain training led every round"
            rival = rivals[0]
            return (
                f"no remedy beat plain training beyond the noise of the held-out "
                f"score: the best, {rival.name}, reached "
                f"{_score_text(rival.held_out[-1])} against "
                f"{_score_text(plain.held_out[-1])} (a remedy must win by more "
                f"than {self.noise_z:g} standard errors)"
            )
        if plain.diverged:
            return (
                f"plain training diverged; {choice.name} trained best "
                f"({_score_text(choice.held_out[-1])})"
            )
        return (
            f"{choice.name} beat plain training beyond the noise of the "
            f"held-out score: {_score_text(choice.held_out[-1])} against "
            f"{_score_text(plain.held_out[-1])} when plain stopped at step "
            f"{plain.held_out[-1]['step']}"
        )

    def fresh_optimizer(self):
        """A new, unbuilt copy of the prescribed optimizer, to train another
        model from scratch the same way."""
        return self.optimizer.__class__.from_config(self.optimizer.get_config())

    def to_markdown(self):
        lines = [f"**Prescription: {self.choice.description}** ({self.why})."]
        if self.range_test is not None:
            lines += ["", self.range_test.to_markdown()]
        lines += [
            "",
            f"Successive halving over {len(self.contestants)} candidates in "
            f"{len(self.rounds)} round(s) ending at steps "
            f"{', '.join(str(r.end) for r in self.rounds)} (the run: "
            f"{self.run_steps} steps); {self.search_steps} training steps in "
            f"all ({self.search_steps / self.run_steps:.1f} runs), "
            f"{self.seconds:.1f} s.",
            "",
            "| candidate | "
            + " | ".join(f"step {r.end}" for r in self.rounds)
            + " | outcome |",
            "| --- | " + " | ".join("---:" for _ in self.rounds) + " | --- |",
        ]
        for contestant in self.contestants:
            cells = [_score_text(h) for h in contestant.held_out]
            cells += ["" for _ in range(len(self.rounds) - len(cells))]
            if contestant is self.choice:
                outcome = "**chosen**"
            elif contestant.diverged:
                outcome = "diverged"
            elif contestant.stopped_at == self.run_steps:
                outcome = "finalist"
            elif contestant.stopped_at is not None:
                outcome = f"stopped at {contestant.stopped_at}"
            else:
                outcome = "-"
            lines.append(
                f"| {contestant.description} | " + " | ".join(cells) + f" | {outcome} |"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        return f"Prescription(choice={self.choice.name!r})"

    def plot(self, path):
        """Writes every candidate's training loss (left) and held-out score
        per round (right) to `path` (PNG)."""
        plt = pyplot("Prescription.plot")
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for contestant in self.contestants:
            losses = np.asarray(contestant.losses, np.float64)
            if not len(losses):
                continue
            window = max(1, min(20, len(losses) // 10))
            smooth = np.convolve(
                np.where(np.isfinite(losses), losses, np.nan),
                np.ones(window) / window,
                mode="valid",
            )
            width = 2.5 if contestant is self.choice else 1.0
            left.plot(
                np.arange(len(smooth)) + window, smooth, lw=width, label=contestant.name
            )
            steps = [h["step"] for h in contestant.held_out]
            scores = [
                h.get("accuracy", -h.get("loss", math.nan))
                if math.isfinite(h["score"])
                else math.nan
                for h in contestant.held_out
            ]
            right.plot(steps, scores, marker="o", lw=width, label=contestant.name)
        left.set_yscale("log")
        left.set_xlabel("step")
        left.set_ylabel("training loss (moving mean)")
        right.set_xlabel("step")
        right.set_ylabel("held-out accuracy (or minus loss)")
        for end in (r.end for r in self.rounds):
            left.axvline(end, color="grey", lw=0.5)
            right.axvline(end, color="grey", lw=0.5)
        right.legend(fontsize=7, loc="best")
        save_figure(figure, path)
        return path
