import keras
import numpy as np
import pytest

from keras_harden.diagnostics import Report, diagnose
from tests.toolkit import small_classifier

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def deep_plain(scale, depth=12, width=64, batchnorm=False):
    """A deep plain ReLU net whose He-normal init is scaled by `scale`: each
    layer multiplies the signal's scale by about `scale` (1.5 ** 12 = 130x up,
    0.5 ** 12 = 1/4096 down)."""
    init = keras.initializers.VarianceScaling(
        2.0 * scale**2, "fan_in", "truncated_normal", seed=0
    )
    layers = [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255)]
    layers.append(keras.layers.Flatten())
    for _ in range(depth):
        layers.append(keras.layers.Dense(width, kernel_initializer=init))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.ReLU())
    layers.append(keras.layers.Dense(10, kernel_initializer=init))
    return keras.Sequential(layers)


def _state(model):
    values = [keras.ops.convert_to_numpy(v) for v in model.variables]
    if getattr(model, "optimizer", None) is not None and model.optimizer.built:
        values += [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    return [np.array(v) for v in values]


def _assert_unchanged(model, before):
    after = _state(model)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def sample(digits):
    (x, y), _ = digits
    return x[:320], y[:320]


@pytest.mark.parametrize(
    "scale, verdict", [(1.5, "exploding"), (0.5, "vanishing"), (1.0, "healthy")]
)
def test_verdicts_on_networks_built_for_them(sample, scale, verdict):
    model = deep_plain(scale)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    before = _state(model)
    report = diagnose(model, sample, steps=4)
    _assert_unchanged(model, before)
    assert report.verdict == verdict, report.to_markdown()
    dense = [s["layer"] for s in report.stats]
    assert len(dense) == 13  # 12 hidden + head, layers with weights only
    if verdict == "healthy":
        assert report.layers == []
    elif verdict == "vanishing":
        # the first layers, farthest from the loss, are the ones starved
        assert report.layers == dense[: len(report.layers)]
    else:
        assert set(report.layers) <= set(dense) and report.layers
    assert any("kh." in r for r in report.recommendations)
    if verdict == "exploding":
        assert any("AdaptiveGradientClipping" in r for r in report.recommendations)
    if verdict == "vanishing":
        assert any("lsuv" in r for r in report.recommendations)


def test_small_conv_net_is_healthy_and_untouched_after_training(sample):
    x, y = sample
    model = small_classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=LOSS)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # optimizer has state
    before = _state(model)
    report = diagnose(model, (x, y), steps=3)
    _assert_unchanged(model, before)
    assert report.verdict == "healthy"
    assert report.optimizer == "SGD"
    for s in report.stats:
        # grad/weight is exactly the ratio of the two reported norms
        assert s["grad_to_weight"] == pytest.approx(s["grad_norm"] / s["weight_norm"])
        assert 0 < s["update_ratio"] < 1 and s["activation_rms"] > 0


def test_batchnorm_statistics_and_seed_state_are_restored(sample):
    model = keras.Sequential(
        [deep_plain(1.0, depth=3, batchnorm=True), keras.layers.Dropout(0.5)]
    )
    model.build((None, 8, 8, 1))
    before = _state(model)
    report = diagnose(model, sample, loss=LOSS, steps=2)
    _assert_unchanged(model, before)
    assert report.optimizer.startswith("SGD")  # not compiled: a stated default


def test_non_finite_names_the_layer_where_it_starts(sample):
    model = deep_plain(1.0, depth=4)
    layer = model.layers[6]  # the third hidden Dense
    kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
    kernel[0, 0] = np.nan
    layer.kernel.assign(kernel)
    before = _state(model)
    report = diagnose(model, sample, loss=LOSS, steps=2)
    _assert_unchanged(model, before)
    assert report.verdict == "non-finite"
    assert report.layers[0].endswith(layer.name)
    assert any("HardenedOptimizer" in r for r in report.recommendations)


@pytest.mark.tf_only
def test_accepts_a_tf_data_dataset(sample):
    import tensorflow as tf

    x, y = sample
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model = small_classifier()
    report = diagnose(model, dataset, loss=LOSS, steps=3)
    assert report.steps == 3 and report.verdict == "healthy"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps=0"),
        ({"batch_size": -1}, "batch_size=-1"),
    ],
)
def test_bad_arguments(sample, kwargs, message):
    arguments = {"loss": LOSS, **kwargs}
    with pytest.raises(ValueError, match=message):
        diagnose(small_classifier(), sample, **arguments)


def test_uncompiled_classifier_defaults_to_sparse_crossentropy(sample):
    model = small_classifier()
    report = diagnose(model, sample, steps=2)  # as in the README's tour
    assert report.loss_name.startswith("sparse categorical cross-entropy on logits")
    assert "- loss: sparse categorical cross-entropy on logits" in report.to_markdown()
    given = diagnose(model, sample, loss=LOSS, steps=2)
    assert report.loss == pytest.approx(given.loss)
    softmax = keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
    assert "on probabilities" in diagnose(softmax, sample, steps=1).loss_name
    x, y = sample
    for labels in (y + 0.5, np.eye(10)[y]):  # not class ids: no default fits
        with pytest.raises(ValueError, match="Received: loss=None"):
            diagnose(model, (x, labels), steps=1)
    model.compile(loss=LOSS)
    assert diagnose(model, sample, steps=1).loss_name == "the model's compiled loss"


@pytest.mark.tf_only
def test_a_model_loaded_from_a_savedmodel_is_refused(sample, tmp_path):
    import keras_harden as kh

    model = small_classifier()
    kh.export(model, tmp_path / "served")
    served = kh.load_model(tmp_path / "served")
    with pytest.raises(ValueError, match=r"Diagnose the `\.keras` file"):
        diagnose(served, sample, loss=LOSS, steps=1)


def test_bad_data():
    with pytest.raises(ValueError, match="data=int"):
        diagnose(small_classifier(), 3, loss=LOSS)


def test_report_type(sample):
    report = diagnose(small_classifier(), sample, loss=LOSS, steps=1)
    assert isinstance(report, Report) and report.steps == 1
