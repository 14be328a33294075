"""`merge`: fine-tunes of one base merged through their task vectors."""

import math
import numbers

import keras
import numpy as np

from keras_harden._validation import check_number
from keras_harden.fusion._common import (
    batchnorm_statistics_ids,
    check_models,
    clone_with_weights,
    is_float,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.averaging import check_shared_start, finish_batchnorm
from keras_harden.fusion.compat import check_compatible

__all__ = ["merge"]

METHODS = ("task_arithmetic", "ties", "dare", "dare_ties", "slerp")
# Which optional argument each method reads; any other one given is an error
# (a silently ignored `density=` would look like it did something).
ARGUMENTS = {
    "task_arithmetic": {"scaling"},
    "ties": {"scaling", "density"},
    "dare": {"scaling", "drop_rate", "seed"},
    "dare_ties": {"scaling", "drop_rate", "seed"},
    "slerp": {"t"},
}
# Defaults picked on held-out digits by `benchmarks/task_vectors.py` (the
# figures: `merge`'s docstring). Task arithmetic and DARE add up k task
# vectors, so their default scaling is a multiple of the uniform soup's 1/k.
DEFAULT_SOUP_MULTIPLE = {"task_arithmetic": 1.5, "dare": 1.5}
DEFAULT_SCALING = {"ties": 1.0, "dare_ties": 1.0}
DEFAULT_DENSITY = 0.7
DEFAULT_DROP_RATE = 0.1
# Above this cosine between two tensors SLERP interpolates linearly: the
# angle is too small for sin(angle) to divide by (mergekit uses 0.9995).
PARALLEL_COSINE = 0.9995


# -- the maths, on NumPy arrays ---------------------------------------------------


def trim(tau, density):
    """Keeps the `ceil(density * tau.size)` entries of `tau` largest in
    magnitude and zeroes the rest (ties broken towards the first entries in
    C order)."""
    flat = tau.reshape(-1)
    keep = math.ceil(density * flat.size)
    order = np.argsort(-np.abs(flat), kind="stable")
    trimmed = np.zeros_like(flat)
    trimmed[order[:keep]] = flat[order[:keep]]
    return trimmed.reshape(tau.shape)


def disjoint_mean(taus):
    """TIES's sign election and disjoint mean of stacked task vectors.

    The elected sign of each entry is the sign of the sum of the entries
    (the side with the larger total magnitude); the result is the mean of
    the non-zero entries of that sign, 0 where there is none."""
    taus = np.stack(taus)
    elected = np.sign(taus.sum(axis=0))
    agree = (np.sign(taus) == elected) & (taus != 0)
    count = agree.sum(axis=0)
    total = np.where(agree, taus, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def drop_and_rescale(tau, uniform, drop_rate):
    """DARE: zeroes each entry of `tau` whose `uniform` draw in [0, 1) is
    below `drop_rate` and divides the survivors by `1 - drop_rate`, so each
    entry keeps its expected value."""
    return np.where(uniform >= drop_rate, tau / (1.0 - drop_rate), 0.0)


def slerp(a, b, t):
    """Spherical interpolation from `a` (t=0) to `b` (t=1), as flat vectors.

    The angle is measured between the directions of `a` and `b`; the
    coefficients `sin((1-t)*angle)/sin(angle)` and `sin(t*angle)/sin(angle)`
    apply to `a` and `b` themselves, so two vectors of one norm give a
    result of that norm. Nearly parallel vectors (cosine above 0.9995) and
    zero vectors are interpolated linearly."""
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0.0 or norm_b == 0.0:
        return (1.0 - t) * a + t * b
    cosine = float(np.clip(np.sum(a * b) / (norm_a * norm_b), -1.0, 1.0))
    if abs(cosine) > PARALLEL_COSINE:
        return (1.0 - t) * a + t * b
    angle = math.acos(cosine)
    sine = math.sin(angle)
    return (math.sin((1.0 - t) * angle) / sine) * a + (math.sin(t * angle) / sine) * b


# -- arguments --------------------------------------------------------------------


def _check_seed(seed):
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return keras.random.SeedGenerator(seed) if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(
            "`seed` must be None, a non-negative int or a "
            f"keras.random.SeedGenerator. Received: seed={seed!r}"
        )
    return keras.random.SeedGenerator(int(seed))


def _check_arguments(method, tunes, given):
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(map(repr, METHODS))}. "
            f"Received: method={method!r}"
        )
    for name, value in given.items():
        if value is not None and name not in ARGUMENTS[method]:
            users = [m for m in METHODS if name in ARGUMENTS[m]]
            raise ValueError(
                f"`{name}` is read by method {' / '.join(map(repr, users))} only, "
                f"not by method={method!r}. Received: {name}={value!r}"
            )
    if method == "slerp" and len(tunes) != 2:
        raise ValueError(
            "method='slerp' interpolates between exactly two fine-tunes; "
            f"{len(tunes)} were given. Received: tunes={[m.name for m in tunes]}"
        )


def _check_architectures(base, tunes):
    try:
        check_compatible([base, *tunes])
    except ValueError as error:
        reason = str(error).rsplit(" Received:", 1)[0]
        raise ValueError(
            "Every tune must have `base`'s architecture (below, model 0 is "
            f"`base` and model i is `tunes[i - 1]`). {reason} "
            f"Received: tunes={[m.name for m in tunes]}"
        ) from None


# -- the merge ---------------------------------------------------------------------


def merge(
    base,
    tunes,
    method="task_arithmetic",
    *,
    scaling=None,
    density=None,
    drop_rate=None,
    seed=None,
    t=None,
    recalibrate=None,
    recalibrate_steps=None,
):
    """Merges fine-tunes of one base model through their task vectors.

    A fine-tune's task vector is its weights minus the base's (Ilharco et
    al.). Each method combines the task vectors tensor by tensor and adds
    the result to the base:

    - `"task_arithmetic"`: `base + scaling * sum(task vectors)`. With
      `scaling = 1 / len(tunes)` this is the uniform soup; above it the
      merge moves further along the tunes' shared direction.
    - `"ties"` (TIES-Merging, Yadav et al.): each task vector keeps only its
      `ceil(density * size)` entries largest in magnitude, per tensor (ties
      broken towards the first entries); each entry's sign is elected as the
      sign of the sum of the trimmed values (the side with the larger total
      magnitude); the entry becomes the mean of the trimmed values of that
      sign (zeros and the other sign are left out: the disjoint mean); the
      result is `base + scaling * that`.
    - `"dare"` (Yu et al.): each entry of each task vector is dropped with
      probability `drop_rate` and the survivors are divided by
      `1 - drop_rate` (an unbiased sparsification); then task arithmetic as
      above. This is mergekit's `dare_linear` without its normalisation.
    - `"dare_ties"`: DARE's drop and rescale in place of TIES's trim, then
      TIES's sign election and disjoint mean (mergekit's `dare_ties`).
    - `"slerp"`: spherical interpolation between exactly two fine-tunes'
      weights (not their task vectors), tensor by tensor, from `tunes[0]`
      (`t=0`) to `tunes[1]` (`t=1`); nearly parallel tensors (cosine above
      0.9995) and zero tensors are interpolated linearly. `base` is only
      checked for compatibility and gives the integer variables.

    DARE's draws: one `keras.random.uniform` tensor per merged variable and
    per fine-tune, weight by weight in the order the model's layers are
    walked, tunes in order within each weight, from one
    `keras.random.SeedGenerator`; an entry is dropped where its draw is below
    `drop_rate`. An int `seed` makes the merge reproducible on one backend; a
    `SeedGenerator` draws new masks on every call.

    Only floating-point variables other than batch-norm moving statistics are
    merged (trainable or not: a frozen layer has a zero task vector and keeps
    the base's values). Integer variables (seed states, counters) come from
    the base. Batch-norm moving statistics are recomputed from `recalibrate`
    data (see `recalibrate_batchnorm`), or left as in the base with a warning
    when none is given, as `average_weights` does. A tune whose kernels are
    nearly orthogonal to the base's (cosine similarity below 0.5) is not a
    fine-tune of it, and gets the warning `average_weights` gives (which
    numbers `base` 0 and `tunes[i]` i + 1).

    The result is a clone of `base` (compiled like it, when it was compiled)
    holding the merged weights; `base` and `tunes` are not modified. The
    arithmetic is done in float64 and cast back to each variable's dtype.

    Defaults, chosen on held-out digits by `benchmarks/task_vectors.py` (a
    small conv net with batch norm, fine-tuned in full for 5 epochs; 4 and 2
    tunes, 8 splits; mean validation accuracy over both settings; the grid
    and the test figures are in `benchmarks/RESULTS.md`, section "task-vector
    merging"): task arithmetic `scaling=1.5 / len(tunes)` (0.9838; 1/k, the
    uniform soup, 0.9823; 2/k 0.9825; 3/k 0.9696); TIES `density=0.7`,
    `scaling=1` (0.9832; density 1, which skips the trim, 0.9838 and tied
    with 0.7 in the run the defaults were chosen from; the paper's 0.2 gave
    0.9827, 0.1 gave 0.9807); DARE `drop_rate=0.1`, `scaling=1.5 / len(tunes)`
    (0.9840; the paper's 0.9 gave 0.9782); DARE-TIES `drop_rate=0.1`,
    `scaling=1` (0.9841; 0.9 gave 0.9123); SLERP `t=0.5` (0.9795; 0.3 gave
    0.9798, a tenth of a digit, and 0.5 treats both tunes alike). The best
    few grid points of each method are within a digit of 347. Small models
    fine-tuned in full change most of their weights, so trimming and
    dropping little works best; the papers' `density=0.2` and
    `drop_rate=0.9` are for large pretrained models whose fine-tuning moved
    few weights by little. Choose on your own held-out data when it matters.

    Args:
        base: the built Keras model the tunes were fine-tuned from.
        tunes: a list of built Keras models of `base`'s architecture.
        method: `"task_arithmetic"`, `"ties"`, `"dare"`, `"dare_ties"` or
            `"slerp"`.
        scaling: the factor applied to the combined task vector (all methods
            but SLERP). A finite number; negative values subtract the task
            (task negation). Default: `1.5 / len(tunes)` for task
            arithmetic and DARE, 1.0 for TIES and DARE-TIES.
        density: TIES's fraction of each tensor's entries kept, in (0, 1].
            Default 0.7.
        drop_rate: DARE's drop probability, in [0, 1). Default 0.1.
        seed: DARE's draws: None (fresh random masks), an int (reproducible)
            or a `keras.random.SeedGenerator`.
        t: SLERP's position in [0, 1] from `tunes[0]` to `tunes[1]`.
            Default 0.5.
        recalibrate: inputs to recompute batch-norm statistics from (an
            array, an `(x, y)` tuple, a `tf.data.Dataset` or an iterable of
            batches).
        recalibrate_steps: at most this many batches of `recalibrate`.

    Returns:
        A new Keras model.

    Raises:
        ValueError: for an unknown `method`, an argument the method does not
            read, a value out of range, SLERP without exactly two tunes, or
            tunes whose architecture differs from `base`'s (naming the first
            differing layer).

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> def net(kernel):
    ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    ...     model.set_weights([np.array(kernel, "float32"), np.zeros(1, "float32")])
    ...     return model
    >>> base = net([[1.0], [1.0]])
    >>> tunes = [net([[3.0], [1.0]]), net([[1.0], [5.0]])]  # tasks (2, 0), (0, 4)
    >>> merged = kh.fusion.merge(base, tunes, "task_arithmetic", scaling=1.0)
    >>> merged.layers[0].kernel.numpy().ravel().tolist()
    [3.0, 5.0]

    References:
        Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
        Yadav et al., "TIES-Merging: Resolving Interference When Merging
        Models", NeurIPS 2023. Yu et al., "Language Models are Super Mario:
        Absorbing Abilities from Homologous Models as a Free Lunch", ICML
        2024 (DARE). Shoemake, "Animating rotation with quaternion curves",
        SIGGRAPH 1985 (SLERP). Reference implementation:
        github.com/arcee-ai/mergekit (`merge_methods/`, `sparsify.py`).
    """
    if not isinstance(base, keras.Model):
        raise ValueError(f"`base` must be a Keras model. Received: base={base!r}")
    check_models(base, name="base")
    tunes = check_models(tunes, name="tunes")
    given = {
        "scaling": scaling,
        "density": density,
        "drop_rate": drop_rate,
        "seed": seed,
        "t": t,
    }
    _check_arguments(method, tunes, given)
    if scaling is not None:
        scaling = check_number("scaling", scaling)
    elif method in DEFAULT_SOUP_MULTIPLE:
        scaling = DEFAULT_SOUP_MULTIPLE[method] / len(tunes)
    else:
        scaling = DEFAULT_SCALING.get(method)  # SLERP has none
    density = DEFAULT_DENSITY if density is None else density
    density = check_number("density", density, low=0, high=1, low_open=True)
    drop_rate = DEFAULT_DROP_RATE if drop_rate is None else drop_rate
    drop_rate = check_number("drop_rate", drop_rate, low=0, high=1, high_open=True)
    t = 0.5 if t is None else check_number("t", t, low=0, high=1)
    generator = _check_seed(seed) if method in ("dare", "dare_ties") else None
    _check_architectures(base, tunes)
    check_shared_start([base, *tunes], [1.0] * (len(tunes) + 1), "merge")

    result = clone_with_weights(base)
    skip = batchnorm_statistics_ids(result)
    base_slots = weight_slots(base)
    tune_slots = [weight_slots(tune) for tune in tunes]
    for position, (_, _, variable) in enumerate(weight_slots(result)):
        if id(variable) in skip or not is_float(variable):
            continue
        values = [to_numpy(s[position][2]).astype("float64") for s in tune_slots]
        if method == "slerp":
            merged = slerp(values[0].reshape(-1), values[1].reshape(-1), t)
            merged = merged.reshape(values[0].shape)
        else:
            start = to_numpy(base_slots[position][2]).astype("float64")
            taus = [value - start for value in values]
            if method in ("dare", "dare_ties"):
                taus = [
                    drop_and_rescale(tau, _uniform(tau.shape, generator), drop_rate)
                    for tau in taus
                ]
            if method == "ties":
                taus = [trim(tau, density) for tau in taus]
            if method in ("ties", "dare_ties"):
                combined = disjoint_mean(taus)
            else:
                combined = np.sum(taus, axis=0)
            merged = start + scaling * combined
        variable.assign(np.asarray(merged, dtype=variable.dtype))
    finish_batchnorm(result, recalibrate, recalibrate_steps, "merge")
    return result


def _uniform(shape, generator):
    draw = keras.random.uniform(shape, dtype="float32", seed=generator)
    return to_numpy(draw).astype("float64")
