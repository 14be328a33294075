"""keras_harden.robust._device_loop: PGD's compiled step loop, against the
NumPy step functions (keras_harden.robust.steps) on fixed inputs and against
a NumPy re-implementation of the same loop on a small random net."""

import keras
import numpy as np
import pytest

from keras_harden._gradients import loss_and_input_gradients
from keras_harden.robust import _common, _device_loop, steps
from tests.robust._models import small_mlp


def _np(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _tensor(value):
    return keras.ops.convert_to_tensor(np.asarray(value, "float32"))


POINT = np.array([[0.5, 0.5, 0.5], [0.2, 0.9, 0.0]], "float32")
GRADIENT = np.array([[2.0, -0.1, 0.0], [3.0, 0.0, -4.0]], "float32")


def test_the_linf_step_is_the_sign_step():
    # row 0: 0.5 + 0.25 * (1, -1, 0); row 1: (0.2, 0.9, 0) + 0.25 * (1, 0, -1)
    got = _np(_device_loop.ascent_step(_tensor(POINT), _tensor(GRADIENT), 0.25, "linf"))
    np.testing.assert_allclose(got, [[0.75, 0.25, 0.5], [0.45, 0.9, -0.25]])
    np.testing.assert_allclose(got, steps.sign_step(POINT, GRADIENT, 0.25), atol=1e-7)


def test_the_l2_step_is_the_unit_gradient_step_and_a_zero_gradient_stays():
    # row 1: ||(3, 0, -4)|| = 5, unit (0.6, 0, -0.8), times 0.5 is (0.3, 0, -0.4);
    # row 0's gradient set to 0: no move. A gradient of 1e30 (whose square
    # overflows float32) still gives the unit direction.
    gradient = GRADIENT.copy()
    gradient[0] = 0.0
    got = _np(_device_loop.ascent_step(_tensor(POINT), _tensor(gradient), 0.5, "l2"))
    np.testing.assert_allclose(got, [[0.5, 0.5, 0.5], [0.5, 0.9, -0.4]], atol=1e-7)
    np.testing.assert_allclose(got, steps.l2_step(POINT, gradient, 0.5), atol=1e-7)
    huge = _np(
        _device_loop.ascent_step(_tensor(POINT), _tensor(GRADIENT * 1e30), 0.5, "l2")
    )
    np.testing.assert_allclose(huge[1], [0.5, 0.9, -0.4], atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("value_range", [(0.0, 1.0), None])
def test_the_projection_is_the_numpy_projection(norm, value_range):
    # L-inf, eps 0.1 around 0.5 and the range [0, 1]: (0.9, 0.2, 0.55) ->
    # (0.6, 0.4, 0.55). L2 around 0: (6, 8) has length 10 -> (3, 4) at eps 5,
    # then clipped to [0, 1] -> (1, 1).
    centre = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]], "float32")
    point = np.array([[0.9, 0.2, 0.55], [6.0, 8.0, 0.0]], "float32")
    eps = 0.1 if norm == "linf" else 5.0
    low, high = value_range if value_range else (None, None)
    got = _np(
        _device_loop.project(_tensor(point), _tensor(centre), eps, norm, low, high)
    )
    want = steps.project(point, centre, eps, norm, value_range)
    np.testing.assert_allclose(got, want, atol=1e-6)
    if norm == "linf":
        np.testing.assert_allclose(got[0], [0.6, 0.4, 0.55], atol=1e-7)
    elif value_range is None:
        np.testing.assert_allclose(got[1], [3.0, 4.0, 0.0], atol=1e-6)
    else:
        np.testing.assert_allclose(got[1], [1.0, 1.0, 0.0], atol=1e-6)


def test_the_best_point_update_follows_improves():
    # steps.improves' example: a new success beats a failure (row 0), an old
    # success is kept (rows 1 and 3), a higher loss beats a failure (row 2).
    success = np.array([True, False, False, True])
    objective = np.array([0.1, 2.0, 1.5, 3.0], "float32")
    best_success = np.array([False, True, False, True])
    best_objective = np.array([1.0, 0.1, 1.0, 2.0], "float32")
    point = np.full((4, 2), 1.0, "float32")
    best_point = np.zeros((4, 2), "float32")
    got = [
        _np(v)
        for v in _device_loop.update_best(
            _tensor(best_point),
            keras.ops.convert_to_tensor(best_success),
            _tensor(best_objective),
            _tensor(point),
            keras.ops.convert_to_tensor(success),
            _tensor(objective),
        )
    ]
    better = steps.improves(success, objective, best_success, best_objective)
    assert better.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(got[0], np.where(better[:, None], point, best_point))
    assert got[1].tolist() == [True, True, False, True]
    np.testing.assert_allclose(got[2], [0.1, 0.1, 1.5, 2.0])


# -- the whole loop against a NumPy re-implementation --------------------------


def _reference(task, centre, start, labels, best, step_size, n_steps):
    """The same loop on the host: `loss_and_input_gradients` per step and the
    NumPy `steps` maths, each iterate kept in float32."""
    points, success, objective = (np.array(b) for b in best)
    objective = objective.astype(np.float64)
    point = np.array(start, "float32")

    def judge(losses, outputs):
        predicted = outputs.argmax(-1)
        if task.targeted:
            return predicted == labels, -losses.astype(np.float64)
        return predicted != labels, losses.astype(np.float64)

    def update(point, hit, value):
        better = steps.improves(hit, value, success, objective)
        points[better], success[better] = point[better], hit[better]
        objective[better] = value[better]

    for _ in range(n_steps):
        if success.all():
            break
        losses, gradient, outputs = loss_and_input_gradients(
            task.model, point, labels, task.loss_fn
        )
        update(point, *judge(losses, outputs))
        direction = -gradient if task.targeted else gradient
        moved = steps.ascent_step(point, direction, step_size, task.norm)
        point = steps.project(
            moved, centre, task.eps, task.norm, task.value_range
        ).astype("float32")
    losses, _, outputs = loss_and_input_gradients(
        task.model, point, labels, task.loss_fn
    )
    update(point, *judge(losses, outputs))
    return points, success, objective


@pytest.fixture(scope="module")
def net():
    # weights drawn with NumPy: the same net on every backend
    model = small_mlp()
    rng = np.random.default_rng(3)
    model.set_weights(
        [rng.normal(0.0, 0.7, w.shape).astype("float32") for w in model.get_weights()]
    )
    return model


@pytest.fixture(scope="module")
def data(net):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(24, 4, 4, 1)).astype("float32")
    labels = _common.forward(net, x).argmax(-1).astype(np.int32)
    return x, labels


@pytest.mark.parametrize(
    "norm, eps, targeted",
    [("linf", 0.08, False), ("l2", 0.2, False), ("linf", 0.1, True)],
)
@pytest.mark.parametrize("segment", [2, 50])
def test_the_device_loop_agrees_with_the_numpy_loop(
    net, data, norm, eps, targeted, segment, monkeypatch
):
    # in segments of 2 steps (the broken examples dropped between them) or
    # in one call: the same result per example
    monkeypatch.setitem(_device_loop.SEGMENTS, keras.backend.backend(), segment)
    x, labels = data
    if targeted:  # the runner-up class of each example
        labels = np.argsort(_common.forward(net, x), -1)[:, -2].astype(np.int32)
    task = _common.Task(net, x, labels, eps, norm, (0, 1), True, 128, targeted)
    rng = np.random.default_rng(1)
    start = task.project(steps.random_point(x, eps, norm, rng), x)
    losses, _, hit = task.evaluate(x, labels)
    best = (x, hit, task.objective(losses))
    step_size, n_steps = 2.5 * eps / 6, 6
    got = _device_loop.run_pgd(task, x, start, labels, best, step_size, n_steps)
    want = _reference(task, x, start, labels, best, step_size, n_steps)
    # a mixed case: some examples broken, some not
    assert 0 < want[1].sum() < len(x)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=1e-6)


def test_the_device_loop_reads_the_current_weights(data):
    # The compiled loop is cached per model: after the weights change (as
    # between epochs of training) it must attack the new model. The clean
    # judgement (a forward pass through the loop run for no step) is the
    # host's.
    x, labels = data
    model = small_mlp(seed=4)
    for scale in (1.0, -2.0):
        if scale != 1.0:
            model.set_weights([w * scale for w in model.get_weights()])
        task = _common.Task(model, x, labels, 0.1, "linf", (0, 1), True, 128)
        losses, _, hit = task.evaluate(x, labels)
        best = (x, hit, task.objective(losses))
        objective, success = _device_loop.judge(task, x, labels)
        np.testing.assert_array_equal(success, hit)
        np.testing.assert_allclose(objective, task.objective(losses), rtol=1e-5)
        got = _device_loop.run_pgd(task, x, x, labels, best, 0.05, 4)
        want = _reference(task, x, x, labels, best, 0.05, 4)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_an_unsupported_backend_is_named(net, data, monkeypatch):
    x, labels = data
    task = _common.Task(net, x, labels, 0.1, "linf", (0, 1), True, 128)
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match="Received: backend='torch'"):
        _device_loop.judge(task, x, labels)
