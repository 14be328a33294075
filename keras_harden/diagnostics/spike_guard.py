"""SpikeGuard: roll back to the last good state on NaN/Inf or a loss spike."""

import math
import sys

import keras
import numpy as np

from keras_harden._validation import check_int, check_number
from keras_harden.diagnostics import _core

__all__ = ["SpikeGuard"]


@keras.saving.register_keras_serializable(package="keras_harden")
class SpikeGuard(keras.callbacks.Callback):
    """Rolls training back to the last good state on NaN/Inf or a loss spike.

    `keras.callbacks.TerminateOnNaN` stops a run at the first NaN and leaves
    the broken weights in the model. `SpikeGuard` keeps, in memory, the last
    good weights (all model variables, moving statistics included) and the
    optimizer state (`optimizer.variables`: moments, iteration count). After
    every training batch it reads the loss of that batch (from the model's
    loss tracker, not the epoch's running mean) and, when the optimizer
    exposes one (keras_harden optimizers), the gradient norm. When the loss or
    the gradient norm is NaN/Inf, or the loss exceeds `threshold` times the
    median of the last `window` good batch losses for more than `patience`
    batches in a row, it restores the last good state, multiplies the learning
    rate by `lr_factor`, resets the epoch's running metrics and carries on.

    What "good" means. The loss of batch `t` is computed with the weights left
    by step `t - 1`, so those weights are only known good once the loss of
    batch `t` has come back finite and not a spike. The guard therefore keeps
    two copies: the verified state, which it restores, and the newest state,
    which becomes verified after the next good batch. A rollback costs at most
    the one unverified step; completed, verified progress is never lost.
    A step that a keras_harden optimizer already skipped (its `skipped_steps`
    grew and the weights are still finite) needs no rollback.

    After `max_rollbacks` rollbacks the next bad batch makes it give up: it
    restores the last good state, stops training, prints why and keeps the
    message in `self.gave_up`. Every rollback is listed in `self.events`.

    Args:
        threshold: a batch loss above `threshold` times the running level is
            a spike. Must be > 1.
        patience: number of consecutive spiking batches tolerated before a
            rollback (0: roll back at the first). Non-finite values never wait.
        lr_factor: learning-rate multiplier after a rollback, in (0, 1].
        max_rollbacks: rollbacks allowed before giving up.
        warmup: good batches needed before spikes are judged.
        window: number of recent good batch losses whose median is the level.
        verbose: 1 prints one line per rollback, 0 stays silent.

    Example:

    >>> guard = kh.diagnostics.SpikeGuard(max_rollbacks=3)  # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[guard])  # doctest: +SKIP
    >>> guard.events  # doctest: +SKIP
    [{'step': 41, 'reason': 'non-finite loss', 'learning_rate': 0.05, ...}]

    References:
        Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways"
        (2022), section 5.1: restart from a checkpoint before a loss spike and
        skip the offending batches.
    """

    def __init__(
        self,
        threshold=4.0,
        patience=0,
        lr_factor=0.5,
        max_rollbacks=5,
        warmup=5,
        window=25,
        verbose=1,
    ):
        super().__init__()
        check_number("threshold", threshold, low=1, low_open=True)
        for name, value in (
            ("patience", patience),
            ("max_rollbacks", max_rollbacks),
            ("warmup", warmup),
        ):
            check_int(name, value, minimum=0)
        check_number("lr_factor", lr_factor, low=0, high=1, low_open=True)
        check_int("window", window, minimum=1)
        if verbose not in (0, 1):
            raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
        self.threshold = float(threshold)
        self.patience = patience
        self.lr_factor = float(lr_factor)
        self.max_rollbacks = max_rollbacks
        self.warmup = warmup
        self.window = window
        self.verbose = verbose
        self.events = []
        self.gave_up = None

    def get_config(self):
        return {
            "threshold": self.threshold,
            "patience": self.patience,
            "lr_factor": self.lr_factor,
            "max_rollbacks": self.max_rollbacks,
            "warmup": self.warmup,
            "window": self.window,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- state -------------------------------------------------------------

    def _snapshot(self):
        weights = _core.to_numpy(self.model.variables)
        optimizer = _core.to_numpy(self.model.optimizer.variables)
        return weights, optimizer

    def _restore(self, snapshot):
        weights, optimizer = snapshot
        for variable, value in zip(self.model.variables, weights, strict=True):
            variable.assign(value)
        opt_vars = self.model.optimizer.variables
        if len(opt_vars) == len(optimizer):
            for variable, value in zip(opt_vars, optimizer, strict=True):
                variable.assign(value)

    @property
    def good_state(self):
        """The verified `(model weights, optimizer variables)` NumPy copies."""
        return self._good

    def _tracker(self):
        for metric in self.model.metrics:
            if (
                metric.name == "loss"
                and hasattr(metric, "total")
                and hasattr(metric, "count")
            ):
                return metric
        return None

    def _read_tracker(self):
        return (
            float(keras.ops.convert_to_numpy(self._loss_tracker.total)),
            float(keras.ops.convert_to_numpy(self._loss_tracker.count)),
        )

    def _batch_loss(self, logs):
        """The loss of this batch alone, from the loss tracker's running sums."""
        if self._loss_tracker is not None:
            total, count = self._read_tracker()
            prev_total, prev_count = self._previous
            self._previous = (total, count)
            if count > prev_count:
                return (total - prev_total) / (count - prev_count)
            return total / count if count else float("nan")
        # Fallback: difference of running means, assuming equal batch sizes.
        mean = float((logs or {}).get("loss", float("nan")))
        k, prev_mean = self._previous
        self._previous = (k + 1, mean)
        return (k + 1) * mean - k * prev_mean

    def _reset_running(self):
        self.model.reset_metrics()
        self._previous = (0.0, 0.0)

    # -- lifecycle ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._loss_tracker = self._tracker()
        self._good = self._snapshot()
        self._pending = None
        self._losses = []
        self._spiking = 0
        self._step = 0
        self._previous = (0.0, 0.0)
        stats = _core.hardened_statistics(self.model.optimizer)
        if stats is not None:
            self._skipped = stats["skipped_steps"]
        else:
            self._skipped = 0.0 if _core.is_hardened(self.model.optimizer) else None

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = (0.0, 0.0)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step
        self._step += 1
        _core.sync(self.model)
        loss = self._batch_loss(logs)
        stats = _core.hardened_statistics(self.model.optimizer)
        skipped_now = False
        if stats is not None:
            skipped_now = (
                self._skipped is not None and stats["skipped_steps"] > self._skipped
            )
            self._skipped = stats["skipped_steps"]

        reason = None
        if skipped_now:
            # The optimizer refused the step; the weights did not move.
            if not math.isfinite(loss):
                self._reset_running()
            return
        if not math.isfinite(loss):
            reason = f"non-finite loss ({loss})"
        elif stats is not None and not math.isfinite(stats["grad_norm"]):
            reason = f"non-finite gradient norm ({stats['grad_norm']})"
        else:
            level = self.level
            if (
                len(self._losses) >= self.warmup
                and level is not None
                and level > 0
                and loss > self.threshold * level
            ):
                self._spiking += 1
                if self._spiking > self.patience:
                    reason = (
                        f"loss spike: batch loss {loss:.4g} > {self.threshold:g} x "
                        f"running level {level:.4g}"
                    )
                else:
                    return
        if reason is None:
            self._spiking = 0
            if self._pending is not None:
                self._good = self._pending
            self._losses.append(loss)
            del self._losses[: -self.window]
            snapshot = self._snapshot()
            self._pending = snapshot if _core.all_finite(snapshot[0]) else None
            return
        self._roll_back(step, reason, logs)

    @property
    def level(self):
        """The running level: median of the recent good batch losses."""
        return float(np.median(self._losses)) if self._losses else None

    def _roll_back(self, step, reason, logs):
        optimizer = self.model.optimizer
        current_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        self._restore(self._good)
        self._pending = None
        self._spiking = 0
        self._reset_running()
        if len(self.events) >= self.max_rollbacks:
            self.gave_up = (
                f"SpikeGuard gave up at step {step}: {reason} after "
                f"{len(self.events)} rollback(s) (max_rollbacks="
                f"{self.max_rollbacks}). The model holds the last good weights; "
                "lower the learning rate, clip gradients "
                "(kh.optimizers.AdaptiveGradientClipping) or check the data."
            )
            self.model.stop_training = True
            try:
                optimizer.learning_rate = current_lr
            except TypeError:
                pass
            print(self.gave_up, file=sys.stderr)
            return
        learning_rate = current_lr * self.lr_factor
        try:
            optimizer.learning_rate = learning_rate
        except TypeError:
            # A LearningRateSchedule cannot be rescaled; say so in the event.
            learning_rate = None
        event = {"step": step, "reason": reason, "learning_rate": learning_rate}
        self.events.append(event)
        if self.verbose:
            lr_text = (
                f"learning rate -> {learning_rate:.4g}"
                if learning_rate is not None
                else "learning rate is a schedule, left as is"
            )
            print(
                f"\nSpikeGuard: {reason} at step {step}; restored the last good "
                f"weights and optimizer state, {lr_text} "
                f"(rollback {len(self.events)}/{self.max_rollbacks}).",
                file=sys.stderr,
            )
