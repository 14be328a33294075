"""PrivacyBudget: the epsilon spent so far in the training logs; stop at a target."""

import warnings

import keras
import numpy as np

from keras_harden._validation import check_number, check_positive
from keras_harden.privacy import budget

__all__ = ["PrivacyBudget"]


@keras.saving.register_keras_serializable(package="keras_harden")
class PrivacyBudget(keras.callbacks.Callback):
    """Logs the epsilon DP-SGD has spent and stops before a target is passed.

    At the end of every epoch the callback reads the number of steps taken
    from the optimizer (`model.optimizer.iterations`) and writes the
    `epsilon` of that many Poisson-subsampled Gaussian steps
    (`keras_harden.privacy.epsilon`) into the epoch logs, so `History`, the
    progress bar and a `keras.callbacks.TensorBoard` placed after it in the
    callbacks list record it.

    Why the optimizer's count. `optimizer.iterations` is saved with the
    optimizer in `.keras` files and checkpoints, so a run that resumes from
    one goes on counting from where it stopped: the budget covers every
    step taken on the data, not just this call to `fit`. A fresh optimizer
    on a model already trained on the same data starts again from 0 and
    under-counts; so does a `LossScaleOptimizer`, which does not count the
    steps it skipped. With gradient accumulation, `iterations` counts the
    updates and `sampling_rate` must be that of an update (all accumulated
    batches together).

    With `target_epsilon`, at the end of each epoch (but the last one of
    the `fit` call) it works out what one more epoch of the same length
    would spend; if that exceeds the target it sets `model.stop_training`
    and warns, in one line, with the epsilon spent and the target. A run
    whose budget is already spent, or whose first epoch (when `fit` knows
    its length) would overspend, is refused before any step: `fit` raises
    `RuntimeError` from `on_train_begin`, as setting `stop_training` there
    would still let one batch through.

    The figure is only a privacy guarantee when the training really is
    DP-SGD with these settings: per-example gradients clipped, Gaussian
    noise of `noise_multiplier` times the clipping norm added to their sum,
    and batches that are Poisson samples at `sampling_rate` (the accounting
    of the shuffled fixed-size batches of `fit` is the usual approximation).
    On its own the callback only counts.

    Args:
        noise_multiplier: the noise standard deviation over the clipping
            norm, > 0.
        sampling_rate: the probability that an example is in a batch, in
            (0, 1]: `batch_size / n_examples`.
        delta: the delta of the guarantee, in (0, 1).
        target_epsilon: None (only log) or the epsilon not to exceed, > 0.
        accountant: `"rdp"` or `"pld"` (see `keras_harden.privacy.epsilon`).

    Attributes:
        epsilon: the epsilon spent at the last epoch end (or at the start of
            training), None before `fit`.
        steps: the step count it was computed for.
        stop_reason: the warning it gave when it stopped training, or None.

    Example:

    >>> budget = kh.privacy.PrivacyBudget(
    ...     noise_multiplier=1.1, sampling_rate=256 / 60000, delta=1e-5,
    ...     target_epsilon=3.0)
    >>> budget.get_config()["target_epsilon"]
    3.0
    >>> history = model.fit(x, y, batch_size=256, epochs=60,
    ...                     callbacks=[budget])  # doctest: +SKIP
    >>> history.history["epsilon"][-1]  # doctest: +SKIP
    2.6...

    References:
        Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016):
        the moments accountant, tracking the privacy spent during training.
        Google's `dp-accounting` package (the accountant used).
    """

    def __init__(
        self,
        noise_multiplier,
        sampling_rate,
        delta,
        target_epsilon=None,
        accountant="rdp",
    ):
        super().__init__()
        self.noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
        self.sampling_rate = check_number(
            "sampling_rate", sampling_rate, low=0, high=1, low_open=True
        )
        self.delta = check_number(
            "delta", delta, low=0, high=1, low_open=True, high_open=True
        )
        self.target_epsilon = check_positive(
            "target_epsilon", target_epsilon, optional=True
        )
        if accountant not in budget.ACCOUNTANTS:
            raise ValueError(
                f"`accountant` must be one of {budget.ACCOUNTANTS}. "
                f"Received: accountant={accountant!r}"
            )
        self.accountant = accountant
        self.epsilon = None
        self.steps = None
        self.stop_reason = None

    def get_config(self):
        return {
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "accountant": self.accountant,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def spent(self, steps):
        """The epsilon of `steps` steps with this callback's settings (0 for
        no step)."""
        if steps == 0:
            return 0.0
        return budget.epsilon(
            self.noise_multiplier,
            self.sampling_rate,
            steps,
            self.delta,
            accountant=self.accountant,
        )

    def _optimizer_steps(self):
        iterations = self.model.optimizer.iterations
        return int(np.asarray(keras.ops.convert_to_numpy(iterations)))

    def on_train_begin(self, logs=None):
        self.stop_reason = None
        self.steps = self._optimizer_steps()
        self.epsilon = self.spent(self.steps)
        self._epoch_start = self.steps
        if self.target_epsilon is None:
            return
        per_epoch = (self.params or {}).get("steps")
        if self.epsilon > self.target_epsilon:
            raise RuntimeError(
                f"PrivacyBudget: the budget is spent before training: epsilon "
                f"{self.epsilon:.4g} after {self.steps} steps (delta="
                f"{self.delta:g}) exceeds target_epsilon={self.target_epsilon:g}."
            )
        if per_epoch:
            after = self.spent(self.steps + per_epoch)
            if after > self.target_epsilon:
                raise RuntimeError(
                    f"PrivacyBudget: one more epoch ({per_epoch} steps) would "
                    f"spend epsilon {after:.4g} (delta={self.delta:g}; "
                    f"{self.epsilon:.4g} spent in {self.steps} steps so far), "
                    f"above target_epsilon={self.target_epsilon:g}; no step "
                    "taken."
                )

    def on_epoch_end(self, epoch, logs=None):
        steps = self._optimizer_steps()
        per_epoch = steps - self._epoch_start
        self._epoch_start = steps
        self.steps = steps
        self.epsilon = self.spent(steps)
        if logs is not None:
            logs["epsilon"] = self.epsilon
        if self.target_epsilon is None:
            return
        if self.epsilon > self.target_epsilon:
            # only when fit could not tell the first epoch's length
            reason = (
                f"PrivacyBudget: stopping after epoch {epoch + 1}: epsilon "
                f"{self.epsilon:.4g} spent in {steps} steps (delta="
                f"{self.delta:g}), above target_epsilon={self.target_epsilon:g}."
            )
        else:
            epochs = (self.params or {}).get("epochs")
            if epochs is not None and epoch + 1 >= epochs:
                return  # the last epoch of this fit: nothing more to spend
            after = self.spent(steps + max(per_epoch, 1))
            if after <= self.target_epsilon:
                return
            reason = (
                f"PrivacyBudget: stopping after epoch {epoch + 1}: epsilon "
                f"{self.epsilon:.4g} spent in {steps} steps (delta="
                f"{self.delta:g}); one more epoch would reach {after:.4g} > "
                f"target_epsilon={self.target_epsilon:g}."
            )
        self.model.stop_training = True
        self.stop_reason = reason
        warnings.warn(reason, stacklevel=2)
