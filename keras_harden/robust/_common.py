"""Private wiring shared by the attacks: the argument checks, the labels,
the loss, the batches and the best point found so far.

Every attack builds one `Task` (which checks its arguments and the model),
then runs its per-batch procedure through `Task.run`. The step maths lives in
`steps`; here is what touches Keras.
"""

import numbers
import random
import weakref

import keras
import numpy as np

from keras_harden._gradients import loss_and_input_gradients
from keras_harden._outputs import looks_like_probabilities
from keras_harden._validation import check_bool, check_int, check_number
from keras_harden.robust import steps

_MAX_SEED = 2**31 - 1
# A probability below this counts as this in `-log p` (a floor that float32
# can hold, far below Keras's 1e-7 clip).
_FLOOR = 1e-30


# -- arguments -------------------------------------------------------------------


def check_norm(norm):
    if not isinstance(norm, str) or norm not in steps.NORMS:
        raise ValueError(f"`norm` must be 'linf' or 'l2'. Received: norm={norm!r}")
    return norm


def check_value_range(value_range):
    """`(low, high)` as floats with `low < high`, or None (no clipping)."""
    if value_range is None:
        return None
    ok = (
        isinstance(value_range, (tuple, list))
        and len(value_range) == 2
        and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
            for v in value_range
        )
        and value_range[0] < value_range[1]
    )
    if not ok:
        raise ValueError(
            "`value_range` must be None or a pair `(low, high)` of finite "
            f"numbers with low < high. Received: value_range={value_range!r}"
        )
    return float(value_range[0]), float(value_range[1])


def check_from_logits(from_logits):
    if from_logits is None:
        return None
    return check_bool("from_logits", from_logits)


def rng(seed):
    """The NumPy generator of one call: an int seed gives the same draws on
    every call; a `keras.random.SeedGenerator` gives an int that changes on
    every call; None draws one from Python's `random` (so
    `keras.utils.set_random_seed` makes a run reproducible)."""
    if isinstance(seed, keras.random.SeedGenerator):
        drawn = keras.random.randint((), 0, _MAX_SEED, seed=seed)
        return np.random.default_rng(int(keras.ops.convert_to_numpy(drawn)))
    if seed is None:
        return np.random.default_rng(random.randint(0, _MAX_SEED))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(
            "`seed` must be None, a non-negative int or a "
            f"keras.random.SeedGenerator. Received: seed={seed!r}"
        )
    return np.random.default_rng(int(seed))


# -- losses: per example, `(labels, outputs) -> (batch,)`, module-level objects
# so that the compiled gradient function is cached once per model and loss ----


def _picked(values, labels):
    labels = keras.ops.expand_dims(keras.ops.cast(labels, "int32"), -1)
    return keras.ops.take_along_axis(values, labels, axis=-1)[:, 0]


def cross_entropy_logits(labels, logits):
    """`-log softmax(logits)[label]`."""
    return -_picked(keras.ops.log_softmax(logits, axis=-1), labels)


def cross_entropy_probabilities(labels, probabilities):
    """`-log p[label]`, computed so that a confident model keeps its
    gradient.

    A softmax past a logit gap of ~17 rounds `p[label]` to 1 in float32,
    where `-log p[label]` is flat (and Keras's clip to `1 - 1e-7` flattens
    it sooner). The other classes' probabilities `s = sum_{j != label} p_j`
    still hold the gap (e^-30 = 9.4e-14 is a float32), so where `p[label] >=
    1/2` the loss is taken as `-log1p(-s)`, the same value, whose gradient
    lives on; below 1/2 it is `-log p[label]` (floored at 1e-30).
    """
    true = _picked(probabilities, labels)
    mask = 1.0 - keras.ops.one_hot(
        keras.ops.cast(labels, "int32"), probabilities.shape[-1], dtype=true.dtype
    )
    others = keras.ops.sum(probabilities * mask, axis=-1)
    low = -keras.ops.log(keras.ops.maximum(true, _FLOOR))
    high = -keras.ops.log1p(-keras.ops.minimum(others, 0.5))
    return keras.ops.where(true < 0.5, low, high)


def dlr_logits(labels, logits):
    """The difference of logits ratio (Croce and Hein 2020):
    `-(z_y - max_{i != y} z_i) / (z_(1) - z_(3) + 1e-12)`, with `z_(k)` the
    k-th largest logit; unchanged by shifting or scaling the logits."""
    top = keras.ops.top_k(logits, 3)[0]
    true = _picked(logits, labels)
    is_top = keras.ops.equal(
        keras.ops.argmax(logits, axis=-1), keras.ops.cast(labels, "int32")
    )
    other = keras.ops.where(is_top, top[:, 1], top[:, 0])
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_probabilities(labels, probabilities):
    """DLR of `log p` (the logits up to a shift per example, which DLR does
    not see)."""
    return dlr_logits(labels, keras.ops.log(keras.ops.maximum(probabilities, _FLOOR)))


_LOSSES = {
    ("ce", True): cross_entropy_logits,
    ("ce", False): cross_entropy_probabilities,
    ("dlr", True): dlr_logits,
    ("dlr", False): dlr_probabilities,
}


# -- the task --------------------------------------------------------------------


def _labels(y, n, num_classes, name):
    """Integer labels `(n,)` from integers `(n,)` / `(n, 1)` or one-hot (or
    soft) rows `(n, num_classes)`."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        y = np.argmax(y, axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"`{name}` must hold one label per example of `x`: integers of "
            f"shape ({n},) or one-hot rows of shape ({n}, {num_classes}). "
            f"Received: {name}.shape={np.shape(y)}"
        )
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(
            f"`{name}` must hold class indices. Received: {name}.dtype={y.dtype}"
        )
    if np.any(y != np.round(y)) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"`{name}` must hold class indices in [0, {num_classes}). "
            f"Received: {name} from {y.min().item()!r} to {y.max().item()!r}"
        )
    return y.astype(np.int32)


def _bucket(n, batch_size):
    """The padded size of `n` examples: the next power of two, at most
    `batch_size` (and at least `n`).

    >>> _bucket(5, 128), _bucket(100, 128), _bucket(128, 128), _bucket(3, 2)
    (8, 128, 128, 3)
    """
    return max(n, min(batch_size, 1 << max(n - 1, 0).bit_length()))


class Best:
    """Per example, the best point found so far (see `steps.improves`)."""

    def __init__(self, points, success, objective):
        self.points = np.array(points)
        self.success = np.array(success, bool)
        self.objective = np.array(objective, np.float64)

    def update(self, index, points, success, objective):
        """Takes row `j` of `points` for example `index[j]` where it beats the
        best so far."""
        better = steps.improves(
            success, objective, self.success[index], self.objective[index]
        )
        chosen = index[better]
        self.points[chosen] = points[better]
        self.success[chosen] = np.asarray(success)[better]
        self.objective[chosen] = np.asarray(objective)[better]


class Task:
    """One attack's checked arguments and model.

    Attributes:
        model: the classifier.
        x: the clean inputs in the dtype they are fed and returned in (`x`'s
            own float type, else Keras's `floatx`).
        labels: integer labels (the targets when `targeted`).
        eps, norm, value_range, targeted, batch_size: as checked.
        from_logits: given, or detected on the first batch.
        loss_fn: the per-example loss the attack ascends.
    """

    def __init__(
        self,
        model,
        x,
        y,
        eps,
        norm,
        value_range,
        from_logits,
        batch_size,
        targeted=False,
        loss="ce",
    ):
        self.eps = check_number("eps", eps, low=0)
        self.norm = check_norm(norm)
        self.value_range = check_value_range(value_range)
        from_logits = check_from_logits(from_logits)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.targeted = check_bool("targeted", targeted)
        self.model = model
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(keras.config.floatx())
        if x.ndim < 2 or not len(x):
            raise ValueError(
                "`x` must be a non-empty batch of inputs (examples on the "
                f"first axis). Received: x.shape={x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("`x` must be finite. Received: x with NaN or Inf")
        if self.value_range is not None:
            low, high = self.value_range
            if x.min() < low or x.max() > high:
                raise ValueError(
                    f"`x` must lie within `value_range` {self.value_range} (the "
                    "range the attack clips to; pass the range your inputs "
                    "use, e.g. (0, 255), or None). Received: x from "
                    f"{float(x.min())} to {float(x.max())}"
                )
        self.x = x
        outputs = self._outputs(x[: min(len(x), self.batch_size)])
        self.num_classes = int(outputs.shape[-1])
        if from_logits is None:
            from_logits = not looks_like_probabilities(outputs)
        self.from_logits = from_logits
        self.labels = _labels(y, len(x), self.num_classes, "y")
        if loss == "dlr" and self.num_classes < 3:
            raise ValueError(
                "The DLR loss needs at least 3 classes. Received: "
                f"num_classes={self.num_classes}"
            )
        self.loss_fn = _LOSSES[(loss, from_logits)]

    def _outputs(self, x):
        if not isinstance(self.model, keras.Model):
            raise ValueError(
                "`model` must be a Keras model (a classifier). Received: "
                f"model={self.model!r}"
            )
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            inputs = None  # a subclassed model
        if inputs is not None and len(inputs) != 1:
            raise ValueError(
                "`model` must take one input. Received: model with "
                f"{len(inputs)} inputs"
            )
        outputs = self.model(keras.ops.convert_to_tensor(x), training=False)
        shape = getattr(outputs, "shape", None)
        if shape is None or len(shape) != 2 or shape[-1] < 2:
            shape = keras.tree.map_structure(lambda o: tuple(o.shape), outputs)
            raise ValueError(
                "`model` must be a classifier: one output of shape (batch, "
                "classes), classes >= 2, logits or probabilities. Received: "
                f"output_shape={shape}"
            )
        return np.asarray(keras.ops.convert_to_numpy(outputs))

    def evaluate(self, points, labels):
        """`(losses, gradient, success)` at `points`: the success is
        misclassification (or, targeted, the target predicted)."""
        n = len(points)
        padded = _bucket(n, self.batch_size)
        if padded > n and keras.backend.backend() == "jax":
            # JAX compiles once per batch shape: the shrinking sets of
            # examples still unbroken are padded (with copies of the first,
            # whose rows are dropped after) to a few sizes
            extra = np.zeros(padded - n, int)
            points = np.concatenate([points, points[extra]])
            labels_in = np.concatenate([labels, labels[extra]])
        else:
            labels_in = labels
        losses, gradient, outputs = loss_and_input_gradients(
            self.model, points, labels_in, self.loss_fn
        )
        losses, gradient, outputs = losses[:n], gradient[:n], outputs[:n]
        predicted = np.argmax(outputs, axis=-1)
        success = predicted == labels if self.targeted else predicted != labels
        return losses.astype(np.float64), gradient, success

    def objective(self, losses):
        """What the attack maximises: the loss, or minus it when targeted."""
        return -losses if self.targeted else losses

    def direction(self, gradient):
        """The gradient of the objective."""
        return -gradient if self.targeted else gradient

    def project(self, points, x):
        """`points` into the ball around `x` and the range, in `x`'s dtype."""
        inside = steps.project(points, x, self.eps, self.norm, self.value_range)
        return steps.cast_inside(inside, x, self.eps, self.norm, self.value_range)

    def run(self, attack_batch):
        """`attack_batch(x, labels) -> points` over the batches; the points
        of all batches, in `x`'s dtype."""
        out = np.empty_like(self.x)
        for start in range(0, len(self.x), self.batch_size):
            part = slice(start, start + self.batch_size)
            out[part] = attack_batch(self.x[part], self.labels[part])
        return out

    def outputs(self, points):
        """The model's outputs at `points`, a NumPy array `(n, classes)`:
        a forward pass only, in inference mode (`forward`). On JAX the batch
        is padded to a power-of-two size, as in `evaluate`."""
        n = len(points)
        padded = _bucket(n, self.batch_size)
        if padded > n and keras.backend.backend() == "jax":
            points = np.concatenate([points, points[np.zeros(padded - n, int)]])
        return forward(self.model, points)[:n]


# -- forward passes (no gradient): for the attacks that query outputs only --

_TF_FORWARD = weakref.WeakKeyDictionary()
_JAX_FORWARD = weakref.WeakKeyDictionary()


def _forward_function(model, x):
    """A compiled `x -> outputs` for `model` in inference mode, cached per
    model: a `tf.function` on TensorFlow (one trace per input layout, any
    batch size), a jitted `stateless_call` on JAX (compiled once per batch
    shape), taking the current variables as arguments. The function holds
    the model weakly. Other backends call the model eagerly."""
    backend = keras.backend.backend()
    model_ref = weakref.ref(model)
    if backend == "tensorflow":
        import tensorflow as tf

        per_model = _TF_FORWARD.setdefault(model, {})
        key = (tuple(x.shape[1:]), str(x.dtype))
        if key not in per_model:
            spec = tf.TensorSpec((None, *x.shape[1:]), x.dtype, name="x")

            @tf.function(input_signature=[spec])
            def tf_forward(x):
                return model_ref()(x, training=False)

            per_model[key] = tf_forward
        return per_model[key]
    if backend == "jax":
        import jax

        if model not in _JAX_FORWARD:

            def compute(trainable, non_trainable, x):
                outputs, _ = model_ref().stateless_call(
                    trainable, non_trainable, x, training=False
                )
                return outputs

            jitted = jax.jit(compute)

            def jax_forward(x):
                current = model_ref()
                return jitted(
                    [v.value for v in current.trainable_variables],
                    [v.value for v in current.non_trainable_variables],
                    x,
                )

            _JAX_FORWARD[model] = jax_forward
        return _JAX_FORWARD[model]
    return lambda x: model_ref()(x, training=False)


def forward(model, x):
    """`model(x, training=False)` as a NumPy array, compiled and cached per
    model (`_forward_function`); no state changes, no gradient.

    >>> dense = keras.layers.Dense(2, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((2,)), dense])
    >>> # z = (x0 + x1, x0 + x1): 3 for (1, 2)
    >>> forward(model, np.array([[1.0, 2.0]], "float32")).tolist()
    [[3.0, 3.0]]
    """
    x = np.asarray(x)
    outputs = _forward_function(model, x)(keras.ops.convert_to_tensor(x))
    return np.array(keras.ops.convert_to_numpy(outputs))
