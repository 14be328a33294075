"""`audit`: how much a trained classifier gives away about its training set.

A membership-inference attack is handed an example and the model and
guesses whether the example was trained on. The audit runs such attacks on
examples known to be members (trained on) and non-members (not), and
reports how well they tell them apart: the AUC, and the true-positive rate
at a low false-positive rate (1%, 0.1%), where a leak that matters shows.

- `"loss"` (Yeom et al. 2018) needs only the model: members have a lower
  loss.
- `"lira"` (Carlini et al. 2022) trains shadow models on random halves of
  the members and non-members together, so each example is IN about half
  of them and OUT of the rest; how the target's confidence on an example
  compares with its IN and OUT confidences gives the likelihood ratio.
  It needs a way to train a model like the target: `train_fn`, or by
  default the target's architecture and compile settings.

The maths is pure NumPy (`membership`, `roc`); here is what touches Keras.
"""

import numbers
import time

import keras
import numpy as np

from keras_harden._outputs import looks_like_probabilities
from keras_harden._validation import check_bool, check_int
from keras_harden.privacy import membership
from keras_harden.privacy.audit_report import AuditReport, sample_size_warnings
from keras_harden.privacy.roc import auc, roc

__all__ = ["ATTACKS", "audit", "resolve_from_logits"]

ATTACKS = ("loss", "lira")
_MAX_SEED = 2**31 - 1
# Compiled losses that are cross-entropies over probabilities unless their
# configuration says `from_logits=True` (a name or a bare function: Keras's
# default, probabilities)
_CROSSENTROPIES = {
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "SparseCategoricalCrossentropy",
    "CategoricalCrossentropy",
}


# -- arguments -------------------------------------------------------------------


def _check_split(name, data):
    """`(x, y)` of `name` as arrays: as many labels as inputs, class
    indices, at least one example."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"`{name}` must be a tuple `(x, y)` of inputs and class-index labels. "
            f"Received: {name} of type {type(data).__name__}"
        )
    x = np.asarray(keras.ops.convert_to_numpy(data[0]))
    y = np.asarray(keras.ops.convert_to_numpy(data[1]))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    integral = y.dtype.kind in "iu" or (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y) or not integral:
        raise ValueError(
            f"`{name}` must pair each input with one class index. Received: "
            f"{name} with x of shape {x.shape} and y of shape {y.shape}, "
            f"dtype {y.dtype}"
        )
    if not len(x):
        raise ValueError(f"`{name}` must hold at least one example. Received: none")
    return x, y.astype(np.int64)


def _check_attacks(attacks):
    names = [attacks] if isinstance(attacks, str) else attacks
    try:
        names = list(dict.fromkeys(names))
    except TypeError:
        names = None
    if not names or any(name not in ATTACKS for name in names):
        raise ValueError(
            f"`attacks` must name one or more of {ATTACKS}. Received: "
            f"attacks={attacks!r}"
        )
    return names


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(
            f"`seed` must be an integer in [0, {_MAX_SEED}]. Received: seed={seed!r}"
        )
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(
            f"`seed` must be an integer in [0, {_MAX_SEED}]. Received: seed={seed!r}"
        )
    return int(seed)


def _compiled_from_logits(loss):
    """What a compiled loss says about the outputs: True (logits), False
    (probabilities) or None (it does not say)."""
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        if "from_logits" in config:
            return bool(config["from_logits"])
        return None
    if isinstance(loss, str):
        return False if loss in _CROSSENTROPIES else None
    if callable(loss) and getattr(loss, "__name__", None) in _CROSSENTROPIES:
        return False
    return None


def resolve_from_logits(model, from_logits=None):
    """Whether `model`'s outputs are logits: `from_logits` when given, else
    what its compiled loss says (`from_logits` of a Keras cross-entropy; a
    cross-entropy by name or function means probabilities, Keras's default).

    Raises:
        ValueError: when `from_logits` is None and the compiled loss does not
            say (not compiled, another loss, one loss per output).
    """
    if from_logits is not None:
        return check_bool("from_logits", from_logits)
    loss = getattr(model, "loss", None)
    said = _compiled_from_logits(loss)
    if said is None:
        what = "not compiled" if loss is None else f"compiled with loss {loss!r}"
        raise ValueError(
            f"Cannot tell whether the outputs of {getattr(model, 'name', model)!r} "
            f"are logits or probabilities: it is {what}, which does not say. "
            "Pass from_logits=True (logits) or False (probabilities). "
            "Received: from_logits=None"
        )
    return said


# -- shadow models ---------------------------------------------------------------


def _shadow_split(n, count, rng):
    """`(count, n)` bools: example `j` is IN for exactly `count // 2` of the
    shadows (odd `count`: `count // 2` or one more, at random), chosen at
    random, so every example has IN and OUT shadows."""
    half = np.full(n, count // 2)
    if count % 2:
        half = half + (rng.random(n) < 0.5)
    ranks = np.argsort(np.argsort(rng.random((count, n)), axis=0), axis=0)
    return ranks < half[None, :]


def _default_train_fn(target, epochs, batch_size):
    """A `train_fn` that trains the target's architecture from a fresh
    initialisation, compiled as the target was (a fresh optimizer), for
    `epochs` epochs."""
    config = target.get_compile_config()
    if not config:
        raise ValueError(
            "The LiRA attack trains shadow models like the target; without a "
            "`train_fn` it clones the target's architecture and compiles it as "
            "the target was, but the target is not compiled. Compile it (the "
            "optimizer and loss it was trained with) or pass "
            "train_fn(x, y, seed) -> trained model. Received: train_fn=None"
        )

    def train(x, y, seed):
        keras.utils.set_random_seed(seed)
        try:
            shadow = keras.models.clone_model(target)
        except Exception as error:  # noqa: BLE001 - subclassed models and more
            raise ValueError(
                "Cannot clone the target's architecture for LiRA's shadow "
                f"models ({error}). Pass train_fn(x, y, seed) -> trained model. "
                "Received: train_fn=None"
            ) from error
        shadow.compile_from_config(config)
        shadow.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
        return shadow

    return train


# -- the audit -------------------------------------------------------------------


def _outputs(model, x, batch_size, from_logits, what):
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float64)
    if not from_logits and not looks_like_probabilities(outputs):
        raise ValueError(
            f"The outputs of {what} are not probabilities (rows in [0, 1] "
            "summing to 1) although from_logits is False: pass "
            "from_logits=True if they are logits. Received: from_logits=False"
        )
    return outputs


def audit(
    model,
    members,
    non_members,
    *,
    attacks=("loss",),
    train_fn=None,
    shadow_models=4,
    shadow_epochs=10,
    from_logits=None,
    seed=0,
    batch_size=32,
    verbose=0,
):
    """Membership inference against `model`: how well attacks tell its
    training examples from others.

    Each attack gives every example of `members` and `non_members` a score
    (higher: likelier a member); the report gives, per attack, the AUC and
    the true-positive rate at 1% and 0.1% false-positive rate, with the ROC
    curves (`AuditReport.plot` draws them on log-log axes). The figures are
    a lower bound on the leak: a stronger attack may do better.

    The **loss** attack (Yeom et al. 2018) scores each example by its
    negated cross-entropy. **LiRA** (Carlini et al. 2022) trains
    `shadow_models` shadow models, each on a random half of the pool
    `members + non_members` (every example is IN for half of them), and
    scores each example by the likelihood ratio of the target's
    logit-scaled confidence under the IN and OUT Gaussians of the shadows'
    confidences (online LiRA; one variance per side over all examples, as
    the paper advises for fewer than 64 shadows). The shadows should be
    trained as the target was (same architecture, optimizer, epochs):
    `train_fn(x, y, seed)` does it, or by default the target's architecture
    (`keras.models.clone_model`, freshly initialised) compiled with its
    `get_compile_config()` and fitted `shadow_epochs` epochs at
    `batch_size`. The default sets Keras's global seed
    (`keras.utils.set_random_seed`) to each shadow's seed before it builds
    and trains one. A fine-tuned target (a pre-trained start) needs a
    `train_fn` that starts from the same weights.

    Args:
        model: a trained Keras classifier (one `(batch, classes)` output,
            logits or probabilities).
        members: `(x, y)` arrays, examples `model` trained on; `y` class
            indices.
        non_members: `(x, y)` arrays from the same distribution, not trained
            on. At least 100 are needed for the TPR at 1% FPR to mean
            anything and 1,000 for 0.1% (the report warns).
        attacks: a name or a list of names from `ATTACKS`, `"loss"` and
            `"lira"`.
        train_fn: for LiRA, `train_fn(x, y, seed) -> trained model` (outputs
            of the target's kind), or None for the default above.
        shadow_models: LiRA's shadow models, at least 2 (the paper's strong
            figures take 64 or more; a few already beat the loss attack at a
            low FPR).
        shadow_epochs: epochs of the default `train_fn`.
        from_logits: whether the outputs are logits; None asks the compiled
            loss (`resolve_from_logits`; also for each shadow, falling back
            to the target's answer).
        seed: an int in [0, 2**31 - 1]; the split into shadow training sets
            and the shadows' seeds follow from it, so a run replays.
        batch_size: examples per model call, and the default `train_fn`'s
            training batch.
        verbose: 0 (silent) or 1 (a line per shadow model).

    Returns:
        An `AuditReport`.

    Raises:
        ValueError: for an argument that is not as above (naming it), or when
            `from_logits` is None and the compiled loss does not say.

    Example:

    >>> (x, y), (xt, yt) = kh.data.load_digits()
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(10)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> model.compile("adam", loss)
    >>> _ = model.fit(x[:200] / 255, y[:200], epochs=3, verbose=0)
    >>> report = audit(model, (x[:200] / 255, y[:200]), (xt[:200] / 255, yt[:200]))
    >>> report.attacks, 0 <= report.auc["loss"] <= 1
    (['loss'], True)

    References:
        Yeom, Giacomelli, Fredrikson and Jha, "Privacy Risk in Machine
        Learning: Analyzing the Connection to Overfitting" (CSF 2018),
        arXiv:1709.01604.
        Carlini, Chien, Nasr, Song, Terzis and Tramer, "Membership Inference
        Attacks From First Principles" (IEEE S&P 2022), arXiv:2112.03570;
        github.com/tensorflow/privacy, research/mi_lira_2021.
    """
    names = _check_attacks(attacks)
    x_in, y_in = _check_split("members", members)
    x_out, y_out = _check_split("non_members", non_members)
    if x_in.shape[1:] != x_out.shape[1:]:
        raise ValueError(
            "`members` and `non_members` must hold inputs of one shape. "
            f"Received: members x of shape {x_in.shape}, non_members x of "
            f"shape {x_out.shape}"
        )
    if train_fn is not None and not callable(train_fn):
        raise ValueError(
            "`train_fn` must be None or a callable (x, y, seed) -> trained "
            f"model. Received: train_fn={train_fn!r}"
        )
    shadow_models = check_int("shadow_models", shadow_models, minimum=2)
    shadow_epochs = check_int("shadow_epochs", shadow_epochs, minimum=1)
    seed = _check_seed(seed)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if verbose not in (0, 1) or isinstance(verbose, bool):
        raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
    if from_logits is not None:
        check_bool("from_logits", from_logits)
    lira = "lira" in names
    if lira and train_fn is None:
        train_fn = _default_train_fn(model, shadow_epochs, batch_size)
    target_logits = resolve_from_logits(model, from_logits)

    x = np.concatenate([x_in, x_out])
    y = np.concatenate([y_in, y_out])
    is_member = np.arange(len(x)) < len(x_in)
    seconds = {}
    start = time.perf_counter()
    outputs = _outputs(model, x, batch_size, target_logits, "the target model")
    seconds["predict"] = time.perf_counter() - start
    scores = {}
    if "loss" in names:
        scores["loss"] = membership.loss_scores(outputs, y, target_logits)
    if lira:
        start = time.perf_counter()
        scores["lira"] = _lira(
            outputs,
            x,
            y,
            target_logits,
            train_fn,
            shadow_models,
            from_logits,
            seed,
            batch_size,
            verbose,
        )
        seconds["lira"] = time.perf_counter() - start
    ordered = [name for name in ATTACKS if name in scores]
    curves = {}
    for name in ordered:
        fpr, tpr = roc(scores[name], is_member)
        curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return AuditReport(
        auc={name: auc(scores[name], is_member) for name in ordered},
        roc=curves,
        n_members=len(x_in),
        n_non_members=len(x_out),
        shadow_models=shadow_models if lira else 0,
        warnings=sample_size_warnings(len(x_out)),
        seconds=seconds,
    )


def _lira(
    outputs,
    x,
    y,
    target_logits,
    train_fn,
    count,
    from_logits,
    seed,
    batch_size,
    verbose,
):
    """Online LiRA's scores of the pool `x, y` against the target's
    `outputs`, with `count` shadows trained by `train_fn`."""
    rng = np.random.default_rng(seed)
    shadow_in = _shadow_split(len(x), count, rng)
    seeds = rng.integers(0, _MAX_SEED, size=count)
    sizes = shadow_in.sum(axis=1)
    if sizes.min() < 1:
        raise ValueError(
            "Each LiRA shadow model needs examples to train on; with "
            f"{len(x)} examples in all, one of {count} got none. Pass more "
            f"members and non-members. Received: shadow_models={count}"
        )
    confidences = np.empty((count, len(x)))
    for k in range(count):
        start = time.perf_counter()
        shadow = train_fn(x[shadow_in[k]], y[shadow_in[k]], int(seeds[k]))
        if from_logits is not None:
            logits = from_logits
        else:
            said = _compiled_from_logits(getattr(shadow, "loss", None))
            logits = target_logits if said is None else said
        shadow_outputs = _outputs(
            shadow, x, batch_size, logits, f"shadow model {k} (from train_fn)"
        )
        if shadow_outputs.shape != outputs.shape:
            raise ValueError(
                f"Shadow model {k} gives outputs of shape {shadow_outputs.shape}, "
                f"the target {outputs.shape}: `train_fn` must return a model "
                "like the target. Received: train_fn of another model"
            )
        confidences[k] = membership.logit_scaled_confidence(shadow_outputs, y, logits)
        del shadow
        if verbose:
            print(
                f"LiRA shadow {k + 1}/{count}: trained on {sizes[k]} examples "
                f"in {time.perf_counter() - start:.1f} s"
            )
    target = membership.logit_scaled_confidence(outputs, y, target_logits)
    return membership.lira_scores(target, confidences, shadow_in)
