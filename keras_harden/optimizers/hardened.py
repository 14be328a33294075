"""`HardenedOptimizer`: clip rules and non-finite step skipping around any
Keras optimizer.

One step, top to bottom (`apply`):

1. Under `tf.distribute`, the per-replica gradients are summed first
   (`_tf_support.distributed_apply`), so every rule sees the step's gradient.
2. One fused pass gives the global norm and whether every entry is finite.
3. The rules rescale the gradients in order and return their new state.
4. The inner optimizer applies the clipped gradients, or, when the step is
   not finite, nothing happens at all: weights, inner state, rule state and
   the iteration count stay exactly as they were and a counter goes up.
5. The statistics (`gradient_norm`, `clipped_gradient_norm`,
   `skipped_steps`) land in optimizer variables that callbacks read
   without another pass.

Steps 2-3 and 5 are one pure function, `_compute_step`, which reads state
and returns new values. It is committed in one of three ways, as Keras's
`LossScaleOptimizer` has them: assigned, then the inner `apply` under a
`cond` (TensorFlow); inside a cross-replica `merge_call` (`tf.distribute`,
`_tf_support.py`); or returned by `stateless_apply` (JAX's trainer; on JAX,
`apply` also steps through it, since a `cond` there cannot assign).
"""

import collections

import keras
from keras import ops

from keras_harden._validation import check_bool, check_int
from keras_harden.optimizers import gradient_ops
from keras_harden.optimizers.clip_rule import ClipRule

_Step = collections.namedtuple(
    "_Step", ["grads", "apply_inner", "updates", "consecutive_nonfinite"]
)

# Base-optimizer arguments a wrapper cannot honour: they belong on the inner
# optimizer (same policy as Keras's `LossScaleOptimizer`).
_BASE_DEFAULTS = {
    "learning_rate": None,
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


class NonFiniteGradientError(FloatingPointError):
    """Raised when more than `max_consecutive_nonfinite` steps in a row had
    NaN or Inf gradients."""


def _is_tensorflow():
    return keras.backend.backend() == "tensorflow"


def _tf():
    from keras_harden.optimizers import _tf_support

    return _tf_support


def _check_inner(inner_optimizer):
    if isinstance(inner_optimizer, (str, dict)):
        inner_optimizer = keras.optimizers.get(inner_optimizer)
    if isinstance(inner_optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "`inner_optimizer` must not be a LossScaleOptimizer: the loss would "
            "be scaled twice under mixed precision, because compile() wraps any "
            "optimizer that is not a LossScaleOptimizer in one. Wrap the plain "
            "optimizer and let compile() add loss scaling, or wrap the other way "
            "round: keras.optimizers.LossScaleOptimizer(HardenedOptimizer(opt)). "
            f"Received: inner_optimizer={inner_optimizer!r}"
        )
    if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "`inner_optimizer` must be a keras.optimizers.Optimizer instance. "
            f"Received: inner_optimizer={inner_optimizer!r}"
        )
    own_clips = {
        name: getattr(inner_optimizer, name)
        for name in ("clipnorm", "global_clipnorm", "clipvalue")
        if getattr(inner_optimizer, name) is not None
    }
    if own_clips:
        settings = ", ".join(f"{k}={v!r}" for k, v in own_clips.items())
        raise ValueError(
            "`inner_optimizer` must not clip by itself: Keras clips each "
            "replica's share of the gradient under tf.distribute and the scaled "
            "gradient under mixed precision, which is what the wrapper exists to "
            "fix. Move the setting to the wrapper, e.g. "
            "kh.optimizers.GradientClipping(keras.optimizers.SGD(0.1), "
            f"global_clipnorm=1.0). Received: inner_optimizer with {settings}"
        )
    if inner_optimizer.loss_scale_factor is not None:
        raise ValueError(
            "`inner_optimizer` must not set `loss_scale_factor`: the rules must "
            "see unscaled gradients. Use mixed precision's LossScaleOptimizer "
            "(added by compile()) instead. Received: inner_optimizer with "
            f"loss_scale_factor={inner_optimizer.loss_scale_factor!r}"
        )
    return inner_optimizer


def _check_rules(clip):
    if clip is None:
        return ()
    rules = list(clip) if isinstance(clip, (list, tuple)) else [clip]
    for rule in rules:
        if not isinstance(rule, ClipRule):
            raise ValueError(
                "`clip` must be a ClipRule or a list of them (ClipByValue, "
                "ClipByNorm, ClipByGlobalNorm, UnitwiseClip, PercentileClip, "
                f"ZScoreClip). Received: clip={clip!r}"
            )
    return tuple(rules)


def single_rule_config(optimizer):
    """Config of a convenience wrapper built around one rule: the rule's
    arguments plus the non-finite settings (its constructor arguments)."""
    config = optimizer.rules[0].get_config()
    config.update(
        skip_nonfinite=optimizer.skip_nonfinite,
        max_consecutive_nonfinite=optimizer.max_consecutive_nonfinite,
    )
    return config


@keras.saving.register_keras_serializable(package="keras_harden")
class HardenedOptimizer(keras.optimizers.Optimizer):
    """Wraps any Keras optimizer with gradient clipping rules and skips steps
    whose gradients are not finite.

    A drop-in replacement: `model.compile(optimizer=HardenedOptimizer(opt,
    clip=...))`. The rules in `clip` run in order on the step's gradient:
    under `tf.distribute.MirroredStrategy` that is the gradient summed across
    replicas (Keras's own `clipnorm`/`global_clipnorm` clip each replica's
    share instead), and under `mixed_float16` the unscaled gradient
    (`compile()` puts the `LossScaleOptimizer` outside this wrapper).

    When any gradient entry is NaN or Inf and `skip_nonfinite` is on, the step
    is skipped: weights, the inner optimizer's state, the rules' state and the
    iteration count stay exactly as they were, and `skipped_steps` goes up.
    Finiteness comes from the same pass that computes the global norm.

    After `max_consecutive_nonfinite` skipped steps in a row,
    `NonFiniteGradientError` is raised: at once when the step runs eagerly;
    from the compiled graph on TensorFlow (as `InvalidArgumentError` with the
    same message) when not under XLA. XLA (`jit_compile=True`, and JAX)
    cannot raise from inside a step, so there the check runs on the host in
    `check_nonfinite_limit()` (one scalar read), which the
    `NonFiniteLimit` callback calls after each batch.

    Statistics, as optimizer variables updated in the step itself (read them
    with `float(opt.gradient_norm)`): `gradient_norm` (global norm before
    clipping, last applied step; NaN/Inf on a skipped step),
    `clipped_gradient_norm` (after clipping; 0 on a skipped step),
    `skipped_steps` and `consecutive_nonfinite`. They exist once the
    optimizer is built.

    The learning rate and iteration count are the inner optimizer's
    (settable, so `ReduceLROnPlateau` works). If the inner optimizer
    accumulates gradients (`gradient_accumulation_steps=k`), the rules run
    once per real update, on the averaged gradient.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` to wrap (not a
            `LossScaleOptimizer`, and without `loss_scale_factor`).
        clip: `None`, a `ClipRule`, or a list of rules applied in order.
        skip_nonfinite: bool; when `False`, non-finite steps are applied (and
            still counted in `consecutive_nonfinite`).
        max_consecutive_nonfinite: `None` or int >= 1.
        name: optional name.
        **kwargs: base optimizer arguments are refused (set them on the inner
            optimizer), except their default values, for compatibility.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:

    >>> import keras, keras_harden as kh
    >>> opt = kh.optimizers.HardenedOptimizer(
    ...     keras.optimizers.AdamW(1e-3),
    ...     clip=[kh.optimizers.UnitwiseClip(0.01),
    ...           kh.optimizers.ClipByGlobalNorm(5.0)],
    ...     max_consecutive_nonfinite=20)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=opt, loss="mse")

    References:
        Keras's `LossScaleOptimizer` (the wrapper pattern);
        Pascanu et al. 2013 (clipping); Brock et al. 2021 (AGC);
        Seetharaman et al. 2020 (AutoClip); Kumar et al. 2025 (ZClip).
    """

    def __init__(
        self,
        inner_optimizer,
        clip=None,
        skip_nonfinite=True,
        max_consecutive_nonfinite=None,
        name=None,
        **kwargs,
    ):
        for arg_name, default in _BASE_DEFAULTS.items():
            if arg_name in kwargs:
                value = kwargs.pop(arg_name)
                if value != default:
                    raise ValueError(
                        f"{type(self).__name__} does not take `{arg_name}`: set "
                        f"it on the inner optimizer. Received: {arg_name}={value!r}"
                    )
        if kwargs:
            raise ValueError(
                f"{type(self).__name__} got unknown arguments. "
                f"Received: {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
            )
        inner_optimizer = _check_inner(inner_optimizer)
        rules = _check_rules(clip)
        check_bool("skip_nonfinite", skip_nonfinite)
        check_int(
            "max_consecutive_nonfinite",
            max_consecutive_nonfinite,
            minimum=1,
            optional=True,
        )
        if inner_optimizer.gradient_accumulation_steps and inner_optimizer.built:
            raise ValueError(
                "`inner_optimizer` with `gradient_accumulation_steps` must not be "
                "built yet: the wrapper follows its accumulation from the first "
                "micro-batch. Received: a built inner_optimizer with "
                "gradient_accumulation_steps="
                f"{inner_optimizer.gradient_accumulation_steps}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.rules = rules
        self._clip_is_list = isinstance(clip, (list, tuple))
        self.skip_nonfinite = skip_nonfinite
        self.max_consecutive_nonfinite = max_consecutive_nonfinite

    # ------------------------------------------------------------------ state

    def build(self, var_list):
        if self.built:
            return

        def scalar(name, dtype):
            return self.add_variable(
                (),
                initializer="zeros",
                dtype=dtype,
                aggregation="only_first_replica",
                name=name,
            )

        self.gradient_norm = scalar("gradient_norm", "float32")
        self.clipped_gradient_norm = scalar("clipped_gradient_norm", "float32")
        self.skipped_steps = scalar("skipped_steps", "int32")
        self.consecutive_nonfinite = scalar("consecutive_nonfinite", "int32")
        for rule in self.rules:
            rule.build(self, var_list)
        # With accumulation, the wrapper keeps a copy of the sums the inner
        # optimizer accumulates and of its micro-step count (Keras keeps its
        # own private), so the rules can see the average a real update applies.
        self._accumulated = {}
        if self.inner_optimizer.gradient_accumulation_steps:
            self.micro_steps = scalar("micro_steps", "int32")
            for variable in var_list:
                if not getattr(variable, "overwrite_with_gradient", False):
                    self._accumulated[id(variable)] = (
                        self.add_variable_from_reference(
                            variable, name="accumulated_gradient"
                        )
                    )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Forwarded to the inner optimizer, which does the decaying."""
        self.inner_optimizer.exclude_from_weight_decay(
            var_list=var_list, var_names=var_names
        )

    def update_step(self, gradient, variable, learning_rate):
        """The inner optimizer's update of one variable (as in Keras: no
        clipping, no skipping, no weight decay)."""
        self.inner_optimizer.update_step(gradient, variable, learning_rate)

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars, strict=True)
        self.apply(grads, variables)
        return self.iterations

    def __getattr__(self, name):
        # Reached only when normal lookup fails: public attributes particular
        # to the inner optimizer (SGD's `momentum`, Muon's `lr_adjust`, ...).
        inner = self.__dict__.get("inner_optimizer")
        if name.startswith("_") or inner is None:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        return getattr(inner, name)

    # ------------------------------------------------------------------- step

    def _compute_step(self, grads, variables):
        """The pure part of a step: reads state, assigns nothing.

        Returns:
            `_Step(grads, apply_inner, updates, consecutive_nonfinite)`: the
            gradients for the inner optimizer, whether it applies them (a
            finite step), `(variable, new_value)` pairs for the state the
            wrapper keeps (already unchanged where the step must not change
            it), and the new consecutive non-finite count.
        """
        grads = list(grads)
        variables = list(variables)
        # Variables overwritten with their "gradient" (float8 scales) are not
        # gradients: keep them out of norms and rules.
        overwrite = [
            getattr(v, "overwrite_with_gradient", False) for v in variables
        ]
        keep = [
            g is not None and not o for g, o in zip(grads, overwrite, strict=True)
        ]
        steps = self.inner_optimizer.gradient_accumulation_steps
        if steps:
            # Micro-step i of k: the rules see what the real update will apply
            # (the average of the k micro-batches) on the last one, and the
            # micro-batch itself otherwise (for finiteness).
            micro = ops.convert_to_tensor(self.micro_steps)
            active = ops.equal((micro + 1) % steps, 0)
            accumulated = [self._accumulated.get(id(v)) for v in variables]
            sums = [
                g + ops.convert_to_tensor(a) if k else None
                for g, a, k in zip(grads, accumulated, keep, strict=True)
            ]
            view = [
                ops.where(active, s / steps, g) if k else g
                for g, s, k in zip(grads, sums, keep, strict=True)
            ]
        else:
            active, view = None, grads
        work = [g if k else None for g, k in zip(view, keep, strict=True)]

        norm, finite = gradient_ops.global_norm_and_finite(work)
        ok = finite if self.skip_nonfinite else ops.convert_to_tensor(True)
        commit = ok if active is None else ops.logical_and(ok, active)

        clipped, current = work, norm
        rule_updates = []
        for rule in self.rules:
            if rule.uses_global_norm and current is None:
                current = gradient_ops.global_norm(clipped)
            state = [ops.convert_to_tensor(v) for v in rule.state_variables]
            clipped, current, state = rule(clipped, variables, current, state)
            rule_updates.extend(zip(rule.state_variables, state, strict=True))
        if current is None:
            current = gradient_ops.global_norm(clipped)

        def gated(variable, value, gate):
            return ops.where(gate, value, ops.cast(variable, variable.dtype))

        if steps:
            # The inner optimizer applies (its sum + what it is given) / k on a
            # real update and only adds to its sum otherwise: hand it
            # k * clipped - sum, so that it applies exactly the clipped average.
            out = [
                ops.where(active, c * steps - ops.convert_to_tensor(a), g) if k else g
                for c, a, g, k in zip(clipped, accumulated, grads, keep, strict=True)
            ]
            own_updates = [
                (a, gated(a, ops.where(active, ops.zeros_like(s), s), ok))
                for a, s, k in zip(accumulated, sums, keep, strict=True)
                if k
            ]
            own_updates.append(
                (self.micro_steps, micro + ops.cast(ok, micro.dtype))
            )
        else:
            out = [c if k else g for c, g, k in zip(clipped, grads, keep, strict=True)]
            own_updates = []

        stats_gate = ops.convert_to_tensor(True) if active is None else active
        consecutive = ops.where(
            finite, 0, ops.convert_to_tensor(self.consecutive_nonfinite) + 1
        )
        updates = [(var, gated(var, value, commit)) for var, value in rule_updates]
        updates += own_updates
        updates += [
            (self.gradient_norm, gated(self.gradient_norm, norm, stats_gate)),
            (
                self.clipped_gradient_norm,
                gated(
                    self.clipped_gradient_norm,
                    ops.where(ok, current, 0.0),
                    stats_gate,
                ),
            ),
            (
                self.skipped_steps,
                self.skipped_steps + ops.cast(ops.logical_not(ok), "int32"),
            ),
            (self.consecutive_nonfinite, ops.cast(consecutive, "int32")),
        ]
        return _Step(out, ok, updates, consecutive)

    def _apply_inner_if(self, ok, grads, variables):
        """Lets the inner optimizer apply `grads` only when `ok` is true."""
        ops.cond(
            ok,
            lambda: self.inner_optimizer.apply(grads, variables),
            lambda: None,
        )

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "Pass `trainable_variables` on the first call to `apply`, or "
                    "call `optimizer.build(variables)` first."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        variables = (
            list(self._trainable_variables)
            if trainable_variables is None
            else list(trainable_variables)
        )
        grads = list(grads)
        if len(grads) != len(variables):
            raise ValueError(
                f"Got {len(grads)} gradients for {len(variables)} variables."
            )
        if _is_tensorflow():
            tf_support = _tf()
            grads = tf_support.densify(grads)
            if tf_support.in_replica_context_of_strategy():
                if self.inner_optimizer.gradient_accumulation_steps:
                    raise ValueError(
                        "HardenedOptimizer does not support an inner optimizer "
                        "with `gradient_accumulation_steps` under tf.distribute. "
                        "Received: gradient_accumulation_steps="
                        f"{self.inner_optimizer.gradient_accumulation_steps}"
                    )
                consecutive = tf_support.distributed_apply(self, grads, variables)
                self._enforce_limit(consecutive)
                return
        if keras.backend.backend() == "jax":
            # JAX cannot branch on state changes: step statelessly, then assign.
            self._apply_through_stateless(grads, variables)
            return
        step = self._compute_step(grads, variables)
        for variable, value in step.updates:
            variable.assign(value)
        self._apply_inner_if(step.apply_inner, step.grads, variables)
        self._enforce_limit(step.consecutive_nonfinite)

    def _apply_through_stateless(self, grads, variables):
        if [id(v) for v in variables] != [id(v) for v in self._trainable_variables]:
            raise ValueError(
                "On JAX, `apply` takes the variables the optimizer was built "
                f"with. Received: {len(variables)} other variables"
            )
        new_trainables, new_optimizer = self.stateless_apply(
            [v.value for v in self.variables], grads, [v.value for v in variables]
        )
        for variable, value in zip(variables, new_trainables, strict=True):
            variable.assign(value)
        for variable, value in zip(self.variables, new_optimizer, strict=True):
            variable.assign(value)
        self._enforce_limit(self.consecutive_nonfinite)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """Stateless step (JAX): returns `(new_trainable_values,
        new_optimizer_values)` without touching any variable."""
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, the optimizer must be built: call "
                "`optimizer.build(trainable_variables)` first."
            )
        # Values, not variables: a caller such as LossScaleOptimizer may pass
        # variables read through its own StatelessScope.
        optimizer_variables = [ops.convert_to_tensor(v) for v in optimizer_variables]
        trainable_variables = [ops.convert_to_tensor(v) for v in trainable_variables]
        if len(optimizer_variables) != len(self.variables):
            raise ValueError(
                f"Expected {len(self.variables)} optimizer variable values. "
                f"Received: {len(optimizer_variables)}"
            )
        own_count = len(self._variables)
        own_values = optimizer_variables[:own_count]
        inner_values = optimizer_variables[own_count:]
        mapping = list(zip(self.variables, optimizer_variables, strict=True)) + list(
            zip(self._trainable_variables, trainable_variables, strict=True)
        )
        with keras.StatelessScope(state_mapping=mapping):
            step = self._compute_step(grads, self._trainable_variables)
        new_by_id = {id(var): value for var, value in step.updates}
        new_own = [
            new_by_id.get(id(var), value)
            for var, value in zip(self._variables, own_values, strict=True)
        ]

        def applied():
            new_trainables, new_inner = self.inner_optimizer.stateless_apply(
                inner_values, step.grads, trainable_variables
            )
            return list(new_trainables), list(new_inner)

        def skipped():
            return list(trainable_variables), list(inner_values)

        new_trainables, new_inner = ops.cond(step.apply_inner, applied, skipped)
        return list(new_trainables), new_own + list(new_inner)

    # ---------------------------------------------------- non-finite limit

    def _limit_message(self):
        return (
            f"{self.max_consecutive_nonfinite} optimizer steps in a row had "
            f"non-finite (NaN or Inf) gradients ({self.name}). Training is not "
            "recovering: lower the learning rate, look for NaN/Inf in the data "
            "or the loss, or raise `max_consecutive_nonfinite`."
        )

    def check_nonfinite_limit(self):
        """Raises `NonFiniteGradientError` when the last
        `max_consecutive_nonfinite` steps were all non-finite (host side, one
        scalar read; a no-op without a limit or before the first step)."""
        if self.max_consecutive_nonfinite is None or not self.built:
            return
        count = int(ops.convert_to_numpy(self.consecutive_nonfinite))
        if count >= self.max_consecutive_nonfinite:
            raise NonFiniteGradientError(self._limit_message())

    def _enforce_limit(self, consecutive):
        if self.max_consecutive_nonfinite is None:
            return
        if _is_tensorflow():
            tf_support = _tf()
            if tf_support.executing_eagerly():
                self.check_nonfinite_limit()
            else:
                tf_support.assert_below_limit(
                    consecutive, self.max_consecutive_nonfinite, self._limit_message()
                )
            return
        try:  # Other backends: only when the value is concrete (not traced).
            count = int(ops.convert_to_numpy(consecutive))
        except Exception:  # noqa: BLE001 - a tracer; the callback checks instead.
            return
        if count >= self.max_consecutive_nonfinite:
            raise NonFiniteGradientError(self._limit_message())

    # ----------------------------------------------------------- serialising

    def _wrapper_config(self):
        if not self.rules:
            clip = None
        else:
            clip = [keras.saving.serialize_keras_object(r) for r in self.rules]
            if not self._clip_is_list:
                clip = clip[0]
        return {
            "clip": clip,
            "skip_nonfinite": self.skip_nonfinite,
            "max_consecutive_nonfinite": self.max_consecutive_nonfinite,
        }

    def get_config(self):
        config = {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
        }
        config.update(self._wrapper_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        if config.get("clip") is not None:
            clip = config["clip"]
            if isinstance(clip, list):
                config["clip"] = [
                    keras.saving.deserialize_keras_object(
                        c, custom_objects=custom_objects
                    )
                    for c in clip
                ]
            else:
                config["clip"] = keras.saving.deserialize_keras_object(
                    clip, custom_objects=custom_objects
                )
        return cls(inner, **config)
