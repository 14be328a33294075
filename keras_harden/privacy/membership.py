"""Membership-inference scores from a classifier's outputs: pure NumPy.

A score is higher for an example the attack believes was in the training
set. Two attacks:

- **Loss threshold** (Yeom et al. 2018): a model fits its training examples
  better, so `score = -loss`, the example's cross-entropy negated.
- **LiRA**, the likelihood-ratio attack (Carlini et al. 2022): shadow
  models trained with and without each example give, per example, the
  distribution of a confidence when it is IN the training set and when it
  is OUT; the score is how much likelier the target's confidence is under
  IN than under OUT. The confidence is logit-scaled,
  `phi = log p_y - log(sum_{j != y} p_j)`, which makes it close to Gaussian.

Outputs are `(n, classes)` rows of logits or probabilities; labels are
class indices.
"""

import numpy as np

from keras_harden._validation import check_bool

__all__ = [
    "VARIANCES",
    "cross_entropy",
    "lira_scores",
    "logit_scaled_confidence",
    "loss_scores",
]

# A probability below this counts as this in a logarithm, so that a row of
# float32 probabilities with exact zeros gives finite values (|phi| <= 69).
_FLOOR = 1e-30
# The smallest variance LiRA divides by (standard deviation 1e-6): shadows
# that agree exactly would otherwise give an infinite score.
_MIN_VARIANCE = 1e-12
# From this many shadow models on, "auto" estimates a variance per example;
# below it one variance for all (Carlini et al. 2022, Sec. VI: the
# per-example variance pays off only with more than about 64 shadows).
PER_EXAMPLE_VARIANCE_FROM = 64
VARIANCES = ("auto", "global", "per_example")
MODES = ("auto", "online", "offline")


def _check_from_logits(from_logits):
    return check_bool("from_logits", from_logits)


def _outputs_and_labels(outputs, labels):
    """`outputs` as a float64 `(n, classes)` array and `labels` as int
    indices into its rows, checked."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(
            "`outputs` must be rows of (at least 2) class scores, shape (n, "
            f"classes). Received: outputs of shape {out.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(
            "`outputs` must be finite. Received: outputs with "
            f"{int(np.sum(~np.isfinite(out)))} NaN or infinite values"
        )
    raw = np.asarray(labels)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    integral = raw.dtype.kind in "iu" or (
        raw.dtype.kind == "f"
        and np.all(np.isfinite(raw))
        and np.all(raw == np.round(raw))
    )
    if raw.shape != (len(out),) or not integral:
        raise ValueError(
            f"`labels` must be {len(out)} class indices, one per row of "
            f"`outputs`. Received: labels of shape {raw.shape} and dtype {raw.dtype}"
        )
    y = raw.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= out.shape[1]):
        raise ValueError(
            f"`labels` must be class indices in [0, {out.shape[1]}). "
            f"Received: labels from {y.min()} to {y.max()}"
        )
    return out, y


def _log_probabilities(outputs, from_logits):
    """`log p` row-wise: a stable log-softmax of logits, or the log of the
    probabilities (renormalised, as Keras's cross-entropy does)."""
    if from_logits:
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    if outputs.min() < 0:
        raise ValueError(
            "`outputs` are not probabilities (a value is negative); pass "
            "from_logits=True for logits. Received: from_logits=False"
        )
    p = outputs / np.maximum(outputs.sum(axis=1, keepdims=True), _FLOOR)
    return np.log(np.maximum(p, _FLOOR))


def cross_entropy(outputs, labels, from_logits):
    """Each example's cross-entropy, `-log p_y`.

    Args:
        outputs: `(n, classes)` logits or probabilities.
        labels: `n` class indices.
        from_logits: whether `outputs` are logits (else probabilities; a
            probability below 1e-30 counts as 1e-30).

    Returns:
        A float64 array of `n` losses.

    Example:

    >>> # logits (0, ln 3): p = (1/4, 3/4), so -log p_1 = log(4/3) = 0.2877
    >>> cross_entropy([[0.0, np.log(3.0)]], [1], from_logits=True).round(4)
    array([0.2877])
    """
    out, y = _outputs_and_labels(outputs, labels)
    log_p = _log_probabilities(out, _check_from_logits(from_logits))
    return -log_p[np.arange(len(y)), y]


def loss_scores(outputs, labels, from_logits):
    """The loss-threshold attack's scores (Yeom et al. 2018): `-loss`, so a
    better-fitted example scores higher (more likely a member).

    Args:
        outputs: `(n, classes)` logits or probabilities.
        labels: `n` class indices.
        from_logits: whether `outputs` are logits.

    Returns:
        A float64 array of `n` scores, the negated cross-entropies.

    Example:

    >>> # probabilities of the label 0.9 and 0.5: scores ln 0.9 > ln 0.5
    >>> loss_scores([[0.9, 0.1], [0.5, 0.5]], [0, 1], from_logits=False).round(4)
    array([-0.1054, -0.6931])

    References:
        Yeom, Giacomelli, Fredrikson and Jha, "Privacy Risk in Machine
        Learning: Analyzing the Connection to Overfitting" (CSF 2018),
        arXiv:1709.01604.
    """
    return -cross_entropy(outputs, labels, from_logits)


def logit_scaled_confidence(outputs, labels, from_logits):
    """LiRA's per-example confidence, `phi = log p_y - log(sum_{j != y} p_j)`.

    It is the logit of the probability of the true class, `log(p / (1 - p))`,
    computed without forming `1 - p` (which rounds to 0 for a confident
    model): from logits `z`, `phi = z_y - logsumexp_{j != y} z_j`; from
    probabilities, the sum over the other classes directly.

    Args:
        outputs: `(n, classes)` logits or probabilities.
        labels: `n` class indices.
        from_logits: whether `outputs` are logits (else probabilities; a
            probability below 1e-30 counts as 1e-30, so `|phi| <= 69`).

    Returns:
        A float64 array of `n` confidences.

    Example:

    >>> # logits (2, 0, 0), label 0: phi = 2 - log(e^0 + e^0) = 2 - log 2
    >>> logit_scaled_confidence([[2.0, 0.0, 0.0]], [0], from_logits=True).round(4)
    array([1.3069])
    >>> # probabilities (0.8, 0.15, 0.05), label 0: log(0.8 / 0.2) = log 4
    >>> logit_scaled_confidence([[0.8, 0.15, 0.05]], [0], from_logits=False).round(4)
    array([1.3863])

    References:
        Carlini, Chien, Nasr, Song, Terzis and Tramer, "Membership Inference
        Attacks From First Principles" (IEEE S&P 2022), arXiv:2112.03570,
        Sec. IV-C; github.com/tensorflow/privacy,
        research/mi_lira_2021.
    """
    out, y = _outputs_and_labels(outputs, labels)
    rows = np.arange(len(y))
    if _check_from_logits(from_logits):
        true = out[rows, y]
        others = out.copy()
        others[rows, y] = -np.inf
        top = others.max(axis=1)
        rest = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
        return true - rest
    p = np.exp(_log_probabilities(out, False))
    true = p[rows, y]
    # summing the other classes directly keeps their mass when p_y ~ 1
    mask = np.ones_like(p, dtype=bool)
    mask[rows, y] = False
    others = np.where(mask, p, 0.0).sum(axis=1)
    return np.log(np.maximum(true, _FLOOR)) - np.log(np.maximum(others, _FLOOR))


# -- LiRA ------------------------------------------------------------------------


def _gaussian_log_density(x, mean, variance):
    return -0.5 * ((x - mean) ** 2 / variance + np.log(2 * np.pi * variance))


def _log_normal_cdf(z):
    """`log Phi(z)`, accurate far in the lower tail (where `Phi` rounds to
    0) through `scipy.special.log_ndtr`."""
    from scipy.special import log_ndtr

    return log_ndtr(z)


def _means_and_variances(values, mask, variance):
    """Per-column mean of `values` where `mask`, and the variance: one per
    column, or one pooled for all (the squared deviations from each column's
    own mean over all of them, less one degree of freedom per column).

    Columns with no entry get a NaN mean."""
    counts = mask.sum(axis=0)
    sums = np.where(mask, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    deviations = np.where(mask, values - means, 0.0) ** 2
    if variance == "per_example":
        with np.errstate(invalid="ignore", divide="ignore"):
            variances = deviations.sum(axis=0) / (counts - 1)
    else:
        used = counts > 0
        freedom = int(counts[used].sum() - used.sum())
        pooled = deviations[:, used].sum() / freedom if freedom > 0 else 0.0
        variances = np.full(values.shape[1], pooled)
    return means, np.maximum(variances, _MIN_VARIANCE)


def _check_lira(target, shadow, shadow_in, variance, mode):
    target = np.asarray(target, dtype=np.float64)
    shadow = np.asarray(shadow, dtype=np.float64)
    shadow_in = np.asarray(shadow_in)
    if target.ndim != 1:
        raise ValueError(
            "`target_confidence` must be one confidence per example, shape "
            f"(n,). Received: target_confidence of shape {target.shape}"
        )
    if shadow.ndim != 2 or shadow.shape[1] != len(target):
        raise ValueError(
            "`shadow_confidence` must be (shadow models, examples) = "
            f"(k, {len(target)}). Received: shadow_confidence of shape {shadow.shape}"
        )
    if shadow_in.shape != shadow.shape or shadow_in.dtype != bool:
        raise ValueError(
            "`shadow_in` must be a bool array of the shape of "
            f"`shadow_confidence`, {shadow.shape}: whether each shadow model "
            f"trained on each example. Received: shadow_in of shape "
            f"{shadow_in.shape} and dtype {shadow_in.dtype}"
        )
    for name, values in (("target_confidence", target), ("shadow_confidence", shadow)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"`{name}` must be finite. Received: NaN or inf in {name}")
    if variance not in VARIANCES:
        raise ValueError(
            f"`variance` must be one of {VARIANCES}. Received: variance={variance!r}"
        )
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    return target, shadow, shadow_in


def lira_scores(
    target_confidence, shadow_confidence, shadow_in, variance="auto", mode="auto"
):
    """LiRA's membership scores (Carlini et al. 2022), from logit-scaled
    confidences.

    For each example, the shadow models that trained on it (IN) and those
    that did not (OUT) give two samples of its confidence; each is fitted
    with a Gaussian. The **online** score is the log-likelihood ratio of the
    target's confidence, `log N(phi; mu_in, s_in^2) - log N(phi; mu_out,
    s_out^2)`. The **offline** score, for an example no shadow trained on,
    is a one-sided test against OUT alone: `log P[Z <= phi]` for `Z ~
    N(mu_out, s_out^2)` (a member's confidence is high). Both are higher for
    a likelier member; they are on different scales, so an attack should be
    one or the other for all its examples (`audit` gives every example IN
    and OUT shadows, so it is online throughout).

    With few shadows the variances are estimated globally (one for IN, one
    for OUT, pooled over examples from each example's deviations from its
    own means), as the paper advises below about 64 shadows; with more, per
    example.

    Args:
        target_confidence: `(n,)` the target model's `phi` per example
            (`logit_scaled_confidence`).
        shadow_confidence: `(k, n)` each shadow model's `phi` per example.
        shadow_in: `(k, n)` bools, whether shadow `i` trained on example `j`.
        variance: `"global"`, `"per_example"` (needs two IN and two OUT
            values for each example scored online, two OUT offline), or
            `"auto"` (per example from `PER_EXAMPLE_VARIANCE_FROM` = 64
            shadows on, else global).
        mode: `"online"` (every example needs IN and OUT shadows),
            `"offline"` (OUT shadows only, the IN ones ignored) or `"auto"`
            (online where an example has IN shadows, offline where it has
            none).

    Returns:
        A float64 array of `n` scores, higher for a likelier member.

    Raises:
        ValueError: for an example with no OUT shadow (nothing to compare
            with), or no IN shadow under `mode="online"`.

    Example:

    >>> # one example, four shadows: IN confidences 3 and 5, OUT 0 and 2
    >>> shadow = [[3.0], [5.0], [0.0], [2.0]]
    >>> shadow_in = np.array([[True], [True], [False], [False]])
    >>> # means 4 and 1, variances 2 and 2; at phi = 4:
    >>> # (-(4-4)^2 + (4-1)^2) / (2 * 2) = 9 / 4
    >>> lira_scores([4.0], shadow, shadow_in).round(4)
    array([2.25])

    References:
        Carlini, Chien, Nasr, Song, Terzis and Tramer, "Membership Inference
        Attacks From First Principles" (IEEE S&P 2022), arXiv:2112.03570,
        Algorithm 1; github.com/tensorflow/privacy,
        research/mi_lira_2021.
    """
    target, shadow, shadow_in = _check_lira(
        target_confidence, shadow_confidence, shadow_in, variance, mode
    )
    if variance == "auto":
        many = len(shadow) >= PER_EXAMPLE_VARIANCE_FROM
        variance = "per_example" if many else "global"
    out_mask = ~shadow_in
    in_mask = shadow_in if mode != "offline" else np.zeros_like(shadow_in)
    n_in, n_out = in_mask.sum(axis=0), out_mask.sum(axis=0)
    if np.any(n_out == 0):
        raise ValueError(
            "Every example needs a shadow model that did not train on it (an "
            f"OUT shadow). Received: shadow_in with {int(np.sum(n_out == 0))} "
            "examples IN for every shadow"
        )
    if mode == "online" and np.any(n_in == 0):
        raise ValueError(
            "`mode='online'` needs a shadow model that trained on each example "
            f"(pass mode='auto' or 'offline'). Received: shadow_in with "
            f"{int(np.sum(n_in == 0))} examples IN for no shadow"
        )
    least = 2 if variance == "per_example" else 1
    if variance == "per_example" and (
        np.any(n_out < least) or np.any((n_in > 0) & (n_in < least))
    ):
        raise ValueError(
            "`variance='per_example'` needs at least 2 IN and 2 OUT values "
            "for every example (or pass variance='global'). Received: "
            f"{len(shadow)} shadows, at least {int(n_in.min())} IN and "
            f"{int(n_out.min())} OUT per example"
        )
    mean_out, var_out = _means_and_variances(shadow, out_mask, variance)
    online = n_in > 0
    scores = np.empty(len(target))
    if np.any(online):
        mean_in, var_in = _means_and_variances(shadow, in_mask, variance)
        t = target[online]
        scores[online] = _gaussian_log_density(
            t, mean_in[online], var_in[online]
        ) - _gaussian_log_density(t, mean_out[online], var_out[online])
    offline = ~online
    if np.any(offline):
        z = (target[offline] - mean_out[offline]) / np.sqrt(var_out[offline])
        scores[offline] = _log_normal_cdf(z)
    return scores
