"""`NonFiniteLimit`: the host-side `max_consecutive_nonfinite` check."""

import keras

from keras_harden._validation import check_int


class NonFiniteLimit(keras.callbacks.Callback):
    """Stops training with `NonFiniteGradientError` once the model's
    `HardenedOptimizer` has skipped `max_consecutive_nonfinite` steps in a row.

    Needed only where a compiled step cannot raise by itself: under XLA
    (`jit_compile=True`, the TensorFlow default when it can) and on JAX.
    Costs one scalar read per batch. Does nothing if the optimizer is not a
    `HardenedOptimizer` (also when `compile()` wrapped it in a
    `LossScaleOptimizer`, it looks inside).

    Args:
        every: check every `every` batches (int >= 1).

    Returns:
        A `keras.callbacks.Callback`.

    Example:

    >>> import keras, keras_harden as kh
    >>> callback = kh.optimizers.NonFiniteLimit()

    References:
        In the spirit of `keras.callbacks.TerminateOnNaN`.
    """

    def __init__(self, every=1):
        super().__init__()
        self.every = check_int("every", every, minimum=1)

    def _hardened(self):
        optimizer = getattr(self.model, "optimizer", None)
        for _ in range(3):
            if hasattr(optimizer, "check_nonfinite_limit"):
                return optimizer
            optimizer = getattr(optimizer, "inner_optimizer", None)
        return None

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every:
            return
        optimizer = self._hardened()
        if optimizer is not None:
            optimizer.check_nonfinite_limit()
