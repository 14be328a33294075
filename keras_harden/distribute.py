"""Training across workers where Keras's own `fit` cannot.

Keras 3's `Model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585: its symbolic build reduces a nested data batch with
`strategy.reduce`, which that strategy does not support, and raises
`ValueError: Attempt to convert a value (PerReplica ...)`). `fit` here is the
narrow, supported path around it: the same `model.train_step` Keras runs,
driven by `strategy.run` over an explicitly sharded dataset, with Keras
callbacks and a `History`. It works with any `tf.distribute` strategy
(one device, `MirroredStrategy`, `MultiWorkerMirroredStrategy`), so one script
runs on a laptop and on a cluster.

Each global batch of the dataset is split deterministically: worker `i` of
`n` takes rows `[i * B / n, (i + 1) * B / n)` and hands consecutive slices to
its local replicas. A run on `n` workers therefore sees exactly the batches a
single-device run sees, and the hardened optimizers (which clip the gradient
after it is summed across replicas) give the same weights.
"""

import keras

__all__ = ["fit"]


def _shard_global_batches(dataset, strategy, global_batch_size):
    import tensorflow as tf

    num_replicas = strategy.num_replicas_in_sync

    def dataset_fn(input_context):
        workers = input_context.num_input_pipelines
        worker = input_context.input_pipeline_id
        per_worker = global_batch_size // workers
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)

        def take_worker_rows(*batch):
            rows = tuple(
                t[worker * per_worker : (worker + 1) * per_worker] for t in batch
            )
            return rows if len(rows) > 1 else rows[0]

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        return (
            dataset.with_options(options)
            .map(take_worker_rows)
            .unbatch()
            .batch(per_replica, drop_remainder=True)
        )

    if global_batch_size % num_replicas:
        raise ValueError(
            "`global_batch_size` must be divisible by the number of replicas "
            f"({num_replicas}). Received: global_batch_size={global_batch_size}"
        )
    return strategy.distribute_datasets_from_function(dataset_fn)


def fit(
    model,
    dataset,
    global_batch_size,
    epochs=1,
    steps_per_epoch=None,
    callbacks=None,
    verbose="auto",
):
    """Trains `model` under its `tf.distribute` strategy, multi-worker included.

    Build and compile the model inside `strategy.scope()` as usual, then call
    this instead of `model.fit`. The dataset yields *global* batches of
    exactly `global_batch_size` rows (`batch(..., drop_remainder=True)`), the
    same on every worker (same order, no shuffling that differs per worker).

    Args:
        model: a compiled Keras model created under the strategy's scope.
        dataset: a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`
            global batches.
        global_batch_size: rows per global batch; divisible by the number of
            replicas in sync.
        epochs: number of passes over `dataset`.
        steps_per_epoch: steps per epoch; defaults to one pass over `dataset`.
        callbacks: Keras callbacks, called as in `fit` on every worker.
        verbose: Keras progress bar setting (`"auto"`, 0, 1, 2).

    Returns:
        A `keras.callbacks.History`.

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=kh.optimizers.ZClip(keras.optimizers.SGD(0.1)),
                      loss="sparse_categorical_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    kh.distribute.fit(model, data, global_batch_size=64, epochs=3)
    ```

    References:
        keras-team/keras#20585 (MultiWorkerMirroredStrategy and `fit`).
    """
    import tensorflow as tf

    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(
            "`global_batch_size` must be a positive int. "
            f"Received: global_batch_size={global_batch_size!r}"
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"`epochs` must be a positive int. Received: epochs={epochs!r}"
        )
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "`model` must be compiled (inside the strategy's scope) before "
            f"training. Received: model={model.name!r}"
        )
    strategy = model.distribute_strategy
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    distributed = _shard_global_batches(dataset, strategy, global_batch_size)
    if steps_per_epoch is None:
        cardinality = int(dataset.cardinality())
        if cardinality < 0:
            raise ValueError(
                "`steps_per_epoch` is needed for a dataset of unknown or infinite "
                f"length. Received: steps_per_epoch={steps_per_epoch!r}"
            )
        steps_per_epoch = cardinality

    @tf.function
    def train_step(iterator):
        logs = strategy.run(model.train_step, args=(next(iterator),))
        return {
            name: strategy.experimental_local_results(value)[0]
            for name, value in logs.items()
        }

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=1 if verbose == "auto" else verbose,
        model=model,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        iterator = iter(distributed)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = train_step(iterator)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = {name: float(value) for name, value in logs.items()}
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
