"""`CatastrophicOverfittingGuard`: watches single-step adversarial training
for catastrophic overfitting, and stops it at the best epoch.

Fast adversarial training (one FGSM step from a random start, Wong, Rice
and Kolter 2020) can collapse within an epoch: the model learns to resist
its own one-step attack while a multi-step PGD attack breaks nearly every
example. Wong et al. catch it by attacking a held batch with PGD after each
epoch and stopping when that accuracy falls sharply; the weights of the
epoch before are kept. This callback does that: after every epoch it runs
`keras_harden.robust.pgd` on a fixed batch `(x, y)`, logs the accuracy as
`pgd_accuracy` (so `History`, `ModelCheckpoint` and `EarlyStopping` see it),
and when it falls more than `drop` below the best so far it restores the
best epoch's weights, stops training and warns in one line.

`collapse_epoch` is the decision alone, a pure function of the sequence of
accuracies.
"""

import warnings

import keras
import numpy as np

from keras_harden._validation import check_bool, check_int, check_number
from keras_harden.robust import _common
from keras_harden.robust.pgd import pgd

__all__ = ["CatastrophicOverfittingGuard", "collapse_epoch"]


def collapse_epoch(accuracies, drop):
    """The first epoch whose accuracy lies more than `drop` below the best of
    the epochs before it, or None.

    Wong et al. compare with the previous epoch (a fall of more than 0.2
    stops); comparing with the best so far also catches a collapse spread
    over two epochs.

    Args:
        accuracies: the PGD accuracies of the epochs so far, in order.
        drop: number >= 0, the fall that counts as a collapse.

    Returns:
        An int index into `accuracies`, or None.

    Example:

    >>> # best 0.55 at epoch 2; 0.3 is 0.25 below it (> 0.2): a collapse
    >>> collapse_epoch([0.3, 0.5, 0.55, 0.45, 0.3], drop=0.2)
    4
    >>> collapse_epoch([0.3, 0.5, 0.55, 0.45, 0.36], drop=0.2) is None
    True
    """
    best = None
    for epoch, accuracy in enumerate(accuracies):
        if best is not None and accuracy < best - drop:
            return epoch
        best = accuracy if best is None else max(best, accuracy)
    return None


@keras.saving.register_keras_serializable(package="keras_harden")
class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Stops adversarial training when a multi-step attack's accuracy
    collapses, restoring the best epoch's weights.

    After each epoch, `keras_harden.robust.pgd(model, x, y, eps, steps,
    step_size, seed=seed)` attacks the held batch (the same batch and the
    same random starts every epoch, so epochs compare) and
    `logs["pgd_accuracy"]` gets its accuracy. The weights of the best epoch
    so far are kept; when an epoch's accuracy is more than `drop` below the
    best (`collapse_epoch`), those weights come back (with
    `restore_best_weights`), training stops and a one-line warning says so.
    The model attacked is the one being fit, or, when that is an
    `AdversarialTraining` wrapper, the classifier it trains. The weights
    kept are the model's (`get_weights`); the optimizer state is not
    rolled back.

    Wong et al.'s check: PGD with 5 steps of `eps / 4` on one training
    batch, stopping at a fall of 0.2 from the epoch before. The defaults
    here attack harder (10 steps of `2.5 * eps / 10`) and compare with the
    best epoch.

    Args:
        x: the held batch of inputs (a few hundred examples of the training
            or validation data), inside `value_range`.
        y: their labels, integers or one-hot rows.
        eps: number >= 0, the radius of the attack (the training eps).
        steps: int >= 1, PGD's steps.
        step_size: number > 0 or None (`2.5 * eps / steps`).
        drop: number in [0, 1], the fall below the best accuracy that counts
            as a collapse.
        restore_best_weights: bool, whether to restore the best epoch's
            weights on a collapse.
        value_range: `(low, high)` of valid inputs, or None.
        from_logits: whether the outputs are logits; None detects it.
        seed: int >= 0, the seed of PGD's random starts (the same every
            epoch).
        verbose: bool, whether to warn on a collapse.

    Attributes:
        best: the best PGD accuracy so far (None before the first epoch).
        best_epoch: its epoch.
        stopped_epoch: the epoch of the collapse, or None.
        accuracies: the PGD accuracy of every epoch so far.

    Example:

    >>> from keras_harden.robust.overfitting import CatastrophicOverfittingGuard
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x = np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")
    >>> y = np.arange(32) % 3
    >>> guard = CatastrophicOverfittingGuard(x, y, eps=0.1, steps=3)
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[guard])
    >>> len(history.history["pgd_accuracy"])
    2

    References:
        Wong, Rice and Kolter, "Fast is better than free: Revisiting
        adversarial training" (ICLR 2020), arXiv:2001.03994;
        github.com/locuslab/fast_adversarial (`--early-stop` in
        CIFAR10/train_fgsm.py).
    """

    def __init__(
        self,
        x,
        y,
        eps,
        steps=10,
        step_size=None,
        drop=0.2,
        restore_best_weights=True,
        value_range=(0, 1),
        from_logits=None,
        seed=0,
        verbose=True,
    ):
        super().__init__()
        self.eps = check_number("eps", eps, low=0)
        self.steps = check_int("steps", steps, minimum=1)
        self.step_size = check_number(
            "step_size", step_size, low=0, low_open=True, optional=True
        )
        self.drop = check_number("drop", drop, low=0, high=1)
        self.restore_best_weights = check_bool(
            "restore_best_weights", restore_best_weights
        )
        self.value_range = _common.check_value_range(value_range)
        self.from_logits = _common.check_from_logits(from_logits)
        self.seed = check_int("seed", seed, minimum=0)
        self.verbose = check_bool("verbose", verbose)
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        if self.x.ndim < 2 or not len(self.x) or len(self.y) != len(self.x):
            raise ValueError(
                "`x` and `y` must be a non-empty batch and one label per "
                f"example. Received: x.shape={self.x.shape}, "
                f"y.shape={self.y.shape}"
            )
        self._reset()

    def _reset(self):
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self.accuracies = []
        self._best_weights = None

    def _classifier(self):
        from keras_harden.robust.adversarial_training import AdversarialTraining

        model = self.model
        return model.model if isinstance(model, AdversarialTraining) else model

    def pgd_accuracy(self):
        """The accuracy of the model now on the held batch under PGD."""
        model = self._classifier()
        x_adv = pgd(
            model,
            self.x,
            self.y,
            self.eps,
            steps=self.steps,
            step_size=self.step_size,
            value_range=self.value_range,
            from_logits=self.from_logits,
            seed=self.seed,
        )
        outputs = np.asarray(model.predict(x_adv, verbose=0))
        labels = _common._labels(self.y, len(self.y), outputs.shape[-1], "y")
        return float(np.mean(outputs.argmax(-1) == labels))

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        accuracy = self.pgd_accuracy()
        if logs is not None:
            logs["pgd_accuracy"] = accuracy
        self.accuracies.append(accuracy)
        if collapse_epoch(self.accuracies, self.drop) == len(self.accuracies) - 1:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            restored = self.restore_best_weights and self._best_weights is not None
            if restored:
                self._classifier().set_weights(self._best_weights)
            if self.verbose:
                what = (
                    f"epoch {self.best_epoch + 1}'s weights restored"
                    if restored
                    else "the weights left as they are"
                )
                warnings.warn(
                    f"Catastrophic overfitting at epoch {epoch + 1}: PGD accuracy "
                    f"on the held batch fell to {accuracy:.3f} from "
                    f"{self.best:.3f} at epoch {self.best_epoch + 1}; training "
                    f"stopped, {what}.",
                    stacklevel=2,
                )
            return
        if self.best is None or accuracy >= self.best:
            self.best, self.best_epoch = accuracy, epoch
            if self.restore_best_weights:
                self._best_weights = self._classifier().get_weights()

    def get_config(self):
        return {
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "drop": self.drop,
            "restore_best_weights": self.restore_best_weights,
            "value_range": None if self.value_range is None else list(self.value_range),
            "from_logits": self.from_logits,
            "seed": self.seed,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("value_range") is not None:
            config["value_range"] = tuple(config["value_range"])
        return cls(**config)
