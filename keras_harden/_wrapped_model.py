"""`WrappedModel`: a Keras model whose forward pass is another model's.

The training wrappers (`robust.AdversarialTraining`, `privacy.DPTraining`)
change what a training step does and nothing else: calling, building and
the symbolic signature are the wrapped model's, so code that reads a
model's inputs and outputs sees the wrapped one's. The wrapped model is
`self.model`, trained in place.
"""

import keras

__all__ = ["WrappedModel"]


class WrappedModel(keras.Model):
    """A `keras.Model` that forwards its call, build and signature to
    `self.model` (set by the subclass's `__init__`, whose first argument it
    is; `get_config` holds it serialized under `"model"`)."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape=None):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        return self.model.compute_output_spec(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    # The wrapped model's symbolic inputs and outputs.
    @property
    def inputs(self):
        return self.model.inputs

    @property
    def outputs(self):
        return self.model.outputs

    @property
    def input(self):
        return self.model.input

    @property
    def output(self):
        return self.model.output
