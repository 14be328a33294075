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
from keras_harden.fusion.averaging import assign_average, finish_batchnorm
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

    Attributes:
        metric: the metric's name.
        scores: each input model's held-out score, in input order.
        order: input indices sorted from best to worst score.
        kept: the indices of the ingredients kept, in the order added.
        soup_score: the held-out score of the returned soup.
        trace: one dict per ingredient tried: `index`, `score` (of the soup
            with it added), `kept`.
    """

    metric: str
    scores: list
    order: list
    kept: list
    soup_score: float
    trace: list

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        lines = [f"greedy soup ({self.metric}):"]
        for index in self.order:
            lines.append(f"  model {index}: {self.scores[index]:.4f}")
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
):
    """Greedy model soup: averages only the ingredients that do not hurt.

    Following Wortsman et al. (2022), the models are sorted by their score on
    held-out `validation_data`; the soup starts as the best model, and each
    next model is added to the (uniform) average only if the averaged model's
    held-out score does not drop. When the models have batch-norm layers,
    every candidate soup's statistics (the first one's, the best model alone,
    too) are recomputed from `recalibrate` data before it is scored (see
    `average_weights`), and so are the returned soup's.

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
    check_compatible(models)
    name, score_fn = _scorer(metric)

    def score(model):
        y_pred, y_true = predict_with_labels(model, validation_data)
        return float(score_fn(y_true, y_pred))

    def better_or_equal(a, b):
        return a >= b if higher_is_better else a <= b

    scores = [score(model) for model in models]
    order = sorted(
        range(len(models)), key=lambda i: -scores[i] if higher_is_better else scores[i]
    )
    soup = clone_with_weights(models[order[0]])
    has_batchnorm = bool(batchnorm_layers(soup))
    recalibrating = has_batchnorm and recalibrate is not None
    if has_batchnorm and recalibrate is None:
        finish_batchnorm(soup, None, None, "greedy_soup")  # warns

    def make(indices):
        """The soup of `indices`, batch-norm statistics recomputed."""
        assign_average(soup, [models[i] for i in indices], _uniform(indices))
        if recalibrating:
            finish_batchnorm(soup, recalibrate, recalibrate_steps, "greedy_soup")

    kept = [order[0]]
    if recalibrating:
        make(kept)
        best = score(soup)
    else:
        best = scores[order[0]]
    trace = []
    for index in order[1:]:
        candidate = kept + [index]
        make(candidate)
        candidate_score = score(soup)
        accepted = better_or_equal(candidate_score, best)
        trace.append({"index": index, "score": candidate_score, "kept": accepted})
        if accepted:
            kept, best = candidate, candidate_score
    make(kept)
    report = SoupReport(
        metric=name,
        scores=scores,
        order=order,
        kept=kept,
        soup_score=best,
        trace=trace,
    )
    return SoupResult(soup, report)


def _uniform(indices):
    return np.full(len(indices), 1.0 / len(indices))
