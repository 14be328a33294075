"""Private helpers shared by the fusion units: walking a model's weights,
finding batch-norm layers, cloning with weights, iterating over data."""

import keras
import numpy as np

from keras_harden._batches import iterate_batches

__all__ = []


def check_models(models, name="models", minimum=1):
    """Returns `models` as a list after checking they are built Keras models."""
    if isinstance(models, keras.Model):
        models = [models]
    try:
        models = list(models)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a list of Keras models. Received: {name}={models!r}"
        ) from None
    if len(models) < minimum:
        raise ValueError(
            f"`{name}` must hold at least {minimum} Keras model(s). "
            f"Received: {name}={models!r}"
        )
    for model in models:
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`{name}` must hold Keras models only; found {type(model).__name__}. "
                f"Received: {name}={models!r}"
            )
        if not model.built:
            raise ValueError(
                f"Every model in `{name}` must be built (called on data or an "
                f"Input); {model.name!r} is not. Received: {name}={models!r}"
            )
    return models


def walk_layers(model, prefix=""):
    """Yields `(path, layer)` for every layer, descending into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, prefix=f"{path}/")
        else:
            yield path, layer


def weight_slots(model):
    """Lists `(path, layer_class_name, variable)` for each of `model`'s
    variables, in a deterministic order that only depends on the
    architecture, so the slots of two models of one architecture line up."""
    slots = []
    seen = set()
    for path, layer in walk_layers(model):
        for variable in layer.weights:
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            slots.append((f"{path}/{variable.name}", type(layer).__name__, variable))
    for variable in model.weights:  # anything the walk could not reach
        if id(variable) not in seen:
            seen.add(id(variable))
            slots.append((variable.path, "?", variable))
    return slots


def batchnorm_layers(model):
    """Every `BatchNormalization` layer in `model`, nested models included."""
    return [
        layer
        for _, layer in walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def batchnorm_statistics_ids(model):
    """The ids of the moving-mean and moving-variance variables of `model`."""
    ids = set()
    for layer in batchnorm_layers(model):
        ids.add(id(layer.moving_mean))
        ids.add(id(layer.moving_variance))
    return ids


def to_numpy(value):
    """A NumPy copy of a Keras variable or tensor."""
    return np.array(keras.ops.convert_to_numpy(value))


def is_float(variable):
    return keras.backend.is_float_dtype(variable.dtype)


def clone_with_weights(model, name=None):
    """A new model of `model`'s architecture holding a copy of its weights,
    compiled like `model` when it was compiled. `name` renames it."""
    clone = keras.models.clone_model(model)
    if not clone.built:  # a subclassed model: build it like the original
        clone.build(model.inputs[0].shape if model.inputs else None)
    for (_, _, target), (_, _, source) in zip(
        weight_slots(clone), weight_slots(model), strict=True
    ):
        target.assign(to_numpy(source))
    if name is not None:
        clone = rename(clone, name)
    if getattr(model, "compiled", False):
        try:
            clone.compile_from_config(model.get_compile_config())
        except Exception:  # a custom loss or metric that cannot be rebuilt
            pass
    return clone


def rename(model, name):
    """The same layers and weights as a functional model called `name`."""
    return keras.Model(model.inputs, model.outputs, name=name)


def first_leaf(x):
    return keras.tree.flatten(x)[0]


def predict_with_labels(model, data, batch_size=128):
    """Predictions of `model` on `data` (inference mode) and the labels."""
    if isinstance(data, tuple) and len(data) >= 2:
        x, y = data[0], data[1]
        return model.predict(x, batch_size=batch_size, verbose=0), np.asarray(y)
    predictions, labels = [], []
    for x, y in iterate_batches(data, batch_size, name="validation_data"):
        if y is None:
            raise ValueError(
                "`validation_data` must yield (x, y) batches with labels. "
                f"Received: validation_data={data!r}"
            )
        predictions.append(keras.ops.convert_to_numpy(model(x, training=False)))
        labels.append(keras.ops.convert_to_numpy(y))
    return np.concatenate(predictions), np.concatenate(labels)


def shared_inputs(models, name="models"):
    """Fresh `keras.Input`s matching every model's inputs (which must agree)."""
    reference = models[0].inputs
    for model in models[1:]:
        specs_a = [(tuple(t.shape[1:]), t.dtype) for t in reference]
        specs_b = [(tuple(t.shape[1:]), t.dtype) for t in model.inputs]
        if specs_a != specs_b:
            raise ValueError(
                f"All models must take the same inputs: {models[0].name!r} takes "
                f"{specs_a}, {model.name!r} takes {specs_b}. "
                f"Received: {name}={[m.name for m in models]}"
            )
    inputs = [
        keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"input_{i}")
        for i, t in enumerate(reference)
    ]
    return inputs


def _feature_layer(model, features):
    layers = model.layers
    if isinstance(features, int):
        if not -len(layers) <= features < len(layers):
            raise ValueError(
                f"`features` index {features} is out of range for {model.name!r} "
                f"({len(layers)} layers). Received: features={features!r}"
            )
        return layers[features]
    if isinstance(features, str):
        for layer in layers:
            if layer.name == features:
                return layer
        raise ValueError(
            f"{model.name!r} has no layer named {features!r}. "
            f"Received: features={features!r}"
        )
    raise ValueError(
        "`features` must be None, a layer index or a layer name. "
        f"Received: features={features!r}"
    )


def frozen_members(models, features=None, prefix="member"):
    """Frozen copies of `models` named `{prefix}_{i}` (so sub-models never
    clash, even copies of one saved model), cut at the `features` layer when
    given. The input models are not touched."""
    members = []
    for index, model in enumerate(models):
        clone = clone_with_weights(model)
        if features is None:
            outputs = keras.tree.flatten(clone.outputs)
        else:
            outputs = keras.tree.flatten(_feature_layer(clone, features).output)
        if len(outputs) != 1:
            raise ValueError(
                f"Each model must have a single output; {model.name!r} has "
                f"{len(outputs)}. Received: models={[m.name for m in models]}"
            )
        member = keras.Model(clone.inputs, outputs[0], name=f"{prefix}_{index}")
        member.trainable = False
        members.append(member)
    return members


def call_members(members, inputs):
    x = inputs[0] if len(inputs) == 1 else inputs
    return [member(x) for member in members]
