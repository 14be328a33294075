"""The base class of the clip rules that `HardenedOptimizer` applies in order."""

import keras


@keras.saving.register_keras_serializable(package="keras_harden")
class ClipRule:
    """A gradient clipping rule: a pure step function plus optional state.

    A rule sees the whole gradient list once per optimizer step, after the
    cross-replica sum and after any loss-scale unscaling, and returns the
    rescaled list. It never assigns its own state: it returns the new values
    of its state variables, and the optimizer commits them only when the step
    is applied (a skipped non-finite step leaves them exactly as they were).
    State lives in Keras variables that the wrapping optimizer creates in
    `build`, so it is checkpointed, saved in `.keras` files and mirrored under
    `tf.distribute` like any optimizer variable.

    Subclasses implement `__call__` and `get_config`, and override `build` if
    they keep state.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.SGD(0.1), clip=kh.optimizers.ClipByValue(1.0))

    References:
        The rule/optimizer split mirrors optax's gradient transformations
        (https://github.com/google-deepmind/optax), with Keras variables for
        the state.
    """

    #: Whether `__call__` uses the incoming global norm (otherwise the
    #: optimizer may pass `None` and skip computing it).
    uses_global_norm = False

    def __init__(self):
        self.built = False

    def build(self, optimizer, variables):
        """Creates state with `optimizer.add_variable`; stateless rules keep
        this default.

        Args:
            optimizer: the wrapping `HardenedOptimizer`.
            variables: the model variables the optimizer was built with.
        """
        del optimizer, variables
        self.built = True

    @property
    def state_variables(self):
        """The rule's state as a list of Keras variables (empty by default)."""
        return []

    def __call__(self, grads, variables, norm):
        """Clips one step's gradients.

        Args:
            grads: list of gradient tensors (or `None`), one per variable.
            variables: the matching model variables.
            norm: float32 global norm of `grads` (`None` when the previous
                rule could not provide it and `uses_global_norm` is `False`).

        Returns:
            `(grads, norm, new_state)`: the clipped gradients, their global
            norm if known cheaply (else `None`), and a list of new values for
            `state_variables`.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def check_positive(name, value):
    """Raises `ValueError` unless `value` is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
    return float(value)
