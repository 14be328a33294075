"""`StochasticWeightAveraging`: average the weights along one training run."""

import warnings

import keras
import numpy as np

from keras_harden.fusion._common import (
    batchnorm_statistics_ids,
    is_float,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.averaging import finish_batchnorm

__all__ = ["StochasticWeightAveraging"]


class StochasticWeightAveraging(keras.callbacks.Callback):
    """Averages the model's weights over epochs and swaps them in at the end.

    Stochastic Weight Averaging (Izmailov et al., 2018) keeps a running mean
    of the weights at the end of every `period`-th epoch from `start_epoch`
    on (typically the last quarter of training, with a constant or cyclic
    learning rate), and when training ends replaces the model's weights with
    that mean. As in `average_weights`, the batch-norm moving statistics are
    not averaged: they are recomputed from `recalibrate` data after the swap
    (or left as they are, with a warning, when no data is given). Integer
    variables are left alone.

    Keras has no SWA (its optimizers' `use_ema` keeps an exponential average
    of trainable variables only, and never recomputes batch-norm statistics).

    Unlike Keras's built-in callbacks this one is not serialized with the
    model: its calibration data is not a config value.

    Args:
        start_epoch: the first epoch (0-based) whose weights are averaged.
        period: average every `period` epochs from `start_epoch`.
        recalibrate: inputs to recompute batch-norm statistics from at the end
            (arrays, an `(x, y)` tuple, a `tf.data.Dataset`).
        recalibrate_steps: at most this many batches of `recalibrate`.

    Attributes:
        averaged_epochs: the epochs whose weights went into the average.

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> swa = kh.fusion.StochasticWeightAveraging(start_epoch=2, recalibrate=x)
    >>> _ = model.fit(x, y, epochs=4, callbacks=[swa], verbose=0)
    >>> swa.averaged_epochs
    [2, 3]

    References:
        Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
        Generalization", UAI 2018; `torch.optim.swa_utils`.
    """

    def __init__(
        self, start_epoch=0, period=1, recalibrate=None, recalibrate_steps=None
    ):
        super().__init__()
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(
                "`start_epoch` must be an int >= 0. "
                f"Received: start_epoch={start_epoch!r}"
            )
        if not isinstance(period, int) or period < 1:
            raise ValueError(
                f"`period` must be an int >= 1. Received: period={period!r}"
            )
        if recalibrate_steps is not None and (
            not isinstance(recalibrate_steps, int) or recalibrate_steps < 1
        ):
            raise ValueError(
                "`recalibrate_steps` must be None or an int >= 1. "
                f"Received: recalibrate_steps={recalibrate_steps!r}"
            )
        self.start_epoch = start_epoch
        self.period = period
        self.recalibrate = recalibrate
        self.recalibrate_steps = recalibrate_steps
        self.averaged_epochs = []
        self._variables = []
        self._means = []

    def on_train_begin(self, logs=None):
        skip = batchnorm_statistics_ids(self.model)
        self._variables = [
            variable
            for _, _, variable in weight_slots(self.model)
            if id(variable) not in skip and is_float(variable)
        ]
        self._means = []
        self.averaged_epochs = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch or (epoch - self.start_epoch) % self.period:
            return
        values = [to_numpy(v).astype("float64") for v in self._variables]
        self.averaged_epochs.append(epoch)
        if not self._means:
            self._means = values
            return
        count = len(self.averaged_epochs)
        self._means = [
            m + (v - m) / count for m, v in zip(self._means, values, strict=True)
        ]

    def on_train_end(self, logs=None):
        if not self.averaged_epochs:
            warnings.warn(
                f"StochasticWeightAveraging: training ended before start_epoch="
                f"{self.start_epoch}; the weights were not averaged.",
                UserWarning,
                stacklevel=2,
            )
            return
        for variable, mean in zip(self._variables, self._means, strict=True):
            variable.assign(np.asarray(mean, dtype=variable.dtype))
        finish_batchnorm(
            self.model,
            self.recalibrate,
            self.recalibrate_steps,
            "StochasticWeightAveraging",
        )
