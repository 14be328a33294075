"""keras_harden.robust.test_time_augmentation: the transforms by hand, the
averaging against hand-computed means, invariances, detection of logits,
saving, export, jit_compile and the argument checks."""

import os

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.augment import ops as augment_ops
from keras_harden.robust import corruptions
from keras_harden.robust import test_time_augmentation as tta_module

TTA = tta_module.TestTimeAugmentation
RNG = np.random.default_rng(0)
X = RNG.random((5, 8, 8, 1)).astype("float32")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _view(spec, images, value_range=(0, 1)):
    kind, arguments = tta_module._parse(spec)
    return _np(tta_module._apply(kind, arguments, images, value_range))


def _row(*values):
    """A (1, 1, W, 1) image: one row."""
    return np.array(values, "float32").reshape(1, 1, -1, 1)


def _column(*values):
    return np.array(values, "float32").reshape(1, -1, 1, 1)


def small_conv(softmax=False, seed=0, shape=(8, 8, 1)):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax" if softmax else None),
        ]
    )


def identity_pair(softmax=False):
    """Logits `z = (x0, x1)` of a 1x2 image (probabilities with softmax)."""
    return keras.Sequential(
        [
            keras.Input((1, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                2,
                use_bias=False,
                kernel_initializer="identity",
                activation="softmax" if softmax else None,
            ),
        ]
    )


# -- the transforms --------------------------------------------------------------------


def test_shifts_repeat_the_edge_by_hand():
    row = _row(0.1, 0.2, 0.3)
    # right by one: the first pixel repeats into the gap
    np.testing.assert_allclose(_view("shift:0,1", row).ravel(), [0.1, 0.1, 0.2])
    np.testing.assert_allclose(_view("shift:0,-1", row).ravel(), [0.2, 0.3, 0.3])
    np.testing.assert_allclose(_view("shift:0,2", row).ravel(), [0.1, 0.1, 0.1])
    column = _column(0.1, 0.2, 0.3)
    np.testing.assert_allclose(_view("shift:1,0", column).ravel(), [0.1, 0.1, 0.2])
    np.testing.assert_allclose(_view("shift:-1,0", column).ravel(), [0.2, 0.3, 0.3])
    # a shift along both axes is the two shifts in turn
    np.testing.assert_allclose(
        _view("shift:1,-1", X), _view("shift:0,-1", _view("shift:1,0", X))
    )


def test_flips():
    np.testing.assert_array_equal(_view("flip_left_right", X), X[:, :, ::-1])
    np.testing.assert_array_equal(_view("flip_up_down", X), X[:, ::-1])


def test_scale_and_rotate_by_hand():
    # zoom 2 about the centre 1 of (0, 0.5, 1): pixel 0 reads 1 - 1/2 = 0.5
    # (0.25), pixel 2 reads 1.5 (0.75)
    np.testing.assert_allclose(
        _view("scale:2", _row(0.0, 0.5, 1.0)).ravel(), [0.25, 0.5, 0.75], atol=1e-6
    )
    # zoom 1/2: pixel 0 reads 1 - 2 = -1, clamped to the edge pixel 0
    np.testing.assert_allclose(
        _view("scale:0.5", _row(0.0, 0.5, 1.0)).ravel(), [0.0, 0.5, 1.0], atol=1e-6
    )
    np.testing.assert_allclose(_view("scale:1", X), X, atol=1e-6)
    flat = np.full((1, 8, 8, 1), 0.4, "float32")
    np.testing.assert_allclose(_view("rotate:17", flat), flat, atol=1e-6)
    # a quarter turn lands on the pixel grid: clockwise on screen (rows
    # down), the augment family's sense of rotation
    np.testing.assert_allclose(
        _view("rotate:90", X), np.rot90(X, k=-1, axes=(1, 2)), atol=1e-5
    )
    # 10 degrees is the augment family's rotate at strength 1/3 (of 30),
    # which fills with black: compare where no corner is read from outside
    v = np.full((len(X),), 1 / 3, "float32")
    inner = (slice(None), slice(2, 6), slice(2, 6))
    np.testing.assert_allclose(
        _view("rotate:10", X)[inner], _np(augment_ops.rotate(X, v))[inner], atol=1e-5
    )


def test_the_colour_operations_are_the_augment_familys_in_the_value_range():
    for spec, name, v in (
        ("sharpness:0.5", "sharpness", 0.5),
        ("contrast:-0.2", "contrast", -0.2),
    ):
        strength = np.full((len(X),), v, "float32")
        expected = _np(augment_ops.TRANSFORMS[name](X, strength))
        np.testing.assert_allclose(_view(spec, X), expected, atol=1e-6)
        # on images in (0, 255): mapped to [0, 1] and back
        np.testing.assert_allclose(
            _view(spec, X * 255, (0, 255)), expected * 255, atol=1e-3
        )
    # auto_contrast stretches (0.2 .. 0.6) to (0 .. 1)
    image = _row(0.2, 0.4, 0.6)
    np.testing.assert_allclose(
        _view("auto_contrast", image).ravel(), [0, 0.5, 1], atol=1e-6
    )


# -- the averaging ---------------------------------------------------------------------


def test_identity_alone_is_the_model():
    for softmax in (False, True):
        model = small_conv(softmax)
        tta = TTA(model, ["identity"])
        np.testing.assert_array_equal(
            tta.predict(X, verbose=0), model.predict(X, verbose=0)
        )


def test_the_mean_against_hand_computed_values():
    # x = (2, 0): z = (2, 0), p = (sigmoid(2), sigmoid(-2)) = (0.880797,
    # 0.119203); shifted right, (2, 2): p = (0.5, 0.5). Mean (0.690399,
    # 0.309601); logits in: log of it, (-0.370486, -1.172469)
    x = np.float32([[[[2], [0]]]])
    mean = TTA(identity_pair(softmax=True), ["identity", "shift:0,1"]).predict(
        x, verbose=0
    )
    np.testing.assert_allclose(mean, [[0.690399, 0.309601]], atol=1e-6)
    logits = TTA(identity_pair(), ["identity", "shift:0,1"]).predict(x, verbose=0)
    np.testing.assert_allclose(logits, [[-0.370486, -1.172469]], atol=1e-5)
    # x = (1, 0) and its mirror (0, 1): p = (0.731, 0.269) and the reverse,
    # mean (0.5, 0.5), log 0.5 = -0.693147
    tta = TTA(identity_pair(), ["identity", "flip_left_right"])
    np.testing.assert_allclose(
        tta.predict(np.float32([[[[1], [0]]]]), verbose=0), [[-0.693147] * 2], atol=1e-6
    )


def test_the_mean_of_many_views_against_numpy():
    model = small_conv()
    transforms = ["identity", "shift:1,0", "flip_up_down", "scale:1.1", "sharpness:0.4"]
    probabilities = [
        _np(keras.ops.softmax(model(_view(t, X)), axis=-1)) for t in transforms
    ]
    mean = np.mean(probabilities, axis=0)
    out = TTA(model, transforms).predict(X, verbose=0)
    np.testing.assert_allclose(out, np.log(mean), atol=1e-5)
    # the returned logits' softmax is the averaged probabilities
    np.testing.assert_allclose(_np(keras.ops.softmax(out)), mean, atol=1e-6)


def test_a_model_invariant_to_flips_is_unchanged():
    # global average pooling forgets where things are: flips change nothing
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(3, 1),  # 1x1: pointwise, commutes with flips
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    tta = TTA(model, ["identity", "flip_left_right", "flip_up_down"])
    np.testing.assert_allclose(
        tta.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6
    )


def test_from_logits_is_detected_and_stored():
    assert TTA(small_conv(softmax=False)).from_logits is True
    assert TTA(small_conv(softmax=True)).from_logits is False
    # given, it is taken as it is (here wrongly: probabilities averaged as
    # if logits, so the output is log of the mean of their softmax)
    assert TTA(small_conv(softmax=True), from_logits=True).get_config()["from_logits"]


def test_predictions_do_not_depend_on_the_batching():
    tta = TTA(small_conv(), ["identity", "shift:0,1", "rotate:10"])
    whole = tta.predict(X, batch_size=len(X), verbose=0)
    np.testing.assert_allclose(
        tta.predict(X, batch_size=2, verbose=0), whole, atol=1e-6
    )
    np.testing.assert_allclose(tta.predict(X[3:4], verbose=0), whole[3:4], atol=1e-6)


def test_jit_compile_in_predict_and_evaluate():
    transforms = ["identity", "shift:1,0", "scale:0.9", "rotate:-10", "auto_contrast"]
    y = np.array([0, 1, 2, 0, 1])
    eager = TTA(small_conv(), transforms)
    eager.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    jitted = TTA(small_conv(), transforms)
    jitted.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    np.testing.assert_allclose(
        jitted.predict(X, verbose=0), eager.predict(X, verbose=0), atol=1e-5
    )
    np.testing.assert_allclose(
        jitted.evaluate(X, y, verbose=0), eager.evaluate(X, y, verbose=0), atol=1e-5
    )


# -- saving and export -----------------------------------------------------------------


def test_config_is_the_constructor_arguments():
    model = small_conv()
    tta = TTA(model, ("identity", "shift:0,1"), value_range=(0, 255), name="tta")
    config = tta.get_config()
    assert config["transforms"] == ["identity", "shift:0,1"]
    assert config["from_logits"] is True and config["value_range"] == [0.0, 255.0]
    assert config["name"] == "tta" and config["trainable"] is True
    assert set(config) == {
        "name",
        "trainable",
        "model",
        "transforms",
        "from_logits",
        "value_range",
    }
    again = TTA.from_config(config)
    assert again.get_config()["transforms"] == config["transforms"]


def test_keras_file_round_trip(tmp_path):
    tta = TTA(small_conv(), ["identity", "shift:-1,0", "sharpness:0.5"])
    expected = tta.predict(X, verbose=0)
    path = os.path.join(tmp_path, "tta.keras")
    tta.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TTA)
    assert loaded.get_config()["transforms"] == [
        "identity",
        "shift:-1,0",
        "sharpness:0.5",
    ]
    np.testing.assert_allclose(loaded.predict(X, verbose=0), expected, atol=1e-6)
    # and through the package's safe loader
    kh.save_model(tta, os.path.join(tmp_path, "again.keras"))
    reloaded = kh.load_model(os.path.join(tmp_path, "again.keras"))
    np.testing.assert_allclose(reloaded.predict(X, verbose=0), expected, atol=1e-6)


@pytest.mark.tf_only
def test_export_serves_the_averaged_prediction(tmp_path):
    import tensorflow as tf

    tta = TTA(small_conv(), ["identity", "shift:0,1", "rotate:10"])
    expected = tta.predict(X, verbose=0)
    folder = kh.saving.export(tta, os.path.join(tmp_path, "served"))
    np.testing.assert_allclose(kh.saving.serve(folder, X), expected, atol=1e-5)
    # Keras's own export as well
    tta.export(os.path.join(tmp_path, "keras_export"), verbose=False)
    artifact = tf.saved_model.load(os.path.join(tmp_path, "keras_export"))
    np.testing.assert_allclose(artifact.serve(X).numpy(), expected, atol=1e-5)


# -- the checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transforms", "message"),
    [
        (
            "identity",
            r"list or tuple of transform strings. Received: transforms='identity'",
        ),
        (
            ["shift:1,0"],
            r"must include 'identity'.*Received: transforms=\['shift:1,0'\]",
        ),
        (["identity", "identity"], r"must not repeat.*Received: transforms="),
        (
            ["identity", "blur"],
            r"unknown name 'blur'.*Received: transforms entry 'blur'",
        ),
        (["identity", 3], r"not a string.*Received: transforms entry 3"),
        (
            ["identity", "shift:1"],
            r"two integers.*Received: transforms entry 'shift:1'",
        ),
        (["identity", "shift:a,b"], r"Received: transforms entry 'shift:a,b'"),
        (["identity", "shift:0,0"], r"is the identity"),
        (["identity", "shift:8,0"], r"whole side or more of the 8x8 images"),
        (["identity", "scale:0"], r"scale factor is > 0.*entry 'scale:0'"),
        (["identity", "rotate:nan"], r"rotate takes one number"),
        (["identity", "sharpness:1.5"], r"strength is in \[-1, 1\]"),
        (["identity", "flip_left_right:1"], r"takes no arguments"),
    ],
)
def test_bad_transforms(transforms, message):
    with pytest.raises(ValueError, match=message):
        TTA(small_conv(), transforms)


def test_bad_models_and_arguments():
    with pytest.raises(
        ValueError, match=r"`model` must be a Keras model.*Received: model="
    ):
        TTA(lambda x: x)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"images `\(batch, H, W, C\)`.*\(None, 4\)"):
        TTA(dense)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"built Keras classifier with known inputs"):
        TTA(unbuilt)
    regressor = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    with pytest.raises(
        ValueError, match=r"must be a classifier.*output shape \(3, 1\)"
    ):
        TTA(regressor)
    with pytest.raises(ValueError, match=r"Received: from_logits='yes'"):
        TTA(small_conv(), from_logits="yes")
    with pytest.raises(ValueError, match=r"Received: value_range=None"):
        TTA(small_conv(), value_range=None)


# -- on the digits ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.jax_too
def test_the_default_recovers_low_contrast_digits(digits):
    # an MLP on the digits; contrast severity 5 (c = 0.15) costs it most of
    # its accuracy, and the default views (with auto-contrast) win it back
    # while the clean accuracy stays
    (x, y), (x_test, y_test) = digits
    x, x_test = x / 255.0, x_test / 255.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    tta = TTA(model)
    low = corruptions.corrupt(x_test, "contrast", 5)

    def accuracy(m, inputs):
        return np.mean(m.predict(inputs, verbose=0).argmax(-1) == y_test)

    assert accuracy(tta, x_test) >= accuracy(model, x_test) - 0.005
    assert accuracy(tta, low) >= accuracy(model, low) + 0.2
