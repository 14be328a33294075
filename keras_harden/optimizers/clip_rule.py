"""The base class of the clip rules that `HardenedOptimizer` applies in order."""

import collections

import keras
import numpy as np

#: One piece of a rule's state: an attribute name, a shape and a dtype. It
#: starts at zeros.
StateSpec = collections.namedtuple("StateSpec", ["name", "shape", "dtype"])


@keras.saving.register_keras_serializable(package="keras_harden")
class ClipRule:
    """A gradient clipping rule: a pure step function plus optional state.

    A rule sees the whole gradient list once per optimizer step, after the
    cross-replica sum and after any loss-scale unscaling, and returns the
    rescaled list. It is a pure transform, as optax's are: the current state
    values come in, the new ones go out, and nothing is assigned. The
    optimizer owns the state as Keras variables (one per `state_spec` entry,
    created by `build`, so checkpointed, saved in `.keras` files and mirrored
    under `tf.distribute`), reads them once per step and commits the new
    values only when the step is applied (a skipped non-finite step leaves
    them exactly as they were). Without an optimizer, `initial_state()` gives
    the starting values, so a rule runs on numpy arrays alone.

    Subclasses implement `__call__` and `get_config`, and `state_spec` if
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

    #: Prefix of the state variables' names (`<prefix>_<spec name>`).
    state_prefix = "rule"

    def __init__(self):
        self.built = False
        self._state_variables = []

    def state_spec(self, variables):
        """The rule's state for these model variables, as `StateSpec`s
        (empty for a stateless rule)."""
        del variables
        return []

    def initial_state(self, variables=()):
        """The state's starting values as numpy arrays (all zeros)."""
        return [np.zeros(s.shape, s.dtype) for s in self.state_spec(list(variables))]

    def build(self, optimizer, variables):
        """Creates one optimizer variable per `state_spec` entry, reachable as
        `self.<name>` and in order as `state_variables`.

        Args:
            optimizer: the wrapping `HardenedOptimizer`.
            variables: the model variables the optimizer was built with.
        """
        self._state_variables = []
        for spec in self.state_spec(list(variables)):
            variable = optimizer.add_variable(
                spec.shape,
                initializer="zeros",
                dtype=spec.dtype,
                aggregation="only_first_replica",
                name=f"{self.state_prefix}_{spec.name}",
            )
            setattr(self, spec.name, variable)
            self._state_variables.append(variable)
        self.built = True

    @property
    def state_variables(self):
        """The rule's state as a list of Keras variables (after `build`)."""
        return list(self._state_variables)

    def __call__(self, grads, variables, norm, state):
        """Clips one step's gradients.

        Args:
            grads: list of gradient tensors (or `None`), one per variable.
            variables: the matching model variables (or their values).
            norm: float32 global norm of `grads` (`None` when the previous
                rule could not provide it and `uses_global_norm` is `False`).
            state: the current values of the state, in `state_spec` order.

        Returns:
            `(grads, norm, new_state)`: the clipped gradients, their global
            norm if known cheaply (else `None`), and the new state values.
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
