import math
import os

import keras
import numpy as np
import pytest

from keras_harden.fusion import InterpolationResult, interpolation
from keras_harden.fusion.align import Analysis, apply_permutations
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.interpolation import _cross_entropy
from tests.fusion.conftest import assert_same_weights, trained_mlps, weights_of


def linear(kernel, bias, activation=None):
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(2, activation=activation)]
    )
    model.set_weights([np.array(kernel, "float32"), np.array(bias, "float32")])
    return model


def test_path_by_hand():
    # One input x = 1, label 0. a: logits (1, -1); b: logits (-1, 1); the
    # point at alpha has logits (1 - 2 alpha, -(1 - 2 alpha)):
    #   alpha 0:   cross-entropy log(1 + e^-2) = 0.126928, correct
    #   alpha 0.5: logits (0, 0): log 2 = 0.693147, a tie: argmax 0, correct
    #   alpha 1:   log(1 + e^2) = 2.126928, wrong
    a, b = linear([[1.0, -1.0]], [0, 0]), linear([[-1.0, 1.0]], [0, 0])
    before = weights_of(b)
    result = interpolation(a, b, (np.ones((1, 1), "float32"), np.array([0])), 3)
    assert result.alphas == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(
        result.naive_loss, [0.126928, 0.693147, 2.126928], rtol=1e-5
    )
    assert result.naive_accuracy == [1.0, 1.0, 0.0]
    # no hidden units: the aligned path is the same path
    np.testing.assert_allclose(result.aligned_loss, result.naive_loss, rtol=1e-6)
    assert result.repaired_loss is None
    assert result.paths() == ["naive", "aligned"]
    # the loss at 0.5 is below the line (1.126928): no barrier
    assert result.loss_barrier() == 0.0
    assert result.accuracy_drop("aligned") == 0.0
    assert_same_weights(before, b)


def test_barrier_and_drop_by_hand():
    result = InterpolationResult(
        alphas=[0.0, 0.5, 1.0],
        loss_name="loss",
        naive_loss=[1.0, 3.0, 2.0],  # line at 0.5: 1.5 -> barrier 1.5
        naive_accuracy=[0.9, 0.5, 0.7],  # line at 0.5: 0.8 -> drop 0.3
    )
    assert result.loss_barrier() == pytest.approx(1.5)
    assert result.accuracy_drop() == pytest.approx(0.3)
    text = str(result)
    assert "0.50          3.0000        0.5000" in text
    assert "naive: loss barrier 1.5000, accuracy 30.0 points below" in text
    with pytest.raises(ValueError, match=r"Received: path='aligned'"):
        result.loss_barrier("aligned")
    with pytest.raises(ValueError, match=r"Received: path='other'"):
        result.accuracy_drop("other")


def test_cross_entropy_of_probabilities_and_keras_losses():
    # probabilities (0.25, 0.75) for label 1: -log 0.75 = 0.287682
    assert _cross_entropy([1], [[0.25, 0.75]]) == pytest.approx(0.287682, rel=1e-5)
    # one-hot labels, logits (0, log 3): probabilities (1/4, 3/4), same loss
    assert _cross_entropy([[0, 1]], [[0.0, math.log(3)]]) == pytest.approx(
        0.287682, rel=1e-5
    )
    a = linear([[0.0, math.log(3)]], [0, 0], activation="softmax")
    data = (np.ones((1, 1), "float32"), np.array([1]))
    result = interpolation(
        a, a, data, steps=2, align=False, loss="sparse_categorical_crossentropy"
    )
    np.testing.assert_allclose(result.naive_loss, [0.287682] * 2, rtol=1e-5)
    assert result.aligned_loss is None


def mlp():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def test_aligned_path_to_a_permuted_copy_is_flat():
    keras.utils.set_random_seed(0)
    a = mlp()
    analysis = Analysis(a)
    rng = np.random.default_rng(1)
    b = apply_permutations(
        a, analysis, [rng.permutation(n) for n in analysis.group_sizes]
    )
    x = rng.normal(size=(64, 4)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(a(x)), axis=-1)
    result = interpolation(a, b, (x, y), steps=3, repair=x)
    # the endpoints compute one function
    assert result.naive_loss[0] == pytest.approx(result.naive_loss[-1], rel=1e-5)
    # b aligned to a is a: every point of the aligned path is a
    np.testing.assert_allclose(
        result.aligned_loss, [result.naive_loss[0]] * 3, rtol=1e-5
    )
    assert result.aligned_accuracy == [1.0] * 3
    # repairing a point that already has its endpoints' statistics changes
    # nothing (up to epsilon)
    np.testing.assert_allclose(result.repaired_loss, result.aligned_loss, rtol=1e-3)
    assert result.loss_barrier("aligned") == pytest.approx(0.0, abs=1e-5)


def test_batchnorm_recalibrated_at_every_point():
    def build():
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Dense(3),
            ]
        )

    keras.utils.set_random_seed(2)
    a, b = build(), build()
    x = np.random.default_rng(3).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    result = interpolation(a, b, (x, y), steps=2, align=False, recalibrate=x)
    # alpha 0 is `a` with its batch-norm statistics recomputed from x
    copy = keras.models.clone_model(a)
    copy.set_weights(a.get_weights())
    recalibrate_batchnorm(copy, x)
    expected = _cross_entropy(y, copy.predict(x, verbose=0))
    assert result.naive_loss[0] == pytest.approx(expected, rel=1e-5)


def test_plot_writes_the_file_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    result = InterpolationResult([0.0, 1.0], "loss", [1.0, 2.0], [0.5, 0.6])
    path = result.plot(tmp_path / "figures" / "path.png")
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "figures") == ["path.png"]  # no temporary left


def test_argument_errors():
    a, b = mlp(), mlp()
    data = (np.zeros((2, 4), "float32"), np.zeros(2))
    with pytest.raises(ValueError, match=r"Received: steps=1"):
        interpolation(a, b, data, steps=1)
    with pytest.raises(ValueError, match=r"Received: align='yes'"):
        interpolation(a, b, data, align="yes")
    with pytest.raises(ValueError, match=r"needs `align=True`. Received: align=False"):
        interpolation(a, b, data, align=False, repair=data[0])
    with pytest.raises(ValueError, match=r"Received: data=None"):
        interpolation(a, b, None)
    with pytest.raises(ValueError, match=r"Received: loss=3"):
        interpolation(a, b, data, loss=3)


@pytest.mark.slow
def test_alignment_shrinks_the_barrier_between_trained_models(digits):
    models, (x, _), (xt, yt) = trained_mlps(digits, seeds=(3, 4), epochs=8)
    result = interpolation(*models, (xt, yt), steps=5, repair=x)
    assert result.accuracy_drop("aligned") < result.accuracy_drop("naive") / 2
    assert result.loss_barrier("aligned") < result.loss_barrier("naive")
    assert result.accuracy_drop("repaired") <= result.accuracy_drop("aligned") + 0.01
