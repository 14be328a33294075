"""`DPTraining`: DP-SGD as a Keras model wrapper, inside `compile` and `fit`.

One training step, top to bottom (`_private_gradients`):

1. each example's loss from the compiled loss, weighted by the step's
   sample weights (the 0/1 mask of `PoissonBatches`' padded batches);
2. each example's gradient norm over every trainable variable: ghost norms
   from one forward pass and one backward pass to the layers' outputs
   (Dense, Conv, Embedding chains), or the per-example gradients themselves
   (vectorized over the batch) for other models (`per_example`);
3. the clipped sum `sum_i clip_C(w_i g_i)`: each ghost layer's from its
   inputs and its output gradients weighted by the clip factors, with no
   second backward pass (ghost), or a weighted sum of the per-example
   gradients (vectorized);
4. Gaussian noise of standard deviation `noise_multiplier * C`, drawn from
   the wrapper's seed generator and added once: under `tf.distribute` only
   the first replica adds it before the optimizer sums the replicas, so 2
   replicas give the 1-device step; on JAX the jitted step sees the whole
   batch however it is sharded;
5. division by the expected batch size, and the optimizer's `apply` (any
   Keras optimizer, keras_harden's wrappers with their non-finite skipping,
   a `LossScaleOptimizer` under mixed precision).

The per-example maths lives in `clipping`, `ghost_norms` and `per_example`;
this file is the wiring, one `train_step` and one `test_step` per backend.
"""

import itertools
import math
import warnings

import keras
from keras import ops

from keras_harden import _gradients
from keras_harden._validation import check_int, check_number, check_positive
from keras_harden._wrapped_model import WrappedModel
from keras_harden.privacy import clipping
from keras_harden.privacy import per_example as per_example_module
from keras_harden.privacy.poisson_batches import PoissonBatches

__all__ = ["DPTraining"]

_KERAS_DEFAULT_BATCH_SIZE = 32
_NOISE_STATE = "noise_seed_state"


def _example_loss(loss):
    """`(y, outputs) -> (batch,)` losses from what `compile` was given."""
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        function = loss.call
    elif callable(loss):
        function = loss
    else:
        raise ValueError(
            "DPTraining needs one loss for its one output, compiled as a "
            "name, a function or a `keras.losses.Loss`. "
            f"Received: loss={loss!r}"
        )

    def per_example(y, outputs):
        losses = function(y, outputs)
        if len(losses.shape) > 1:  # a loss per position: the example's mean
            losses = ops.mean(ops.reshape(losses, (ops.shape(losses)[0], -1)), axis=1)
        return ops.cast(losses, "float32")

    return per_example


@keras.saving.register_keras_serializable(package="keras_harden")
class DPTraining(WrappedModel):
    """Differentially private training (DP-SGD) of a Keras model.

    Wrap the model, compile the wrapper with any optimizer and the model's
    loss, and fit it on `PoissonBatches`: each step clips every example's
    gradient to norm `l2_norm_clip`, sums them, adds Gaussian noise of
    standard deviation `noise_multiplier * l2_norm_clip` and divides by the
    expected batch size (Abadi et al. 2016). The privacy spent is that of
    `keras_harden.privacy.epsilon(noise_multiplier, batches.sampling_rate,
    steps, delta)`; log it with `PrivacyBudget`.

    Per-example norms (`per_example`): `"ghost"` for a chain of Dense,
    Conv1D/Conv2D and Embedding layers (and layers without weights):
    each example's norm from the layers' inputs and output gradients,
    then the clipped sum from the same inputs and output gradients (no
    second backward pass), never one gradient per example in memory (Li
    et al. 2022; Bu et al. 2023). `"vectorized"` for anything else: the
    model's call vectorized over the batch, one gradient per example
    (memory: batch x parameters). `"auto"` picks
    ghost when the model allows it. Batch normalization (it mixes the
    examples) and regularization losses are refused with a ValueError; the
    vectorized path also refuses layers that draw random numbers (Dropout,
    GaussianNoise): vectorized over the batch they would draw one mask for
    every example (the ghost path runs them on the whole batch, as `fit`).

    Batches: `fit` on `PoissonBatches` (each example in each step with
    probability `q`, padded to a fixed size with a 0/1 mask so the step is
    traced once) is what the accountant assumes. `fit` on arrays or a
    dataset of ordinary shuffled batches trains too, with a warning: each
    example is then seen exactly once an epoch, which the Poisson analysis
    does not cover, so the epsilon reported for it is an approximation.
    Sample weights of other batches multiply each example's gradient
    before it is clipped. The logged loss and metrics are computed from
    the private batch without noise: they are not covered by the guarantee.

    `wrapper.model` is the model passed in, trained in place: save it with
    `model.save(...)` for an ordinary `.keras` model that loads without
    keras_harden. The wrapper saves and loads (with its optimizer state) as
    a keras_harden model.

    Args:
        model: a Keras model, one input and one output.
        noise_multiplier: number >= 0, the noise's standard deviation over
            `l2_norm_clip` (0 clips without noise: no privacy).
        l2_norm_clip: number > 0, the clip norm `C` of each example's
            gradient over all trainable variables together.
        per_example: `"auto"`, `"ghost"` or `"vectorized"`.
        expected_batch_size: None, or the expected batch size `B` the
            clipped sum is divided by; None takes it from `PoissonBatches`,
            or from `fit`'s `batch_size` for arrays.
        seed: None or an int >= 0, the seed of the noise.
        **kwargs: `name` and the other `keras.Model` arguments.

    Returns:
        A `keras.Model` whose `call` is `model`'s.

    Example:

    >>> from keras_harden.privacy import DPTraining, PoissonBatches
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> private = DPTraining(model, noise_multiplier=1.0, l2_norm_clip=1.0, seed=0)
    >>> private.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])
    >>> x = np.random.default_rng(0).uniform(size=(64, 4)).astype("float32")
    >>> batches = PoissonBatches(x, np.arange(64) % 3, expected_batch_size=16, seed=0)
    >>> history = private.fit(batches, epochs=1, verbose=0)
    >>> sorted(history.history), private.per_example_method
    (['accuracy', 'loss'], 'ghost')

    References:
        Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar and Zhang, "Deep
        Learning with Differential Privacy" (CCS 2016), arXiv:1607.00133;
        github.com/tensorflow/privacy.
        Li, Tramer, Liang and Hashimoto, "Large Language Models Can Be
        Strong Differentially Private Learners" (ICLR 2022),
        arXiv:2110.05679 (ghost clipping).
        Bu, Wang, Zha and Karypis, "Differentially Private Optimization on
        Large Model at Small Cost" (ICML 2023), arXiv:2210.00038.
    """

    def __init__(
        self,
        model,
        *,
        noise_multiplier,
        l2_norm_clip=1.0,
        per_example="auto",
        expected_batch_size=None,
        seed=None,
        **kwargs,
    ):
        if not isinstance(model, keras.Model) or isinstance(model, DPTraining):
            raise ValueError(
                "`model` must be a Keras model (the model to train), not a "
                f"DPTraining wrapper. Received: model={model!r}"
            )
        self.noise_multiplier = check_number(
            "noise_multiplier", noise_multiplier, low=0
        )
        self.l2_norm_clip = check_positive("l2_norm_clip", l2_norm_clip)
        self.expected_batch_size = check_int(
            "expected_batch_size", expected_batch_size, minimum=1, optional=True
        )
        self.seed = check_int("seed", seed, minimum=0, optional=True)
        per_example_module.check_model(model)
        self.per_example = per_example
        self.per_example_method, self._chain = per_example_module.choose_method(
            model, per_example
        )
        if self.per_example_method == "vectorized":
            _check_no_random_layers(model)
        super().__init__(**kwargs)
        self.model = model
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._normalizer = self.expected_batch_size
        self.built = model.built

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile`, with `metrics` weighted by the step's
        sample weights: the padding of `PoissonBatches` (weight 0) is left
        out of every metric (Keras weights only `weighted_metrics`)."""
        if metrics is not None:
            weighted = kwargs.pop("weighted_metrics", None) or []
            metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
            kwargs["weighted_metrics"] = list(weighted) + metrics
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    # Keras restores the compile state of a model with its own `compile`
    # only through these two. The config `compile` records has the metrics
    # already moved to `weighted_metrics`; the optimizer is built before
    # loading so that its saved variables have somewhere to go.
    def get_compile_config(self):
        return super().get_compile_config()

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # -- what the step needs -----------------------------------------------------

    @property
    def metrics(self):
        # The loss logged in training and evaluation is the wrapper's own
        # mean of the per-example losses (the trainer's loss tracker, fed by
        # the compiled loss of a step this class replaces, is left out).
        others = [m for m in super().metrics if m.name != "loss"]
        return [self.loss_tracker, *others]

    def _per_example_loss(self):
        if getattr(self, "loss", None) is None:
            raise ValueError(
                "DPTraining needs the loss given to `compile` (one loss for "
                "the model's one output). Received: loss=None"
            )
        return _example_loss(self.loss)

    def _loss_scale(self):
        """The optimizer's loss scale (a `LossScaleOptimizer`'s under mixed
        precision), or None for an optimizer that does not scale the loss
        (the step then has no scaling to undo)."""
        one = ops.ones((), "float32")
        scaled = self.optimizer.scale_loss(one)
        return None if scaled is one else ops.cast(scaled, "float32")

    def _noise_on_this_replica(self):
        """None where one program adds the noise (one device, or JAX, whose
        jitted step sees the whole batch however it is sharded); under
        `tf.distribute`, 1.0 on the first replica and 0.0 on the others."""
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        if not tf.distribute.has_strategy():
            return None
        context = tf.distribute.get_replica_context()
        if context is None:  # cross-replica context: one program
            return None
        return ops.cast(ops.equal(context.replica_id_in_sync_group, 0), "float32")

    def _private_gradients(self, x, y, sample_weight, values=None, state_mapping=()):
        """The DP-SGD gradient of one step (see the module docstring).

        Returns `(gradients, losses, outputs, new_state)`: the gradients in
        the order of `self.trainable_variables` (scaled by the loss scale,
        as the optimizer's `apply` expects), the per-example losses and
        outputs, and (JAX) the new values of `state_mapping`'s variables
        after the forward pass."""
        loss_fn = self._per_example_loss()
        variables = self.trainable_variables
        scale = self._loss_scale()
        weights = None
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        new_state = [value for _, value in state_mapping]
        if self.per_example_method == "ghost":
            batch = ops.shape(x)[0]
            probes = [
                ops.zeros((batch, *shape[1:]), layer.compute_dtype)
                for shape, layer in zip(
                    per_example_module.probe_shapes(self._chain, x.shape),
                    [layer for layer in self._chain if layer.trainable_variables],
                    strict=True,
                )
            ]
            state_variables = [v for v, _ in state_mapping]

            def forward(probes):
                outputs, taps = per_example_module.ghost_forward(self._chain, x, probes)
                losses = loss_fn(y, outputs)
                state = _current_values(state_variables)
                return losses, (outputs, taps, state)

            # One forward pass, one backward pass to the probes (no weight
            # gradients: the weights are read, not differentiated), then
            # each layer's clipped gradient from its inputs and output
            # gradients weighted by the clip factors.
            trainable_mapping = (
                [] if values is None else list(zip(variables, values, strict=True))
            )
            losses, (outputs, taps, new_state), pullback = (
                _gradients.losses_and_pullback(
                    forward, [], [], probes, trainable_mapping + list(state_mapping)
                )
            )
            _, probe_gradients = pullback(_scaled(ops.ones_like(losses), scale))
            probe_gradients = [
                _unscaled(ops.cast(g, "float32"), scale) for g in probe_gradients
            ]
            squared = per_example_module.squared_norms(taps, probe_gradients)
            factors = clipping.clip_factors(squared, self.l2_norm_clip, weights)
            by_variable = per_example_module.clipped_sum(taps, probe_gradients, factors)
            summed = [by_variable[id(v)] for v in variables]
        else:

            def one(x_i, y_i):
                outputs = self.model(x_i, training=True)
                return _scaled(loss_fn(y_i, outputs)[0], scale), outputs

            losses, outputs, grads = _gradients.per_example_gradients(
                one, variables, values, x, y, state_mapping
            )
            losses = _unscaled(losses, scale)
            grads = [_unscaled(ops.cast(g, "float32"), scale) for g in grads]
            squared = clipping.squared_norms(grads)
            factors = clipping.clip_factors(squared, self.l2_norm_clip, weights)
            summed = clipping.clipped_sum(grads, factors)
        stddev = self.noise_multiplier * self.l2_norm_clip
        gradients = clipping.noisy_mean(
            summed, self._noise_draws(variables), stddev, self._normalizer_value()
        )
        gradients = [
            ops.cast(_scaled(g, scale), v.dtype)
            for g, v in zip(gradients, variables, strict=True)
        ]
        return gradients, losses, outputs, new_state

    def _noise_draws(self, variables):
        """Standard-normal draws of the variables' shapes, zeros on the
        replicas that add no noise: one draw of their total size, split
        (one random op and one seed update a step, however many
        variables)."""
        sizes = [math.prod(v.shape) for v in variables]
        flat = keras.random.normal((sum(sizes),), seed=self.seed_generator)
        on_this_replica = self._noise_on_this_replica()
        if on_this_replica is not None:
            flat = flat * on_this_replica
        ends = list(itertools.accumulate(sizes))
        return [
            ops.reshape(flat[end - size : end], v.shape)
            for end, size, v in zip(ends, sizes, variables, strict=True)
        ]

    def _normalizer_value(self):
        if self._normalizer is None:
            raise ValueError(
                "DPTraining divides the clipped sum by the expected batch size: "
                "fit it on `PoissonBatches`, on arrays with `batch_size`, or "
                "pass `expected_batch_size`. Received: expected_batch_size=None"
            )
        return float(self._normalizer)

    # -- fit -------------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        if isinstance(x, PoissonBatches):
            if self.expected_batch_size not in (None, x.expected_batch_size):
                raise ValueError(
                    "`expected_batch_size` differs from the PoissonBatches' "
                    f"({x.expected_batch_size}). Received: "
                    f"expected_batch_size={self.expected_batch_size}"
                )
            self._set_normalizer(x.expected_batch_size)
            # Poisson batches are independent draws: shuffling their order
            # (fit's default, with Python's `random`) would only make a
            # seeded run irreproducible.
            kwargs.setdefault("shuffle", False)
            if y is None and batch_size is None and _feeds_through_tf_data(x, kwargs):
                return self._fit_tf_data(x, **kwargs)
        else:
            warnings.warn(
                "DPTraining.fit on batches that are not `PoissonBatches`: the "
                "privacy accounting of DP-SGD assumes Poisson sampling (each "
                "example in each step independently), so the epsilon reported "
                "for shuffled batches is an approximation, not a guarantee.",
                stacklevel=2,
            )
            normalizer = self.expected_batch_size
            if normalizer is None and not _is_dataset(x):
                normalizer = batch_size or _KERAS_DEFAULT_BATCH_SIZE
            self._set_normalizer(normalizer)
        return super().fit(x, y, batch_size=batch_size, **kwargs)

    def _set_normalizer(self, normalizer):
        if normalizer != self._normalizer:
            self._normalizer = normalizer
            self.train_function = None  # traced again with the new constant

    def _fit_tf_data(
        self, batches, epochs=1, initial_epoch=0, callbacks=None, **kwargs
    ):
        """`fit` on `batches.tf_dataset`: the same batches as the
        `PyDataset` (TensorFlow reads those through a Python generator, a
        few ms a batch), with the epoch counter advanced where Keras's
        `fit` advances a `PyDataset`'s: once before the first epoch, then
        after each."""
        kwargs["shuffle"] = False  # a dataset: Keras warns of any other value
        batches.on_epoch_end()
        advance = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: batches.on_epoch_end()
        )
        return super().fit(
            batches.tf_dataset(max(epochs - initial_epoch, 1)),
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=len(batches),
            callbacks=[advance, *(callbacks or [])],
            **kwargs,
        )

    # -- the steps -------------------------------------------------------------------

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        gradients, losses, outputs, _ = self._private_gradients(x, y, sample_weight)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(x, y, losses, outputs, sample_weight)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self.model(x, training=False)
        losses = self._per_example_loss()(y, outputs)
        return self._update_metrics(x, y, losses, outputs, sample_weight)

    def _update_metrics(self, x, y, losses, outputs, sample_weight):
        weights = None
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        self.loss_tracker.update_state(losses, sample_weight=weights)
        return self.compute_metrics(x, y, outputs, sample_weight=sample_weight)

    def _jax_metrics(self, metrics_values, x, y, losses, outputs, sample_weight):
        mapping = list(zip(self.metrics_variables, metrics_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_metrics(x, y, losses, outputs, sample_weight)
        return logs, _scope_values(scope, self.metrics_variables, metrics_values)

    def _jax_train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        state_mapping = list(
            zip(self.non_trainable_variables, non_trainable, strict=True)
        )
        mapping = state_mapping + list(
            zip(self.optimizer.variables, optimizer_values, strict=True)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            gradients, losses, outputs, forward_state = self._private_gradients(
                x, y, sample_weight, trainable, state_mapping
            )
        # The forward pass's state (the model's seed generators), then the
        # noise's seed generator, which advanced in this scope.
        non_trainable = [
            forward
            if scope.get_current_value(v) is original
            else scope.get_current_value(v)
            for v, original, forward in zip(
                self.non_trainable_variables, non_trainable, forward_state, strict=True
            )
        ]
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        logs, metrics_values = self._jax_metrics(
            metrics_values, x, y, losses, outputs, sample_weight
        )
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        outputs, non_trainable = self.stateless_call(
            trainable, non_trainable, x, training=False
        )
        losses = self._per_example_loss()(y, outputs)
        logs, metrics_values = self._jax_metrics(
            metrics_values, x, y, losses, outputs, sample_weight
        )
        return logs, (trainable, non_trainable, metrics_values)

    # -- serialization ---------------------------------------------------------------

    # The noise's seed generator is not among a model's weights, so Keras
    # would save a run without it and a loaded run would draw the noise of
    # its first steps again; it travels with the wrapper's own variables.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[_NOISE_STATE] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = [key for key in store.keys() if key != _NOISE_STATE]
        if _NOISE_STATE in store.keys():
            self.seed_generator.state.assign(store[_NOISE_STATE])
        super().load_own_variables({key: store[key] for key in keys})

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "noise_multiplier": self.noise_multiplier,
            "l2_norm_clip": self.l2_norm_clip,
            "per_example": self.per_example,
            "expected_batch_size": self.expected_batch_size,
            "seed": self.seed,
        }


def _scaled(value, scale):
    """`value * scale`, or `value` where the optimizer scales no loss."""
    return value if scale is None else value * scale


def _unscaled(value, scale):
    return value if scale is None else value / scale


def _current_values(variables):
    """The values `variables` have in the current stateless scope (JAX)."""
    return [v.value for v in variables]


def _scope_values(scope, variables, values):
    new = [scope.get_current_value(v) for v in variables]
    return [old if n is None else n for n, old in zip(new, values, strict=True)]


def _feeds_through_tf_data(batches, fit_kwargs):
    """Whether `fit` on these `PoissonBatches` can read them as
    `batches.tf_dataset`: on TensorFlow, for the class's own batches (a
    subclass's `__getitem__` may make others), in whole epochs and without
    a `PyDataset`'s worker threads or processes."""
    return (
        keras.backend.backend() == "tensorflow"
        and type(batches).__getitem__ is PoissonBatches.__getitem__
        and fit_kwargs.get("steps_per_epoch") is None
        and isinstance(fit_kwargs.get("callbacks"), (list, tuple, type(None)))
        and batches.workers <= 1
        and not batches.use_multiprocessing
    )


def _is_dataset(x):
    """Whether `x` is a batched dataset (its batch size is not fit's)."""
    import numpy as np

    return not (isinstance(x, np.ndarray) or hasattr(x, "shape"))


def _check_no_random_layers(model):
    for layer in per_example_module.sublayers(model):
        if getattr(layer, "seed_generator", None) is not None or isinstance(
            layer, (keras.layers.Dropout, keras.layers.GaussianNoise)
        ):
            raise ValueError(
                "The vectorized per-example path cannot run layers that draw "
                "random numbers: vectorized over the batch, every example would "
                "get the same draw. Remove the layer, or make the model a chain of "
                "Dense, Conv and Embedding layers (ghost clipping runs such layers "
                f"on the whole batch). Received: layer={layer.name!r} "
                f"({type(layer).__name__})"
            )
