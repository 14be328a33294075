"""`ensemble`: one functional model running several models on a shared input."""

import keras

from keras_harden.fusion._common import (
    call_members,
    check_models,
    frozen_members,
    shared_inputs,
)

__all__ = ["ensemble"]

METHODS = ("average", "concatenate")


def ensemble(
    models,
    method="average",
    head=None,
    features=None,
    output_activation=None,
    name="ensemble",
):
    """Builds one functional model that runs `models` on a shared input.

    Each model is copied (weights included), frozen and nested as a
    sub-model named `member_0`, `member_1`, ...; so two copies of one saved
    model never clash and the inputs are left untouched. Their outputs are
    then either averaged (`method="average"`: the classic output-averaging
    ensemble) or concatenated (`method="concatenate"`), optionally followed
    by a trainable `head` (compile and fit the ensemble to train it; the
    members stay frozen). `features` cuts every member at an inner layer (the
    penultimate one, say) to concatenate features instead of outputs.

    Only built-in Keras layers are used, so the ensemble saves with
    `model.save`, loads with `keras.saving.load_model` and exports with
    `keras_harden.export` like any functional model.

    Args:
        models: a list of built single-output Keras models taking the same
            inputs (their architectures may differ).
        method: `"average"` or `"concatenate"`.
        head: optional Keras layer or model applied to the combined tensor.
        features: `None` (use the outputs), or a layer index (e.g. `-2`) or
            layer name at which to cut every member.
        output_activation: optional activation (e.g. `"softmax"`) applied to
            each member's output before combining: averaging probabilities
            rather than logits.
        name: the ensemble model's name.

    Returns:
        A new functional Keras model.

    Example:

    >>> import keras, keras_harden as kh
    >>> def net():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> both = kh.fusion.ensemble([net(), net()])
    >>> [layer.name for layer in both.layers]
    ['input_0', 'member_0', 'member_1', 'average']

    References:
        Dietterich, "Ensemble Methods in Machine Learning", MCS 2000;
        Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty
        Estimation using Deep Ensembles", NeurIPS 2017.
    """
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    if head is not None and not isinstance(head, keras.layers.Layer):
        raise ValueError(
            f"`head` must be a Keras layer or model. Received: head={head!r}"
        )
    models = check_models(models)
    inputs = shared_inputs(models)
    members = frozen_members(models, features=features)
    outputs = call_members(members, inputs)
    if output_activation is not None:
        outputs = [
            keras.layers.Activation(output_activation, name=f"member_{i}_activation")(
                output
            )
            for i, output in enumerate(outputs)
        ]
    if len(outputs) == 1:
        combined = outputs[0]
    elif method == "average":
        combined = keras.layers.Average(name="average")(outputs)
    else:
        combined = keras.layers.Concatenate(name="concatenate")(outputs)
    if head is not None:
        combined = head(combined)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], combined, name=name)
