import keras
import numpy as np
import pytest

from keras_harden.fusion import ensemble
from tests.fusion.conftest import assert_same_weights, compile_, weights_of


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_average_equals_mean_of_outputs(fine_tunes):
    models = fine_tunes.tunes
    before = [weights_of(m) for m in models]
    x = fine_tunes.x_test[:64]
    outputs = [m.predict(x, verbose=0) for m in models]
    both = ensemble(models)
    assert [layer.name for layer in both.layers] == [
        "input_0",
        "member_0",
        "member_1",
        "member_2",
        "average",
    ]
    np.testing.assert_allclose(
        both.predict(x, verbose=0), np.mean(outputs, axis=0), rtol=1e-5, atol=1e-5
    )
    probabilities = ensemble(models, output_activation="softmax")
    np.testing.assert_allclose(
        probabilities.predict(x, verbose=0),
        np.mean([softmax(o) for o in outputs], axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
    for model, saved in zip(models, before, strict=True):
        assert_same_weights(saved, model)
    assert not both.trainable_weights


def test_concatenated_features_with_trained_head(fine_tunes):
    models = fine_tunes.tunes[:2]
    head = keras.layers.Dense(10, name="head")
    both = ensemble(models, method="concatenate", features=-2, head=head)
    # features=-2 is Flatten: 6 * 6 * 8 = 288 per member, 576 concatenated
    assert both.get_layer("concatenate").output.shape == (None, 576)
    assert [w.path for w in both.trainable_weights] == ["head/kernel", "head/bias"]
    members = [weights_of(both.get_layer(f"member_{i}")) for i in range(2)]
    head_before = weights_of(head)
    compile_(both).fit(fine_tunes.x_val, fine_tunes.y_val, epochs=2, verbose=0)
    for i, saved in enumerate(members):
        assert_same_weights(saved, both.get_layer(f"member_{i}"))
    assert not np.allclose(head.kernel.numpy(), head_before[0])
    accuracy = both.evaluate(fine_tunes.x_test, fine_tunes.y_test, verbose=0)[1]
    assert accuracy > 0.8


def test_copies_of_one_saved_model_do_not_clash(tmp_path, fine_tunes):
    path = str(tmp_path / "one.keras")
    fine_tunes.tunes[0].save(path)
    a, b = keras.saving.load_model(path), keras.saving.load_model(path)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    both = ensemble(
        [
            a,
            b,
            keras.Sequential(
                [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
            ),
        ]
    )
    both.save(tmp_path / "both.keras")
    again = keras.saving.load_model(tmp_path / "both.keras")
    x = fine_tunes.x_test[:16]
    np.testing.assert_array_equal(
        again.predict(x, verbose=0), both.predict(x, verbose=0)
    )


def test_sequential_members_and_single_member():
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    alone = ensemble([seq])
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(alone.predict(x, verbose=0), seq.predict(x, verbose=0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "max"}, "method='max'"),
        ({"head": "dense"}, "head='dense'"),
        ({"features": 99}, "features=99"),
        ({"features": "nope"}, "features='nope'"),
    ],
)
def test_bad_arguments(kwargs, message):
    models = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])] * 2
    with pytest.raises(ValueError, match=message):
        ensemble(models, **kwargs)


def test_mismatched_inputs():
    a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="same inputs"):
        ensemble([a, b])
