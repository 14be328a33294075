"""`AdversarialTraining`: PGD, TRADES and fast adversarial training as a
Keras model wrapper, kept inside `compile` and `fit`.

The wrapper's forward pass is the wrapped model's; what changes is the loss
of a training step (`compute_loss` with `training=True`): the trainer's
clean forward pass gives `y_pred` (the compiled metrics stay on it), then
the inner maximisation (`inner_max`) builds an adversarial batch from `x`
with the model's input gradient, and the loss is taken there. Everything
runs inside the trainer's traced step (a `tf.function`, XLA, a jitted JAX
step, a `tf.distribute` replica), so callbacks, keras_harden's optimizer
wrappers, mixed precision and distribution strategies work as they do for
the bare model. The wrapped model is trained in place; saving it gives an
ordinary model.
"""

import keras
from keras import ops

from keras_harden._gradients import input_gradient
from keras_harden._validation import check_int, check_number, check_positive
from keras_harden._wrapped_model import WrappedModel
from keras_harden.robust import _common, inner_max

__all__ = ["AdversarialTraining"]

METHODS = ("pgd", "trades", "fast")
# Steps of the inner maximisation when `steps` is None; see the class
# docstring for the choice.
DEFAULT_STEPS = {"pgd": 10, "trades": inner_max.TRADES_STEPS, "fast": 1}

# The cross-entropies whose `from_logits` defaults to False when compiled by
# name or as the bare function.
_CROSS_ENTROPY_NAMES = {
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
}


def _from_logits_of(loss):
    """What a compiled loss says about `from_logits`: a Keras loss object's
    own setting, False for the cross-entropies given by name or as
    functions (their default), None when it cannot tell."""
    if isinstance(loss, keras.losses.Loss):
        value = loss.get_config().get("from_logits")
        return value if isinstance(value, bool) else None
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", None)
    if name in _CROSS_ENTROPY_NAMES:
        return False
    return None


class _Divergence(keras.losses.Loss):
    """TRADES's robust term as a Keras loss: per example `KL(p_clean ||
    p_adv)` of `(clean outputs, adversarial outputs)`, reduced by Keras
    (built inside the training step, never serialized)."""

    def __init__(self, from_logits):
        super().__init__(name="trades_kl", dtype="float32")
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        return inner_max.kl_divergence(y_true, y_pred, self.from_logits)


@keras.saving.register_keras_serializable(package="keras_harden")
class AdversarialTraining(WrappedModel):
    """Adversarial training of a classifier: PGD (Madry et al.), TRADES
    (Zhang et al.) or fast single-step training (Wong et al.).

    Wrap the classifier, compile and fit the wrapper as the model itself:
    each training step replaces the loss on the clean batch by a loss on an
    adversarial batch found inside the L-inf ball of radius `eps` around it
    (and inside `value_range`):

    - `"pgd"`: `steps` sign steps of `step_size` on the cross-entropy from a
      uniform start in the ball; the compiled loss on the adversarial batch
      (Madry et al.).
    - `"fast"`: one sign step of `1.25 * eps` from a uniform start; the
      compiled loss on the result (Wong, Rice and Kolter's "fast is better
      than free"). Watch it with `CatastrophicOverfittingGuard`: single-step
      training can collapse to a model that resists its own one-step attack
      and nothing else.
    - `"trades"`: `steps` sign steps on `KL(p_clean || p_adv)` from
      `x + 0.001 * N(0, 1)`; the loss is the compiled loss on the clean batch
      plus `beta` times the mean `KL(p_clean || p_adv)`, gradients flowing
      through both (Zhang et al.).

    The inner maximisation runs the model in inference mode (dropout off,
    batch norm on its moving statistics, as TRADES's reference does); the
    adversarial forward pass runs in training mode. Its gradient is taken
    with `keras_harden._gradients.input_gradient` and cut from the weight
    update (`stop_gradient`). Evaluation (`evaluate`, validation data) is
    clean: the compiled loss and metrics on the clean inputs. During
    training the compiled metrics see the clean predictions, and
    `adversarial_accuracy` (the accuracy on the adversarial batch, before
    the update) is logged beside them.

    The wrapper holds a `keras.random.SeedGenerator` (seeded with `seed`)
    for the random starts: a new draw every step, the same sequence for the
    same seed. Defaults: for `"pgd"` 10 steps of `2.5 * eps / steps`, as in
    `keras_harden.robust.pgd` (Madry et al.'s rule: the iterate can cross
    the ball in 80% of the steps; they used 7 steps of eps / 4 on CIFAR-10
    and 40 of eps / 30 on MNIST); for `"trades"` the reference's CIFAR-10
    setting, 10 steps of `0.007 / 0.031 * eps` (0.226 eps; other `steps`
    share the same 2.26 eps); for `"fast"` one step of `1.25 * eps`. On the
    digits conv net at eps 0.1 (`benchmarks/adversarial_training.py`, 15
    epochs, 2 seeds) 5, 10 and 20 steps gave the same robust accuracy
    within 0.02 (PGD-20 accuracy 0.82-0.84 after PGD training, 0.82-0.86
    after TRADES), the cost growing with the steps; 10 is kept, the
    references' choice, for harder data where a weaker inner maximisation
    trains a weaker model.

    Whether the outputs are logits: `from_logits`, else what the compiled
    loss says (a Keras loss object's `from_logits`; False for the
    cross-entropies given by name, their default); a custom loss needs
    `from_logits` given. The labels are class indices `(batch,)` /
    `(batch, 1)` or one-hot rows, as the compiled loss takes them; the
    inputs are one tensor, inside `value_range` (pass the range your
    inputs use, e.g. `(0, 255)` for raw pixels).

    `wrapper.model` is the classifier passed in, trained in place: save it
    with `model.save(...)` for an ordinary `.keras` model that loads without
    keras_harden. The wrapper itself saves and loads (with its optimizer
    state) as a keras_harden model.

    Args:
        model: a Keras classifier, one input and one output `(batch,
            classes)`, logits or probabilities.
        method: `"pgd"`, `"trades"` or `"fast"`.
        eps: number > 0, the L-inf radius (in the units of the inputs).
        steps: int >= 1, steps of the inner maximisation; None: 10 for pgd
            and trades, 1 for fast (the only value fast takes).
        step_size: number > 0; None: `2.5 * eps / steps` (pgd),
            `2.26 * eps / steps` (trades), `1.25 * eps` (fast).
        beta: number >= 0, TRADES's weight of the robust term (6, the
            paper's CIFAR-10 choice); used by `"trades"` only.
        value_range: `(low, high)` of valid inputs, or None for no clipping.
        from_logits: whether the outputs are logits; None takes it from the
            compiled loss.
        seed: None or an int >= 0, the seed of the random starts.
        **kwargs: `name` and the other `keras.Model` arguments.

    Returns:
        A `keras.Model` whose `call` is `model`'s.

    Example:

    >>> from keras_harden.robust.adversarial_training import AdversarialTraining
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> trainer = AdversarialTraining(model, "pgd", eps=0.1, steps=3, seed=0)
    >>> trainer.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])
    >>> x = np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")
    >>> history = trainer.fit(x, np.arange(32) % 3, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'adversarial_accuracy', 'loss']
    >>> trainer.model is model   # trained in place: save `model` itself
    True

    References:
        Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning
        Models Resistant to Adversarial Attacks" (ICLR 2018),
        arXiv:1706.06083; github.com/MadryLab/mnist_challenge.
        Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically
        Principled Trade-off between Robustness and Accuracy" (ICML 2019),
        arXiv:1901.08573; github.com/yaodongyu/TRADES.
        Wong, Rice and Kolter, "Fast is better than free: Revisiting
        adversarial training" (ICLR 2020), arXiv:2001.03994;
        github.com/locuslab/fast_adversarial.
    """

    def __init__(
        self,
        model,
        method="pgd",
        *,
        eps,
        steps=None,
        step_size=None,
        beta=6.0,
        value_range=(0, 1),
        from_logits=None,
        seed=None,
        **kwargs,
    ):
        if not isinstance(model, keras.Model) or isinstance(model, AdversarialTraining):
            raise ValueError(
                "`model` must be a Keras model (the classifier to train), not "
                f"an AdversarialTraining wrapper. Received: model={model!r}"
            )
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(
                f"`method` must be one of {', '.join(map(repr, METHODS))}. "
                f"Received: method={method!r}"
            )
        self.method = method
        self.eps = check_positive("eps", eps)
        self.steps = check_int("steps", steps, minimum=1, optional=True)
        if method == "fast" and self.steps not in (None, 1):
            raise ValueError(
                "The fast method takes one step (use method='pgd' for "
                f"several). Received: steps={steps!r}"
            )
        self.step_size = check_positive("step_size", step_size, optional=True)
        self.beta = check_number("beta", beta, low=0)
        self.value_range = _common.check_value_range(value_range)
        self.from_logits = _common.check_from_logits(from_logits)
        self.seed = check_int("seed", seed, minimum=0, optional=True)
        super().__init__(**kwargs)
        self.model = model
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.adversarial_accuracy = keras.metrics.Mean(name="adversarial_accuracy")
        # Whether the step being traced trains (set by `compute_loss`, read by
        # `compute_metrics` of the same step).
        self._training_step = False

    # -- what the inner maximisation uses ----------------------------------------

    @property
    def attack_steps(self):
        """The steps of the inner maximisation (the default when `steps` is
        None)."""
        return DEFAULT_STEPS[self.method] if self.steps is None else self.steps

    @property
    def attack_step_size(self):
        """The step size of the inner maximisation (the default when
        `step_size` is None)."""
        if self.step_size is not None:
            return self.step_size
        if self.method == "fast":
            return inner_max.fast_step_size(self.eps)
        if self.method == "trades":  # the reference's 2.26 eps over the steps
            steps = inner_max.TRADES_STEPS / self.attack_steps
            return inner_max.trades_step_size(self.eps) * steps
        return inner_max.default_step_size(self.eps, self.attack_steps)

    def _logits(self):
        """`from_logits`, checked against (or taken from) the compiled loss."""
        compiled = _from_logits_of(getattr(self, "loss", None))
        if self.from_logits is None:
            if compiled is None:
                raise ValueError(
                    "AdversarialTraining cannot tell from the compiled loss "
                    "whether the model outputs logits: pass `from_logits` "
                    f"(True or False). Received: loss={self.loss!r}, "
                    "from_logits=None"
                )
            return compiled
        if compiled is not None and compiled != self.from_logits:
            raise ValueError(
                "`from_logits` disagrees with the compiled loss (its "
                f"from_logits is {compiled}). Received: "
                f"from_logits={self.from_logits}"
            )
        return self.from_logits

    # -- the training step ---------------------------------------------------------

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        self._training_step = bool(training)
        if not training:
            return super().compute_loss(x, y, y_pred, sample_weight, training=False)
        if self.method != "trades" and self._compile_loss is None:
            raise ValueError(
                "AdversarialTraining needs a loss: compile with `loss=` (the "
                "loss taken on the adversarial batch). Received: loss=None"
            )
        if keras.tree.is_nested(x):
            raise ValueError(
                "AdversarialTraining takes one input tensor. Received: x with "
                f"structure {keras.tree.map_structure(lambda t: t.shape, x)}"
            )
        shape = tuple(y_pred.shape)
        if len(shape) != 2 or shape[-1] is None or shape[-1] < 2:
            raise ValueError(
                "AdversarialTraining needs a classifier: one output of shape "
                f"(batch, classes), classes >= 2. Received: output_shape={shape}"
            )
        from_logits = self._logits()
        x = ops.convert_to_tensor(x)
        if not keras.backend.is_float_dtype(x.dtype):
            x = ops.cast(x, keras.config.floatx())
        labels = inner_max.integer_labels(y, shape[-1])
        x_adv = ops.stop_gradient(self._adversarial_inputs(x, labels, from_logits))
        adversarial_pred = self.model(x_adv, training=True)
        self._update_adversarial_accuracy(labels, adversarial_pred, sample_weight)
        if self.method != "trades":
            return super().compute_loss(
                x, y, adversarial_pred, sample_weight, training=True
            )
        natural = super().compute_loss(x, y, y_pred, sample_weight, training=True)
        # A Keras loss reduces the per-example divergences as the compiled
        # loss is reduced: weighted by `sample_weight`, over the batch, and
        # divided among the replicas of a `tf.distribute` strategy.
        robust = _Divergence(from_logits)(
            y_pred, adversarial_pred, sample_weight=sample_weight
        )
        return natural + ops.cast(self.beta, natural.dtype) * ops.cast(
            robust, natural.dtype
        )

    def adversarial_examples(self, x, y):
        """The adversarial batch a training step would build from `(x, y)`
        (with the next random start of the wrapper's seed generator), run
        eagerly: to look at what the model is trained on.

        Args:
            x: a batch of inputs inside `value_range`.
            y: their labels (class indices or one-hot rows).

        Returns:
            A tensor of `x`'s shape: within `eps` of `x` in every
            coordinate and inside `value_range`.
        """
        x = ops.convert_to_tensor(x)
        if not keras.backend.is_float_dtype(x.dtype):
            x = ops.cast(x, keras.config.floatx())
        outputs = self.model(x, training=False)
        labels = inner_max.integer_labels(y, outputs.shape[-1])
        return self._adversarial_inputs(x, labels, self._logits())

    def _adversarial_inputs(self, x, labels, from_logits):
        model = self.model
        if self.method == "trades":
            clean = ops.stop_gradient(model(x, training=False))
            noise = inner_max.TRADES_START_SCALE * keras.random.normal(
                ops.shape(x), dtype=x.dtype, seed=self.seed_generator
            )

            def kl(clean_outputs, outputs):
                return inner_max.kl_divergence(clean_outputs, outputs, from_logits)

            def gradient_fn(x_adv):
                return input_gradient(model, x_adv, clean, kl)

        else:
            noise = keras.random.uniform(
                ops.shape(x),
                minval=-self.eps,
                maxval=self.eps,
                dtype=x.dtype,
                seed=self.seed_generator,
            )

            def ce(labels, outputs):
                return inner_max.cross_entropy(labels, outputs, from_logits)

            def gradient_fn(x_adv):
                return input_gradient(model, x_adv, labels, ce)

        return inner_max.linf_pgd(
            gradient_fn,
            x,
            noise,
            self.eps,
            self.attack_step_size,
            self.attack_steps,
            self.value_range,
        )

    def _update_adversarial_accuracy(self, labels, outputs, sample_weight):
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(outputs, axis=-1), "int32"), labels),
            "float32",
        )
        if sample_weight is not None:
            sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.adversarial_accuracy.update_state(correct, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if not self._training_step:  # evaluation has no adversarial batch
            logs.pop(self.adversarial_accuracy.name, None)
        return logs

    # -- serialization -------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "method": self.method,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "beta": self.beta,
            "value_range": None if self.value_range is None else list(self.value_range),
            "from_logits": self.from_logits,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if config.get("value_range") is not None:
            config["value_range"] = tuple(config["value_range"])
        return super().from_config(config, custom_objects)
