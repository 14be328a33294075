"""The inner maximisation of adversarial training, as pure `keras.ops`
functions that trace (inside a `tf.function` or a jitted JAX step).

Adversarial training (Madry et al. 2018) minimises over the weights the loss
at the worst input of each example's `eps` ball; the worst input is
approximated, batch by batch inside the training step, by a few sign steps:

    x_0 = P(x + noise),   x_{k+1} = P(x_k + step_size * sign(g(x_k)))

where `g` is the gradient of the objective with respect to the input and `P`
clips each coordinate to `[x - eps, x + eps]`, then to the value range (with
`x` inside the range that clip only moves a coordinate towards `x`, so the
point stays in the ball). The three methods differ in the noise, the steps and
the objective:

- PGD (Madry et al.): noise uniform in `[-eps, eps]`, the cross-entropy of
  the label, `steps` steps of `2.5 * eps / steps`;
- fast (Wong, Rice and Kolter 2020): the same noise, one step of
  `1.25 * eps` (their alpha);
- TRADES (Zhang et al. 2019): noise `0.001 * N(0, 1)`, the divergence
  `KL(p(x) || p(x_k))` from the clean prediction (held fixed), 10 steps of
  `0.007 / 0.031 * eps` (the reference code's CIFAR-10 setting, 0.007 at eps
  0.031: 0.226 eps a step).

Random draws are arguments (the caller draws them), so each function is a
deterministic function of tensors: no NumPy, no Python branch on a tensor's
value (the number of steps is a Python int, unrolled).
"""

import keras

from keras_harden.robust import _common
from keras_harden.robust.pgd import default_step_size as _madry_step

__all__ = [
    "FAST_STEP_FACTOR",
    "TRADES_START_SCALE",
    "TRADES_STEPS",
    "TRADES_STEP_FACTOR",
    "cross_entropy",
    "default_step_size",
    "fast_step_size",
    "integer_labels",
    "kl_divergence",
    "linf_pgd",
    "log_probabilities",
    "project_linf",
    "trades_step_size",
]

# Wong, Rice and Kolter: one FGSM step of alpha = 1.25 eps from a uniform start.
FAST_STEP_FACTOR = 1.25
# TRADES reference (train_trades_cifar10.py): 10 steps of 0.007 at eps 0.031,
# from x + 0.001 * N(0, 1).
TRADES_STEPS = 10
TRADES_STEP_FACTOR = 0.007 / 0.031
TRADES_START_SCALE = 0.001

_FLOOR = 1e-30


def default_step_size(eps, steps):
    """`2.5 * eps / steps`, Madry et al.'s step (as `keras_harden.robust.pgd`).

    >>> default_step_size(0.1, 10)
    0.025
    """
    return _madry_step(eps, steps)


def fast_step_size(eps):
    """`1.25 * eps`, Wong et al.'s single step.

    >>> fast_step_size(0.2)
    0.25
    """
    return FAST_STEP_FACTOR * eps


def trades_step_size(eps):
    """`0.007 / 0.031 * eps`, the TRADES reference's step relative to eps.

    >>> round(trades_step_size(0.031), 6)
    0.007
    """
    return TRADES_STEP_FACTOR * eps


def project_linf(points, x, eps, value_range):
    """`points` clipped to `[x - eps, x + eps]`, then to `value_range`
    (`(low, high)` or None: no range).

    >>> x = np.array([[0.5, 0.95]], "float32")
    >>> p = project_linf(np.array([[0.9, 1.2]], "float32"), x, 0.1, (0, 1))
    >>> # 0.9 to x + eps = 0.6; 1.2 to x + eps = 1.05, then to the range: 1
    >>> np.round(keras.ops.convert_to_numpy(p).astype("float64"), 6).tolist()
    [[0.6, 1.0]]
    """
    points = keras.ops.clip(points, x - eps, x + eps)
    if value_range is not None:
        points = keras.ops.clip(points, value_range[0], value_range[1])
    return points


def linf_pgd(gradient_fn, x, start_noise, eps, step_size, steps, value_range):
    """L-inf projected gradient ascent from `x + start_noise`.

    The start is projected (into the ball, then the range), then each of the
    `steps` iterations moves every coordinate by `step_size` along the sign
    of `gradient_fn` at the current point and projects again. The final
    iterate is returned (training uses it as it is; the attacks in
    `keras_harden.robust.pgd` keep the best one instead). A zero gradient
    coordinate does not move.

    Args:
        gradient_fn: `points -> gradient of the objective at points`, a
            tensor function (e.g. `keras_harden._gradients.input_gradient`
            with the model and labels bound).
        x: the clean inputs, a float tensor inside `value_range`.
        start_noise: the random start's offset, of `x`'s shape (uniform in
            `[-eps, eps]` for PGD and the fast method, `0.001 * N(0, 1)` for
            TRADES), drawn by the caller.
        eps: the radius of the L-inf ball, a Python number.
        step_size: the step, a Python number.
        steps: a Python int >= 0, the number of steps (unrolled).
        value_range: `(low, high)` or None.

    Returns:
        The last iterate, of `x`'s shape and dtype, within `eps` of `x` and
        inside `value_range` (up to the rounding of `x + eps` in `x`'s
        dtype).

    Example:

    >>> x = np.array([[0.5, 0.5]], "float32")
    >>> def gradient(points):  # an objective rising along (+1, -1)
    ...     return keras.ops.convert_to_tensor([[3.0, -0.5]])
    >>> x_adv = linf_pgd(gradient, x, np.array([[0.05, 0.0]], "float32"),
    ...                  eps=0.1, step_size=0.04, steps=2, value_range=(0, 1))
    >>> # 0.55 -> 0.59 -> 0.6 (clipped at x + eps); 0.5 -> 0.46 -> 0.42
    >>> np.round(keras.ops.convert_to_numpy(x_adv).astype("float64"), 6).tolist()
    [[0.6, 0.42]]
    """
    x = keras.ops.convert_to_tensor(x)
    noise = keras.ops.cast(start_noise, x.dtype)
    points = project_linf(x + noise, x, eps, value_range)
    for _ in range(steps):
        direction = keras.ops.sign(keras.ops.cast(gradient_fn(points), x.dtype))
        points = project_linf(points + step_size * direction, x, eps, value_range)
    return points


def _choose(from_logits, outputs, if_logits, if_probabilities):
    """`if_logits(outputs)` or `if_probabilities(outputs)`, in float32."""
    if not isinstance(from_logits, bool):
        raise ValueError(
            "`from_logits` must be True or False. "
            f"Received: from_logits={from_logits!r}"
        )
    outputs = keras.ops.cast(outputs, "float32")
    return if_logits(outputs) if from_logits else if_probabilities(outputs)


def log_probabilities(outputs, from_logits):
    """`log softmax(outputs)` for logits, `log(max(p, 1e-30))` for
    probabilities, in float32.

    >>> lp = log_probabilities(np.array([[0.0, np.log(3.0)]], "float32"), True)
    >>> np.round(np.exp(keras.ops.convert_to_numpy(lp)), 6).tolist()  # 1/4, 3/4
    [[0.25, 0.75]]
    """
    return _choose(
        from_logits,
        outputs,
        lambda z: keras.ops.log_softmax(z, axis=-1),
        lambda p: keras.ops.log(keras.ops.maximum(p, _FLOOR)),
    )


def cross_entropy(labels, outputs, from_logits):
    """Per-example cross-entropy `-log p[label]` (float32) of logits or
    probabilities; with probabilities it keeps the gradient of a confident
    prediction (`keras_harden.robust._common.cross_entropy_probabilities`).

    >>> logits = np.array([[0.0, np.log(3.0)]], "float32")
    >>> ce = cross_entropy(np.array([1]), logits, from_logits=True)
    >>> round(float(keras.ops.convert_to_numpy(ce)[0]), 6)  # -log(3/4)
    0.287682
    """
    return _choose(
        from_logits,
        outputs,
        lambda z: _common.cross_entropy_logits(labels, z),
        lambda p: _common.cross_entropy_probabilities(labels, p),
    )


def kl_divergence(clean_outputs, outputs, from_logits):
    """Per-example `KL(p || q) = sum_i p_i (log p_i - log q_i)` (float32),
    `p` from `clean_outputs` and `q` from `outputs` (logits or
    probabilities, last axis).

    >>> clean = np.log(np.array([[0.5, 0.5]], "float32"))
    >>> adv = np.log(np.array([[0.25, 0.75]], "float32"))
    >>> # 0.5 log(0.5 / 0.25) + 0.5 log(0.5 / 0.75) = 0.5 log(4 / 3)
    >>> kl = kl_divergence(clean, adv, from_logits=True)
    >>> round(float(keras.ops.convert_to_numpy(kl)[0]), 6)
    0.143841
    """
    log_p = log_probabilities(clean_outputs, from_logits)
    log_q = log_probabilities(outputs, from_logits)
    return keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)


def integer_labels(y, num_classes):
    """Integer class labels `(batch,)` from integers `(batch,)` /
    `(batch, 1)` or one-hot (or soft) rows `(batch, num_classes)` (their
    argmax), by the static shape.

    >>> labels = integer_labels(np.array([[0, 1], [1, 0]]), 2)
    >>> keras.ops.convert_to_numpy(labels).tolist()
    [1, 0]
    """
    y = keras.ops.convert_to_tensor(y)
    if len(y.shape) == 2 and y.shape[-1] == num_classes and num_classes > 1:
        y = keras.ops.argmax(y, axis=-1)
    elif len(y.shape) == 2 and y.shape[-1] == 1:
        y = y[:, 0]
    elif len(y.shape) != 1:
        raise ValueError(
            "Adversarial training needs class labels: integers of shape "
            "(batch,) or (batch, 1), or one-hot rows (batch, classes). "
            f"Received: y.shape={tuple(y.shape)}"
        )
    return keras.ops.cast(y, "int32")
