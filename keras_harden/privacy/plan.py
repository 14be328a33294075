"""`suggest`: DP-SGD settings (batch size, epochs, noise) that meet a budget."""

import math

import keras

from keras_harden._validation import check_int, check_number, check_positive
from keras_harden.privacy import budget

__all__ = ["Plan", "suggest"]

DEFAULT_EPOCHS = (10, 20, 40, 80)
_COLUMNS = (
    "batch_size",
    "epochs",
    "steps",
    "sampling_rate",
    "noise_multiplier",
    "epsilon",
    "noise_ratio",
)


def default_delta(n_examples):
    """The largest power of ten at most `1 / (10 * n_examples)`.

    A mechanism that publishes each example outright with probability `p` is
    `(0, p)`-differentially private, so a delta near `1 / n` allows leaking
    about one whole record; ten times below it, at most a tenth of one is
    expected. Rounded down to a power of ten, the customary values: 1e-5
    for 1,000 to 10,000 examples, 1e-6 up to 100,000 (MNIST's 60,000 gets
    1e-6, stricter than the 1e-5 of Abadi et al.).

    >>> default_delta(1400), default_delta(60000), default_delta(10)
    (1e-05, 1e-06, 0.01)
    """
    n_examples = check_int("n_examples", n_examples, minimum=1)
    return 10.0 ** math.floor(math.log10(1.0 / (10 * n_examples)))


def default_batch_sizes(n_examples):
    """The powers of two from 16 up to `n_examples / 4` (at least 16, or
    `n_examples` when smaller): larger batches leave under four steps an
    epoch, too few for the optimiser, and DP-SGD rarely uses batches under
    16.

    >>> default_batch_sizes(1400)
    (16, 32, 64, 128, 256)
    """
    n_examples = check_int("n_examples", n_examples, minimum=1)
    sizes = []
    size = 16
    while size <= n_examples / 4 or not sizes:
        sizes.append(min(size, n_examples))
        size *= 2
        if sizes[-1] == n_examples:
            break
    return tuple(sizes)


def _fmt(value, digits=3):
    return f"{value:.{digits}g}"


@keras.saving.register_keras_serializable(package="keras_harden")
class Plan:
    """DP-SGD candidates that meet a privacy budget, best first.

    Made by `suggest`. Each candidate is a dict with `batch_size`, `epochs`,
    `steps` (`steps_for(epochs, batch_size, n_examples)`), `sampling_rate`
    (`batch_size / n_examples`), `noise_multiplier` (the least noise within
    the budget), `epsilon` (what that noise spends, just under the target)
    and `noise_ratio`, the ranking key `noise_multiplier / (batch_size *
    sqrt(steps))` (see `suggest`).

    Args:
        n_examples: the size of the training set.
        target_epsilon: the budget.
        delta: the delta of the guarantee.
        accountant: `"rdp"` or `"pld"`.
        candidates: the candidate dicts, best first.

    Example:

    >>> plan = Plan(1400, 3.0, 1e-5, "rdp", [{
    ...     "batch_size": 256, "epochs": 40, "steps": 240,
    ...     "sampling_rate": 256 / 1400, "noise_multiplier": 4.382,
    ...     "epsilon": 2.999, "noise_ratio": 0.0011}])
    >>> plan.best["batch_size"], len(plan)
    (256, 1)
    >>> print(plan.to_markdown().splitlines()[2])
    | 1 | 256 | 40 | 240 | 0.183 | 4.38 | 2.999 | 1.1 | 1 |
    """

    def __init__(self, n_examples, target_epsilon, delta, accountant, candidates):
        self.n_examples = check_int("n_examples", n_examples, minimum=1)
        self.target_epsilon = check_positive("target_epsilon", target_epsilon)
        self.delta = check_number(
            "delta", delta, low=0, high=1, low_open=True, high_open=True
        )
        if accountant not in budget.ACCOUNTANTS:
            raise ValueError(
                f"`accountant` must be one of {budget.ACCOUNTANTS}. "
                f"Received: accountant={accountant!r}"
            )
        self.accountant = accountant
        candidates = [dict(c) for c in candidates]
        if not candidates or any(set(c) != set(_COLUMNS) for c in candidates):
            raise ValueError(
                f"`candidates` must be a non-empty list of dicts with the keys "
                f"{_COLUMNS}. Received: candidates={candidates!r}"
            )
        self.candidates = [
            {
                key: (int(c[key]) if key in ("batch_size", "epochs", "steps") else
                      float(c[key]))
                for key in _COLUMNS
            }
            for c in candidates
        ]  # fmt: skip

    @property
    def best(self):
        """The first candidate (the least noise over the run)."""
        return self.candidates[0]

    def __len__(self):
        return len(self.candidates)

    def __iter__(self):
        return iter(self.candidates)

    def __getitem__(self, index):
        return self.candidates[index]

    def to_markdown(self):
        """The candidates as a Markdown table, best first; `epsilon` rounded
        down to three decimals, `noise ratio` is `noise_ratio` times 1000 and
        `vs best` its ratio to the first."""
        best = self.candidates[0]["noise_ratio"]
        lines = [
            "| rank | batch size | epochs | steps | sampling rate | noise "
            "multiplier | epsilon | noise ratio (x1e-3) | vs best |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for rank, c in enumerate(self.candidates, start=1):
            spent = math.floor(c["epsilon"] * 1e3) / 1e3  # never shown above
            lines.append(
                f"| {rank} | {c['batch_size']} | {c['epochs']} | {c['steps']} | "
                f"{_fmt(c['sampling_rate'])} | {_fmt(c['noise_multiplier'])} | "
                f"{spent:.3f} | {_fmt(1e3 * c['noise_ratio'])} | "
                f"{_fmt(c['noise_ratio'] / best)} |"
            )
        return "\n".join(lines)

    def __repr__(self):
        c = self.best
        return (
            f"<Plan n_examples={self.n_examples} target_epsilon="
            f"{self.target_epsilon:g} delta={self.delta:g}: {len(self)} "
            f"candidates, best batch_size={c['batch_size']} epochs={c['epochs']} "
            f"noise_multiplier={c['noise_multiplier']:.3g}>"
        )

    def get_config(self):
        return {
            "n_examples": self.n_examples,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "candidates": [dict(c) for c in self.candidates],
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _ints(name, values, low, high):
    values = list(values) if not isinstance(values, (str, bytes)) else None
    bad = not values
    if not bad:
        try:
            values = sorted({check_int(name, v, minimum=low) for v in values})
        except ValueError:
            bad = True
    if not bad and high is not None:
        bad = values[-1] > high
    if bad:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(
            f"`{name}` must be a non-empty list of integers {bound}. "
            f"Received: {name}={values!r}"
        )
    return values


def suggest(
    n_examples,
    target_epsilon,
    delta=None,
    epochs=None,
    batch_sizes=None,
    accountant="rdp",
):
    """DP-SGD settings that meet a privacy budget, ranked by a noise heuristic.

    For every batch size and number of epochs, the steps are those of
    Keras's `fit` (`steps_for`), the sampling rate `batch_size /
    n_examples`, and the noise multiplier the least that keeps epsilon
    within `target_epsilon` at `delta` (`noise_multiplier`).

    The ranking. A DP-SGD step adds Gaussian noise of standard deviation
    `noise_multiplier * C` to the sum of `batch_size` clipped gradients
    (norm at most `C`), so the mean gradient carries noise of standard
    deviation `noise_multiplier * C / batch_size`. Over `steps` steps the
    updates add up: the signal grows like `steps`, the independent noise
    like `sqrt(steps)`, so the noise-to-signal ratio of the whole run is
    proportional to `noise_ratio = noise_multiplier / (batch_size *
    sqrt(steps))`, smaller first (ties: fewer steps first, less compute).
    It equals Sander et al.'s "total amount of noise" `noise_multiplier /
    (sampling_rate * sqrt(steps))` divided by `n_examples`. When the noise
    multiplier is large, epsilon depends on little but that quantity, so
    equally good candidates have nearly equal ratios (the table's `vs best`
    column); small batches, whose noise multiplier comes out small, pay
    more, which is why, at a fixed budget, larger batches with more epochs
    usually win. It is a heuristic: it ignores what the model needs to
    converge (steps, learning rate, how much clipping biases the
    gradients), so a training benchmark has to confirm its choice.

    Args:
        n_examples: the size of the training set, an integer >= 1.
        target_epsilon: the budget, > 0.
        delta: the delta of the guarantee, in (0, 1); None: the largest power
            of ten at most `1 / (10 * n_examples)` (`default_delta`), well
            below `1 / n_examples` (1e-5 for 1,000 to 10,000 examples).
        epochs: the numbers of epochs to try; None: 10, 20, 40 and 80.
        batch_sizes: the batch sizes to try, each in [1, n_examples]; None:
            the powers of two from 16 up to `n_examples / 4`
            (`default_batch_sizes`).
        accountant: `"rdp"` or `"pld"` (see `epsilon`).

    Returns:
        A `Plan`: the candidates, best first (`plan.best`,
        `plan.to_markdown()`). Settings whose noise would fall below 1e-3
        (a budget that large protects nothing) are left out.

    Example:

    >>> from keras_harden.privacy import suggest
    >>> plan = suggest(1400, 3.0, epochs=[20, 40], batch_sizes=[64, 256])
    >>> plan.delta, [(c["batch_size"], c["epochs"]) for c in plan]
    (1e-05, [(256, 40), (256, 20), (64, 40), (64, 20)])
    >>> round(plan.best["noise_multiplier"], 2)
    4.38

    References:
        Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016).
        Sander, Stock and Sablayrolles, "TAN without a Burn: Scaling Laws of
        DP-SGD" (ICML 2023): the total amount of noise. De et al.,
        "Unlocking High-Accuracy Differentially Private Image Classification
        through Scale" (2022): large batches, many steps.
    """
    n_examples = check_int("n_examples", n_examples, minimum=1)
    target = check_positive("target_epsilon", target_epsilon)
    if delta is None:
        delta = default_delta(n_examples)
    delta = check_number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    epochs = _ints("epochs", DEFAULT_EPOCHS if epochs is None else epochs, 1, None)
    if batch_sizes is None:
        batch_sizes = default_batch_sizes(n_examples)
    batch_sizes = _ints("batch_sizes", batch_sizes, 1, n_examples)
    if accountant not in budget.ACCOUNTANTS:
        raise ValueError(
            f"`accountant` must be one of {budget.ACCOUNTANTS}. "
            f"Received: accountant={accountant!r}"
        )
    candidates = []
    for batch_size in batch_sizes:
        rate = batch_size / n_examples
        for count in epochs:
            steps = budget.steps_for(count, batch_size, n_examples)
            try:
                noise = budget.noise_multiplier(
                    target, delta, rate, steps, accountant=accountant
                )
            except ValueError:
                continue  # below the smallest noise: no meaningful guarantee
            candidates.append(
                {
                    "batch_size": batch_size,
                    "epochs": count,
                    "steps": steps,
                    "sampling_rate": rate,
                    "noise_multiplier": noise,
                    "epsilon": budget.epsilon(
                        noise, rate, steps, delta, accountant=accountant
                    ),
                    "noise_ratio": noise / (batch_size * math.sqrt(steps)),
                }
            )
    if not candidates:
        raise ValueError(
            "`target_epsilon` is so large that every candidate needs a noise "
            "multiplier below 1e-3 (no meaningful guarantee). "
            f"Received: target_epsilon={target_epsilon!r}"
        )
    candidates.sort(key=lambda c: (c["noise_ratio"], c["steps"]))
    return Plan(n_examples, target, delta, accountant, candidates)
