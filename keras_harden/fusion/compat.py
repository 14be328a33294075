"""`check_compatible`: can these models be averaged weight by weight?"""

from keras_harden.fusion._common import check_models, weight_slots

__all__ = ["check_compatible"]


def _describe(slot):
    if slot is None:
        return "nothing"
    path, layer_class, variable = slot
    return f"{path!r} ({layer_class}, shape {tuple(variable.shape)}, {variable.dtype})"


def check_compatible(models):
    """Checks that `models` share one architecture, weight for weight.

    Two models are compatible when walking their layers (nested models
    included) meets the same layer classes holding variables of the same
    shapes and dtypes in the same order. Layer *names* may differ: two models
    built by one function get different automatic names (`dense`, `dense_1`),
    and are still the same architecture. This is the precondition of weight
    averaging (`average_weights`, `greedy_soup`, the SWA callback).

    Args:
        models: a list of built Keras models (functional, Sequential or
            subclassed).

    Returns:
        The number of variables each model holds.

    Raises:
        ValueError: at the first difference, naming the layer path in both
            models and both shapes (and dtypes and layer classes).

    Example:

    >>> import keras, keras_harden as kh
    >>> def net(units):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    >>> kh.fusion.check_compatible([net(3), net(3)])
    2
    >>> kh.fusion.check_compatible([net(3), net(5)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Models 0 and 1 are not compatible: ...

    References:
        Wortsman et al., "Model soups", ICML 2022 (fine-tunes of one start
        share an architecture and a loss basin).
    """
    models = check_models(models)
    reference = weight_slots(models[0])
    for index, model in enumerate(models[1:], start=1):
        slots = weight_slots(model)
        for position in range(max(len(reference), len(slots))):
            a = reference[position] if position < len(reference) else None
            b = slots[position] if position < len(slots) else None
            same = (
                a is not None
                and b is not None
                and a[1] == b[1]
                and tuple(a[2].shape) == tuple(b[2].shape)
                and a[2].dtype == b[2].dtype
            )
            if not same:
                shape_a = "none" if a is None else tuple(a[2].shape)
                shape_b = "none" if b is None else tuple(b[2].shape)
                raise ValueError(
                    f"Models 0 and {index} are not compatible: they first differ "
                    f"at variable #{position}, layer path {_describe(a)} in model 0 "
                    f"({models[0].name!r}) vs {_describe(b)} in model {index} "
                    f"({model.name!r}): shapes {shape_a} and {shape_b}. "
                    f"Received: models={[m.name for m in models]}"
                )
    return len(reference)
