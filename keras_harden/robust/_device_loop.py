"""PGD's step loop as one compiled function per batch, on the device.

A host loop pays one compiled gradient call and a round of NumPy maths per
step (and, on an accelerator, a transfer each way). Here the steps run
inside one compiled function (a `tf.function` on TensorFlow, `jax.jit` on
JAX, cached per model, loss, norm, targeting, clipping and input layout) as
one `keras.ops.while_loop`: per iteration the gradient
(`keras_harden._gradients.losses_and_input_gradient`), the best point so
far, the ascent step and the projection, all in the inputs' float type. On
TensorFlow the run goes in segments of `SEGMENTS["tensorflow"]` steps, and
between two the host drops the examples already broken, so the later steps
compute only the others (on the standard digits net of
`benchmarks/robustness.py` this skips about 30% of the work); within a call
the loop stops once every example is broken. The host draws the random
starts and casts the returned points into the ball and the range exactly
(`steps.cast_inside`).

The maths are the `steps` functions written with `keras.ops`: `sign_step`,
`l2_step`, `project` and the best-point rule of `steps.improves`.
"""

import weakref

import keras
import numpy as np

from keras_harden._gradients import losses_and_input_gradient
from keras_harden.robust import _common

# A per-example norm below this counts as zero (as in `steps`).
_TINY = 1e-12
# Steps per compiled call, per backend (None: the whole run); between two
# calls the broken examples are dropped. On TensorFlow (one trace for any
# batch size) this saved 15-30% of the CPU time of a 20-step run on the
# digits nets; on JAX each smaller set is one more compile (the first call
# took 6.8 s instead of 3.5 s) for a 15% warm gain, and on an accelerator a
# smaller batch saves little time, so JAX runs the steps in one call.
SEGMENTS = {"tensorflow": 5, "jax": None}


def _per_example(value, ndim):
    """A `(batch,)` tensor shaped to broadcast over a batch of rank `ndim`."""
    return keras.ops.reshape(value, (-1,) + (1,) * (ndim - 1))


def _flat(a):
    return keras.ops.reshape(a, (-1, int(np.prod(a.shape[1:]))))


def _l2_norms(a):
    """Per-example Euclidean norms, scaled by the largest entry first so that
    squaring neither overflows nor underflows the float type."""
    flat = _flat(a)
    largest = keras.ops.max(keras.ops.abs(flat), axis=1)
    safe = keras.ops.where(largest > 0, largest, keras.ops.ones_like(largest))
    scaled = flat / keras.ops.expand_dims(safe, 1)
    return largest * keras.ops.sqrt(keras.ops.sum(scaled * scaled, axis=1))


def ascent_step(point, gradient, step_size, norm):
    """`point + step_size * sign(gradient)` (L-inf) or `point + step_size *
    gradient / ||gradient||` per example (L2; a zero gradient does not
    move): `steps.ascent_step` in `keras.ops`."""
    if norm == "linf":
        return point + step_size * keras.ops.sign(gradient)
    norms = _per_example(_l2_norms(gradient), len(point.shape))
    direction = keras.ops.where(
        norms > _TINY, gradient / keras.ops.maximum(norms, _TINY), 0.0
    )
    return point + step_size * keras.ops.cast(direction, point.dtype)


def project(point, centre, eps, norm, low=None, high=None):
    """Into the `norm` ball of radius `eps` around `centre`, then into `[low,
    high]` (no clip when they are None): `steps.project` in `keras.ops`."""
    delta = point - centre
    if norm == "linf":
        inside = centre + keras.ops.clip(delta, -eps, eps)
    else:
        norms = _l2_norms(delta)
        scale = keras.ops.where(norms > eps, eps / keras.ops.maximum(norms, _TINY), 1.0)
        scale = keras.ops.cast(scale, point.dtype)
        inside = centre + delta * _per_example(scale, len(point.shape))
    if low is None:
        return inside
    return keras.ops.clip(inside, low, high)


def update_best(best_point, best_success, best_objective, point, success, objective):
    """The best points after one more iterate (`steps.improves`): a success
    beats a failure and is kept for good; between failures the higher
    objective wins. Returns `(best_point, best_success, best_objective)`."""
    better = keras.ops.logical_and(
        keras.ops.logical_not(best_success),
        keras.ops.logical_or(success, objective > best_objective),
    )
    mask = _per_example(better, len(point.shape))
    return (
        keras.ops.where(mask, point, best_point),
        keras.ops.where(better, success, best_success),
        keras.ops.where(better, objective, best_objective),
    )


def _judge(outputs, losses, labels, targeted):
    """`(success, objective)` of a forward pass."""
    predicted = keras.ops.cast(keras.ops.argmax(outputs, axis=-1), labels.dtype)
    if targeted:
        return keras.ops.equal(predicted, labels), -losses
    return keras.ops.not_equal(predicted, labels), losses


def pgd_loop(
    model,
    loss_fn,
    centre,
    start,
    labels,
    best,
    eps,
    step_size,
    steps,
    final,
    low,
    high,
    norm,
    targeted,
):
    """`steps` PGD iterations from `start`, traceable (`keras.ops` only).

    Per iteration: the losses, gradient and outputs at the point, the best
    point updated with them, then one ascent step on the objective (the
    loss; minus it when `targeted`) and the projection. After the last step,
    when `final`, the last point is judged too. The loop stops once every example is a
    success (a success is never replaced, so the result of each example
    does not depend on when its batch stops).

    Args:
        model, loss_fn: the classifier and its per-example loss.
        centre: the clean batch; start: the first iterate (inside the ball
            and the range); labels: int32 labels (targets when targeted).
        best: `(points, success, objective)` so far, per example.
        eps, step_size, low, high: scalars in the batch's float type (`low`
            None for no clipping); steps: an int32 scalar; final: a bool
            scalar.
        norm: "linf" or "l2"; targeted: bool.

    Returns:
        `(point, best_points, best_success, best_objective)`: the last
        iterate (to go on from) and the best after the run.
    """

    def cond(i, point, best_point, best_success, best_objective):
        return keras.ops.logical_and(
            i < steps, keras.ops.logical_not(keras.ops.all(best_success))
        )

    def body(i, point, best_point, best_success, best_objective):
        losses, gradient, outputs = losses_and_input_gradient(
            model, point, labels, loss_fn
        )
        success, objective = _judge(outputs, losses, labels, targeted)
        best_point, best_success, best_objective = update_best(
            best_point, best_success, best_objective, point, success, objective
        )
        direction = -gradient if targeted else gradient
        moved = ascent_step(point, direction, step_size, norm)
        point = project(moved, centre, eps, norm, low, high)
        return i + 1, point, best_point, best_success, best_objective

    _, point, *best = keras.ops.while_loop(
        cond, body, (keras.ops.zeros((), "int32"), start, *best)
    )

    def judge_last():
        outputs = model(point, training=False)
        success, objective = _judge(outputs, loss_fn(labels, outputs), labels, targeted)
        return update_best(*best, point, success, objective)

    best = keras.ops.cond(final, judge_last, lambda: tuple(best))
    return (point, *best)


_TF_LOOPS = weakref.WeakKeyDictionary()
_JAX_LOOPS = weakref.WeakKeyDictionary()


def _compiled(model, loss_fn, norm, targeted, clip, x):
    """The compiled `pgd_loop` for `model` and `loss_fn`, cached per model
    (held weakly) and per norm, targeting, clipping and input layout: a
    `tf.function` on TensorFlow (one trace for any batch size), `jax.jit`
    with the variables as arguments on JAX (one compile per batch shape).
    The function takes and returns backend tensors."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise NotImplementedError(
            "The attacks' compiled loop is implemented for the TensorFlow and "
            f"JAX backends only. Received: backend={backend!r}."
        )
    cache = _TF_LOOPS if backend == "tensorflow" else _JAX_LOOPS
    per_model = cache.setdefault(model, {})
    key = (id(loss_fn), norm, targeted, clip, tuple(x.shape[1:]), str(x.dtype))
    if key in per_model:
        return per_model[key][1]
    model_ref = weakref.ref(model)

    def run(centre, start, labels, points, success, objective, *scalars):
        eps, step_size, steps, final, low, high = scalars
        if not clip:
            low = high = None
        return pgd_loop(
            model_ref(),
            loss_fn,
            centre,
            start,
            labels,
            (points, success, objective),
            eps,
            step_size,
            steps,
            final,
            low,
            high,
            norm,
            targeted,
        )

    if backend == "tensorflow":
        import tensorflow as tf

        batch = tf.TensorSpec((None, *x.shape[1:]), x.dtype)
        scalar = tf.TensorSpec((), x.dtype)
        signature = [
            batch,
            batch,
            tf.TensorSpec((None,), tf.int32),
            batch,
            tf.TensorSpec((None,), tf.bool),
            tf.TensorSpec((None,), x.dtype),
            scalar,
            scalar,
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((), tf.bool),
            scalar,
            scalar,
        ]
        # XLA (jit_compile=True) ran this loop 2x slower on CPU; the plain
        # graph runs any batch size without retracing
        function = tf.function(run, input_signature=signature).get_concrete_function()
    else:
        import jax

        def stateless(trainable, non_trainable, *args):
            current = model_ref()
            mapping = list(
                zip(current.trainable_variables, trainable, strict=True)
            ) + list(zip(current.non_trainable_variables, non_trainable, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return run(*args)

        jitted = jax.jit(stateless)

        def function(*args):
            current = model_ref()
            return jitted(
                [v.value for v in current.trainable_variables],
                [v.value for v in current.non_trainable_variables],
                *args,
            )

    per_model[key] = (loss_fn, function)
    return function


def judge(task, points, labels):
    """`(objective, success)` at `points`, NumPy: the attack's objective
    (the loss; minus it when targeted) in float64 and whether each point is
    misclassified (targeted: classified as its label). A forward pass only:
    the compiled loop run for no step."""
    n = len(points)
    none = (points, np.zeros(n, bool), np.full(n, -np.inf))
    _, success, objective = run_pgd(task, points, points, labels, none, 1.0, 0)
    return objective, success


def run_pgd(task, centre, start, labels, best, step_size, steps):
    """One PGD run of `steps` iterations on a batch, on the device.

    The run goes in segments of `SEGMENTS[backend]` steps; between two, the
    examples already broken are dropped (they are final: a success is never
    replaced), so later segments compute only the unbroken ones.

    Args:
        task: the attack's `_common.Task` (model, loss, eps, norm, range,
            targeting, batch size).
        centre: the clean examples, in `task.x`'s dtype; start: the first
            iterates, inside the ball and the range; labels: their labels.
        best: `(points, success, objective)` so far for these examples.
        step_size: the step; steps: the iterations.

    Returns:
        NumPy `(points, success, objective)`: the best per example after the
        run. The points are in the float type of `centre` but not yet cast
        into the ball exactly (`Task.project` does that).
    """
    dtype = centre.dtype
    clip = task.value_range is not None
    low, high = task.value_range if clip else (0.0, 0.0)
    function = _compiled(
        task.model, task.loss_fn, task.norm, task.targeted, clip, centre
    )
    jax = keras.backend.backend() == "jax"
    segment = SEGMENTS.get(keras.backend.backend()) or max(steps, 1)
    point = np.array(start, dtype)
    labels = np.asarray(labels, np.int32)
    points, success = np.array(best[0], dtype), np.array(best[1], bool)
    objective = np.array(best[2], np.float64)
    done, first = 0, True
    while first or done < steps:  # once at least (no steps: the start judged)
        first = False
        index = np.flatnonzero(~success)
        if not index.size:
            break
        count = min(segment, steps - done)
        done += count
        n = len(index)
        arrays = [
            centre[index],
            point[index],
            labels[index],
            points[index],
            success[index],
            objective[index].astype(dtype),
        ]
        padded = _common._bucket(n, task.batch_size)
        if padded > n and jax:
            # one compile per bucket size: pad with copies of the first row
            extra = np.zeros(padded - n, int)
            arrays = [np.concatenate([a, a[extra]]) for a in arrays]
        scalars = [
            np.asarray(task.eps, dtype),
            np.asarray(step_size, dtype),
            np.asarray(count, np.int32),
            np.asarray(done == steps),
            np.asarray(low, dtype),
            np.asarray(high, dtype),
        ]
        result = function(*[keras.ops.convert_to_tensor(a) for a in arrays + scalars])
        result = [np.asarray(keras.ops.convert_to_numpy(v))[:n] for v in result]
        point[index], points[index], success[index] = result[:3]
        objective[index] = result[3]
    return points, success, objective
