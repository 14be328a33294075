"""Property tests: clipping never raises a norm, AGC's per-unit ratio ends at
or below `clip_factor`, and a skipped step changes nothing."""

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_harden.optimizers import (
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    HardenedOptimizer,
    PercentileClip,
    PerTensorEMAClip,
    UnitwiseClip,
    ZScoreClip,
)
from keras_harden.optimizers import gradient_ops as go

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.too_slow],
)
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
shapes = st.sampled_from([(3,), (2, 3), (3, 1, 2), (2, 2, 2, 3)])

RULES = {
    "value": lambda: ClipByValue(0.5),
    "norm": lambda: ClipByNorm(1.0),
    "global_norm": lambda: ClipByGlobalNorm(1.0),
    "unitwise": lambda: UnitwiseClip(0.05),
    "percentile": lambda: PercentileClip(30.0, history=4),
    "zscore": lambda: ZScoreClip(alpha=0.5, z_threshold=1.0, warmup_steps=1),
    "per_tensor_ema": lambda: PerTensorEMAClip(beta=0.5, warmup_steps=1),
}


def pair(shape):
    return st.tuples(
        hnp.arrays("float32", shape, elements=finite),
        hnp.arrays("float32", shape, elements=finite),
    )


grads_and_weights = shapes.flatmap(lambda s: st.lists(pair(s), min_size=1, max_size=3))


def wrapper(rule, weights):
    variables = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(weights)]
    opt = HardenedOptimizer(keras.optimizers.SGD(1.0), clip=rule)
    opt.build(variables)
    return opt, variables


def norm(a):
    return float(np.sqrt(np.sum(np.square(a.astype("float64")))))


@SETTINGS
@given(
    st.sampled_from(sorted(RULES)), st.lists(grads_and_weights, min_size=1, max_size=3)
)
def test_clipping_never_raises_a_norm(rule, steps):
    weights = [w for _, w in steps[0]]
    opt, variables = wrapper(RULES[rule](), weights)
    for step in steps:
        grads = [g for g, _ in step]
        if len(grads) != len(variables) or grads[0].shape != weights[0].shape:
            continue
        before = [v.numpy().copy() for v in variables]
        opt.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
        applied = [b - v.numpy() for b, v in zip(before, variables, strict=True)]
        # The step is read back through float32 weights: allow one ulp of
        # rounding per weight entry (e.g. 257 - 0.114 in float32).
        ulps = [np.spacing(np.abs(b)).astype("float64") for b in before]
        slack = sum(u.sum() for u in ulps)
        total_in = np.sqrt(sum(norm(g) ** 2 for g in grads))
        total_out = np.sqrt(sum(norm(a) ** 2 for a in applied))
        assert total_out <= total_in * (1 + 1e-5) + 1e-6 + slack
        assert (
            float(opt.clipped_gradient_norm)
            <= float(opt.gradient_norm) * (1 + 1e-6) + 1e-6
        )
        for g, a, u in zip(grads, applied, ulps, strict=True):  # no tensor grows
            assert norm(a) <= norm(g) * (1 + 1e-5) + 1e-4 + u.sum()


@SETTINGS
@given(
    st.sampled_from(
        [
            ((4, 3), False),
            ((3, 2, 4), False),
            ((2, 2, 3, 5), False),
            ((2, 2, 5, 3), True),
            ((6,), False),
        ]
    ),
    st.data(),
    st.sampled_from([0.01, 0.1, 1.0]),
)
def test_agc_unit_ratio_at_most_clip_factor(layout, data, clip_factor):
    shape, transposed = layout
    g = data.draw(hnp.arrays("float32", shape, elements=finite))
    w = data.draw(hnp.arrays("float32", shape, elements=finite))
    eps = 1e-3
    out = go.unitwise_clip(
        keras.ops.convert_to_tensor(g),
        keras.ops.convert_to_tensor(w),
        clip_factor,
        eps,
        transposed,
    )
    g_norm = keras.ops.convert_to_numpy(go.unitwise_norm(out, transposed))
    w_norm = np.maximum(
        keras.ops.convert_to_numpy(
            go.unitwise_norm(keras.ops.convert_to_tensor(w), transposed)
        ),
        eps,
    )
    assert np.all(g_norm / w_norm <= clip_factor * (1 + 1e-5))


@SETTINGS
@given(
    st.sampled_from(sorted(RULES)),
    st.lists(hnp.arrays("float32", (2, 3), elements=finite), min_size=1, max_size=3),
    st.integers(0, 5),
    st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_skipped_step_changes_nothing(rule, history, position, bad):
    opt, variables = wrapper([RULES[rule]()], [np.ones((2, 3), "float32")])
    for g in history:
        opt.apply([keras.ops.convert_to_tensor(g)], variables)
    stats = (
        "gradient_norm",
        "clipped_gradient_norm",
        "skipped_steps",
        "consecutive_nonfinite",
    )
    # Everything but the step statistics: weights, SGD's iteration count and
    # learning rate, the rule's state.
    tracked = [
        v
        for v in list(variables) + list(opt.variables)
        if v.path.split("/")[-1] not in stats
    ]
    before = [v.numpy().copy() for v in tracked]
    poisoned = np.zeros((2, 3), "float32")
    poisoned.flat[position] = bad
    opt.apply([keras.ops.convert_to_tensor(poisoned)], variables)
    for v, b in zip(tracked, before, strict=True):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    assert int(opt.skipped_steps) == 1
