"""GradientMonitor: gradient norms and update-to-weight ratios in the logs."""

import math
import os
import warnings

import keras
import numpy as np

from keras_harden import _gradients
from keras_harden._validation import check_bool, check_int
from keras_harden.diagnostics import _core

__all__ = ["GradientMonitor"]


@keras.saving.register_keras_serializable(package="keras_harden")
class GradientMonitor(keras.callbacks.Callback):
    """Adds gradient norms and update-to-weight ratios to the training logs.

    On every `every`-th training batch the callback records, and writes into
    the batch logs (so they show in the progress bar) and, averaged over the
    epoch, into the epoch logs (so they land in `History`):

    - `grad_norm`: the global gradient norm of that step;
    - `clipped_grad_norm` and `skipped_steps`: the norm after clipping and the
      number of skipped non-finite steps so far (keras_harden optimizers only);
    - `update_ratio`: `||w_after - w_before|| / ||w_before||` over all trainable
      weights;
    - with `per_layer=True`, `update_ratio/<layer>` and, when gradients are
      available per layer, `grad_norm/<layer>`.

    Where the gradient comes from. A Keras callback never sees the gradients
    of the step. With a keras_harden optimizer (one exposing the variables
    `gradient_norm`, `clipped_gradient_norm` and `skipped_steps`) the global
    figures are the ones that optimizer computed on the real training batch:
    no extra pass. Otherwise, and for the per-layer gradient norms, the
    callback computes gradients itself on the sampled steps, on the batch
    `data` you pass, at the weights the step starts from (one extra
    forward/backward pass per sampled step, TensorFlow backend; the model's
    non-trainable state is restored afterwards). Without `data` and without a
    keras_harden optimizer only the update-to-weight ratios are logged, which
    are always exact: they compare the weights before and after the step.

    With `log_dir`, the figures are also written as TensorBoard scalars in
    `log_dir/train` (`batch_<name>` per sampled step, `epoch_<name>` per
    epoch), the layout `keras.callbacks.TensorBoard` uses, so both can share
    a `log_dir`. Every record is also kept in `self.records` (a list of dicts
    with the global `step`), handy for plots.

    Args:
        log_dir: optional TensorBoard log directory.
        per_layer: whether to log per-layer figures too.
        every: sample one training batch in `every`.
        data: optional `(x, y)` batch (arrays) on which gradients are computed
            when the optimizer keeps no statistics, and for per-layer norms.
            Arrays are not configuration: `get_config` records `data=None`.

    Example:

    >>> monitor = kh.diagnostics.GradientMonitor(every=5)  # doctest: +SKIP
    >>> model.compile(optimizer=kh.optimizers.AutoClip(keras.optimizers.Adam()),
    ...               loss="sparse_categorical_crossentropy")  # doctest: +SKIP
    >>> history = model.fit(x, y, callbacks=[monitor])  # doctest: +SKIP
    >>> history.history["grad_norm"]  # doctest: +SKIP

    References:
        Karpathy, "A Recipe for Training Neural Networks" (2019): watch the
        update-to-weight ratio, about 1e-3 is healthy.
    """

    def __init__(self, log_dir=None, per_layer=True, every=1, data=None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                f"`log_dir` must be a path or None. Received: log_dir={log_dir!r}"
            )
        check_bool("per_layer", per_layer)
        check_int("every", every, minimum=1)
        if data is not None and not (
            isinstance(data, (tuple, list)) and len(data) == 2
        ):
            raise ValueError(
                "`data` must be an `(x, y)` batch or None. "
                f"Received: data={type(data).__name__}"
            )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.per_layer = per_layer
        self.every = every
        self.data = data
        self.records = []
        self._step = 0
        self._writer = None

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "per_layer": self.per_layer,
            "every": self.every,
            "data": None,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- lifecycle ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._variables = list(self.model.trainable_variables)
        self._groups = _core.group_by_layer(self._variables)
        self._hardened = _core.is_hardened(self.model.optimizer)
        self._epoch_records = []
        self._before = None
        self._probe = None
        if not self._hardened and self.data is None:
            warnings.warn(
                "GradientMonitor: the optimizer keeps no gradient statistics and "
                "no `data` was given, so only update-to-weight ratios are "
                "logged. Wrap the optimizer in kh.optimizers.HardenedOptimizer "
                "or pass data=(x, y).",
                stacklevel=2,
            )
        if self.log_dir is not None and self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "train")
            )

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_records = []

    def _sampled(self):
        return self._step % self.every == 0

    def on_train_batch_begin(self, batch, logs=None):
        if not self._sampled():
            return
        self._before = _core.to_numpy(self._variables)
        self._probe = None
        if self.data is not None:
            self._probe = self._probe_gradients()

    def _probe_gradients(self):
        state = list(self.model.non_trainable_variables)
        saved = _core.to_numpy(state)
        x, y = self.data
        _, grads = _gradients.loss_and_gradients(self.model, x, y)
        for variable, value in zip(state, saved, strict=True):
            variable.assign(value)
        return grads

    def on_train_batch_end(self, batch, logs=None):
        if self._sampled() or (self._step + 1) % self.every == 0:
            # JAX keeps the state outside the variables during an epoch: bring
            # it back now and before a sampled step begins.
            _core.sync(self.model)
        if self._sampled() and self._before is not None:
            record = self._measure()
            record_logs = {k: v for k, v in record.items() if k != "step"}
            if logs is not None:
                logs.update(record_logs)
            self.records.append(record)
            self._epoch_records.append(record)
            self._write("batch_", record_logs, record["step"])
            self._before = None
        self._step += 1

    def _measure(self):
        record = {"step": self._step}
        stats = _core.hardened_statistics(self.model.optimizer)
        if stats is not None:
            record.update(stats)
        elif self._probe is not None:
            record["grad_norm"] = _gradients.norm(
                [g for g in self._probe if g is not None]
            )
        after = _core.to_numpy(self._variables)
        delta = [a - b for a, b in zip(after, self._before, strict=True)]
        weight = _gradients.norm(self._before)
        if weight > 0:
            record["update_ratio"] = _gradients.norm(delta) / weight
        if self.per_layer:
            delta_norms = _core.sum_layer_norms(delta, self._groups)
            weight_norms = _core.sum_layer_norms(self._before, self._groups)
            grad_norms = (
                _core.sum_layer_norms(self._probe, self._groups)
                if self._probe is not None
                else {}
            )
            for name in self._groups:
                if name in grad_norms:
                    record[f"grad_norm/{name}"] = grad_norms[name]
                if weight_norms[name] > 0:
                    record[f"update_ratio/{name}"] = (
                        delta_norms[name] / weight_norms[name]
                    )
        return record

    def on_epoch_end(self, epoch, logs=None):
        if not self._epoch_records:
            return
        summary = {}
        keys = {k for r in self._epoch_records for k in r if k != "step"}
        for key in sorted(keys):
            values = [r[key] for r in self._epoch_records if key in r]
            if key == "skipped_steps":
                summary[key] = values[-1]
            else:
                finite = [v for v in values if math.isfinite(v)]
                summary[key] = float(np.mean(finite)) if finite else float("nan")
        if logs is not None:
            logs.update(summary)
        self._write("epoch_", summary, epoch)

    def _write(self, prefix, values, step):
        if self._writer is None:
            return
        import tensorflow as tf

        # `tf.summary.write` with the scalar plugin's metadata is what
        # `tf.summary.scalar` writes, without needing the tensorboard package.
        metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=1,  # DATA_CLASS_SCALAR
        )
        with self._writer.as_default():
            for name, value in values.items():
                tf.summary.write(
                    prefix + name,
                    tf.constant(value, tf.float32),
                    step=step,
                    metadata=metadata.SerializeToString(),
                )
