"""`evaluate`: a robustness evaluation that does not flatter.

A single attack is a lower bound on what an attacker can do, and a weak one
(too few steps, a step too small, a gradient that misleads) reads as
robustness. So the evaluation runs several attacks of different kinds and
counts an example as robust at `eps` only when *every* attack fails on it,
at that `eps` and at every smaller one (a perturbation that breaks it at a
smaller radius lies inside the larger ball too): the worst case per example,
as AutoAttack reports it (Croce and Hein 2020). It then checks the figures
for the symptoms of gradient masking (`gradient_masking`), and measures
accuracy under common corruptions at graded severities (`corruptions`;
Hendrycks and Dietterich 2019).

Each attack runs on its own, on the examples the model classifies correctly
and that this attack has not already broken at a smaller `eps`; the
per-attack accuracies are what the gradient-masking checks compare.
"""

import numbers
import time

import keras
import numpy as np

from keras_harden._batches import iterate_batches, split_batch
from keras_harden._validation import check_int, check_number
from keras_harden.robust import _common
from keras_harden.robust import corruptions as corruption_suite
from keras_harden.robust.apgd import apgd
from keras_harden.robust.fgsm import fgsm
from keras_harden.robust.gradient_masking import gradient_masking_warnings
from keras_harden.robust.pgd import pgd
from keras_harden.robust.report import RobustnessReport
from keras_harden.robust.square import square

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "evaluate"]

# The built-in attacks: name -> (model, x, labels, eps, options, seed) -> x_adv.
ATTACKS = {
    "fgsm": lambda model, x, y, eps, options, seed: fgsm(model, x, y, eps, **options),
    "pgd": lambda model, x, y, eps, options, seed: pgd(
        model, x, y, eps, steps=20, seed=seed, **options
    ),
    "apgd-ce": lambda model, x, y, eps, options, seed: apgd(
        model, x, y, eps, steps=100, loss="ce", seed=seed, **options
    ),
    "apgd-dlr": lambda model, x, y, eps, options, seed: apgd(
        model, x, y, eps, steps=100, loss="dlr", seed=seed, **options
    ),
    "square": lambda model, x, y, eps, options, seed: square(
        model, x, y, eps, seed=seed, **options
    ),
}
DEFAULT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square")
# PGD steps for the large-eps check.
_LARGE_EPS_STEPS = 20
# Examples the large-eps check attacks (the first correctly classified ones).
_LARGE_EPS_EXAMPLES = 256


def _collect(data, max_examples):
    """`(x, y)` arrays from `(x, y)` arrays, a `tf.data.Dataset` or an
    iterable of `(x, y)` batches, cut to `max_examples`."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape"):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ValueError(
                "`data` must pair one label with each input. Received: "
                f"{len(x)} inputs and {len(y)} labels"
            )
    else:
        xs, ys, count = [], [], 0
        if isinstance(data, list) and all(isinstance(b, tuple) for b in data):
            data = iter(data)  # a list of `(x, y)` batches, not arrays
        for batch in iterate_batches(data, batch_size=None, name="data"):
            xb, yb = split_batch(batch)
            if yb is None:
                raise ValueError(
                    "`data` must yield `(x, y)` batches (labels are needed). "
                    "Received: batches without labels"
                )
            xs.append(np.asarray(keras.ops.convert_to_numpy(xb)))
            ys.append(np.asarray(keras.ops.convert_to_numpy(yb)))
            count += len(xs[-1])
            if max_examples is not None and count >= max_examples:
                break
        if not xs:
            raise ValueError("`data` must hold at least one example. Received: none")
        x, y = np.concatenate(xs), np.concatenate(ys)
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    return x, y


def _check_epsilons(epsilons):
    if isinstance(epsilons, numbers.Real):
        epsilons = [epsilons]
    try:
        values = [check_number("epsilons", e, low=0) for e in epsilons]
    except TypeError:
        values = []
    if not values or any(v == 0 for v in values):
        raise ValueError(
            "`epsilons` must be a number > 0 or a non-empty list of them. "
            f"Received: epsilons={epsilons!r}"
        )
    return sorted(set(values))


def _check_attacks(attacks):
    """`{name: attack}`; names are built-in attacks, or a dict maps names to
    callables `(model, x, y, eps) -> x_adv`."""
    if attacks is None:
        attacks = DEFAULT_ATTACKS
    if isinstance(attacks, str):
        attacks = [attacks]
    if isinstance(attacks, dict):
        chosen = {}
        for name, attack in attacks.items():
            if not callable(attack):
                raise ValueError(
                    "`attacks` given as a dict must map names to callables "
                    f"`(model, x, y, eps) -> x_adv`. Received: {name!r}: {attack!r}"
                )
            chosen[str(name)] = lambda model, x, y, eps, options, seed, a=attack: a(
                model, x, y, eps
            )
    else:
        chosen = {}
        for name in attacks:
            if name not in ATTACKS:
                raise ValueError(
                    f"`attacks` must name attacks from {sorted(ATTACKS)}. "
                    f"Received: attacks={attacks!r}"
                )
            chosen[name] = ATTACKS[name]
    if not chosen:
        raise ValueError(f"`attacks` must not be empty. Received: attacks={attacks!r}")
    return chosen


def _check_corruptions(names, severities):
    names = corruption_suite.CORRUPTIONS if names is None else tuple(names)
    for name in names:
        if name not in corruption_suite.CORRUPTIONS:
            raise ValueError(
                "`corruptions` must name corruptions from "
                f"{list(corruption_suite.CORRUPTIONS)}. Received: corruptions={names!r}"
            )
    severities = tuple(severities)
    if names and (
        not severities
        or any(
            isinstance(s, bool)
            or not isinstance(s, numbers.Integral)
            or not 1 <= s <= 5
            for s in severities
        )
    ):
        raise ValueError(
            "`severities` must be a non-empty list of ints from 1 to 5. "
            f"Received: severities={severities!r}"
        )
    return names, sorted(set(severities)) if names else []


def _check_verbose(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(
            f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
        )
    return verbose


def _seeds(seed, count):
    """One seed per attack run: ints derived from an int seed (so every run
    draws differently and the whole evaluation replays), or the generator
    itself."""
    if isinstance(seed, keras.random.SeedGenerator):
        return [seed] * count
    generator = _common.rng(seed)
    return [int(s) for s in generator.integers(0, 2**31 - 1, size=count)]


class _Progress:
    """`fit`-style progress over the evaluation's units of work."""

    def __init__(self, total, verbose):
        self.verbose = verbose
        self.done = 0
        self.total = total
        self.bar = keras.utils.Progbar(total, verbose=1) if verbose == 1 else None

    def step(self, label, value):
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.done, values=[("accuracy", value)])
        elif self.verbose == 2:
            print(f"[{self.done}/{self.total}] {label}: accuracy {value:.3f}")


def evaluate(
    model,
    data,
    epsilons,
    norm="linf",
    attacks=None,
    corruptions=None,
    severities=(1, 2, 3, 4, 5),
    value_range=(0, 1),
    from_logits=None,
    batch_size=128,
    max_examples=None,
    seed=0,
    verbose="auto",
):
    """Clean, attacked and corrupted accuracy of a classifier, in one report.

    Every attack runs at every `eps`; an example is robust at `eps` when no
    attack breaks it there or at a smaller `eps` (the worst case per
    example). The report flags the symptoms of gradient masking
    (`gradient_masking.gradient_masking_warnings`), after one more PGD run at
    half the value range (L2: half the range times `sqrt(features)`), where a
    working attack leaves about 0 accuracy. Then each corruption of
    `corruptions` at each severity is applied to the clean inputs.

    Args:
        model: a Keras classifier (one input, one `(batch, classes)` output,
            logits or probabilities).
        data: `(x, y)` arrays, a `tf.data.Dataset` or an iterable of `(x, y)`
            batches; `x` inside `value_range`, `y` integer or one-hot labels.
        epsilons: a number > 0 or a list of them: the attack radii.
        norm: `"linf"` or `"l2"`.
        attacks: None (`DEFAULT_ATTACKS`: FGSM, 20-step PGD, APGD-CE and
            APGD-DLR with 100 steps, Square), a list of names from `ATTACKS`,
            or a dict `{name: callable(model, x, y, eps) -> x_adv}`.
        corruptions: None (every corruption of `corruption_suite.CORRUPTIONS`),
            a list of names, or `()` for none.
        severities: the corruption severities (ints from 1 to 5).
        value_range: `(low, high)` of valid inputs (the attacks clip to it;
            the corruptions need it), or None (no clipping, no corruptions,
            no large-eps check).
        from_logits: whether the outputs are logits; None detects it.
        batch_size: examples per model call.
        max_examples: evaluate on the first this many examples, or None for
            all.
        seed: None, an int (the whole evaluation replays) or a
            `keras.random.SeedGenerator`.
        verbose: `"auto"` or 1 (a progress bar), 2 (a line per attack and
            eps) or 0 (silent).

    Returns:
        A `RobustnessReport`.

    Example:

    >>> (x, y), _ = kh.data.load_digits()
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(10)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> model.compile("adam", loss)
    >>> _ = model.fit(x[:500] / 255, y[:500], epochs=5, verbose=0)
    >>> test = (x[500:600] / 255, y[500:600])
    >>> report = kh.robust.evaluate(model, test, [0.05, 0.2], attacks=["fgsm", "pgd"],
    ...                             corruptions=(), verbose=0)
    >>> report.worst_case[0.2] <= report.worst_case[0.05] <= report.clean_accuracy
    True

    References:
        Croce and Hein, "Reliable evaluation of adversarial robustness with
        an ensemble of diverse parameter-free attacks" (ICML 2020),
        arXiv:2003.01690; github.com/fra31/auto-attack.
        Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow,
        Madry and Kurakin, "On Evaluating Adversarial Robustness" (2019),
        arXiv:1902.06705.
        Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to
        Common Corruptions and Perturbations" (ICLR 2019), arXiv:1903.12261.
    """
    eps_list = _check_epsilons(epsilons)
    norm = _common.check_norm(norm)
    chosen = _check_attacks(attacks)
    value_range = _common.check_value_range(value_range)
    names, severities = _check_corruptions(
        () if value_range is None else corruptions, severities
    )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if max_examples is not None:
        max_examples = check_int("max_examples", max_examples, minimum=1)
    verbose = _check_verbose(verbose)
    x, y = _collect(data, max_examples)
    # The attacks' own checks (the model, the range of `x`, the labels)
    task = _common.Task(model, x, y, 0.0, norm, value_range, from_logits, batch_size)
    x, labels = task.x, task.labels
    options = {
        "norm": norm,
        "value_range": value_range,
        "from_logits": task.from_logits,
        "batch_size": batch_size,
    }

    def predictions(inputs):
        if not len(inputs):
            return np.zeros(0, int)
        return np.argmax(model.predict(inputs, batch_size=batch_size, verbose=0), -1)

    correct = predictions(x) == labels
    n = len(x)
    units = (
        len(chosen) * len(eps_list)
        + (value_range is not None)
        + len(names) * len(severities)
    )
    progress = _Progress(units, verbose)
    seeds = iter(
        _seeds(seed, len(chosen) * len(eps_list) + 1 + len(names) * len(severities))
    )
    seconds = {}
    broken = {name: ~correct for name in chosen}  # by this attack, at this eps or below
    accuracy = {name: [] for name in chosen}
    robust = np.zeros((n, len(eps_list)), bool)
    for k, eps in enumerate(eps_list):
        for name, attack in chosen.items():
            start = time.perf_counter()
            todo = np.flatnonzero(~broken[name])
            if todo.size:
                points = attack(model, x[todo], labels[todo], eps, options, next(seeds))
                _check_points(points, x[todo], eps, norm, value_range, name)
                broken[name][todo[predictions(points) != labels[todo]]] = True
            else:
                next(seeds)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            accuracy[name].append(float(np.mean(~broken[name])))
            progress.step(f"{name} at eps {eps:g}", accuracy[name][-1])
        robust[:, k] = ~np.any([broken[name] for name in chosen], axis=0)

    large_eps = large_eps_accuracy = None
    if value_range is not None:
        start = time.perf_counter()
        low, high = value_range
        large_eps = (high - low) / 2
        if norm == "l2":
            large_eps *= float(np.sqrt(np.prod(x.shape[1:])))
        subset = np.flatnonzero(correct)[:_LARGE_EPS_EXAMPLES]
        seed_large = next(seeds)
        if subset.size:
            points = pgd(
                model,
                x[subset],
                labels[subset],
                large_eps,
                steps=_LARGE_EPS_STEPS,
                seed=seed_large,
                **options,
            )
            large_eps_accuracy = float(np.mean(predictions(points) == labels[subset]))
        else:
            large_eps_accuracy = 0.0
        seconds["large-eps check"] = time.perf_counter() - start
        progress.step(f"pgd at eps {large_eps:g}", large_eps_accuracy)

    corrupted = {}
    start = time.perf_counter()
    for name in names:
        corrupted[name] = []
        for severity in severities:
            images = corruption_suite.corrupt(
                x, name, severity, value_range=value_range, seed=next(seeds)
            )
            corrupted[name].append(float(np.mean(predictions(images) == labels)))
            progress.step(f"{name} severity {severity}", corrupted[name][-1])
    if names:
        seconds["corruptions"] = time.perf_counter() - start

    return RobustnessReport(
        clean_accuracy=float(np.mean(correct)),
        epsilons=eps_list,
        attack_accuracy=accuracy,
        worst_case_accuracy=robust.mean(axis=0).tolist(),
        norm=norm,
        robust_examples=robust,
        large_eps=large_eps,
        large_eps_accuracy=large_eps_accuracy,
        severities=severities,
        corruption_accuracy=corrupted,
        warnings=gradient_masking_warnings(
            {name: dict(zip(eps_list, a, strict=True)) for name, a in accuracy.items()},
            large_eps,
            large_eps_accuracy,
        ),
        seconds=seconds,
    )


def _check_points(points, x, eps, norm, value_range, name):
    """A custom attack's result must have `x`'s shape and stay in the ball
    and the range (up to float32 rounding): otherwise its "successes" would
    not count."""
    points = np.asarray(points)
    if points.shape != x.shape:
        raise ValueError(
            f"Attack {name!r} must return one input per example, of shape "
            f"{x.shape}. Received: shape {points.shape}"
        )
    delta = (points.astype(np.float64) - x).reshape(len(x), -1)
    size = (
        np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    )
    slack = 1e-6 * max(1.0, eps)
    outside_range = value_range is not None and (
        points.min() < value_range[0] - slack or points.max() > value_range[1] + slack
    )
    if size.size and (size.max() > eps + slack or outside_range):
        raise ValueError(
            f"Attack {name!r} returned points outside the eps ball ({norm}, eps "
            f"{eps:g}) or the value range {value_range}. Received: largest "
            f"perturbation {size.max():.6g}"
        )
