"""`DPTraining`: DP-SGD steps against hand-worked values, the noise's
standard deviation, 2 replicas against 1 device, round trips, what it
refuses, and real training on the digits."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.privacy import DPTraining, PoissonBatches, PrivacyBudget

BACKEND = keras.backend.backend()
METHODS = ("ghost", "vectorized")


def _linear(w0=(1.0, 1.0)):
    init = keras.initializers.Constant(np.array(w0, "float32").reshape(-1, 1))
    return keras.Sequential(
        [
            keras.Input((len(w0),)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer=init),
        ]
    )


def _fit_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # not PoissonBatches
        return model.fit(*args, verbose=0, shuffle=False, **kwargs)


# Four examples, w = (1, 1), targets 0, squared error (x . w)^2:
# gradient 2 (x . w) x    norm    clipped to C = 1
#   (1, 0):   (2, 0)      2       (1, 0)
#   (0, 2):   (0, 8)      8       (0, 1)
#   (3, 4):   (42, 56)    70      (0.6, 0.8)
#   (.1, .1): (.04, .04)  .057    (.04, .04)
X4 = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.1, 0.1]], "float32")
Y4 = np.zeros((4, 1), "float32")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "sample_weight, expected",
    [
        # SGD(1): w - sum(clipped) / B with B = 4: (1, 1) - (1.64, 1.84) / 4
        (None, [0.59, 0.54]),
        # the last example weighted 0: (1, 1) - (1.6, 1.8) / 4
        ([1.0, 1.0, 1.0, 0.0], [0.6, 0.55]),
    ],
)
def test_one_step_is_the_clipped_sum_of_a_linear_model(method, sample_weight, expected):
    model = _linear()
    private = DPTraining(
        model, noise_multiplier=0.0, l2_norm_clip=1.0, per_example=method
    )
    private.compile(keras.optimizers.SGD(1.0), "mean_squared_error")
    sw = None if sample_weight is None else np.array(sample_weight, "float32")
    _fit_quietly(private, X4, Y4, sample_weight=sw, batch_size=4, epochs=1)
    assert private.per_example_method == method
    np.testing.assert_allclose(model.get_weights()[0][:, 0], expected, rtol=1e-5)


def test_the_expected_batch_size_divides_the_sum_not_the_drawn_size():
    # expected_batch_size 8 on a batch of 4: (1, 1) - (1.64, 1.84) / 8
    model = _linear()
    private = DPTraining(model, noise_multiplier=0.0, expected_batch_size=8)
    private.compile(keras.optimizers.SGD(1.0), "mean_squared_error")
    _fit_quietly(private, X4, Y4, batch_size=4, epochs=1)
    np.testing.assert_allclose(model.get_weights()[0][:, 0], [0.795, 0.77], rtol=1e-5)


def _zero_gradient_step(seed, noise_multiplier=2.0, l2_norm_clip=0.5, steps=1):
    """A 1 -> 4000 Dense without bias fed zeros: every gradient is 0, so
    after SGD(1) steps with B = 8 the kernel is minus the summed noise / 8."""
    zeros = keras.initializers.Zeros()
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(4000, use_bias=False, kernel_initializer=zeros),
        ]
    )
    private = DPTraining(
        model, noise_multiplier=noise_multiplier, l2_norm_clip=l2_norm_clip, seed=seed
    )
    private.compile(keras.optimizers.SGD(1.0), "mean_squared_error")
    x, y = np.zeros((8 * steps, 1), "float32"), np.zeros((8 * steps, 4000), "float32")
    _fit_quietly(private, x, y, batch_size=8, epochs=1)
    return -8.0 * model.get_weights()[0][0]


def test_noise_std_is_noise_multiplier_times_clip():
    noise = _zero_gradient_step(seed=1)
    # 4000 draws of N(0, (2 * 0.5)^2): the sample std is within 5% of 1
    # (its standard error is 1 / sqrt(2 * 4000) = 1.1%), the mean within
    # 4 standard errors (4 / sqrt(4000) = 0.063) of 0.
    assert abs(np.std(noise) - 1.0) < 0.05
    assert abs(np.mean(noise)) < 0.063


def test_the_noise_is_seeded_and_fresh_every_step():
    first = _zero_gradient_step(seed=3)
    np.testing.assert_array_equal(first, _zero_gradient_step(seed=3))
    assert not np.allclose(first, _zero_gradient_step(seed=4))
    # two steps: the sum of two independent draws, std sqrt(2)
    two = _zero_gradient_step(seed=3, steps=2)
    assert abs(np.std(two) - np.sqrt(2.0)) < 0.07
    assert not np.allclose(two, 2 * first)


def _digits(n=None):
    (x, y), (x_test, y_test) = kh.data.load_digits(test_fraction=397 / 1797)
    x = x.reshape(len(x), -1) / 255.0
    x_test = x_test.reshape(len(x_test), -1) / 255.0
    if n is not None:
        x, y = x[:n], y[:n]
    return (x.astype("float32"), y), (x_test.astype("float32"), y_test)


def _mlp(seed=0):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="tanh", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ]
    )


def _private_mlp(method="auto", noise_multiplier=1.0, optimizer=None, **compile_kwargs):
    private = DPTraining(
        _mlp(), noise_multiplier=noise_multiplier, per_example=method, seed=0
    )
    private.compile(
        optimizer or keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return private


def test_trains_the_digits_mlp_privately():
    # noise 1.0 at q = 256 / 1400 for 10 epochs (60 steps) spends epsilon
    # about 3.6 (delta 1e-5); the non-private MLP reaches 0.98.
    (x, y), (x_test, y_test) = _digits()
    private = _private_mlp()
    batches = PoissonBatches(x, y, expected_batch_size=256, seed=0)
    budget = PrivacyBudget(1.0, batches.sampling_rate, delta=1e-5)
    history = private.fit(batches, epochs=10, callbacks=[budget], verbose=0)
    _, accuracy = private.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.85
    # the epsilon logged is dp-accounting's for the steps taken
    steps = int(private.optimizer.iterations.numpy())
    assert steps == 10 * len(batches) == 60
    expected = kh.privacy.epsilon(1.0, 256 / 1400, steps, 1e-5)
    assert history.history["epsilon"][-1] == pytest.approx(expected, rel=1e-9)


def test_ghost_and_vectorized_train_the_same_weights_on_a_conv_net():
    def conv_net():
        init = keras.initializers.GlorotUniform(seed=2)
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(
                    4, 3, padding="same", activation="relu", kernel_initializer=init
                ),
                keras.layers.Conv2D(4, 3, strides=2, kernel_initializer=init),
                keras.layers.Flatten(),
                keras.layers.Dense(10, kernel_initializer=init),
            ]
        )

    (x, y), _ = kh.data.load_digits()
    x = x[:96] / 255.0
    weights = []
    for method in METHODS:
        model = conv_net()
        private = DPTraining(model, noise_multiplier=1.0, per_example=method, seed=5)
        private.compile(
            keras.optimizers.SGD(0.5),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        private.fit(PoissonBatches(x, y[:96], 32, seed=1), epochs=2, verbose=0)
        weights.append(model.get_weights())
    for ghost, vectorized in zip(*weights, strict=True):
        np.testing.assert_allclose(ghost, vectorized, rtol=2e-4, atol=2e-5)


def test_an_embedding_model_trains_by_ghost_norms_as_vectorized():
    def embedding_net():
        init = keras.initializers.RandomNormal(seed=3)
        return keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                keras.layers.Embedding(12, 4, embeddings_initializer=init),
                keras.layers.Flatten(),
                keras.layers.Dense(2, kernel_initializer=init),
            ]
        )

    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, size=(40, 5)).astype("int32")
    y = (x[:, 0] > 5).astype("int32")
    weights = []
    for method in METHODS:
        model = embedding_net()
        private = DPTraining(
            model, noise_multiplier=0.5, l2_norm_clip=0.1, per_example=method, seed=0
        )
        private.compile(
            keras.optimizers.SGD(1.0),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        private.fit(PoissonBatches(x, y, 10, seed=0), epochs=1, verbose=0)
        assert private.per_example_method == method
        weights.append(model.get_weights())
    for ghost, vectorized in zip(*weights, strict=True):
        np.testing.assert_allclose(ghost, vectorized, rtol=2e-4, atol=2e-6)


class _CountingTraces(DPTraining):
    traces = 0

    def train_step(self, *args):
        type(self).traces += 1  # runs once per trace of the compiled step
        return super().train_step(*args)


def test_poisson_batches_trace_the_step_once():
    (x, y), _ = _digits(n=200)
    private = _CountingTraces(_mlp(), noise_multiplier=1.0, seed=0)
    private.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    batches = PoissonBatches(x, y, expected_batch_size=20, seed=0)
    sizes = {int(batches[i][2].sum()) for i in range(len(batches))}
    assert len(sizes) > 3  # the batches draw different sizes ...
    private.fit(batches, epochs=1, verbose=0)
    first = _CountingTraces.traces
    # (JAX traces once; TensorFlow traces a second time on the first call,
    # when the step's first run creates variables)
    assert first == (1 if BACKEND == "jax" else 2)
    private.fit(batches, epochs=3, verbose=0)
    assert _CountingTraces.traces == first  # ... into one padded shape


def test_evaluation_loss_is_the_mean_example_loss():
    (x, y), (x_test, y_test) = _digits(n=200)
    private = _private_mlp()
    loss, accuracy = private.evaluate(x_test, y_test, verbose=0)
    logits = private.predict(x_test, verbose=0)
    expected = keras.losses.sparse_categorical_crossentropy(
        y_test, logits, from_logits=True
    )
    assert loss == pytest.approx(
        float(np.mean(keras.ops.convert_to_numpy(expected))), rel=1e-4
    )
    assert accuracy == pytest.approx(float(np.mean(np.argmax(logits, 1) == y_test)))


def test_metrics_leave_the_padding_out():
    # one step with SGD(0): the logged accuracy is the accuracy on the drawn
    # rows of the batch only (the zero rows of the padding are left out)
    (x, y), _ = _digits(n=200)
    private = _private_mlp(optimizer=keras.optimizers.SGD(0.0), noise_multiplier=0.0)
    served = []

    class Recorded(PoissonBatches):
        def __getitem__(self, index):
            served.append(super().__getitem__(index))
            return served[-1]

    batches = Recorded(x, y, expected_batch_size=20, steps_per_epoch=1, seed=0)
    history = private.fit(batches, epochs=1, verbose=0)
    xb, yb, mask = served[-1]  # the batch trained on (fit reads one before)
    predicted = np.argmax(private.predict(xb, verbose=0), axis=1)
    drawn = mask == 1
    assert history.history["accuracy"][0] == pytest.approx(
        float(np.mean(predicted[drawn] == yb[drawn]))
    )


def test_a_nonfinite_example_makes_a_hardened_optimizer_skip_the_step():
    optimizer = kh.optimizers.HardenedOptimizer(
        keras.optimizers.SGD(0.1), clip=kh.optimizers.ClipByGlobalNorm(10.0)
    )
    model = _linear()
    private = DPTraining(model, noise_multiplier=1.0, seed=0)
    private.compile(optimizer, "mean_squared_error")
    x = X4.copy()
    x[1, 0] = np.inf  # one example's gradient is not finite
    before = model.get_weights()[0].copy()
    _fit_quietly(private, x, Y4, batch_size=4, epochs=1)
    np.testing.assert_array_equal(model.get_weights()[0], before)
    # a finite batch then trains
    _fit_quietly(private, X4, Y4, batch_size=4, epochs=1)
    assert not np.array_equal(model.get_weights()[0], before)


def test_mixed_precision_matches_float32():
    (x, y), _ = _digits(n=128)
    results = []
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_dtype_policy(policy)
        try:
            private = _private_mlp(
                optimizer=keras.optimizers.SGD(0.5), noise_multiplier=0.0
            )
            if policy == "mixed_float16":
                assert isinstance(
                    private.optimizer, keras.optimizers.LossScaleOptimizer
                )
            private.fit(PoissonBatches(x, y, 32, seed=0), epochs=1, verbose=0)
            results.append([w.astype("float32") for w in private.model.get_weights()])
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
    for full, mixed in zip(*results, strict=True):
        np.testing.assert_allclose(full, mixed, atol=5e-3)


@pytest.mark.tf_only
def test_jit_compile_matches_the_graph_step():
    (x, y), _ = _digits(n=128)
    results = []
    for jit in (False, True):
        # without noise: XLA draws other random numbers for the same seed
        private = _private_mlp(noise_multiplier=0.0, jit_compile=jit)
        private.fit(PoissonBatches(x, y, 32, seed=0), epochs=1, verbose=0)
        results.append(private.model.get_weights())
    for graph, xla in zip(*results, strict=True):
        np.testing.assert_allclose(graph, xla, rtol=1e-4, atol=1e-5)


def _fit_under(scope, method):
    (x, y), _ = _digits(n=128)
    with scope:
        private = _private_mlp(method, optimizer=keras.optimizers.SGD(0.5))
    private.fit(
        PoissonBatches(x, y, 32, max_batch_size=64, seed=0), epochs=1, verbose=0
    )
    return private.model.get_weights()


@pytest.mark.tf_only
@pytest.mark.parametrize("method", METHODS)
def test_two_replicas_give_the_one_device_step(method):
    import contextlib

    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert strategy.num_replicas_in_sync == 2
    one = _fit_under(contextlib.nullcontext(), method)
    two = _fit_under(strategy.scope(), method)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.jax_only
@pytest.mark.parametrize("method", METHODS)
def test_jax_data_parallel_gives_the_one_device_step(method):
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2
    one = _fit_under(
        keras.distribution.DataParallel(devices=devices[:1]).scope(), method
    )
    two = _fit_under(keras.distribution.DataParallel(devices=devices).scope(), method)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_round_trip_continues_the_same_run(tmp_path):
    (x, y), _ = _digits(n=128)
    private = _private_mlp()
    private.fit(PoissonBatches(x, y, 32, seed=0), epochs=1, verbose=0)
    path = tmp_path / "private.keras"
    private.save(path)
    loaded = kh.load_model(path)
    assert isinstance(loaded, DPTraining)
    assert json.dumps(loaded.get_config()) == json.dumps(private.get_config())
    assert loaded.optimizer.iterations.numpy() == private.optimizer.iterations.numpy()
    for a, b in zip(loaded.get_weights(), private.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # the same next epoch from both: the optimizer state and the noise's
    # seed state travel with the file
    for model in (private, loaded):
        model.fit(PoissonBatches(x, y, 32, seed=1), epochs=1, verbose=0)
    for a, b in zip(loaded.get_weights(), private.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fit_on_arrays_warns_that_the_accounting_is_approximate():
    private = DPTraining(_linear(), noise_multiplier=1.0)
    private.compile("sgd", "mean_squared_error")
    with pytest.warns(UserWarning, match="Poisson sampling"):
        private.fit(X4, Y4, batch_size=2, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier=-1.0"),
        ({"noise_multiplier": 1.0, "l2_norm_clip": 0.0}, "l2_norm_clip=0.0"),
        ({"noise_multiplier": 1.0, "per_example": "fast"}, "per_example='fast'"),
        ({"noise_multiplier": 1.0, "expected_batch_size": 0}, "expected_batch_size=0"),
        ({"noise_multiplier": 1.0, "seed": -1}, "seed=-1"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPTraining(_linear(), **kwargs)


def test_what_it_cannot_train_is_refused_clearly():
    batch_norm = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )
    with pytest.raises(ValueError, match="Batch normalization mixes the examples"):
        DPTraining(batch_norm, noise_multiplier=1.0)
    inputs = keras.Input((3,))
    residual = keras.Model(inputs, keras.layers.Dense(3)(inputs) + inputs)
    with pytest.raises(ValueError, match="not a chain of layers"):
        DPTraining(residual, noise_multiplier=1.0, per_example="ghost")
    dropout = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.LayerNormalization(),
            keras.layers.Dropout(0.5),
        ]
    )
    with pytest.raises(ValueError, match="draw random numbers"):
        DPTraining(dropout, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="not a DPTraining wrapper"):
        DPTraining(DPTraining(_linear(), noise_multiplier=1.0), noise_multiplier=1.0)


def test_dropout_in_a_ghost_chain_trains():
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(8),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    private = DPTraining(model, noise_multiplier=0.0, seed=0)
    assert private.per_example_method == "ghost"
    private.compile(keras.optimizers.SGD(0.1), "mean_squared_error")
    history = _fit_quietly(private, X4, Y4, batch_size=4, epochs=2)
    assert np.all(np.isfinite(history.history["loss"]))


def test_fit_refuses_what_would_mis_scale_the_step():
    private = DPTraining(_linear(), noise_multiplier=1.0, expected_batch_size=8)
    private.compile("sgd", "mean_squared_error")
    with pytest.raises(ValueError, match="expected_batch_size=8"):
        private.fit(PoissonBatches(X4, Y4, 2, seed=0), epochs=1, verbose=0)
    unsized = DPTraining(_linear(), noise_multiplier=1.0)
    unsized.compile("sgd", "mean_squared_error")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((X4, Y4)).batch(2)
        with (
            pytest.raises(ValueError, match="expected_batch_size=None"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", UserWarning)
            unsized.fit(dataset, epochs=1, verbose=0)
    uncompiled_loss = DPTraining(_linear(), noise_multiplier=1.0)
    uncompiled_loss.compile("sgd")
    with pytest.raises(ValueError, match="loss=None"):
        _fit_quietly(uncompiled_loss, X4, Y4, batch_size=2, epochs=1)


# -- TensorFlow reads PoissonBatches through tf.data ---------------------------------


class _ReadByKeras(PoissonBatches):
    """The same batches, read through Keras's PyDataset path (a subclass's
    own `__getitem__` keeps `fit` on it)."""

    def __getitem__(self, index):
        return super().__getitem__(index)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TF's")
def test_fit_on_tf_data_trains_as_the_pydataset_path(monkeypatch):
    (x, y), _ = _digits(n=200)
    read_as_tf_data = []
    tf_dataset = PoissonBatches.tf_dataset

    def spy(self, *args, **kwargs):
        read_as_tf_data.append(type(self))
        return tf_dataset(self, *args, **kwargs)

    monkeypatch.setattr(PoissonBatches, "tf_dataset", spy)
    runs = []
    for kind in (PoissonBatches, _ReadByKeras):
        model = _mlp()
        private = DPTraining(model, noise_multiplier=0.0, l2_norm_clip=0.5, seed=0)
        private.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        batches = kind(x, y, expected_batch_size=32, seed=3)
        history = private.fit(batches, epochs=3, verbose=0)
        runs.append((model.get_weights(), history.history, batches.epoch))
    (fast, fast_logs, fast_epoch), (slow, slow_logs, slow_epoch) = runs
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(fast_logs[key], slow_logs[key], rtol=1e-5)
    assert fast_epoch == slow_epoch == 4  # once before the first epoch, then each
    assert read_as_tf_data == [PoissonBatches]  # the subclass went through Keras


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the tf.data feed is TF's")
def test_fit_on_tf_data_stops_at_an_overflow_before_the_step():
    import tensorflow as tf

    (x, y), _ = _digits(n=200)
    model = _mlp()
    private = DPTraining(model, noise_multiplier=1.0, seed=0)
    private.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]

    def batches_of(seed):
        return PoissonBatches(x, y, 100, max_batch_size=100, seed=seed)

    # a seed whose first trained batch (epoch 1: fit advances the counter
    # once before its first epoch) draws more than 100 of the 200
    seed = next(s for s in range(50) if len(batches_of(s).indices(0, epoch=1)) > 100)
    batches = batches_of(seed)
    with pytest.raises(tf.errors.OpError, match="Pass a larger max_batch_size"):
        private.fit(batches, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
