"""Shared helpers for the optimizer tests."""

import keras
import numpy as np

from keras_harden.optimizers import HardenedOptimizer


def step_of(rule_or_rules, grads, weights=None, steps=1):
    """Applies `grads` (list of lists of arrays, one list per step) through
    `HardenedOptimizer(SGD(1.0), clip=rule)` and returns (applied steps as
    arrays from the last step, optimizer, variables). With SGD(1.0) the
    applied step is exactly minus the clipped gradient."""
    if weights is None:
        weights = [np.zeros_like(np.asarray(g, "float32")) for g in grads[0]]
    variables = [
        keras.Variable(np.asarray(w, "float32"), name=f"w{i}")
        for i, w in enumerate(weights)
    ]
    opt = HardenedOptimizer(keras.optimizers.SGD(1.0), clip=rule_or_rules)
    opt.build(variables)
    applied = None
    for step_grads in grads[:steps] if steps else grads:
        before = [v.numpy().copy() for v in variables]
        opt.apply(
            [keras.ops.convert_to_tensor(np.asarray(g, "float32")) for g in step_grads],
            variables,
        )
        applied = [b - v.numpy() for b, v in zip(before, variables, strict=True)]
    return applied, opt, variables


def snapshot(optimizer, variables):
    return [np.array(v.numpy()) for v in list(variables) + list(optimizer.variables)]
