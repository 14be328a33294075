"""`greedy_soup`: average only the models that help on held-out data."""

import dataclasses
import typing

import keras
import numpy as np

from keras_harden.fusion._common import (
    batchnorm_layers,
    check_models,
    clone_with_weights,
    predict_with_labels,
)
from keras_harden.fusion.averaging import (
    aligned_to,
    assign_average,
    check_align,
    finish_batchnorm,
)
from keras_harden.fusion.compat import check_compatible

__all__ = ["SoupReport", "SoupResult", "greedy_soup"]


def accuracy(y_true, y_pred):
    """Top-1 accuracy for integer or one-hot labels and logits or
    probabilities (one output column: threshold 0.5 for values in [0, 1],
    else 0)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1:
        predicted = np.argmax(y_pred, axis=-1)
    else:
        y_pred = y_pred.reshape(len(y_pred))
        threshold = 0.5 if (y_pred.min() >= 0 and y_pred.max() <= 1) else 0.0
        predicted = (y_pred > threshold).astype("int64")
    if y_true.ndim >= 2 and y_true.shape[-1] > 1:
        y_true = np.argmax(y_true, axis=-1)
    y_true = y_true.reshape(len(y_true))
    return float(np.mean(predicted == y_true))


def _scorer(metric):
    if metric == "accuracy":
        return "accuracy", accuracy
    if isinstance(metric, keras.metrics.Metric):

        def score(y_true, y_pred):
            metric.reset_state()
            metric.update_state(y_true, y_pred)
            return float(keras.ops.convert_to_numpy(metric.result()))

        return metric.name, score
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__), metric
    raise ValueError(
        "`metric` must be 'accuracy', a keras.metrics.Metric instance or a "
        f"callable(y_true, y_pred) -> float. Received: metric={metric!r}"
    )


@dataclasses.dataclass
class SoupReport:
    """What `greedy_soup` tried and kept.

    Every score is taken the same way: when batch-norm statistics are
    recomputed (`recalibrate=`), each input model's too, so what a soup gains
    over its ingredients is not the recalibration's doing.

    Attributes:
        metric: the metric's name.
        scores: each input model's held-out score, in input order (after
            recalibration, when there is one).
        order: input indices sorted from best to worst score.
        kept: the indices of the ingredients kept, in the order added.
        soup_score: the held-out score of the returned soup.
        trace: one dict per ingredient tried: `index`, `score` (of the soup
            with it added), `kept`.
        scores_before_recalibration: each input model's score with its own
            batch-norm statistics, or None when nothing was recalibrated.
    """

    metric: str
    scores: list
    order: list
    kept: list
    soup_score: float
    trace: list
    scores_before_recalibration: list = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        before = self.scores_before_recalibration
        title = f"greedy soup ({self.metric}"
        if before is not None:
            title += ", every score after batch-norm recalibration"
        lines = [title + "):"]
        for index in self.order:
            line = f"  model {index}: {self.scores[index]:.4f}"
            if before is not None:
                line += f" (before recalibration {before[index]:.4f})"
            lines.append(line)
        for step in self.trace:
            verdict = "kept" if step["kept"] else "dropped"
            lines.append(
                f"  + model {step['index']}: soup {step['score']:.4f} -> {verdict}"
            )
        lines.append(f"  soup of {self.kept}: {self.soup_score:.4f}")
        return "\n".join(lines)


class SoupResult(typing.NamedTuple):
    """`(model, report)` returned by `greedy_soup`."""

    model: keras.Model
    report: SoupReport


def greedy_soup(
    models,
    validation_data,
    metric="accuracy",
    recalibrate=None,
    recalibrate_steps=None,
    higher_is_better=True,
    align=False,
    align_data=None,
):
    """Greedy model soup: averages only the ingredients that do not hurt.

    Following Wortsman et al. (2022), the models are sorted by their score on
    held-out `validation_data`; the soup starts as the best model, and each
    next model is added to the (uniform) average only if the averaged model's
    held-out score does not drop. When the models have batch-norm layers,
    every model's and every candidate soup's statistics are recomputed from
    `recalibrate` data before it is scored (see `average_weights`), and so
    are the returned soup's; the report also gives each model's score before
    recalibration, which shows what recalibration alone gains.

    With `align=True`, once the models are scored every one is aligned to
    the best (`kh.fusion.align`, weight matching, or activation matching on
    `align_data`: its hidden units permuted to match, its function
    unchanged), so that models trained from
    different starts can be averaged; the scores, the order and the report
    are those of the models as given.

    The returned model is new (a clone of the best ingredient with the
    averaged weights); the input models are not modified.

    Args:
        models: a list of built Keras models of one architecture, typically
            fine-tunes of one pretrained start.
        validation_data: held-out `(x, y)` arrays or a `tf.data.Dataset` of
            `(x, y)` batches: never the models' training data.
        metric: `"accuracy"` (integer or one-hot labels; logits or
            probabilities), a `keras.metrics.Metric` instance, or a
            `callable(y_true, y_pred) -> float`.
        recalibrate: inputs to recompute batch-norm statistics from (arrays,
            an `(x, y)` tuple or a dataset); needed for models with batch
            norm, warned about otherwise.
        recalibrate_steps: at most this many batches of `recalibrate`.
        higher_is_better: `False` for a metric to minimise (a loss).
        align: `True` to align every model to the best one before averaging.
        align_data: inputs to align by activation matching (with
            `align=True`); default: weight matching.

    Returns:
        A `SoupResult` named tuple `(model, report)`: the soup, and a
        `SoupReport` with every ingredient's score, the order tried, the
        indices kept and the soup's score.

    Example:

    >>> soup, report = kh.fusion.greedy_soup(
    ...     [m1, m2, m3], (x_val, y_val), recalibrate=x_train)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP

    References:
        Wortsman et al., "Model soups: averaging weights of multiple
        fine-tuned models improves accuracy without increasing inference
        time", ICML 2022; github.com/mlfoundations/model-soups.
    """
    models = check_models(models)
    check_align(align, align_data)
    check_compatible(models)
    name, score_fn = _scorer(metric)

    def score(model):
        y_pred, y_true = predict_with_labels(model, validation_data)
        return float(score_fn(y_true, y_pred))

    def better_or_equal(a, b):
        return a >= b if higher_is_better else a <= b

    scratch = clone_with_weights(models[0])  # every candidate is scored in it
    has_batchnorm = bool(batchnorm_layers(scratch))
    recalibrating = has_batchnorm and recalibrate is not None
    if has_batchnorm and recalibrate is None:
        finish_batchnorm(scratch, None, None, "greedy_soup")  # warns

    def make(target, indices):
        """`target` becomes the soup of `indices`, batch-norm statistics
        recomputed; returns it."""
        assign_average(target, [models[i] for i in indices], _uniform(indices))
        if recalibrating:
            finish_batchnorm(target, recalibrate, recalibrate_steps, "greedy_soup")
        return target

    before = [score(model) for model in models]
    scores = before
    if recalibrating:
        scores = [score(make(scratch, [i])) for i in range(len(models))]
    order = sorted(
        range(len(models)), key=lambda i: -scores[i] if higher_is_better else scores[i]
    )
    if align:  # the function of each model, hence each score, is unchanged
        models = aligned_to(models[order[0]], models, align_data)
    kept, best = [order[0]], scores[order[0]]
    trace = []
    for index in order[1:]:
        candidate = kept + [index]
        candidate_score = score(make(scratch, candidate))
        accepted = better_or_equal(candidate_score, best)
        trace.append({"index": index, "score": candidate_score, "kept": accepted})
        if accepted:
            kept, best = candidate, candidate_score
    soup = make(clone_with_weights(models[order[0]]), kept)
    report = SoupReport(
        metric=name,
        scores=scores,
        order=order,
        kept=kept,
        soup_score=best,
        trace=trace,
        scores_before_recalibration=before if recalibrating else None,
    )
    return SoupResult(soup, report)


def _uniform(indices):
    return np.full(len(indices), 1.0 / len(indices))
