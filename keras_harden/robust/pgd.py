"""`pgd`: projected gradient descent on the loss, the standard first-order
attack (Madry et al. 2018).

From a random point of the ball (or `x` itself), repeat: one ascent step of
size `step_size` (`sign(g)` for L-inf, `g / ||g||` for L2), then project back
into the `eps` ball and the value range. Madry et al.'s step, `2.5 * eps /
steps`, lets an iterate cross the whole ball (from `-eps` to `+eps`) in 80%
of the steps and still wander along its boundary. With `restarts`, the
examples still unbroken run again from a new random point. Per example the
first iterate the model misclassifies (targeted: the first to reach the
target) is returned, else the iterate of highest loss; so each example's
result is independent of the others in its batch.

The steps run on the device, compiled once per model and loss
(`_device_loop`); the host draws the random starts and casts the returned
points into the ball and the range exactly.
"""

import numpy as np

from keras_harden._validation import check_bool, check_int, check_positive
from keras_harden.robust import _common, _device_loop
from keras_harden.robust.steps import random_point

__all__ = ["pgd"]

# Madry et al.: step = 2.5 * eps / steps.
STEP_FACTOR = 2.5


def default_step_size(eps, steps):
    """`2.5 * eps / steps` (Madry et al.).

    >>> default_step_size(0.1, 20)   # 2.5 * 0.1 / 20
    0.0125
    """
    return STEP_FACTOR * eps / steps


def pgd(
    model,
    x,
    y,
    eps,
    norm="linf",
    steps=20,
    step_size=None,
    random_start=True,
    restarts=1,
    targeted=False,
    value_range=(0, 1),
    from_logits=None,
    batch_size=128,
    seed=None,
):
    """Projected gradient descent (PGD), L-inf or L2, untargeted or targeted.

    Each of `steps` iterations moves every example by `step_size` along the
    sign of its cross-entropy gradient (L-inf) or the unit gradient (L2),
    with respect to the input in inference mode, and projects it back into
    the `eps` ball around `x` and into `value_range`. Targeted, `y` holds the
    target classes and the iterates go down the target's cross-entropy. An
    example already misclassified (targeted: already the target) is
    returned as it is; an example broken at some step stops there.

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
        steps: int >= 1, iterations per run.
        step_size: number > 0; None is `2.5 * eps / steps`.
        random_start: start from a uniform point of the ball (True) or from
            `x`.
        restarts: int >= 1, runs; each later run starts from a new random
            point and attacks only the examples not yet broken (needs
            `random_start` when > 1).
        targeted: bool.
        value_range: `(low, high)` of valid inputs, or None for no clipping.
        from_logits: whether the outputs are logits; None detects it (rows
            in [0, 1] that sum to 1 are probabilities).
        batch_size: int >= 1, examples per gradient.
        seed: None, an int (the same random starts on every call) or a
            `keras.random.SeedGenerator` (new ones on every call).

    Returns:
        The adversarial inputs, a NumPy array of `x`'s shape and float dtype.

    Example:

    >>> from keras_harden.robust import pgd
    >>> dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
    ...     [[1.0, 2.0], [1.0, -1.0]]))   # z0 = x0 + x1, z1 = 2 x0 - x1
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[0.5, 0.5]], "float32")   # z = (1, 0.5): class 0
    >>> # z1 - z0 = x0 - 2 x1 rises fastest along (+, -); at eps 0.25 the
    >>> # corner (0.75, 0.25) gives z = (1, 1.25): class 1
    >>> x_adv = pgd(model, x, [0], eps=0.25, seed=0)
    >>> model.predict(x_adv, verbose=0).argmax(-1).tolist()
    [1]
    >>> bool(np.abs(x_adv - x).max() <= 0.25)
    True

    References:
        Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning
        Models Resistant to Adversarial Attacks" (ICLR 2018),
        arXiv:1706.06083; github.com/MadryLab/mnist_challenge.
    """
    task = _common.Task(
        model, x, y, eps, norm, value_range, from_logits, batch_size, targeted
    )
    steps = check_int("steps", steps, minimum=1)
    step_size = check_positive("step_size", step_size, optional=True)
    if step_size is None:
        step_size = default_step_size(task.eps, steps)
    random_start = check_bool("random_start", random_start)
    restarts = check_int("restarts", restarts, minimum=1)
    if restarts > 1 and not random_start:
        raise ValueError(
            "Restarts from `x` would repeat the same run: `restarts` > 1 needs "
            f"random_start=True. Received: restarts={restarts}"
        )
    generator = _common.rng(seed)

    def attack_batch(xb, labels):
        objective, success = _device_loop.judge(task, xb, labels)
        best = _common.Best(xb, success, objective)
        for _ in range(restarts):
            index = np.flatnonzero(~best.success)
            if not index.size:
                break
            centre = xb[index]
            start = centre
            if random_start:
                drawn = random_point(centre, task.eps, task.norm, generator)
                start = task.project(drawn, centre)
            # the steps run on the device; the points come back cast into
            # the ball and the range exactly here
            points, success, objective = _device_loop.run_pgd(
                task,
                centre,
                start,
                labels[index],
                (best.points[index], best.success[index], best.objective[index]),
                step_size,
                steps,
            )
            best.update(index, task.project(points, centre), success, objective)
        return best.points

    return task.run(attack_batch)
