"""`kh.harden`: real searches on the digits (an unstable net it fixes, a
healthy one it leaves alone), any data `fit` takes, and clear errors."""

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.search import _data
from keras_harden.search.candidates import build_candidates, is_deep_plain
from keras_harden.search.halving import beats

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(depth, width, init_scale=1.0, seed=0):
    """`depth` ReLU layers, He init with its std scaled by `init_scale`."""
    init = keras.initializers.VarianceScaling(
        2.0 * init_scale**2, "fan_in", "normal", seed=seed
    )
    layers = [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0)]
    layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(width, activation="relu", kernel_initializer=init)
        for _ in range(depth)
    ]
    return keras.Sequential([*layers, keras.layers.Dense(10)])


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


@pytest.mark.slow
def test_harden_trains_what_plain_sgd_cannot(digits):
    # 8 ReLU layers at 1.5x He init under SGD(0.1, momentum 0.9): plain
    # training blows up (a guard of the test itself: checked first).
    (x, y), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    plain = _mlp(8, 64, 1.5)
    plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=LOSS)
    history = plain.fit(x, y, batch_size=64, epochs=3, verbose=0)
    assert (
        not np.isfinite(history.history["loss"][-1])
        or _accuracy(plain, x_test, y_test) < 0.3
    )

    model = _mlp(8, 64, 1.5)
    rx = kh.harden(
        model,
        (x, y),
        keras.optimizers.SGD(0.1, momentum=0.9),
        LOSS,
        epochs=3,
        batch_size=64,
        verbose=0,
    )
    assert rx.choice is not rx.plain
    # a remedy only wins by beating plain training beyond the noise
    assert rx.plain.diverged or rx.plain.stopped_at is not None
    assert _accuracy(rx.model, x_test, y_test) > 0.8
    assert "Prescription:" in str(rx)


@pytest.mark.slow
def test_harden_leaves_a_healthy_run_alone_and_its_state_in_the_model(
    digits, capsys, tmp_path
):
    (x, y), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = _mlp(2, 32)
    rx = kh.harden(
        model,
        (x, y),
        keras.optimizers.Adam(1e-2),
        LOSS,
        epochs=2,
        batch_size=64,
        metrics=["accuracy"],
        verbose=2,
    )
    printed = capsys.readouterr().out
    assert "Round 1/" in printed and "continues:" in printed
    if rx.choice is not rx.plain:  # only a remedy beyond the noise may win
        assert beats(rx.choice.last_per_example, rx.plain.last_per_example)
    else:
        assert isinstance(rx.optimizer, keras.optimizers.Adam)
    # the winner trained for the whole run: 2 epochs of ceil(1078 / 64) = 17
    n_train = len(x) - round(0.2 * len(x))
    run = 2 * -(-n_train // 64)
    assert rx.run_steps == run and len(rx.choice.losses) == run
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == run
    for mine, winners in zip(
        model.get_weights(), rx.choice.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, winners)
    assert rx.model is model and _accuracy(model, x_test, y_test) > 0.85
    # it is compiled with the metrics and goes on training where it stopped
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == run + 22
    # the report lists every candidate, and plots
    text = rx.to_markdown()
    assert all(c.description in text for c in rx.contestants)
    assert open(rx.plot(tmp_path / "rx.png"), "rb").read(4) == b"\x89PNG"


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part], self.y[part]


@pytest.mark.slow
@pytest.mark.jax_too
def test_harden_takes_a_dataset_and_a_py_dataset_alike(digits):
    import tensorflow as tf

    (x, y), _ = digits
    x, y = x[:512] / 255.0, y[:512]
    held_out = (x[448:], y[448:])
    dataset = tf.data.Dataset.from_tensor_slices((x[:448], y[:448])).batch(32)
    outcomes = []
    for data in (dataset, _Batches(x[:448], y[:448], 32)):
        model = _mlp(1, 16)
        model.set_weights(_mlp(1, 16, seed=1).get_weights())  # same start
        rx = kh.harden(
            model,
            data,
            keras.optimizers.SGD(0.05),
            LOSS,
            epochs=2,
            validation_data=held_out,
            verbose=0,
        )
        assert rx.run_steps == 28  # 2 epochs of 448 / 32 batches
        outcomes.append((rx.choice.name, model.get_weights()))
    for _, weights in outcomes:
        assert all(np.all(np.isfinite(w)) for w in weights)
    # both feed the search the same batches, in the same order, epoch after
    # epoch (which candidate wins 28 steps near chance is decided by loss
    # differences below the run-to-run rounding, so it is not compared)
    streams = [
        _data.training_stream(source, 32, seed=0).batches()
        for source in (dataset, _Batches(x[:448], y[:448], 32))
    ]
    for _ in range(30):  # 14 batches an epoch: into the third epoch
        (xa, ya, _), (xb, yb, _) = (next(stream) for stream in streams)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_harden_refuses_bad_data_before_training(digits):
    (x, y), _ = digits
    model = _mlp(1, 8)
    sgd = keras.optimizers.SGD(0.1)
    with pytest.raises(
        ValueError, match="same number of samples. Received: x: 1347, y: 100"
    ):
        kh.harden(model, (x, y[:100]), sgd, LOSS)
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or Inf value"):
        kh.harden(model, (bad, y), sgd, LOSS)
    with pytest.raises(ValueError, match="must be built"):
        kh.harden(keras.Sequential([keras.layers.Dense(2)]), (x, y), sgd, LOSS)
    with pytest.raises(ValueError, match="validation_data=None"):
        kh.harden(model, _Batches(x, y, 32), sgd, LOSS)
    with pytest.raises(ValueError, match="Received: eta=1"):
        kh.harden(model, (x, y), sgd, LOSS, eta=1)
    with pytest.raises(ValueError, match="Received: validation_split=1"):
        kh.harden(model, (x, y), sgd, LOSS, validation_split=1)
    with pytest.raises(ValueError, match="Received: verbose=3"):
        kh.harden(model, (x, y), sgd, LOSS, verbose=3)
    with pytest.raises(ValueError, match="Received: data=str"):
        kh.harden(model, "digits", sgd, LOSS)


def test_harden_names_the_non_finite_batch_of_a_stream(digits):
    import tensorflow as tf

    (x, y), _ = digits
    x = x[:128].copy()
    x[70] = np.inf  # in batch 2 of 32
    data = tf.data.Dataset.from_tensor_slices((x, y[:128])).batch(32)
    with pytest.raises(ValueError, match="Training batch 2 has 64 NaN or Inf"):
        kh.harden(
            _mlp(1, 8),
            data,
            keras.optimizers.SGD(0.1),
            LOSS,
            validation_data=(x[:8], y[:8]),
            verbose=0,
        )
    endless = data.repeat()
    with pytest.raises(ValueError, match="Received: steps=None"):
        kh.harden(
            _mlp(1, 8),
            endless,
            keras.optimizers.SGD(0.1),
            LOSS,
            validation_data=(x[:8], y[:8]),
            verbose=0,
        )


def test_candidates_for_a_deep_plain_net_include_reinitialisation():
    deep, shallow = _mlp(8, 8), _mlp(4, 8)
    assert is_deep_plain(deep) and not is_deep_plain(shallow)
    normalised = keras.Sequential(
        [keras.Input((4,))]
        + [keras.layers.Dense(4) for _ in range(8)]
        + [keras.layers.BatchNormalization()]
    )
    assert not is_deep_plain(normalised)
    names = [c.name for c in build_candidates(0.1, "SGD", 1.0, deep_plain=True)]
    assert (
        names[0] == "plain" and "agc, lsuv" in names and "lr 0.01, agc, lsuv" in names
    )
    # a rate far past stable adds the range test's suggestion
    names = [c.name for c in build_candidates(3.0, "SGD", 1.0, suggested_rate=0.01)]
    assert "lr 0.01, agc" in names and len(names) == 12
    # near the given rates it adds nothing: 0.2 is not below 0.3 / 2
    assert len(build_candidates(3.0, "SGD", 1.0, suggested_rate=0.2)) == 9


def test_harden_when_every_candidate_diverges_keeps_the_initial_weights():
    # NaN from the first step (a kernel of Inf): every candidate is out at
    # once, the model keeps its weights and the report says so.
    x = np.ones((64, 4), np.float32)
    y = np.zeros(64, np.int32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    kernel, bias = model.get_weights()
    model.set_weights([np.full_like(kernel, np.inf), bias])
    rx = kh.harden(model, (x, y), keras.optimizers.SGD(0.1), LOSS, epochs=2, verbose=0)
    assert all(c.diverged for c in rx.contestants)
    assert rx.choice is rx.plain and "every candidate diverged" in rx.why
    assert np.all(np.isinf(model.get_weights()[0]))
