"""`gradient_masking_warnings`: the signs that an evaluation is flattered.

A model can look robust because its gradients are useless to an attacker
(saturated softmax, shattered or obfuscated gradients: Athalye, Carlini and
Wagner 2018) rather than because its prediction holds. Carlini et al. 2019
list the symptoms an honest evaluation checks; three of them need only the
accuracies an evaluation has already measured:

1. an iterative attack leaves a *higher* accuracy than one FGSM step (more
   steps of the same gradient can only help a working attack);
2. accuracy does not fall to about zero at a large `eps` (at half the value
   range every image can be moved to the mid-grey image, so a working attack
   breaks nearly everything);
3. a gradient-free attack (Square) breaks more than every gradient attack.

These are pure functions of the measured accuracies.
"""

__all__ = ["LARGE_EPS_ACCURACY", "TOLERANCE", "gradient_masking_warnings"]

# Accuracy differences smaller than this are noise, not a symptom.
TOLERANCE = 0.01
# At the large eps, a working attack leaves at most this accuracy.
LARGE_EPS_ACCURACY = 0.1

ONE_STEP = ("fgsm",)
GRADIENT_FREE = ("square",)


def _eps_text(eps):
    return f"{eps:g}"


def gradient_masking_warnings(
    accuracy,
    large_eps=None,
    large_eps_accuracy=None,
    tolerance=TOLERANCE,
    large_eps_limit=LARGE_EPS_ACCURACY,
):
    """The gradient-masking symptoms in an evaluation's accuracies.

    Args:
        accuracy: `{attack name: {eps: accuracy}}`. `"fgsm"` is the one-step
            attack and `"square"` the gradient-free one; every other name
            counts as an iterative gradient attack.
        large_eps: the large radius the last check was run at, or None.
        large_eps_accuracy: the accuracy a strong attack left there, or None
            (no check).
        tolerance: accuracy differences at most this large are not flagged.
        large_eps_limit: the highest accuracy at `large_eps` not flagged.

    Returns:
        A list of one-sentence warnings (empty when nothing is flagged).

    Example:

    >>> accuracy = {"fgsm": {0.1: 0.40}, "pgd": {0.1: 0.55}, "square": {0.1: 0.30}}
    >>> for warning in gradient_masking_warnings(accuracy, 0.5, 0.62):
    ...     print(warning)  # doctest: +NORMALIZE_WHITESPACE
    pgd leaves a higher accuracy than one FGSM step at eps 0.1 (0.550 > 0.400):
        its gradient steps are not working (gradient masking?).
    square (gradient-free) is stronger than every gradient attack at eps 0.1
        (0.300 < 0.400): the gradients mislead (gradient masking?).
    Accuracy is still 0.620 at eps 0.5 (expected about 0): the attacks cannot
        use the gradient there (gradient masking?).
    """
    warnings = []
    gradient = {n: a for n, a in accuracy.items() if n not in GRADIENT_FREE}
    one_step = {n: a for n, a in gradient.items() if n in ONE_STEP}
    iterative = {n: a for n, a in gradient.items() if n not in ONE_STEP}
    for step in one_step.values():
        for name, by_eps in iterative.items():
            for eps, value in by_eps.items():
                if eps in step and value > step[eps] + tolerance:
                    warnings.append(
                        f"{name} leaves a higher accuracy than one FGSM step at "
                        f"eps {_eps_text(eps)} ({value:.3f} > {step[eps]:.3f}): "
                        "its gradient steps are not working (gradient masking?)."
                    )
    for free_name, free in accuracy.items():
        if free_name not in GRADIENT_FREE or not gradient:
            continue
        for eps, value in free.items():
            best = min((a[eps] for a in gradient.values() if eps in a), default=None)
            if best is not None and value < best - tolerance:
                warnings.append(
                    f"{free_name} (gradient-free) is stronger than every gradient "
                    f"attack at eps {_eps_text(eps)} ({value:.3f} < {best:.3f}): "
                    "the gradients mislead (gradient masking?)."
                )
    if large_eps_accuracy is not None and large_eps_accuracy > large_eps_limit:
        warnings.append(
            f"Accuracy is still {large_eps_accuracy:.3f} at eps "
            f"{_eps_text(large_eps)} (expected about 0): the attacks cannot use "
            "the gradient there (gradient masking?)."
        )
    return warnings
