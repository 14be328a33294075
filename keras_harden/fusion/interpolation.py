"""`interpolation`: loss and accuracy along the straight line between two models."""

import dataclasses

import keras
import numpy as np

from keras_harden._plotting import pyplot, save_figure
from keras_harden._validation import check_bool, check_int
from keras_harden.fusion._common import (
    batchnorm_layers,
    check_models,
    clone_with_weights,
    is_float,
    predict_with_labels,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.align import align as align_model
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.compat import check_compatible
from keras_harden.fusion.repair import repair as repair_model
from keras_harden.fusion.soup import accuracy

__all__ = ["InterpolationResult", "interpolation"]

PATHS = ("naive", "aligned", "repaired")


@dataclasses.dataclass
class InterpolationResult:
    """Loss and accuracy of `(1 - alpha) * a + alpha * b` for each alpha.

    Attributes:
        alphas: the interpolation weights, from 0 (model `a`) to 1 (`b`).
        loss_name: what `loss` measured.
        naive_loss, naive_accuracy: along the path between the models as
            given.
        aligned_loss, aligned_accuracy: along the path to `b` aligned to `a`
            (None when `align=False`).
        repaired_loss, repaired_accuracy: the same aligned path with each
            interior point repaired (REPAIR; None without `repair=` data).
    """

    alphas: list
    loss_name: str
    naive_loss: list
    naive_accuracy: list
    aligned_loss: list = None
    aligned_accuracy: list = None
    repaired_loss: list = None
    repaired_accuracy: list = None

    def paths(self):
        """The names of the paths measured: `naive`, `aligned`, `repaired`."""
        return [p for p in PATHS if getattr(self, f"{p}_loss") is not None]

    def loss_barrier(self, path="naive"):
        """The largest rise of the loss above the straight line between the
        endpoints' losses (0 when the path never rises above it)."""
        loss = np.asarray(self._values(path, "loss"))
        alphas = np.asarray(self.alphas)
        line = (1 - alphas) * loss[0] + alphas * loss[-1]
        return float(max(0.0, np.max(loss - line)))

    def accuracy_drop(self, path="naive"):
        """The largest fall of the accuracy below the straight line between
        the endpoints' accuracies, in [0, 1]."""
        acc = np.asarray(self._values(path, "accuracy"))
        alphas = np.asarray(self.alphas)
        line = (1 - alphas) * acc[0] + alphas * acc[-1]
        return float(max(0.0, np.max(line - acc)))

    def _values(self, path, what):
        if path not in PATHS:
            raise ValueError(f"`path` must be one of {PATHS}. Received: path={path!r}")
        values = getattr(self, f"{path}_{what}")
        if values is None:
            raise ValueError(
                f"The {path!r} path was not measured (see `interpolation`'s "
                f"`align` and `repair`). Received: path={path!r}"
            )
        return values

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        paths = self.paths()
        header = f"{'alpha':>6}" + "".join(
            f"{p + ' loss':>16}{p + ' acc':>14}" for p in paths
        )
        lines = [f"interpolation from a (alpha 0) to b (alpha 1), {self.loss_name}:"]
        lines.append(header)
        for i, alpha in enumerate(self.alphas):
            row = f"{alpha:>6.2f}"
            for p in paths:
                row += f"{getattr(self, p + '_loss')[i]:>16.4f}"
                row += f"{getattr(self, p + '_accuracy')[i]:>14.4f}"
            lines.append(row)
        for p in paths:
            lines.append(
                f"{p}: loss barrier {self.loss_barrier(p):.4f}, accuracy "
                f"{100 * self.accuracy_drop(p):.1f} points below the endpoints' line "
                "at worst"
            )
        return "\n".join(lines)

    def plot(self, path):
        """Writes a figure of loss and accuracy along each path (needs
        matplotlib: `pip install keras-harden[plot]`). The file is written
        beside `path`, then renamed, so it is never seen half-written.

        Args:
            path: the image file to write (`.png`, `.svg`, `.pdf`, ...).

        Returns:
            The path written, as a string.
        """
        plt = pyplot("InterpolationResult.plot")
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for p in self.paths():
            axes[0].plot(self.alphas, getattr(self, p + "_loss"), marker="o", label=p)
            axes[1].plot(
                self.alphas, getattr(self, p + "_accuracy"), marker="o", label=p
            )
        axes[0].set_ylabel(self.loss_name)
        axes[1].set_ylabel("accuracy")
        for ax in axes:
            ax.set_xlabel("alpha (0: a, 1: b)")
            ax.grid(alpha=0.3)
            ax.legend()
        figure.tight_layout()
        return save_figure(figure, path)


def _cross_entropy(y_true, y_pred):
    """Mean cross-entropy of integer or one-hot labels under logits or
    probabilities (rows of non-negative numbers summing to 1)."""
    y_pred = np.asarray(y_pred, "float64").reshape(len(y_pred), -1)
    y_true = np.asarray(y_true)
    if y_true.ndim >= 2 and y_true.shape[-1] > 1:
        y_true = np.argmax(y_true, axis=-1)
    y_true = y_true.reshape(len(y_true)).astype("int64")
    if y_pred.shape[1] == 1:  # one logit or probability: binary
        p = y_pred[:, 0]
        if not (p.min() >= 0 and p.max() <= 1):
            p = 1 / (1 + np.exp(-p))
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)))
    probabilities = y_pred.min() >= 0 and np.allclose(y_pred.sum(-1), 1, atol=1e-3)
    if probabilities:
        log_p = np.log(np.clip(y_pred, 1e-7, 1.0))
    else:
        shifted = y_pred - y_pred.max(-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(y_true)), y_true]))


def _loss_function(loss):
    if loss is None:
        return "cross-entropy", _cross_entropy
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if callable(loss):

        def value(y_true, y_pred):
            return float(np.mean(keras.ops.convert_to_numpy(loss(y_true, y_pred))))

        return getattr(loss, "name", getattr(loss, "__name__", "loss")), value
    raise ValueError(
        "`loss` must be None (cross-entropy), a Keras loss or a "
        f"callable(y_true, y_pred). Received: loss={loss!r}"
    )


def _interpolate(target, a, b, alpha):
    """`target`'s floating-point variables := `(1 - alpha) a + alpha b` (all
    of them, batch-norm statistics included: the naive path)."""
    for (_, _, t), (_, _, u), (_, _, v) in zip(
        weight_slots(target), weight_slots(a), weight_slots(b), strict=True
    ):
        if not is_float(t):
            continue
        value = (1 - alpha) * to_numpy(u.value).astype("float64")
        value = value + alpha * to_numpy(v.value).astype("float64")
        t.assign(value.astype(t.dtype))


def interpolation(
    a,
    b,
    data,
    steps=11,
    align=True,
    repair=None,
    recalibrate=None,
    loss=None,
    batch_size=128,
):
    """Loss and accuracy along the straight line between two models' weights.

    Before merging two models, look at the path between them: the model
    `(1 - alpha) * a + alpha * b` for `steps` values of alpha from 0 to 1,
    each scored on labelled `data`. Fine-tunes of one start stay good all
    along (one loss basin); models trained from different starts fall apart
    in the middle (a loss barrier), and their average is useless. With
    `align=True` the path to `b` aligned to `a` (`kh.fusion.align`, weight
    matching) is measured too: if alignment removes the barrier, an aligned
    average can work. With `repair=` inputs, the aligned path's interior
    points are also repaired (`kh.fusion.repair`, REPAIR), which shows what
    `average_weights(models, align=True, repair=x)` would give.

    On the naive path every floating-point variable is interpolated,
    batch-norm moving statistics too; give `recalibrate=` inputs to
    recompute them at every point (endpoints included, so all points are
    scored alike) — the fair comparison for models with batch norm.

    Args:
        a: a built Keras model (alpha 0).
        b: a built Keras model of the same architecture (alpha 1).
        data: labelled data to score on: `(x, y)` arrays or a dataset of
            `(x, y)` batches; held-out data shows what a merge would give.
        steps: the number of alphas, evenly spaced from 0 to 1 (at least 2).
        align: also measure the aligned path.
        repair: inputs (no labels needed) to repair the aligned path's
            interior points on; needs `align=True`.
        recalibrate: inputs to recompute batch-norm statistics on at every
            point of every path.
        loss: None for cross-entropy (integer or one-hot labels; logits or
            probabilities, recognised from the outputs), a Keras loss (name
            or object), or a `callable(y_true, y_pred)`.
        batch_size: batch size for predicting on array data.

    Returns:
        An `InterpolationResult`: `alphas`, each path's `*_loss` and
        `*_accuracy` lists, `loss_barrier(path)` and `accuracy_drop(path)`;
        `print(result)` shows a table and `result.plot("path.png")` draws it
        (needs matplotlib).

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> def mlp():
    ...     return keras.Sequential([keras.Input((4,)),
    ...         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = np.arange(64) % 3
    >>> result = kh.fusion.interpolation(mlp(), mlp(), (x, y), steps=3)
    >>> result.alphas
    [0.0, 0.5, 1.0]
    >>> result.paths()
    ['naive', 'aligned']

    References:
        Frankle et al., "Linear Mode Connectivity and the Lottery Ticket
        Hypothesis", ICML 2020. Ainsworth et al., "Git Re-Basin", ICLR 2023.
        Jordan et al., "REPAIR", ICLR 2023.
    """
    a = check_models(a, name="a")[0]
    b = check_models(b, name="b")[0]
    check_int("steps", steps, minimum=2)
    check_bool("align", align)
    if repair is not None and not align:
        raise ValueError(
            "`repair` repairs the aligned path: it needs `align=True`. "
            f"Received: align={align!r}"
        )
    if data is None:
        raise ValueError("`data` must not be None. Received: data=None")
    loss_name, loss_fn = _loss_function(loss)
    check_compatible([a, b])
    alphas = [float(alpha) for alpha in np.linspace(0.0, 1.0, steps)]
    scratch = clone_with_weights(a)
    has_batchnorm = bool(batchnorm_layers(scratch))

    def score(model):
        y_pred, y_true = predict_with_labels(model, data, batch_size)
        return loss_fn(y_true, y_pred), accuracy(y_true, y_pred)

    def path(end, repaired=False):
        losses, accuracies = [], []
        for alpha in alphas:
            _interpolate(scratch, a, end, alpha)
            model = scratch
            if repaired and 0.0 < alpha < 1.0:
                model = repair_model(
                    scratch,
                    [a, end],
                    repair,
                    weights=[1 - alpha, alpha],
                    batch_size=batch_size,
                )
            if recalibrate is not None and has_batchnorm:
                recalibrate_batchnorm(model, recalibrate, batch_size=batch_size)
            loss_value, accuracy_value = score(model)
            losses.append(loss_value)
            accuracies.append(accuracy_value)
        return losses, accuracies

    naive = path(b)
    result = InterpolationResult(alphas, loss_name, *naive)
    if align:
        aligned_b = align_model(a, b)
        result.aligned_loss, result.aligned_accuracy = path(aligned_b)
        if repair is not None:
            repaired = path(aligned_b, repaired=True)
            result.repaired_loss, result.repaired_accuracy = repaired
    return result
