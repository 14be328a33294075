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


# -- the Square attack's random search (Andriushchenko et al. 2020) -------------

__all__ += [
    "pseudo_gaussian",
    "square_fraction",
    "square_l2_window",
    "square_side",
    "stripe_signs",
]

# The Square attack's schedule of the square's size: the iteration, rescaled
# to a run of 10,000, is compared with these bounds; past the k-th one the
# fraction is `p_init / 2**k`.
_SQUARE_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init, iteration, queries):
    """The fraction of an image's pixels the Square attack's square covers
    at `iteration` (0-based) of a run of `queries`.

    The paper's piecewise-constant schedule, rescaled to the run: with `t =
    iteration * 10000 // queries` (integer arithmetic; the reference
    computes `int(iteration / queries * 10000)` in floating point), the
    fraction is `p_init` while `t <= 10`, halves past each of 10, 50, 200,
    500, 1000, 2000, 4000, 6000 and 8000, and stays at `p_init / 512` after
    the last.

    >>> # 5000 queries: t = 2 * iteration. t = 10 -> 0.8; t = 12 -> 0.8 / 2;
    >>> # t = 52 -> 0.8 / 4; t = 9998 -> 0.8 / 512 = 0.0015625
    >>> [square_fraction(0.8, i, 5000) for i in (5, 6, 26, 4999)]
    [0.8, 0.4, 0.2, 0.0015625]
    >>> # 1000 queries: t = 10 * iteration. t = 1000 -> 0.8 / 16 = 0.05;
    >>> # t = 1010 -> 0.8 / 32 = 0.025
    >>> [square_fraction(0.8, i, 1000) for i in (1, 2, 100, 101)]
    [0.8, 0.4, 0.05, 0.025]
    """
    t = iteration * 10000 // queries
    halvings = sum(t > bound for bound in _SQUARE_BOUNDS)
    return p_init / 2**halvings


def square_side(fraction, height, width):
    """The side of a square covering about `fraction` of a `height x width`
    image: `round(sqrt(fraction * height * width))`, at least 1 and at most
    the shorter side.

    >>> # 8x8, p = 0.8: sqrt(51.2) = 7.16 -> 7; p = 0.05: sqrt(3.2) = 1.79 -> 2;
    >>> # p = 0.8 / 512: sqrt(0.1) = 0.32 -> 0 -> 1; p = 1 -> 8
    >>> [square_side(p, 8, 8) for p in (0.8, 0.05, 0.8 / 512, 1.0)]
    [7, 2, 1, 8]
    >>> square_side(0.8, 1, 64)   # a one-row image: sqrt(51.2) -> 7, capped at 1
    1
    """
    side = int(round(np.sqrt(fraction * height * width)))
    return min(max(side, 1), height, width)


def stripe_signs(shape, rng):
    """Random signs for the Square attack's L-inf start: one `+1` or `-1` per
    example, column and channel of a batch of images `shape = (n, height,
    width, channels)`, the same down each column ("vertical stripes").

    Returns an array of shape `(n, 1, width, channels)`, to broadcast over
    the rows.

    >>> signs = stripe_signs((2, 3, 4, 1), np.random.default_rng(0))
    >>> signs.shape, sorted(set(signs.ravel().tolist()))
    ((2, 1, 4, 1), [-1.0, 1.0])
    >>> # x + eps * signs on a constant image: each column is 0.25 or 0.75
    >>> image = (0.5 + 0.25 * np.broadcast_to(signs, (2, 3, 4, 1)))[0, :, :, 0]
    >>> bool(np.all(image == image[0])), sorted(set(image.ravel().tolist()))
    (True, [0.25, 0.75])
    """
    n, _, width, channels = shape
    return rng.choice(np.array([-1.0, 1.0]), size=(n, 1, width, channels))


def pseudo_gaussian(rows, cols):
    """A `rows x cols` bump of unit Euclidean norm, highest at the centre
    `(rows // 2, cols // 2)`: the entry at Chebyshev distance `r` from the
    centre is `sum_{k=r+1}^{K} 1 / k**2` (before normalising), with `K =
    max(rows // 2, cols // 2) + 1`.

    >>> # 3 x 3: K = 2; the centre (r = 0) is 1 + 1/4 = 1.25, the ring
    >>> # (r = 1) is 1/4: the ring over the centre is 0.2
    >>> bump = pseudo_gaussian(3, 3)
    >>> (bump / bump.max()).round(6).tolist()
    [[0.2, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 0.2]]
    >>> # the norm: sqrt(1.25**2 + 8 * 0.25**2) = sqrt(2.0625) = 1.436...
    >>> round(float(bump[1, 1]), 4), round(float(np.sum(bump**2)), 12)
    (0.8704, 1.0)
    """
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols))
    top = max(rows // 2, cols // 2) + 1
    i = np.abs(np.arange(rows) - rows // 2)[:, None]
    j = np.abs(np.arange(cols) - cols // 2)[None, :]
    ring = np.maximum(i, j)
    tail = np.cumsum(1.0 / np.arange(top, 0, -1) ** 2)[::-1]  # tail[r]
    bump = tail[ring]
    return bump / np.sqrt(np.sum(bump**2))


def square_l2_window(side):
    """The Square attack's L2 update on a `side x side` square, of unit
    Euclidean norm: a `pseudo_gaussian` bump on the top `side // 2` rows and
    minus one on the other rows, each half of the same norm (the caller may
    transpose it and multiply it by a sign per channel).

    >>> # side 3: the top row is pseudo_gaussian(1, 3), K = 2: (1/4, 1 + 1/4,
    >>> # 1/4) over its norm sqrt(1.6875); the two bottom rows are
    >>> # -pseudo_gaussian(2, 3), centred at (1, 1): row 0 all at distance 1
    >>> # (1/4), row 1 as the top row, over sqrt(1.6875 + 3 / 16) = sqrt(1.875)
    >>> window = square_l2_window(3)
    >>> (window[:1] / window[0, 1]).round(6).tolist()
    [[0.2, 1.0, 0.2]]
    >>> (window[1:] / window[2, 1]).round(6).tolist()
    [[0.2, 0.2, 0.2], [0.2, 1.0, 0.2]]
    >>> # the bottom's peak is sqrt(1.6875 / 1.875) = sqrt(0.9) of the top's
    >>> round(float(-window[2, 1] / window[0, 1]), 6), round(0.9**0.5, 6)
    (0.948683, 0.948683)
    >>> # each half had norm 1, so after normalising the whole: 0.5 and 0.5
    >>> [round(float(np.sum(w**2)), 12) for w in (window[:1], window[1:])]
    [0.5, 0.5]
    >>> square_l2_window(1).tolist()   # no top half: the bottom alone
    [[-1.0]]
    """
    window = np.concatenate(
        [
            pseudo_gaussian(side // 2, side),
            -pseudo_gaussian(side - side // 2, side),
        ]
    )
    return window / np.sqrt(np.sum(window**2))
