"""The step maths of the gradient attacks, as pure NumPy functions.

An attack on a classifier looks for `x_adv` inside the ball of radius `eps`
around the clean input `x` (L-inf: every coordinate moves by at most `eps`;
L2: the Euclidean length of the whole perturbation is at most `eps`) and
inside the valid input range, where the model's loss is high (or, for a
targeted attack, the loss of a chosen class is low). The gradient attacks
alternate an ascent step along the loss gradient with a projection back into
that set:

- `sign_step` (L-inf): `x + a * sign(g)`, the steepest ascent for a
  linearised loss under an L-inf budget;
- `l2_step` (L2): `x + a * g / ||g||`, the steepest ascent under an L2
  budget;
- `project`: back into the ball (`project_linf`: clip each coordinate of
  `x_adv - x` to `[-eps, eps]`; `project_l2`: scale `x_adv - x` down to
  length `eps` when longer), then into the range (`clip_to_range`). Clipping
  to a box that holds `x` moves each coordinate towards `x`, so it never
  takes a point back out of the ball: the result lies in both.
- `cast_inside`: the point as the model's float type, nudged by rounding
  units so that it lies inside the ball and the range *exactly* (compared in
  float64), whatever the rounding of the cast.

Each array holds a batch: the first axis indexes examples, and the norms are
taken per example over all the other axes. Nothing here knows about Keras.
"""

import numpy as np

__all__ = [
    "NORMS",
    "ascent_step",
    "cast_inside",
    "clip_to_range",
    "improves",
    "l2_norms",
    "l2_step",
    "project",
    "project_l2",
    "project_linf",
    "random_point",
    "sign_step",
]

NORMS = ("linf", "l2")

# Below this, a per-example norm counts as zero (a zero gradient gives no
# direction; a zero perturbation needs no scaling).
_TINY = 1e-12
# Rounding repairs tried in `cast_inside` before an entry falls back to `x`.
_REPAIRS = 8


def _per_example(value, ndim):
    """A scalar as it is; a `(batch,)` array shaped to broadcast over a batch
    of rank `ndim`."""
    value = np.asarray(value, np.float64)
    if value.ndim == 0:
        return value
    return value.reshape((-1,) + (1,) * (ndim - 1))


def l2_norms(a):
    """The Euclidean norm of each example of a batch (over every axis but the
    first), in float64.

    >>> l2_norms(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()  # 5 = sqrt(9 + 16)
    [5.0, 0.0]
    """
    a = np.asarray(a, np.float64)
    return np.sqrt(np.sum(a.reshape(len(a), -1) ** 2, axis=1))


def sign_step(x_adv, gradient, step_size):
    """`x_adv + step_size * sign(gradient)`: the L-inf ascent step.

    `step_size` is a number or one per example.

    >>> sign_step(np.array([[0.5, 0.5, 0.5]]), np.array([[2.0, -0.1, 0.0]]),
    ...           0.25).tolist()
    [[0.75, 0.25, 0.5]]
    """
    x_adv = np.asarray(x_adv, np.float64)
    return x_adv + _per_example(step_size, x_adv.ndim) * np.sign(gradient)


def l2_step(x_adv, gradient, step_size):
    """`x_adv + step_size * gradient / ||gradient||`: the L2 ascent step
    (per example; an example whose gradient is zero does not move).

    >>> # ||(3, 4)|| = 5: the unit direction is (0.6, 0.8); times 5 is (3, 4)
    >>> l2_step(np.zeros((1, 2)), np.array([[3.0, 4.0]]), 5.0).tolist()
    [[3.0, 4.0]]
    """
    x_adv = np.asarray(x_adv, np.float64)
    gradient = np.asarray(gradient, np.float64)
    norms = _per_example(l2_norms(gradient), x_adv.ndim)
    direction = np.where(norms > _TINY, gradient / np.maximum(norms, _TINY), 0.0)
    return x_adv + _per_example(step_size, x_adv.ndim) * direction


def ascent_step(x_adv, gradient, step_size, norm):
    """`sign_step` for `norm="linf"`, `l2_step` for `norm="l2"`."""
    if norm == "linf":
        return sign_step(x_adv, gradient, step_size)
    return l2_step(x_adv, gradient, step_size)


def project_linf(x_adv, x, eps):
    """The nearest point to `x_adv` with `max |x_adv - x| <= eps`: each
    coordinate of the perturbation clipped to `[-eps, eps]`.

    >>> project_linf(np.array([[0.9, 0.2, 0.55]]), np.full((1, 3), 0.5),
    ...              0.1).tolist()
    [[0.6, 0.4, 0.55]]
    """
    x = np.asarray(x, np.float64)
    delta = np.asarray(x_adv, np.float64) - x
    return x + np.clip(delta, -eps, eps)


def project_l2(x_adv, x, eps):
    """The nearest point to `x_adv` with `||x_adv - x|| <= eps` (per
    example): a longer perturbation scaled down to length `eps`.

    >>> # (6, 8) has length 10: halved to length 5; (1, 0) is inside
    >>> project_l2(np.array([[6.0, 8.0], [1.0, 0.0]]), np.zeros((2, 2)),
    ...            5.0).tolist()
    [[3.0, 4.0], [1.0, 0.0]]
    """
    x = np.asarray(x, np.float64)
    delta = np.asarray(x_adv, np.float64) - x
    norms = l2_norms(delta)
    scale = np.where(norms > eps, eps / np.maximum(norms, _TINY), 1.0)
    return x + delta * _per_example(scale, delta.ndim)


def clip_to_range(x_adv, value_range):
    """`x_adv` clipped to `value_range = (low, high)`; `None` leaves it.

    >>> clip_to_range(np.array([[-0.2, 0.3, 1.5]]), (0, 1)).tolist()
    [[0.0, 0.3, 1.0]]
    """
    x_adv = np.asarray(x_adv, np.float64)
    if value_range is None:
        return x_adv
    return np.clip(x_adv, value_range[0], value_range[1])


def project(x_adv, x, eps, norm, value_range):
    """Into the `norm` ball of radius `eps` around `x`, then into
    `value_range`. With `x` inside the range the result lies in both: the
    clip moves every coordinate towards `x`, which only shortens the
    perturbation.

    >>> # the ball allows [0.85, 1.05]; the range cuts it at 1
    >>> project(np.array([[1.2]]), np.array([[0.95]]), 0.1, "linf",
    ...         (0, 1)).tolist()
    [[1.0]]
    """
    if norm == "linf":
        inside = project_linf(x_adv, x, eps)
    else:
        inside = project_l2(x_adv, x, eps)
    return clip_to_range(inside, value_range)


def random_point(x, eps, norm, rng, on_boundary=False):
    """A random point of the `norm` ball of radius `eps` around `x` (not yet
    clipped to the value range).

    Inside the ball (PGD's random start, Madry et al.): uniform on the
    L-inf cube, or uniform in the L2 ball (a Gaussian direction, radius
    `eps * u ** (1 / d)` for `d` coordinates). On its boundary (APGD's
    start, Croce and Hein): a uniform draw in `[-1, 1]` scaled so that its
    largest coordinate is `eps` (L-inf), or a Gaussian direction of length
    `eps` (L2).

    >>> rng = np.random.default_rng(0)
    >>> x = np.full((2, 3), 0.5)
    >>> bool(np.all(np.abs(random_point(x, 0.1, "linf", rng) - x) <= 0.1))
    True
    >>> l2_norms(random_point(x, 0.1, "l2", rng, on_boundary=True) - x).round(6)
    array([0.1, 0.1])
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if norm == "linf":
        delta = rng.uniform(-1.0, 1.0, size=x.shape)
        if on_boundary:
            largest = np.max(np.abs(delta.reshape(n, -1)), axis=1)
            delta = delta / _per_example(np.maximum(largest, _TINY), x.ndim)
        return x + eps * delta
    direction = rng.standard_normal(size=x.shape)
    direction /= _per_example(np.maximum(l2_norms(direction), _TINY), x.ndim)
    if on_boundary:
        radius = np.ones(n)
    else:
        d = x[0].size if n else 1
        radius = rng.uniform(size=n) ** (1.0 / d)
    return x + eps * direction * _per_example(radius, x.ndim)


def _violations(out, x, eps, norm, value_range):
    """Entries of `out` outside the ball or the range, compared in float64
    (for L2 a whole example is flagged)."""
    out = out.astype(np.float64)
    bad = np.zeros(out.shape, bool)
    if value_range is not None:
        bad |= (out < value_range[0]) | (out > value_range[1])
    if norm == "linf":
        bad |= np.abs(out - x) > eps
    else:
        long = l2_norms(out - x) > eps
        bad |= _per_example(long, out.ndim).astype(bool) & np.ones_like(bad)
    return bad


def cast_inside(x_adv, x, eps, norm, value_range):
    """`x_adv` in `x`'s dtype, inside the ball and the range exactly.

    `x` is the clean batch in the float type the model is fed (it must lie
    within `value_range`). Casting a float64 point that lies inside can round
    it out by a fraction of a unit in the last place; the entries that then
    fail the float64 comparison `|x_adv - x| <= eps` (L2: the example's
    norm), or the range, are moved towards `x`: L-inf and range entries one
    representable value at a time, L2 examples by a shrinking of the
    perturbation, a few times at most; whatever is still outside becomes `x`
    itself. So no attack ever returns a point outside, by any rounding.

    >>> x = np.array([[0.5]], "float32")
    >>> out = cast_inside(np.array([[0.6]]), x, 0.1, "linf", (0, 1))
    >>> # float32(0.6) is 0.60000002384..., 1e-8 further than 0.5 + 0.1
    >>> out.dtype.name, bool(float(out[0, 0]) - 0.5 <= 0.1), float(out[0, 0]) < 0.6
    ('float32', True, True)
    """
    x = np.asarray(x)
    x64 = x.astype(np.float64)
    out = np.asarray(x_adv).astype(x.dtype)
    for attempt in range(_REPAIRS):
        bad = _violations(out, x64, eps, norm, value_range)
        if not bad.any():
            return out
        if norm == "l2":
            rows = bad.reshape(len(bad), -1).any(axis=1)
            delta = out[rows].astype(np.float64) - x64[rows]
            norms = np.maximum(l2_norms(delta), _TINY)
            scale = np.minimum(eps / norms, 1.0) * (1.0 - 1e-7 * 10.0**attempt)
            out[rows] = (x64[rows] + delta * _per_example(scale, delta.ndim)).astype(
                x.dtype
            )
            bad = _violations(out, x64, eps, norm, value_range)
        out = np.where(bad, np.nextafter(out, x), out)
    bad = _violations(out, x64, eps, norm, value_range)
    return np.where(bad, x, out)


def improves(success, objective, best_success, best_objective):
    """Which examples beat the best point so far: a success (misclassified,
    or the target reached) beats a failure and is never replaced after;
    between two failures the higher objective (the loss; minus the loss for
    a targeted attack) wins.

    Keeping an example's first success makes the result of each example
    independent of the others in its batch (an attack may stop a batch as
    soon as all of its examples are broken).

    >>> improves(np.array([True, False, False, True]), np.array([0.1, 2.0, 1.5, 3.0]),
    ...          np.array([False, True, False, True]), np.array([1.0, 0.1, 1.0, 2.0])
    ...          ).tolist()
    [True, False, True, False]
    """
    success = np.asarray(success, bool)
    best_success = np.asarray(best_success, bool)
    higher = np.asarray(objective) > np.asarray(best_objective)
    return ~best_success & (success | higher)
