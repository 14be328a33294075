"""TensorFlow-only plumbing for `HardenedOptimizer`, kept in one place.

Everything here is TensorFlow's own machinery (tf.distribute replica and
cross-replica contexts, in-graph assertions, `IndexedSlices`); the gradient
maths stays in `gradient_ops.py` and the clip rules.

How the distributed step works. Under `tf.distribute.MirroredStrategy`,
`Model.fit` calls `optimizer.apply` once per replica (replica context) with
that replica's local gradients. Keras's own TensorFlow optimizer clips those
local gradients and only then sums them across replicas, which is why its
`global_clipnorm` caps each replica's share instead of the step. Here we sum
first (`all_reduce`), run the rules on the summed gradient (every replica
computes the same values from the same inputs), commit the rules' state in a
cross-replica `merge_call`, and, only when the step is finite, hand each
replica `clipped / num_replicas` to the inner optimizer, whose own
all-reduce adds them back up to `clipped` (exactly, for a power-of-two
replica count). Keras's optimizer cannot be called from a cross-replica
context (its `maybe_merge_call` needs a replica context), so this costs a
second all-reduce of the (already clipped) gradient per step.
"""

import tensorflow as tf


def densify(grads):
    """Turns `tf.IndexedSlices` gradients (embeddings) into dense tensors."""
    return [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
    ]


def in_replica_context_of_strategy():
    """True when called per replica under a `tf.distribute` strategy, i.e.
    when gradients are still local to the replica."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def executing_eagerly():
    return tf.executing_eagerly()


def _assign(variable, value):
    return variable.assign(value)


def distributed_apply(optimizer, grads, variables):
    """One hardened step in a replica context: sum, clip, then apply once.

    Args:
        optimizer: the `HardenedOptimizer`.
        grads: this replica's gradients (list, `None` allowed).
        variables: the matching Keras variables.

    Returns:
        The consecutive non-finite count after the step (this replica's
        copy; every replica holds the same value).
    """
    context = tf.distribute.get_replica_context()
    grads = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    if present:
        summed = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
        )
        for i, g in zip(present, summed, strict=True):
            grads[i] = g

    step = optimizer._compute_step(grads, variables)
    targets = [var for var, _ in step.updates]
    share = 1.0 / context.num_replicas_in_sync
    shares = [None if g is None else g * tf.cast(share, g.dtype) for g in step.grads]
    inner = optimizer.inner_optimizer

    def merge_fn(strategy, shares, apply_inner, values):
        for var, value in zip(targets, values, strict=True):
            strategy.extended.update(var.value, _assign, args=(value,), group=False)
        # Every replica computed the same decision from the same summed
        # gradient.
        apply_inner = strategy.experimental_local_results(apply_inner)[0]

        def apply_fn():
            strategy.extended.call_for_each_replica(
                inner.apply, args=(shares, variables)
            )

        # The cond must run here, in the cross-replica context: a cond in a
        # replica context cannot have a branch that calls `merge_call`.
        tf.cond(apply_inner, apply_fn, lambda: None)

    context.merge_call(
        merge_fn, args=(shares, step.apply_inner, [value for _, value in step.updates])
    )
    return step.consecutive_nonfinite


def assert_below_limit(count, limit, message):
    """In-graph check that `count < limit` (raises `InvalidArgumentError`
    with `message` when run). XLA drops assertions, so under
    `jit_compile=True` this is a no-op and the host-side check applies."""
    tf.debugging.Assert(tf.less(count, limit), [message, count])
