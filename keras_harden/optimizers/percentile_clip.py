"""AutoClip: clip to a percentile of the gradient norms seen so far."""

import keras
from keras import ops

from keras_harden._validation import check_int, check_number, check_positive
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule, StateSpec


@keras.saving.register_keras_serializable(package="keras_harden")
class PercentileClip(ClipRule):
    """Clips the global norm to the `percentile`-th percentile of the recent
    global norms (AutoClip).

    Each step the incoming global norm is written into a ring buffer of the
    last `history` norms (a Keras variable, so it is saved, restored and
    mirrored); the limit is the percentile over the filled part of the buffer,
    current norm included, with linear interpolation as `numpy.percentile`.
    Everything stays in the compiled graph: no Python list, no host sync, and
    the memory is bounded by `history`.

    With `max_weight_ratio`, every step is also capped at `max_weight_ratio *
    max(||W||, 1)` (`||W||` the global norm of the weights being trained) and the
    buffer records the capped norm: a run that explodes from its first step
    has no healthy norms to take a percentile of, and the cap keeps the
    explosion out of the history.

    Args:
        percentile: float in `(0, 100]`; 10 clips most steps a little.
        history: int >= 1, how many recent norms the percentile sees.
        max_weight_ratio: optional float > 0.

    Returns:
        A rule for `HardenedOptimizer(clip=...)`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.Adam(1e-3), clip=kh.optimizers.PercentileClip(10.0))

    References:
        Seetharaman, Wichern, Pardo and Le Roux, "AutoClip: Adaptive Gradient
        Clipping for Source Separation Networks", MLSP 2020
        (https://arxiv.org/abs/2007.14469); reference code in
        https://github.com/pseeth/autoclip (keeps every norm in a Python list).
    """

    uses_global_norm = True

    def __init__(self, percentile=10.0, history=1000, max_weight_ratio=None):
        super().__init__()
        self.percentile = check_number(
            "percentile", percentile, low=0, high=100, low_open=True
        )
        self.history = check_int("history", history, minimum=1)
        self.max_weight_ratio = check_positive(
            "max_weight_ratio", max_weight_ratio, optional=True
        )

    state_prefix = "autoclip"

    def state_spec(self, variables):
        del variables
        return [
            StateSpec("norm_history", (self.history,), "float32"),
            StateSpec("norm_count", (), "int32"),
        ]

    def clip_value(self, norm_history, norm_count):
        """The current limit given a buffer and how many norms it has seen."""
        filled = ops.minimum(norm_count, self.history)
        return gradient_ops.masked_percentile(norm_history, filled, self.percentile)

    def __call__(self, grads, variables, norm, state):
        norm_history, count = state
        norm = ops.cast(norm, "float32")
        recorded, cap = norm, None
        if self.max_weight_ratio is not None:
            cap = gradient_ops.weight_relative_limit(
                variables, grads, self.max_weight_ratio
            )
            recorded = ops.minimum(norm, cap)
        slot = count % self.history
        window = ops.where(
            ops.arange(self.history, dtype="int32") == slot, recorded, norm_history
        )
        new_count = count + 1
        limit = self.clip_value(window, new_count)
        if cap is not None:
            limit = ops.minimum(limit, cap)
        clipped, new_norm = gradient_ops.clip_by_global_norm(grads, limit, norm)
        return clipped, new_norm, [window, new_count]

    def get_config(self):
        return {
            "percentile": self.percentile,
            "history": self.history,
            "max_weight_ratio": self.max_weight_ratio,
        }
