import keras
import numpy as np
import pytest

from keras_harden.fusion import SoupReport, greedy_soup, recalibrate_batchnorm
from keras_harden.fusion.soup import accuracy
from tests.fusion.conftest import assert_same_weights, digits_net, weights_of


def test_accuracy_by_hand():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    assert accuracy(np.array([0, 1, 1]), logits) == pytest.approx(2 / 3)
    assert accuracy(np.eye(2)[[0, 1, 1]], logits) == pytest.approx(2 / 3)
    # one column: probabilities threshold at 0.5, logits at 0
    assert accuracy(np.array([1, 0]), np.array([[0.7], [0.2]])) == 1.0
    assert accuracy(np.array([1, 0]), np.array([[2.0], [-1.5]])) == 1.0


@pytest.mark.slow
def test_greedy_soup_on_digits(fine_tunes):
    # a fourth ingredient from another start (fresh weights): averaging it in
    # ruins the soup, so the greedy rule must drop it
    stranger = digits_net()
    models = fine_tunes.tunes + [stranger]
    before = [weights_of(m) for m in models]
    val = (fine_tunes.x_val, fine_tunes.y_val)
    soup, report = greedy_soup(models, val, recalibrate=fine_tunes.x_fit[:256])
    for model, saved in zip(models, before, strict=True):
        assert_same_weights(saved, model)
    assert isinstance(report, SoupReport)
    raw = [accuracy(val[1], m.predict(val[0], verbose=0)) for m in models]
    assert report.scores_before_recalibration == pytest.approx(raw)
    # every score after the same recalibration the candidates get
    expected = []
    for model in models:
        alone = keras.models.clone_model(model)
        alone.set_weights(model.get_weights())
        recalibrate_batchnorm(alone, fine_tunes.x_fit[:256])
        expected.append(accuracy(val[1], alone.predict(val[0], verbose=0)))
    assert report.scores == pytest.approx(expected)
    assert report.order == sorted(range(4), key=lambda i: -expected[i])
    assert report.kept[0] == report.order[0]
    assert 3 not in report.kept
    assert [step["index"] for step in report.trace] == report.order[1:]
    assert report.soup_score >= max(expected)
    score = accuracy(val[1], soup.predict(val[0], verbose=0))
    assert score == pytest.approx(report.soup_score)
    # the soup's non-batch-norm weights are the plain mean of those kept
    kept = [models[i] for i in report.kept]
    for i, variable in enumerate(soup.weights):
        if "moving" in variable.path:
            continue
        mean = np.mean([m.weights[i].numpy() for m in kept], axis=0)
        np.testing.assert_allclose(variable.numpy(), mean, rtol=1e-5, atol=1e-7)
    assert "kept" in str(report) and report.to_dict()["kept"] == report.kept
    text = str(report)
    assert "every score after batch-norm recalibration" in text
    best = report.order[0]
    line = f"model {best}: {expected[best]:.4f} (before recalibration {raw[best]:.4f})"
    assert line in text


def test_metric_options_and_minimising(fine_tunes):
    models = fine_tunes.tunes[:2]
    val = (fine_tunes.x_val[:100], fine_tunes.y_val[:100])
    metric = keras.metrics.SparseCategoricalAccuracy()
    _, report = greedy_soup(
        models, val, metric=metric, recalibrate=fine_tunes.x_fit[:128]
    )
    assert report.metric == metric.name
    assert report.scores_before_recalibration == pytest.approx(
        [accuracy(val[1], m.predict(val[0], verbose=0)) for m in models]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def cross_entropy(y_true, y_pred):
        return float(loss(y_true, y_pred))

    _, report = greedy_soup(
        models,
        val,
        metric=cross_entropy,
        higher_is_better=False,
        recalibrate=fine_tunes.x_fit[:128],
    )
    assert report.metric == "cross_entropy"
    assert report.scores[report.order[0]] == min(report.scores)


@pytest.mark.tf_only
def test_validation_dataset(fine_tunes):
    import tensorflow as tf

    val = tf.data.Dataset.from_tensor_slices(
        (fine_tunes.x_val[:64], fine_tunes.y_val[:64])
    ).batch(16)
    with pytest.warns(UserWarning, match="batch-norm"):
        _, report = greedy_soup(fine_tunes.tunes[:2], val)
    m = fine_tunes.tunes[0]
    expected = accuracy(
        fine_tunes.y_val[:64], m.predict(fine_tunes.x_val[:64], verbose=0)
    )
    assert report.scores[0] == pytest.approx(expected)


def test_bad_metric(fine_tunes):
    with pytest.raises(ValueError, match="Received: metric='auc'"):
        greedy_soup(fine_tunes.tunes[:2], (fine_tunes.x_val, fine_tunes.y_val), "auc")


def test_a_soup_of_one_gets_recomputed_statistics_too(fine_tunes):
    # a stranger (fresh weights) is always refused, so the soup is the best
    # model alone; its batch-norm statistics still come from `recalibrate`
    best, stranger = fine_tunes.tunes[0], digits_net()
    val = (fine_tunes.x_val, fine_tunes.y_val)
    calibration = fine_tunes.x_fit[:256]
    soup, report = greedy_soup([best, stranger], val, recalibrate=calibration)
    assert report.kept == [0]
    expected = keras.models.clone_model(best)
    expected.set_weights(best.get_weights())
    recalibrate_batchnorm(expected, calibration)
    assert_same_weights(weights_of(expected), soup)
    assert report.soup_score == pytest.approx(
        accuracy(val[1], soup.predict(val[0], verbose=0))
    )
    # the best model's own score is taken after the same recalibration
    assert report.scores[0] == pytest.approx(report.soup_score)
    raw = accuracy(val[1], best.predict(val[0], verbose=0))
    assert report.scores_before_recalibration[0] == pytest.approx(raw)
