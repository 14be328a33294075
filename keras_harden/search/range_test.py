"""`lr_range_test`: train briefly with the learning rate rising geometrically
and read off the largest rate that still trains.

Smith (2017) and fastai's `lr_find`: start far below the rate you would use,
multiply it by a constant factor every step, and watch the loss. It falls
while the rate is stable and turns up once the rate is past what the loss
surface allows. The analysis is a pure function of the recorded curve
(`analyse`), tested without Keras; `lr_range_test` is the Keras wiring: a copy
of the model (yours is untouched) and one `train_on_batch` per rate.
"""

import math

import keras
import numpy as np

from keras_harden._plotting import pyplot, save_figure
from keras_harden._validation import check_int, check_number
from keras_harden.optimizers import HardenedOptimizer
from keras_harden.search import _copies, _data

__all__ = ["RangeTest", "analyse", "geometric_rates", "lr_range_test"]

# The run stops once the (causally smoothed) loss exceeds this multiple of
# its lowest value: the rate is well past stable (fastai uses 4).
_STOP_FACTOR = 4.0
# fastai's rule of thumb: train an order of magnitude below the rate at which
# the loss was lowest.
_SUGGESTION_DIVISOR = 10.0


def geometric_rates(min_rate, max_rate, steps):
    """`steps` rates from `min_rate` to `max_rate`, each a constant factor
    above the one before.

    >>> [float(r) for r in geometric_rates(0.01, 1.0, 3)]
    [0.01, 0.1, 1.0]
    """
    return np.geomspace(min_rate, max_rate, steps)


def _centred_mean(values, window):
    """The mean over a window of `window` values centred on each point
    (shrinking at the ends); a window holding a non-finite value is `inf`."""
    values = np.asarray(values, np.float64)
    values = np.where(np.isfinite(values), values, np.inf)
    half = window // 2
    return np.array(
        [np.mean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]
    )


def analyse(rates, losses, smoothing=1):
    """The largest stable rate and the suggestion, from a range-test curve.

    `losses[i]` is the loss measured *before* the update made with
    `rates[i]` (as `train_on_batch` reports it), so the update with
    `rates[i]` lowered the loss when `losses[i + 1] < losses[i]`. With `m` the
    step of the lowest (smoothed) loss, the update with `rates[m - 1]` was the
    last to lower it, and the one with `rates[m]` raised it: the largest
    stable rate is `rates[m - 1]`.

    Worked by hand: for a 1-D quadratic `L(w) = a (w - w*)^2`, an SGD step
    with rate `r` multiplies `w - w*` by `1 - 2 a r`, so the loss falls exactly
    while `r < 1 / a` (2 / the Hessian's eigenvalue `2a`): `rates[m - 1] <
    1 / a <= rates[m]`.

    Args:
        rates: the rate of each step.
        losses: the loss before each step (non-finite once diverged).
        smoothing: odd window of the centred moving mean applied first (1:
            none); mini-batch losses are noisy.

    Returns:
        `(max_stable_rate, suggested_rate, still_falling)`: the suggestion is
        the largest stable rate / 10; `still_falling` is True when the loss
        was lowest at the last step (the stable edge lies above the range).

    >>> rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    >>> analyse(rates, [5.0, 4.0, 2.0, 1.0, 3.0])  # lowest at step 3
    (0.4, 0.04, False)
    """
    smoothed = _centred_mean(losses, smoothing)
    if not np.any(np.isfinite(smoothed)):
        return float(rates[0]), float(rates[0]) / _SUGGESTION_DIVISOR, False
    lowest = int(np.argmin(smoothed))
    still_falling = lowest == len(smoothed) - 1
    stable = float(rates[max(0, lowest - 1)])
    return stable, stable / _SUGGESTION_DIVISOR, still_falling


class RangeTest:
    """The curve of a learning-rate range test and what it says.

    Attributes:
        rates, losses, gradient_norms: per step (the loss and global gradient
            norm before the update with that rate).
        max_stable_rate: the rate of the last update that lowered the
            smoothed loss.
        suggested_rate: `max_stable_rate / 10`.
        still_falling: the loss was lowest at the last step (`max_rate` was
            still stable).
        reference_rate: the optimizer's own rate.
    """

    def __init__(self, rates, losses, gradient_norms, smoothing, reference_rate):
        self.rates = [float(r) for r in rates]
        self.losses = [float(v) for v in losses]
        self.gradient_norms = [float(v) for v in gradient_norms]
        self.smoothing = smoothing
        self.reference_rate = reference_rate
        stable, suggested, falling = analyse(self.rates, self.losses, smoothing)
        self.max_stable_rate = stable
        self.suggested_rate = suggested
        self.still_falling = falling

    def healthy_gradient_norm(self):
        """Median global gradient norm of the steps up to the largest stable
        rate: a scale for a global clip."""
        upto = self.rates.index(self.max_stable_rate) + 1
        norms = [n for n in self.gradient_norms[:upto] if math.isfinite(n)]
        return float(np.median(norms)) if norms else math.nan

    def to_markdown(self):
        edge = (
            "above the tested range (the loss was still falling)"
            if self.still_falling
            else f"{self.max_stable_rate:.3g}"
        )
        lines = [
            f"Learning-rate range test over {len(self.rates)} steps, rates "
            f"{self.rates[0]:.3g} to {self.rates[-1]:.3g}: largest stable rate "
            f"{edge}; suggested {self.suggested_rate:.3g}",
        ]
        if self.reference_rate is not None:
            lines[0] += f" (the optimizer's: {self.reference_rate:.3g})"
        return lines[0] + "."

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        return (
            f"RangeTest(max_stable_rate={self.max_stable_rate:.3g}, "
            f"suggested_rate={self.suggested_rate:.3g})"
        )

    def plot(self, path):
        """Writes the loss against the rate (log scale) to `path` (PNG)."""
        plt = pyplot("RangeTest.plot")
        figure, axis = plt.subplots(figsize=(6, 4))
        losses = np.asarray(self.losses)
        finite = np.isfinite(losses)
        axis.plot(np.asarray(self.rates)[finite], losses[finite], label="loss")
        axis.axvline(
            self.max_stable_rate, color="tab:red", ls="--", label="stable edge"
        )
        axis.axvline(self.suggested_rate, color="tab:green", ls=":", label="suggested")
        if self.reference_rate is not None:
            axis.axvline(self.reference_rate, color="grey", ls="-.", label="yours")
        axis.set_xscale("log")
        axis.set_xlabel("learning rate")
        axis.set_ylabel("training loss")
        axis.legend()
        save_figure(figure, path)
        return path


def run_range_test(model, stream, optimizer, loss, rates, smoothing, reference_rate):
    """Trains a copy of `model` for one step per rate on `stream`'s batches
    (the search calls this with its own stream); stops early once the loss
    is non-finite or past `4x` its lowest value."""
    copy = _copies.copy_model(model)
    # a float rate (a schedule's too), set anew before every step
    config = {**optimizer.get_config(), "learning_rate": float(rates[0])}
    inner = type(optimizer).from_config(config)
    hardened = HardenedOptimizer(inner)
    copy.compile(optimizer=hardened, loss=loss)
    copy.optimizer.build(copy.trainable_variables)  # not inside the first trace
    losses, norms = [], []
    smoothed = lowest = None
    batches = stream.batches()
    for rate in rates:
        x, y, weights = next(batches)
        hardened.learning_rate = float(rate)
        value = float(copy.train_on_batch(x, y, sample_weight=weights))
        losses.append(value)
        norms.append(float(keras.ops.convert_to_numpy(hardened.gradient_norm)))
        if not math.isfinite(value):
            break
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        lowest = smoothed if lowest is None else min(lowest, smoothed)
        if len(losses) > smoothing and smoothed > _STOP_FACTOR * lowest:
            break
    return RangeTest(rates[: len(losses)], losses, norms, smoothing, reference_rate)


def lr_range_test(
    model,
    data,
    optimizer,
    loss,
    min_rate=None,
    max_rate=None,
    steps=100,
    batch_size=32,
    smoothing=None,
    seed=0,
):
    """Runs a learning-rate range test on a copy of `model`.

    The rate rises geometrically from `min_rate` to `max_rate` over `steps`
    training steps (one batch each) of a copy of `model` and of `optimizer`
    (wrapped so that non-finite steps are skipped); the run stops once the
    loss is non-finite or four times its lowest value. Your model and
    optimizer are left untouched.

    Args:
        model: a built Keras model.
        data: what `fit` takes: `(x, y)` arrays, a `tf.data.Dataset` or a
            `keras.utils.PyDataset` of `(x, y)` batches.
        optimizer: the optimizer you would compile with; its class and config
            are used, its learning rate replaced.
        loss: the loss you would compile with.
        min_rate, max_rate: the range; by default 10,000x below and 100x
            above the optimizer's rate.
        steps: int >= 3, the number of rates tried.
        batch_size: for arrays.
        smoothing: odd int >= 1, the window of the moving mean applied to the
            noisy mini-batch losses before the analysis; by default about a
            tenth of `steps`.
        seed: int, the order of the batches of arrays.

    Returns:
        A `RangeTest`: `.max_stable_rate`, `.suggested_rate`, the curve, and
        `.plot(path)`.

    Example:

    >>> import keras, numpy as np, keras_harden as kh
    >>> x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> test = kh.lr_range_test(model, (x, y), keras.optimizers.SGD(0.1),
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps=30)
    >>> test.suggested_rate < test.max_stable_rate
    True

    References:
        Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV
        2017); fastai's `Learner.lr_find`.
    """
    _copies.check_built(model)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "`optimizer` must be a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    steps = check_int("steps", steps, minimum=3)
    check_int("batch_size", batch_size, minimum=1)
    smoothing = default_smoothing(steps) if smoothing is None else smoothing
    check_int("smoothing", smoothing, minimum=1)
    if smoothing % 2 == 0:
        raise ValueError(f"`smoothing` must be odd. Received: smoothing={smoothing}")
    reference = _copies.rate_of(optimizer.get_config())
    min_rate, max_rate = _range(reference, min_rate, max_rate)
    stream = _data.training_stream(data, batch_size, seed)
    keras.utils.set_random_seed(seed)
    return run_range_test(
        model,
        stream,
        optimizer,
        keras.losses.get(loss),
        geometric_rates(min_rate, max_rate, steps),
        smoothing,
        reference,
    )


def default_smoothing(steps):
    """About a tenth of `steps`, odd: 100 steps -> 11."""
    return (steps // 10) | 1


def _range(reference, min_rate, max_rate):
    if reference is None and (min_rate is None or max_rate is None):
        raise ValueError(
            "`min_rate` and `max_rate` are needed when the optimizer's learning "
            "rate is not a number or a schedule with `initial_learning_rate`. "
            f"Received: min_rate={min_rate}, max_rate={max_rate}"
        )
    low = check_number(
        "min_rate",
        reference * 1e-4 if min_rate is None else min_rate,
        low=0,
        low_open=True,
    )
    high = check_number(
        "max_rate",
        reference * 1e2 if max_rate is None else max_rate,
        low=0,
        low_open=True,
    )
    if high <= low:
        raise ValueError(
            "`max_rate` must be above `min_rate`. "
            f"Received: min_rate={low}, max_rate={high}"
        )
    return low, high
