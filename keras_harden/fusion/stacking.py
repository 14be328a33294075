"""`stack`: stacked generalisation, a meta-learner over frozen base models."""

import keras
import numpy as np

from keras_harden.fusion._common import (
    call_members,
    check_models,
    frozen_members,
    shared_inputs,
    to_numpy,
)

__all__ = ["stack"]


def _holdout(holdout_data):
    if not (isinstance(holdout_data, (tuple, list)) and len(holdout_data) == 2):
        raise ValueError(
            "`holdout_data` must be an (x, y) tuple of arrays the base models "
            f"were not trained on. Received: holdout_data={holdout_data!r}"
        )
    x, y = holdout_data
    y = np.asarray(y)
    n = len(keras.tree.flatten(x)[0])
    if n != len(y) or n < 2:
        raise ValueError(
            "`holdout_data` must hold at least 2 examples, as many labels as "
            f"inputs. Received: holdout_data with {n} inputs and {len(y)} labels"
        )
    return x, y


def _linear_meta(num_members, num_outputs):
    """One Dense over all members' outputs that starts as their plain average:
    kernel = [I; I; ...] / k, bias 0."""
    meta = keras.Sequential(
        [
            keras.Input((num_members * num_outputs,)),
            keras.layers.Dense(num_outputs, name="meta_dense"),
        ],
        name="meta_learner",
    )
    kernel = np.tile(np.eye(num_outputs), (num_members, 1)) / num_members
    meta.layers[0].set_weights([kernel, np.zeros(num_outputs)])
    return meta


def _weights_meta(num_members, num_outputs):
    """One non-negative weight per member (Breiman's stacked regressions):
    output[c] = sum_i w_i * member_i[c], starting at w_i = 1 / k."""
    meta = keras.Sequential(
        [
            keras.Input((num_members * num_outputs,)),
            keras.layers.Reshape((num_members, num_outputs)),
            keras.layers.Permute((2, 1)),  # (outputs, members)
            keras.layers.Dense(
                1,
                use_bias=False,
                kernel_constraint=keras.constraints.NonNeg(),
                name="member_weights",
            ),
            keras.layers.Flatten(),
        ],
        name="meta_learner",
    )
    meta.get_layer("member_weights").set_weights(
        [np.full((num_members, 1), 1.0 / num_members)]
    )
    return meta


DEFAULT_METAS = {"weights": _weights_meta, "linear": _linear_meta}


def stack(
    models,
    meta_model=None,
    *,
    holdout_data,
    output_activation=None,
    optimizer=None,
    loss=None,
    epochs=30,
    batch_size=64,
    validation_split=0.25,
    patience=5,
    seed=0,
    name="stack",
):
    """Stacked generalisation: a meta-learner over the frozen models' outputs.

    The base models are copied and frozen (the inputs are not touched); their
    outputs on `holdout_data`, concatenated, are the meta-learner's training
    inputs. The meta-learner is trained only on these held-out predictions,
    never on the base models' own training data, whose predictions are
    over-confident (Wolpert 1992): `holdout_data` must be data the base
    models did not see. A `validation_split` part of the held-out data is
    kept back for early stopping; if training never beats the meta-learner's
    starting point on it, the starting weights are kept.

    Two meta-learners are built in, both starting as the plain average of
    the members' outputs (logits expected), so training starts from the
    output-averaging ensemble:

    - `"weights"` (the default): one non-negative weight per member (Breiman
      1996), `k` parameters; hard to overfit on a small held-out set.
    - `"linear"`: one `Dense` over all concatenated outputs, kernel
      `[I; I; ...] / k` at the start, so per-model, per-class weights
      (`k * C * C` parameters): more expressive, needs more held-out data.

    Both are trained with sparse (integer labels) or categorical (one-hot)
    cross-entropy on logits unless `loss` is given.

    The result is one functional model of built-in layers (members nested as
    `member_0`, ...; the meta-learner as `meta_learner` or your model): it
    saves, loads and exports like any functional model.

    Args:
        models: a list of built single-output Keras models taking the same
            inputs.
        meta_model: `None` or `"weights"` (default), `"linear"`, or a Keras
            layer or model mapping the concatenated outputs
            `(batch, sum of output sizes)` to the final output.
        holdout_data: keyword-only `(x, y)` arrays the base models were not
            trained on.
        output_activation: optional activation applied to each member's
            output before concatenation (e.g. `"softmax"`).
        optimizer: the meta-learner's optimizer (default `Adam(1e-2)`).
        loss: the meta-learner's loss (default: cross-entropy on logits).
        epochs: maximum epochs of meta-learner training.
        batch_size: meta-learner batch size.
        validation_split: fraction of `holdout_data` kept for early stopping
            (`0` trains on all of it for `epochs`).
        patience: early-stopping patience, in epochs.
        seed: seeds the held-out split and the meta-learner's training.
        name: the stacked model's name.

    Returns:
        A new functional Keras model.

    Example:

    >>> stacked = kh.fusion.stack(
    ...     [m1, m2, m3], holdout_data=(x_val, y_val))  # doctest: +SKIP
    >>> stacked.save("stack.keras")  # doctest: +SKIP

    References:
        Wolpert, "Stacked Generalization", Neural Networks 5(2), 1992;
        Breiman, "Stacked Regressions", Machine Learning 24, 1996.
    """
    if meta_model is None:
        meta_model = "weights"
    if not (meta_model in DEFAULT_METAS or isinstance(meta_model, keras.layers.Layer)):
        raise ValueError(
            "`meta_model` must be None, 'weights', 'linear' or a Keras layer or "
            f"model. Received: meta_model={meta_model!r}"
        )
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"`epochs` must be an int >= 0. Received: epochs={epochs!r}")
    if not 0 <= validation_split < 1:
        raise ValueError(
            "`validation_split` must be in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    models = check_models(models)
    x, y = _holdout(holdout_data)
    inputs = shared_inputs(models)
    members = frozen_members(models)
    outputs = call_members(members, inputs)
    if output_activation is not None:
        outputs = [
            keras.layers.Activation(output_activation, name=f"member_{i}_activation")(
                output
            )
            for i, output in enumerate(outputs)
        ]
    for output in outputs:
        if len(output.shape) != 2:
            raise ValueError(
                "Stacking needs members with (batch, units) outputs; got shape "
                f"{output.shape}. Received: models={[m.name for m in models]}"
            )
    if len(outputs) > 1:
        combined = keras.layers.Concatenate(name="concatenate")(outputs)
    else:
        combined = outputs[0]
    base = keras.Model(inputs if len(inputs) > 1 else inputs[0], combined)
    features = base.predict(x, batch_size=256, verbose=0)

    sizes = {int(output.shape[-1]) for output in outputs}
    if isinstance(meta_model, str):
        if len(sizes) != 1:
            raise ValueError(
                "The built-in meta-learners need members with equal output sizes; "
                f"got {sorted(sizes)}. Pass a Keras `meta_model`. "
                f"Received: meta_model={meta_model!r}"
            )
        meta_model = DEFAULT_METAS[meta_model](len(outputs), sizes.pop())
    if loss is None:
        one_hot = y.ndim == 2 and y.shape[-1] > 1
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        if not one_hot:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if optimizer is None:
        optimizer = keras.optimizers.Adam(1e-2)

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - validation_split))) if validation_split else len(y)
    cut = min(max(cut, 1), len(y))
    fit_idx, val_idx = order[:cut], order[cut:]
    trainer = keras.Sequential([keras.Input(features.shape[1:]), meta_model])
    trainer.compile(optimizer=optimizer, loss=loss)
    if epochs > 0:
        if len(val_idx):
            val = (features[val_idx], y[val_idx])
            start_loss = trainer.evaluate(*val, verbose=0)
            start = [to_numpy(v) for v in meta_model.weights]
            stopper = keras.callbacks.EarlyStopping(
                patience=patience, restore_best_weights=True
            )
            history = trainer.fit(
                features[fit_idx],
                y[fit_idx],
                validation_data=val,
                epochs=epochs,
                batch_size=batch_size,
                callbacks=[stopper],
                verbose=0,
            )
            if min(history.history["val_loss"]) >= start_loss:
                for variable, value in zip(meta_model.weights, start, strict=True):
                    variable.assign(value)
        else:
            trainer.fit(features, y, epochs=epochs, batch_size=batch_size, verbose=0)
    result = meta_model(combined)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], result, name=name)
