"""Copies of the user's model and optimizer for the search's candidates."""

import keras

__all__ = ["check_built", "copy_model", "optimizer_with_rate", "rate_of"]


def check_built(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model. Received: model={type(model).__name__}"
        )
    if not model.built or not model.weights:
        raise ValueError(
            "`model` must be built (give it a `keras.Input`, or call it on a "
            "batch once) so its initial weights can be copied. Received: an "
            f"unbuilt model {model.name!r}"
        )


def copy_model(model):
    """A new model with `model`'s architecture and current weights (moving
    statistics included); `model` is untouched."""
    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # Keras raises several kinds here
        raise ValueError(
            "`model` must be a model `keras.models.clone_model` can copy (a "
            "Sequential or functional model, or a subclass with `get_config`): "
            f"each candidate trains its own copy. Received: {error}"
        ) from error
    copy.set_weights(model.get_weights())
    return copy


def rate_of(config):
    """The float learning rate in an optimizer config: the rate itself, or a
    schedule's `initial_learning_rate`; `None` if there is neither."""
    rate = config.get("learning_rate")
    if isinstance(rate, dict):
        rate = rate.get("config", {}).get("initial_learning_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        return None
    return float(rate)


def optimizer_with_rate(optimizer_class, config, rate):
    """A fresh optimizer from `config` with its learning rate (or its
    schedule's initial rate) set to `rate`; `rate=None` keeps the config's."""
    config = dict(config)
    if rate is not None:
        given = config.get("learning_rate")
        if isinstance(given, dict):
            inner = dict(given["config"], initial_learning_rate=rate)
            config["learning_rate"] = dict(given, config=inner)
        else:
            config["learning_rate"] = rate
    return optimizer_class.from_config(config)
