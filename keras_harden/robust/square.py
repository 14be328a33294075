"""`square`: the Square attack (Andriushchenko et al. 2020), a random search
that reads only the model's outputs.

A model can look robust to the gradient attacks because its gradient is
useless (zero, noisy or misleading: quantised or saturated inputs, a
non-differentiable defence), not because no adversarial input is near:
"gradient masking". The Square attack takes no gradient. It starts from a
vertex of the ball and, one query at a time, redraws the perturbation on a
random square of the image, keeping the change when the margin `z_y -
max_{i != y} z_i` falls; an example stops as soon as the model misclassifies
it. Where it breaks examples that PGD could not, the gradient is masked.

- L-inf: the start is "vertical stripes", `x + eps * s` with one random sign
  `s` per column and channel; each query sets the square, in each channel,
  to `x + eps` or `x - eps` (a random sign per channel; redrawn when it would
  change nothing).
- L2: the start is a grid of tiles, each a signed `steps.square_l2_window`
  (a bump and its negative), scaled to length `eps`; each query moves the
  mass of a second random square into the first, re-shaped as a signed
  window added to the first square's old direction, and the whole
  perturbation is scaled back to length `eps`.
- The square's side: `steps.square_side(steps.square_fraction(p_init, i,
  queries), height, width)`, a fraction `p_init` of the pixels halved at the
  reference's points of the run (rescaled to `queries`); for L2 at least 3
  and odd (then at most the image side).

The square's position and signs are drawn per example, as the reference's
L-inf code does (its L2 code and AutoAttack draw one position per batch),
uniformly over every position that fits (the reference's L-inf code never
places it against the last row or column). `queries` counts the start, as
the reference does.
"""

import numpy as np

from keras_harden._validation import check_int, check_number
from keras_harden.robust import _common
from keras_harden.robust.steps import (
    l2_norms,
    square_fraction,
    square_l2_window,
    square_side,
    stripe_signs,
)

__all__ = ["margins", "square"]

# Redraws of the signs of an L-inf square that would change nothing (each
# redraw changes it with probability >= 1/2).
_REDRAWS = 16
# log p below this counts as log of this (as the losses' floor).
_FLOOR = 1e-30
_TINY = 1e-12
# The L2 start's tiles: the image's shorter side over this (at least 1).
_L2_TILES = 5
# The L2 search's least image side: its squares are at least 3 pixels wide,
# and on a 3 x 3 image the one square left can only blend the perturbation
# with four fixed patterns.
_L2_LEAST_SIDE = 4


def margins(outputs, labels, from_logits):
    """The margin `z_y - max_{i != y} z_i` of each example, in float64: on
    the logits, or on `log p` (floored at 1e-30) for probabilities, the
    logits up to a shift per example. Negative means misclassified (zero is
    a tie).

    >>> outputs = np.array([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]])
    >>> margins(outputs, np.array([0, 2]), True).tolist()  # 2 - 1; 1 - 3
    [1.0, -2.0]
    >>> # probabilities (0.5, 0.25, 0.25), label 0: log 0.5 - log 0.25 = log 2
    >>> float(margins(np.array([[0.5, 0.25, 0.25]]), np.array([0]), False)[0])
    0.6931471805599453
    """
    values = np.asarray(outputs, np.float64)
    if not from_logits:
        values = np.log(np.maximum(values, _FLOOR))
    rows = np.arange(len(values))
    true = values[rows, labels]
    others = values.copy()
    others[rows, labels] = -np.inf
    return true - others.max(axis=1)


def _image_shape(shape):
    """`(height, width, channels)` of one example: images `(n, h, w, c)` as
    they are, `(n, h, w)` as one channel, flat `(n, d)` as one row of `d`
    pixels (so the L-inf start is a random vertex and a square is one
    feature).

    >>> _image_shape((5, 8, 8, 3)), _image_shape((5, 8, 8)), _image_shape((5, 10))
    ((8, 8, 3), (8, 8, 1), (1, 10, 1))
    """
    if len(shape) == 4:
        return tuple(shape[1:])
    if len(shape) == 3:
        return (shape[1], shape[2], 1)
    if len(shape) == 2:
        return (1, shape[1], 1)
    raise ValueError(
        "`x` must be images `(n, height, width, channels)` (channels last), "
        "`(n, height, width)` or flat vectors `(n, features)`. Received: "
        f"x.shape={tuple(shape)}"
    )


def _l2_side(fraction, height, width):
    """The L2 square's side: `round(sqrt(fraction * h * w))`, at least 3,
    made odd, then at most the shorter side.

    >>> # 8x8: p = 0.8 -> 7; p = 0.2 -> sqrt(12.8) = 3.6 -> 4 -> 5;
    >>> # p = 0.01 -> 1 -> 3; a 1 x 10 row: 3, capped at 1
    >>> [_l2_side(0.8, 8, 8), _l2_side(0.2, 8, 8), _l2_side(0.01, 8, 8),
    ...  _l2_side(0.8, 1, 10)]
    [7, 5, 3, 1]
    """
    side = max(int(round(np.sqrt(fraction * height * width))), 3)
    side += 1 - side % 2
    return min(side, height, width)


def square(
    model,
    x,
    y,
    eps,
    norm="linf",
    queries=1000,
    p_init=0.8,
    value_range=(0, 1),
    from_logits=None,
    batch_size=128,
    seed=None,
):
    """The Square attack, L-inf or L2, untargeted: a random search on the
    margin that uses the model's outputs only (no gradient).

    From a random vertex of the ball (L-inf: vertical stripes of `+-eps`;
    L2: a grid of signed bumps of total length `eps`), each query changes
    the perturbation on one random square per example (see the module) and
    keeps the change when the margin `z_y - max_{i != y} z_i` (on logits, or
    on log-probabilities) falls. An example stops at the first point the
    model misclassifies, which is returned; an example never broken comes
    back at its point of lowest margin (`x` itself when no query went below
    its margin); an example misclassified to begin with is returned as it
    is. `eps = 0` returns `x`.

    Every returned point lies within `eps` of its `x` in the `norm` and
    inside `value_range`, exactly.

    Each query is one forward pass (inference mode) of the examples still
    unbroken, compiled once per model (a `tf.function`; on JAX a jitted
    `stateless_call` over a few padded batch sizes), so it works on a model
    whose gradient is zero or useless. Its cost: up to `queries` forward
    passes of a batch, plus NumPy work on the host per query.

    Args:
        model: a Keras classifier with one input and one output `(batch,
            classes)`, logits or probabilities.
        x: the clean inputs, an array inside `value_range`: images `(n,
            height, width, channels)` (channels last), `(n, height, width)`
            (one channel) or flat vectors `(n, features)` (one row of
            pixels: a square is then one feature; L-inf only). Other ranks
            raise a `ValueError`, as do L2 images under 4 x 4.
        y: their labels: integers `(n,)` or one-hot `(n, classes)`.
        eps: number >= 0, the radius of the ball.
        norm: `"linf"` or `"l2"`.
        queries: int >= 1, model evaluations per example after the clean
            one: the start, then `queries - 1` squares. AutoAttack's
            standard run uses 5000; the default 1000 costs a fifth of the
            time, and on an undefended net nearly every example that falls,
            falls within it (a digits conv net, 397 images, L-inf: 0.509
            accuracy after 1000 queries and after 5000 at eps 0.1; 0.018 and
            0.013 at eps 0.2).
        p_init: number in (0, 1], the fraction of the pixels the first
            squares cover (AutoAttack's 0.8); halved along the run (see
            `steps.square_fraction`).
        value_range: `(low, high)` of valid inputs, or None for no clipping.
        from_logits: whether the outputs are logits; None detects it (rows
            in [0, 1] that sum to 1 are probabilities).
        batch_size: int >= 1, examples per forward pass.
        seed: None, an int (the same draws on every call) or a
            `keras.random.SeedGenerator` (new ones on every call).

    Returns:
        The adversarial inputs, a NumPy array of `x`'s shape and float dtype.

    Example:

    >>> from keras_harden.robust.square import square
    >>> dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
    ...     [[1.0, 2.0], [1.0, -1.0]]))   # z0 = x0 + x1, z1 = 2 x0 - x1
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> x = np.array([[0.5, 0.5]], "float32")   # z = (1, 0.5): class 0
    >>> # the margin z0 - z1 = 2 x1 - x0 falls as x0 rises and x1 falls; of
    >>> # the corners of the ball, (0.75, 0.25) gives z = (1, 1.25): class 1
    >>> x_adv = square(model, x, [0], eps=0.25, queries=20, seed=0)
    >>> x_adv.tolist(), model.predict(x_adv, verbose=0).argmax(-1).tolist()
    ([[0.75, 0.25]], [1])

    References:
        Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a
        query-efficient black-box adversarial attack via random search"
        (ECCV 2020), arXiv:1912.00049; github.com/max-andr/square-attack,
        and AutoAttack's `autoattack/square.py` (github.com/fra31/auto-attack).
    """
    if np.ndim(x) > 4:  # before the model sees it
        _image_shape(np.shape(x))
    task = _common.Task(model, x, y, eps, norm, value_range, from_logits, batch_size)
    queries = check_int("queries", queries, minimum=1)
    p_init = check_number("p_init", p_init, low=0, high=1, low_open=True)
    image = _image_shape(task.x.shape)
    if task.norm == "l2" and min(image[:2]) < _L2_LEAST_SIDE:
        raise ValueError(
            "The L2 Square attack needs images of at least 4 x 4 pixels (its "
            "squares have a side of 3 or more, and must have room to move); "
            "for flat vectors use norm='linf'. Received: "
            f"x.shape={task.x.shape}"
        )
    generator = _common.rng(seed)
    search = _linf_search if task.norm == "linf" else _l2_search

    def query(points, labels):
        outputs = task.outputs(points.reshape((len(points), *task.x.shape[1:])))
        success = np.argmax(outputs, axis=-1) != labels
        return margins(outputs, labels, task.from_logits), success

    def attack_batch(xb, labels):
        margin, success = query(xb, labels)
        best = _common.Best(xb, success, -margin)
        index = np.flatnonzero(~success)
        if index.size and task.eps > 0:
            centre = xb[index].reshape((len(index), *image))
            search(
                task,
                centre,
                labels[index],
                index,
                best,
                query,
                queries,
                p_init,
                generator,
            )
        return best.points

    return task.run(attack_batch)


def _random_windows(generator, k, height, width, side):
    """`(rows, cols, mask)` of one random `side x side` square per example:
    the row and column indices `(k, side)` and the mask `(k, h, w, 1)`."""
    top = generator.integers(0, height - side + 1, size=k)
    left = generator.integers(0, width - side + 1, size=k)
    rows = top[:, None] + np.arange(side)
    cols = left[:, None] + np.arange(side)
    in_rows = (np.arange(height) >= top[:, None]) & (
        np.arange(height) < rows[:, -1:] + 1
    )
    in_cols = (np.arange(width) >= left[:, None]) & (
        np.arange(width) < cols[:, -1:] + 1
    )
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return rows, cols, mask


def _run(task, start, labels, index, best, query, propose, queries):
    """The random search from `start`: `propose(i, act, current) ->
    candidates` for the examples `act` still unbroken at iteration `i`; a
    candidate replaces the current point where the margin falls (or the
    model misclassifies it), and every query updates `best`."""
    shape = (len(start), *best.points.shape[1:])
    margin, success = query(start, labels)
    best.update(index, start.reshape(shape), success, -margin)
    current, current_margin = start.copy(), margin
    alive = ~success
    for i in range(queries - 1):
        act = np.flatnonzero(alive)
        if not act.size:
            break
        candidate = propose(i, act, current)
        margin, success = query(candidate, labels[act])
        better = success | (margin < current_margin[act])
        current[act[better]] = candidate[better]
        current_margin[act[better]] = margin[better]
        best.update(
            index[act], candidate.reshape((len(act), *shape[1:])), success, -margin
        )
        alive[act[success]] = False


def _linf_search(task, centre, labels, index, best, query, queries, p_init, generator):
    """L-inf: every coordinate is `x + eps` or `x - eps` (clipped to the
    range), so the two are computed once, inside the ball and the range
    exactly (`Task.project`), and every point is a choice between them."""
    k, height, width, channels = centre.shape
    wide = centre.astype(np.float64)
    high = task.project(wide + task.eps, centre)
    low = task.project(wide - task.eps, centre)
    start = np.where(stripe_signs(centre.shape, generator) > 0, high, low)

    def signed(act, signs, mask, current):
        return np.where(mask, np.where(signs > 0, high[act], low[act]), current)

    def propose(i, act, current):
        side = square_side(square_fraction(p_init, i, queries), height, width)
        _, _, mask = _random_windows(generator, len(act), height, width, side)
        here = current[act]
        signs = generator.choice(np.array([-1.0, 1.0]), size=(len(act), 1, 1, channels))
        candidate = signed(act, signs, mask, here)
        for _ in range(_REDRAWS):
            same = np.all((candidate == here).reshape(len(act), -1), axis=1)
            if not same.any():
                break
            redo = np.flatnonzero(same)
            signs = generator.choice(
                np.array([-1.0, 1.0]), size=(len(redo), 1, 1, channels)
            )
            candidate[redo] = signed(act[redo], signs, mask[redo], here[redo])
        return candidate

    _run(task, start, labels, index, best, query, propose, queries)


def _l2_start(shape, generator):
    """The L2 start's direction (not normalised): a centred grid of as many
    tiles of side `max(min(h, w) // 5, 1)` as fit, each a
    `square_l2_window` (transposed for half of the tiles, at random) times
    a random sign per example and channel."""
    k, height, width, channels = shape
    side = max(min(height, width) // _L2_TILES, 1)
    bump = square_l2_window(side)
    across, down = height // side, width // side
    top, left = (height - across * side) // 2, (width - down * side) // 2
    delta = np.zeros(shape)
    for a in range(across):
        for b in range(down):
            rows = slice(top + a * side, top + (a + 1) * side)
            cols = slice(left + b * side, left + (b + 1) * side)
            delta[:, rows, cols, :] = _signed_bumps(bump, k, channels, generator)
    return delta


def _signed_bumps(bump, k, channels, generator):
    """`(k, s, s, channels)`: `bump` or its transpose (at random per
    example) times a random sign per example and channel."""
    flip = generator.random(k) < 0.5
    shaped = np.where(flip[:, None, None], bump.T, bump)[..., None]
    signs = generator.choice(np.array([-1.0, 1.0]), size=(k, 1, 1, channels))
    return shaped * signs


def _l2_search(task, centre, labels, index, best, query, queries, p_init, generator):
    """L2: the perturbation `delta = point - x` is reshaped one square at a
    time and scaled back to length `eps` (then projected: the range, and
    the rounding of the cast)."""
    k, height, width, channels = centre.shape
    wide = centre.astype(np.float64)
    eps = task.eps

    def onto_sphere(delta, x64, x):
        norms = np.maximum(l2_norms(delta), _TINY).reshape(-1, 1, 1, 1)
        return task.project(x64 + eps * delta / norms, x)

    start = onto_sphere(_l2_start(centre.shape, generator), wide, centre)

    def propose(i, act, current):
        n = len(act)
        side = _l2_side(square_fraction(p_init, i, queries), height, width)
        rows, cols, first = _random_windows(generator, n, height, width, side)
        _, _, second = _random_windows(generator, n, height, width, side)
        x64 = wide[act]
        delta = current[act].astype(np.float64) - x64
        picked = np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]
        old = delta[picked]  # (n, side, side, channels)
        old_norms = np.sqrt(np.sum(old**2, axis=(1, 2), keepdims=True))
        image_norms = l2_norms(delta).reshape(-1, 1, 1, 1)
        either = first | second
        moved = np.sqrt(np.sum((delta * either) ** 2, axis=(1, 2), keepdims=True))
        bumps = _signed_bumps(square_l2_window(side), n, channels, generator)
        new = bumps + old / (old_norms + _TINY)
        new_norms = np.maximum(
            np.sqrt(np.sum(new**2, axis=(1, 2), keepdims=True)), _TINY
        )
        # the first square takes the mass of both squares, plus an even share
        # per channel of what the clipping left of the budget
        spare = np.maximum(eps**2 - image_norms**2, 0.0) / channels
        new = new / new_norms * np.sqrt(spare + moved**2)
        delta = np.where(second, 0.0, delta)
        delta[picked] = new
        return onto_sphere(delta, x64, centre[act])

    _run(task, start, labels, index, best, query, propose, queries)
