"""`apgd`: Auto-PGD (Croce and Hein 2020), PGD that sets its own step size.

PGD's fixed step is either too large to settle near a maximum or too small
to get there. APGD starts large (`2 * eps`), adds momentum, and at a schedule
of checkpoints halves the step of each example whose search has stalled,
restarting it from the best point it has found:

- the checkpoints (`checkpoints`): after 22% of the iterations, then at
  intervals that shrink by 3% of the iterations down to 6%;
- an example's step is halved at a checkpoint (`halve`) when its loss rose
  in at most `rho` (0.75) of the steps since the last checkpoint, or when
  its step was not halved last time and its best loss has not improved
  since;
- the update: `z = P(x_k + eta * s(g_k))`, `x_{k+1} = P(x_k + alpha (z -
  x_k) + (1 - alpha)(x_k - x_{k-1}))` with `alpha = 0.75` (the first step
  without momentum), `s` the sign (L-inf) or the unit gradient (L2), `P` the
  projection into the ball and the value range.

The schedule and the halving rule are pure functions here; `apgd` is the
Keras wiring. The losses are the cross-entropy ("APGD-CE") and the
difference of logits ratio ("APGD-DLR", untargeted), whose scale does not
depend on the logits'.
"""

import numpy as np

from keras_harden._validation import check_int, check_number
from keras_harden.robust import _common
from keras_harden.robust.steps import ascent_step, random_point

__all__ = ["apgd", "checkpoints", "halve"]

LOSSES = ("ce", "dlr")
# Croce and Hein's first interval, its decrease and its least length, as
# fractions of the iterations; and the initial step, in units of eps.
_FIRST, _DECREASE, _LEAST = 0.22, 0.03, 0.06
_INITIAL_STEP = 2.0


def checkpoints(steps):
    """The iteration counts after which APGD checks its step size.

    The paper's `p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
    0.03, 0.06)` (fractions of `steps`), in whole iterations as the
    reference implementation counts them: the first interval is
    `max(int(0.22 steps), 1)`, each next one `max(int(0.03 steps), 1)`
    shorter, but never below `max(int(0.06 steps), 1)`.

    >>> checkpoints(100)  # intervals 22, 19, 16, 13, 10, 7, 6, 6
    [22, 41, 57, 70, 80, 87, 93, 99]
    >>> checkpoints(10)   # intervals 2, 1, 1, ...
    [2, 3, 4, 5, 6, 7, 8, 9, 10]
    """
    interval = max(int(_FIRST * steps), 1)
    decrease = max(int(_DECREASE * steps), 1)
    least = max(int(_LEAST * steps), 1)
    points, at = [], 0
    while at + interval <= steps:
        at += interval
        points.append(at)
        interval = max(interval - decrease, least)
    return points


def halve(history, rho, halved_last, best_before, best_now):
    """Which examples get their step size halved at a checkpoint.

    Condition 1: the objective rose in at most a fraction `rho` of the steps
    since the last checkpoint (`history` holds its value at the iterates
    since then, one row per iterate, the last checkpoint's first).
    Condition 2: the step was not halved at the last checkpoint and the best
    objective has not improved since (`best_before` then, `best_now` now).

    >>> history = np.array([[1.0, 1.0], [2.0, 0.5], [3.0, 0.7], [4.0, 0.6]])
    >>> # 3 steps: example 0 rose 3 times (> 0.75 * 3), example 1 once
    >>> halve(history, 0.75, np.array([True, True]), np.array([4.0, 1.0]),
    ...       np.array([4.0, 1.0])).tolist()
    [False, True]
    >>> # not halved last time and no better than then: halved
    >>> halve(history, 0.75, np.array([False, True]), np.array([4.0, 1.0]),
    ...       np.array([4.0, 1.0])).tolist()
    [True, True]
    """
    history = np.asarray(history, np.float64)
    steps = len(history) - 1
    rises = np.sum(history[1:] > history[:-1], axis=0)
    few_rises = rises <= rho * steps
    stalled = ~np.asarray(halved_last, bool) & (
        np.asarray(best_before) >= np.asarray(best_now)
    )
    return few_rises | stalled


def apgd(
    model,
    x,
    y,
    eps,
    norm="linf",
    steps=100,
    restarts=1,
    loss="ce",
    targeted=False,
    rho=0.75,
    alpha=0.75,
    value_range=(0, 1),
    from_logits=None,
    batch_size=128,
    seed=None,
):
    """Auto-PGD: APGD-CE or APGD-DLR, L-inf or L2.

    Each run starts from a random point on the boundary of the ball and
    takes `steps` momentum steps, the step size starting at `2 * eps` and
    halved per example at the checkpoints where its search stalled (see the
    module). Per example the first point the model misclassifies
    (targeted: the first to reach the target) is returned, else the point
    of highest loss. Later `restarts` attack only the examples not yet broken;
    an example misclassified to begin with is returned as it is.

    Every returned point lies within `eps` of its `x` in the `norm` and
    inside `value_range`, exactly.

    Args:
        model: a Keras classifier with one input and one output `(batch,
            classes)`, logits or probabilities.
        x: the clean inputs, an array, inside `value_range`.
        y: their labels (the targets when `targeted`): integers `(n,)` or
            one-hot `(n, classes)`.
        eps: number >= 0, the radius of the ball.
        norm: `"linf"` or `"l2"`.
        steps: int >= 1, iterations per run (the paper: 100).
        restarts: int >= 1, runs from new random points.
        loss: `"ce"` (cross-entropy) or `"dlr"` (difference of logits ratio,
            at least 3 classes, untargeted only).
        targeted: bool; the cross-entropy of `y`'s target classes goes down.
        rho: number in (0, 1), the fraction of rising steps below which the
            step is halved.
        alpha: number in (0, 1], the weight of the new step against the last
            one (1: no momentum).
        value_range: `(low, high)` of valid inputs, or None for no clipping.
        from_logits: whether the outputs are logits; None detects it.
        batch_size: int >= 1, examples per gradient.
        seed: None, an int (the same random starts on every call) or a
            `keras.random.SeedGenerator` (new ones on every call).

    Returns:
        The adversarial inputs, a NumPy array of `x`'s shape and float dtype.

    Example:

    >>> from keras_harden.robust import apgd
    >>> dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
    ...     [[1.0, 2.0], [1.0, -1.0]]))   # z0 = x0 + x1, z1 = 2 x0 - x1
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[0.5, 0.5]], "float32")   # z = (1, 0.5): class 0
    >>> x_adv = apgd(model, x, [0], eps=0.25, steps=10, seed=0)
    >>> model.predict(x_adv, verbose=0).argmax(-1).tolist()  # x0 > 2 x1 somewhere
    [1]

    References:
        Croce and Hein, "Reliable evaluation of adversarial robustness with
        an ensemble of diverse parameter-free attacks" (ICML 2020),
        arXiv:2003.01690; github.com/fra31/auto-attack
        (`autoattack/autopgd_base.py`).
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be 'ce' or 'dlr'. Received: loss={loss!r}")
    if loss == "dlr" and targeted is True:
        raise ValueError(
            "The targeted attack uses the cross-entropy (a targeted DLR loss "
            f"is not implemented). Received: loss={loss!r}, targeted=True"
        )
    task = _common.Task(
        model, x, y, eps, norm, value_range, from_logits, batch_size, targeted, loss
    )
    steps = check_int("steps", steps, minimum=1)
    restarts = check_int("restarts", restarts, minimum=1)
    rho = check_number("rho", rho, low=0, high=1, low_open=True, high_open=True)
    alpha = check_number("alpha", alpha, low=0, high=1, low_open=True)
    generator = _common.rng(seed)
    schedule = set(checkpoints(steps))

    def run(centre, target, index, best):
        start = random_point(centre, task.eps, task.norm, generator, on_boundary=True)
        point = task.project(start, centre)
        losses, gradient, success = task.evaluate(point, target)
        objective = task.objective(losses)
        best.update(index, point, success, objective)
        eta = np.full(len(centre), _INITIAL_STEP * task.eps)
        top_point, top, top_gradient = point.copy(), objective.copy(), gradient
        previous = point.copy()
        history = [objective]
        halved_last = np.ones(len(centre), bool)
        top_before = top.copy()
        for k in range(steps):
            if best.success[index].all():
                return
            moved = ascent_step(point, task.direction(gradient), eta, task.norm)
            z = task.project(moved, centre).astype(np.float64)
            here = point.astype(np.float64)
            weight = 1.0 if k == 0 else alpha
            moved = here + weight * (z - here) + (1.0 - weight) * (here - previous)
            previous, point = here, task.project(moved, centre)
            losses, gradient, success = task.evaluate(point, target)
            objective = task.objective(losses)
            best.update(index, point, success, objective)
            history.append(objective)
            higher = objective > top
            top_point[higher], top[higher] = point[higher], objective[higher]
            top_gradient = np.where(_rows(higher, gradient), gradient, top_gradient)
            if k + 1 in schedule:
                cut = halve(np.stack(history), rho, halved_last, top_before, top)
                eta[cut] /= 2.0
                # restart the halved examples from their best point
                point[cut] = top_point[cut]
                previous[cut] = top_point[cut]
                gradient = np.where(_rows(cut, gradient), top_gradient, gradient)
                history = [np.where(cut, top, objective)]
                halved_last, top_before = cut, top.copy()

    def attack_batch(xb, labels):
        losses, _, success = task.evaluate(xb, labels)
        best = _common.Best(xb, success, task.objective(losses))
        for _ in range(restarts):
            index = np.flatnonzero(~best.success)
            if not index.size:
                break
            run(xb[index], labels[index], index, best)
        return best.points

    return task.run(attack_batch)


def _rows(mask, like):
    """A per-example mask shaped to broadcast over a batch like `like`."""
    return np.asarray(mask, bool).reshape((-1,) + (1,) * (np.ndim(like) - 1))
