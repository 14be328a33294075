import keras
import numpy as np
import pytest

from keras_harden.fusion import stack
from keras_harden.fusion.soup import accuracy
from tests.fusion.conftest import assert_same_weights, weights_of


def test_untrained_meta_learners_are_the_average(fine_tunes):
    models = fine_tunes.tunes
    x = fine_tunes.x_test[:64]
    holdout = (fine_tunes.x_val, fine_tunes.y_val)
    mean = np.mean([m.predict(x, verbose=0) for m in models], axis=0)
    stacked = stack(models, holdout_data=holdout, epochs=0)
    # default "weights": one weight per member, 1/3 each: (z0 + z1 + z2) / 3
    (kernel,) = (
        stacked.get_layer("meta_learner").get_layer("member_weights").get_weights()
    )
    np.testing.assert_allclose(kernel, np.full((3, 1), 1 / 3))
    np.testing.assert_allclose(
        stacked.predict(x, verbose=0), mean, rtol=1e-5, atol=1e-5
    )
    linear = stack(models, "linear", holdout_data=holdout, epochs=0)
    # "linear": kernel [I; I; I] / 3, bias 0: the same average
    kernel, bias = linear.get_layer("meta_learner").get_weights()
    np.testing.assert_allclose(kernel, np.tile(np.eye(10), (3, 1)) / 3)
    np.testing.assert_array_equal(bias, np.zeros(10))
    np.testing.assert_allclose(linear.predict(x, verbose=0), mean, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_meta_learner_trains_on_held_out_predictions_only(fine_tunes, monkeypatch):
    models = fine_tunes.tunes
    before = [weights_of(m) for m in models]
    x_hold, y_hold = fine_tunes.x_val, fine_tunes.y_val
    fitted = []
    original_fit = keras.Model.fit

    def spy(self, x=None, y=None, **kwargs):
        fitted.append((np.asarray(x), np.asarray(y), kwargs.get("validation_data")))
        return original_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    stacked = stack(models, holdout_data=(x_hold, y_hold), epochs=5)
    monkeypatch.undo()
    # one fit: on the base models' predictions for held-out data, 3/4 of it
    # for training and 1/4 for early stopping, and on nothing else
    assert len(fitted) == 1
    features, labels, (val_features, val_labels) = fitted[0]
    predictions = np.concatenate([m.predict(x_hold, verbose=0) for m in models], -1)
    assert len(features) + len(val_features) == len(x_hold)
    assert features.shape[1] == 30
    all_rows = np.concatenate([features, val_features])
    order = np.lexsort(all_rows.T)
    np.testing.assert_allclose(
        all_rows[order], predictions[np.lexsort(predictions.T)], rtol=1e-5, atol=1e-5
    )
    assert sorted(np.concatenate([labels, val_labels])) == sorted(y_hold)
    for model, saved in zip(models, before, strict=True):
        assert_same_weights(saved, model)
    members = [stacked.get_layer(f"member_{i}") for i in range(3)]
    assert all(not m.trainable for m in members)
    yt = fine_tunes.y_test
    stacked_accuracy = accuracy(yt, stacked.predict(fine_tunes.x_test, verbose=0))
    mean = np.mean([m.predict(fine_tunes.x_test, verbose=0) for m in models], 0)
    assert stacked_accuracy >= accuracy(yt, mean) - 0.02


def test_custom_meta_model_and_probabilities(fine_tunes):
    meta = keras.Sequential([keras.layers.Dense(10, name="meta_out")], name="my_meta")
    stacked = stack(
        fine_tunes.tunes[:2],
        meta,
        holdout_data=(fine_tunes.x_val, fine_tunes.y_val),
        output_activation="softmax",
        epochs=2,
        validation_split=0,
    )
    assert stacked.get_layer("my_meta") is meta
    assert stacked.output.shape == (None, 10)
    x = fine_tunes.x_test[:8]
    probs = np.concatenate(
        [stacked.get_layer(f"member_{i}").predict(x, verbose=0) for i in range(2)], -1
    )
    e = np.exp(probs.reshape(8, 2, 10))
    expected_in = (e / e.sum(-1, keepdims=True)).reshape(8, 20)
    np.testing.assert_allclose(
        stacked.predict(x, verbose=0),
        meta.predict(expected_in, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"holdout_data": "xy"}, "holdout_data="),
        ({"meta_model": 3}, "meta_model=3"),
        ({"meta_model": "deep"}, "meta_model='deep'"),
        ({"epochs": -1}, "epochs=-1"),
        ({"validation_split": 1.0}, "validation_split=1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    models = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])] * 2
    kwargs = {"holdout_data": (np.ones((4, 3)), np.zeros(4)), **kwargs}
    with pytest.raises(ValueError, match=message):
        stack(models, **kwargs)
