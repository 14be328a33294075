"""`fgsm`: the fast gradient sign method, one full step along the gradient.

Goodfellow et al. (2015): linearise the loss around `x` and take the point
of the `eps` ball where the linearisation is highest. For an L-inf budget it
is the corner `x + eps * sign(g)`; for an L2 budget (the "fast gradient
method") it is `x + eps * g / ||g||`. One gradient per example: cheap, and
exact when the loss is linear in the input, weak when it is not (use `pgd`).
"""

from keras_harden.robust import _common, steps

__all__ = ["fgsm"]


def fgsm(
    model,
    x,
    y,
    eps,
    norm="linf",
    targeted=False,
    value_range=(0, 1),
    from_logits=None,
    batch_size=128,
):
    """The fast gradient sign method (FGSM; L2: the fast gradient method).

    Per example, `x_adv = x + eps * sign(g)` (L-inf) or
    `x + eps * g / ||g||` (L2), `g` the gradient of the cross-entropy with
    respect to the input (in inference mode), then clipped to `value_range`.
    Targeted, `y` holds the target classes and the step goes down the
    target's cross-entropy instead. Every returned point lies within `eps`
    of its `x` in the `norm` and inside `value_range`, exactly.

    Args:
        model: a Keras classifier with one input and one output `(batch,
            classes)`, logits or probabilities.
        x: the clean inputs, an array, inside `value_range`.
        y: their labels (the targets when `targeted`): integers `(n,)` or
            one-hot `(n, classes)`.
        eps: number >= 0, the radius of the ball.
        norm: `"linf"` or `"l2"`.
        targeted: bool.
        value_range: `(low, high)` of valid inputs, or None for no clipping.
        from_logits: whether the outputs are logits; None detects it (rows
            in [0, 1] that sum to 1 are probabilities).
        batch_size: int >= 1, examples per gradient.

    Returns:
        The adversarial inputs, a NumPy array of `x`'s shape and float dtype.

    Example:

    >>> from keras_harden.robust import fgsm
    >>> dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
    ...     [[1.0, 2.0], [1.0, -1.0]]))   # z0 = x0 + x1, z1 = 2 x0 - x1
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[0.5, 0.5]], "float32")  # z = (1, 0.5): class 0
    >>> # the gradient of class 0's loss points along w1 - w0 = (1, -2)
    >>> x_adv = fgsm(model, x, [0], eps=0.25)
    >>> x_adv.tolist()                        # z = (1, 1.25): now class 1
    [[0.75, 0.25]]

    References:
        Goodfellow, Shlens and Szegedy, "Explaining and Harnessing
        Adversarial Examples" (ICLR 2015), arXiv:1412.6572.
    """
    task = _common.Task(
        model, x, y, eps, norm, value_range, from_logits, batch_size, targeted
    )

    def attack_batch(xb, labels):
        _, gradient, _ = task.evaluate(xb, labels)
        step = steps.ascent_step(xb, task.direction(gradient), task.eps, task.norm)
        return task.project(step, xb)

    return task.run(attack_batch)
