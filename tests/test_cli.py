"""The `keras-harden` command line, through its entry point (subprocess) for
the demo and the error contract, and through `main(argv)` for the rest."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_harden as kh
from keras_harden.cli import main
from tests.toolkit import small_classifier

ENTRY = os.path.join(os.path.dirname(sys.executable), "keras-harden")


def _run(*args, module=False):
    command = [sys.executable, "-m", "keras_harden"] if module else [ENTRY]
    return subprocess.run(
        command + [str(a) for a in args], capture_output=True, text=True, timeout=300
    )


def _last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits):
    """Two compatible trained classifiers, one of another shape, one corrupt."""
    (x, y), _ = digits
    folder = tmp_path_factory.mktemp("models")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    paths = {}
    start = small_classifier(seed=0)
    for name, seed in (("a", 1), ("b", 2)):
        model = small_classifier(seed=0)
        model.set_weights(start.get_weights())
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
        keras.utils.set_random_seed(seed)
        model.fit(x, y, epochs=2, batch_size=64, verbose=0)
        paths[name] = kh.save_model(model, folder / f"{name}.keras")
    inputs = keras.Input((8, 8, 1))
    other = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    paths["other"] = kh.save_model(other, folder / "other.keras")
    corrupt = folder / "corrupt.keras"
    corrupt.write_bytes(open(paths["a"], "rb").read()[:300])
    paths["corrupt"] = str(corrupt)
    keras.utils.clear_session()
    return paths


@pytest.mark.slow
@pytest.mark.tf_only
def test_demo_quick_through_the_entry_point(tmp_path):
    out = tmp_path / "saved_models"
    result = _run("demo", "--quick", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    for name in (
        "demo_soup.keras",
        "demo_loss.png",
        "demo_grad_norm.png",
        "demo_diagnosis.png",
        "demo_diagnosis.md",
        "demo_harden.md",
        "demo_harden.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "demo_soup_savedmodel" / "saved_model.pb").is_file()
    assert "kh.diagnostics.diagnose: exploding" in text
    assert "kh.diagnostics.diagnose: healthy" in text
    assert "| run" in text and "| test accuracy |" in text
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:4]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    plain = next(v for k, v in rows.items() if k.startswith("plain"))
    hardened = next(v for k, v in rows.items() if k.startswith("hardened"))
    soup = next(v for k, v in rows.items() if k.startswith("greedy soup"))
    assert plain[1].strip() == "yes" and hardened[1].strip() == "no"
    assert float(hardened[0]) > float(plain[0]) + 0.3
    # kh.harden's search on the same unstable setup trains it, and says how
    assert "**Prescription:" in text and "Successive halving over" in text
    searched = next(v for k, v in rows.items() if k.startswith("kh.harden"))
    assert searched[1].strip() == "no" and float(searched[0]) > float(plain[0]) + 0.3
    assert float(soup[0]) > 0.5
    assert "outputs match the soup: yes" in text
    # the files written are what the demo says: reload and compare
    soup_model = kh.load_model(out / "demo_soup.keras")
    (_, _), (xt, _) = kh.data.load_digits()
    served = kh.load_model(out / "demo_soup_savedmodel")
    np.testing.assert_allclose(
        served.predict(xt[:32], verbose=0),
        soup_model.predict(xt[:32], verbose=0),
        atol=1e-4,
    )


def test_missing_model_is_one_line_without_traceback(tmp_path):
    result = _run("diagnose", tmp_path / "missing.keras", "--data", "digits")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert _last_line(result.stderr) == (
        f"keras-harden diagnose: error: no model at '{tmp_path / 'missing.keras'}'"
    )


def test_unreadable_model_through_python_m(models, tmp_path):
    result = _run("export", models["corrupt"], tmp_path / "sm", module=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = _last_line(result.stderr)
    assert line.startswith("keras-harden export: error: ")
    assert "corrupt.keras" in line
    assert not (tmp_path / "sm").exists()


def test_mismatched_models_cannot_be_averaged(models, tmp_path, capsys):
    out = tmp_path / "fused.keras"
    code = main(
        ["fuse", models["a"], models["other"], "--method", "uniform", "-o", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("keras-harden fuse: error: ")
    assert not out.exists()


@pytest.mark.parametrize("method", ["uniform", "greedy", "ensemble"])
def test_fuse_writes_a_loadable_model(models, tmp_path, capsys, method, digits):
    out = tmp_path / f"{method}.keras"
    code = main(
        [
            "fuse",
            models["a"],
            models["b"],
            "--method",
            method,
            "--data",
            "digits",
            "-o",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"wrote {out}" in text
    fused = kh.load_model(out)
    _, (xt, yt) = digits
    accuracy = float(np.mean(np.argmax(fused.predict(xt, verbose=0), -1) == yt))
    # the accuracy the command printed is the saved model's
    assert f"accuracy {accuracy:.4f}" in text.splitlines()[-2]
    if method == "ensemble":
        assert [layer.name for layer in fused.layers][1:3] == ["member_0", "member_1"]


@pytest.fixture(scope="module")
def bn_models(tmp_path_factory, digits):
    """Three fine-tunes of one start (saved as the base) with a batch-norm
    layer whose moving statistics lag (momentum 0.99), and two nets of that
    shape trained from other random starts."""
    (x, y), _ = digits
    folder = tmp_path_factory.mktemp("bn_models")

    def net():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(keras.layers.Rescaling(1.0 / 255)(inputs))
        h = keras.layers.BatchNormalization()(keras.layers.Dense(32, "relu")(h))
        return keras.Model(inputs, keras.layers.Dense(10)(h))

    def train(model, seed, epochs=1):
        keras.utils.set_random_seed(seed)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        return model

    keras.utils.set_random_seed(0)
    start = train(net(), 0, epochs=2)
    paths = {"tunes": [], "strangers": []}
    paths["base"] = kh.save_model(start, folder / "base.keras")
    for seed in (1, 2, 3):
        tune = net()
        tune.set_weights(start.get_weights())
        path = kh.save_model(train(tune, seed), folder / f"tune{seed}.keras")
        paths["tunes"].append(path)
    for seed in (4, 5):
        path = kh.save_model(train(net(), seed, 2), folder / f"stranger{seed}.keras")
        paths["strangers"].append(path)
    keras.utils.clear_session()
    return paths


def test_fuse_recomputes_batchnorm_statistics_from_the_data(
    bn_models, tmp_path, digits
):
    _, (xt, _) = digits
    paths = bn_models["tunes"][:2]
    for method in ("uniform", "greedy"):
        out = tmp_path / f"{method}.keras"
        args = ["fuse", *paths, "--method", method, "--data", "digits", "-o", out]
        assert main([str(a) for a in args]) == 0
        soup = kh.load_model(out)
        norm = next(
            layer
            for layer in soup.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        )
        # the statistics of the --data images (the 450 test digits), by hand
        hidden = keras.Model(soup.inputs[0], soup.layers[3].output)
        features = hidden.predict(xt, verbose=0)
        np.testing.assert_allclose(norm.moving_mean, features.mean(0), atol=1e-4)
        np.testing.assert_allclose(norm.moving_variance, features.var(0), atol=1e-4)


def test_fuse_scores_inputs_after_the_same_recalibration(bn_models, tmp_path, capfd):
    # every figure printed is taken after batch-norm recalibration on --data,
    # with what recalibration alone gives; no TensorFlow retracing warnings
    out = tmp_path / "soup.keras"
    args = ["fuse", *bn_models["tunes"], "--data", "digits", "-o", str(out)]
    assert main(args) == 0
    captured = capfd.readouterr()
    assert "retracing" not in captured.err
    assert "warning" not in captured.err.lower()
    lines = captured.out.splitlines()
    for path, line in zip(bn_models["tunes"], lines, strict=False):
        assert line.startswith(f"{path}: accuracy ")
        assert "after batch-norm recalibration on --data (" in line
        assert line.endswith(" before)")
    assert lines[3].startswith("greedy soup by held-out accuracy")
    assert lines[3].endswith("after the same recalibration")
    assert "(batch-norm recalibration alone: " in lines[4]


def _assert_same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_fuse_merges_fine_tunes_through_their_task_vectors(
    bn_models, tmp_path, capsys, digits
):
    # the file the command writes is what kh.fusion.merge gives in Python
    _, (xt, _) = digits
    out = tmp_path / "ties.keras"
    tunes = bn_models["tunes"]
    args = ["fuse", *tunes, "--base", bn_models["base"], "--method", "ties"]
    args += ["--density", "0.5", "--data", "digits", "-o", out]
    assert main([str(a) for a in args]) == 0
    text = capsys.readouterr().out
    assert f"ties merge of 3 fine-tunes of {bn_models['base']}" in text
    expected = kh.fusion.merge(
        kh.load_model(bn_models["base"]),
        [kh.load_model(p) for p in tunes],
        "ties",
        density=0.5,
        recalibrate=xt,
    )
    _assert_same_weights(kh.load_model(out), expected)


def test_fuse_aligns_models_from_different_starts(bn_models, tmp_path, capsys, digits):
    _, (xt, _) = digits
    out = tmp_path / "aligned.keras"
    strangers = bn_models["strangers"]
    args = ["fuse", *strangers, "--method", "align", "--data", "digits", "-o", out]
    assert main([str(a) for a in args]) == 0
    captured = capsys.readouterr()
    assert "average of 2 models aligned by activations, repaired on --data" in (
        captured.out
    )
    assert "warning" not in captured.err  # aligned: no shared-start warning
    expected = kh.fusion.average_weights(
        [kh.load_model(p) for p in strangers], align=True, align_data=xt, repair=xt
    )
    _assert_same_weights(kh.load_model(out), expected)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "ties"], "--method ties merges fine-tunes of one base"),
        (["--method", "uniform", "--density", "0.5"], "--density applies to"),
        (["--method", "uniform", "--base", "x.keras"], "--base applies to"),
        (["--method", "dare", "--base", "BASE", "--density", "0.5"], "density"),
    ],
)
def test_fuse_merge_errors_are_one_line(bn_models, tmp_path, capsys, extra, message):
    out = tmp_path / "never.keras"
    extra = [bn_models["base"] if a == "BASE" else a for a in extra]
    args = ["fuse", *bn_models["tunes"][:2], *extra, "-o", out]
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_uniform_fuse_of_models_from_different_starts_warns(
    bn_models, models, tmp_path, capsys
):
    out = tmp_path / "uniform.keras"
    args = ["fuse", *bn_models["strangers"], "--method", "uniform", "-o", str(out)]
    assert main([*args, "--data", "digits"]) == 0
    err = capsys.readouterr().err
    assert "keras-harden fuse: warning: average_weights: models 0 and 1 do not" in err
    assert "kh.fusion.ensemble(models)" in err and err.count("\n") == 1
    # two models trained from one initialisation: no warning
    args = ["fuse", models["a"], models["b"], "--method", "uniform", "-o", str(out)]
    assert main([*args, "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_greedy_by_crossentropy(models, tmp_path, capsys):
    out = tmp_path / "soup.keras"
    args = ["fuse", models["a"], models["b"], "--data", "digits", "-o", str(out)]
    assert main([*args, "--metric", "crossentropy"]) == 0
    text = capsys.readouterr().out
    assert "greedy soup by held-out sparse_categorical_crossentropy" in text
    assert kh.load_model(out).output_shape == (None, 10)
    out.unlink()
    assert main([*args, "--method", "uniform", "--metric", "crossentropy"]) == 1
    assert "--metric applies to --method greedy, not uniform" in capsys.readouterr().err
    assert not out.exists()


def test_greedy_needs_data(models, tmp_path, capsys):
    code = main(["fuse", models["a"], models["b"], "-o", str(tmp_path / "s.keras")])
    assert code == 1
    assert "--method greedy needs --data" in capsys.readouterr().err


def test_diagnose_prints_a_report_and_plot(models, tmp_path, capsys):
    png = tmp_path / "report.png"
    code = main(
        [
            "diagnose",
            models["a"],
            "--data",
            "digits",
            "--steps",
            "2",
            "--plot",
            str(png),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "## Diagnosis: **healthy**" in text
    assert "(the model's compiled loss)" in text
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_diagnose_prints_the_prescription_when_unhealthy(tmp_path, capsys):
    # 8 ReLU layers, He init x1.5: exploding; the report ends with the
    # remedy kh.harden's search found, and the model it trained is saved
    init = keras.initializers.VarianceScaling(2.0 * 1.5**2, seed=0)
    layers = [keras.Input((8, 8, 1)), keras.layers.Flatten()]
    layers += [
        keras.layers.Dense(64, "relu", kernel_initializer=init) for _ in range(8)
    ]
    model = keras.Sequential([*layers, keras.layers.Dense(10)])
    path = kh.save_model(model, tmp_path / "exploding.keras")
    out = tmp_path / "hardened.keras"
    args = ["diagnose", path, "--data", "digits", "--steps", "3", "--save", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Diagnosis: **exploding**" in text
    assert "### Prescription" in text and "**Prescription:" in text
    assert "Successive halving over" in text and f"saved: {out}" in text
    assert kh.load_model(out).count_params() == model.count_params()


def test_diagnose_on_an_image_folder(models, tmp_path, capsys, digits):
    (x, y), _ = digits
    for label in (0, 1):
        folder = tmp_path / "images" / f"class_{label}"
        folder.mkdir(parents=True)
        for i, image in enumerate(x[y == label][:6]):
            keras.utils.save_img(folder / f"{i}.png", np.repeat(image, 3, -1))
    # "other" was saved uncompiled: the loss is chosen from its outputs
    code = main(
        [
            "diagnose",
            models["other"],
            "--data",
            str(tmp_path / "images"),
            "--steps",
            "1",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "## Diagnosis:" in text and "- batches: 1;" in text
    assert "sparse categorical cross-entropy on logits" in text


@pytest.mark.tf_only
def test_diagnose_refuses_a_savedmodel_folder(models, tmp_path, capsys):
    sm = str(tmp_path / "sm")
    assert main(["export", models["a"], sm]) == 0
    capsys.readouterr()
    assert main(["diagnose", sm, "--data", "digits"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-harden diagnose: error: ")
    assert "Diagnose the `.keras` file it was exported from" in err


def test_bad_data_argument(models, capsys):
    code = main(["diagnose", models["a"], "--data", "no-such-folder"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no-such-folder' is neither" in err


def test_export_writes_a_serving_savedmodel(models, tmp_path, capsys):
    code = main(["export", models["a"], str(tmp_path / "sm")])
    text = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    assert "max |serve(x) - model.predict(x)|" in text


def test_export_refuses_to_write_over_a_model_or_other_files(models, tmp_path, capsys):
    target = tmp_path / "b.keras"
    target.write_bytes(open(models["a"], "rb").read())
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    for out in (target, folder):
        for extra in ([], ["--overwrite"]):
            code = main(["export", models["a"], str(out), *extra])
            err = capsys.readouterr().err
            assert code == 1 and err.count("\n") == 1, err
            assert str(out) in err
    assert target.read_bytes() == open(models["a"], "rb").read()
    assert os.listdir(folder) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep"


def test_export_and_fuse_replace_only_with_overwrite(models, tmp_path, capsys):
    sm = tmp_path / "sm"
    assert main(["export", models["a"], str(sm)]) == 0
    assert main(["export", models["a"], str(sm)]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", models["a"], str(sm), "--overwrite"]) == 0
    out = tmp_path / "fused.keras"
    out.write_bytes(b"a model I trained")
    args = ["fuse", models["a"], models["b"], "--method", "uniform", "-o", str(out)]
    assert main(args) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"a model I trained"
    assert main([*args, "--overwrite"]) == 0
    assert kh.load_model(out).output.shape[-1] == 10


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fuse", "a.keras", "--method", "median", "-o", "x.keras"])
    assert info.value.code == 2
    assert "invalid choice: 'median'" in capsys.readouterr().err


def test_traceback_on_request(models, monkeypatch):
    monkeypatch.setenv("KERAS_HARDEN_TRACEBACK", "1")
    with pytest.raises(ValueError, match="corrupt.keras"):
        main(["diagnose", models["corrupt"], "--data", "digits"])


# -- robustness ----------------------------------------------------------------


@pytest.fixture(scope="module")
def robust_model(tmp_path_factory, digits):
    """A small digits classifier on inputs in [0, 1], trained 2 epochs."""
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x / 255, y, epochs=2, batch_size=64, verbose=0)
    path = kh.save_model(model, tmp_path_factory.mktemp("robust") / "mlp.keras")
    keras.utils.clear_session()
    return path


def test_robustness_attack_names_are_evaluate_s():
    from keras_harden.cli import _ATTACKS
    from keras_harden.robust.evaluate import ATTACKS, DEFAULT_ATTACKS

    assert set(_ATTACKS) == set(ATTACKS) == set(DEFAULT_ATTACKS)


def test_robustness_prints_and_writes_what_evaluate_reports(
    robust_model, tmp_path, capsys, digits
):
    from keras_harden.robust.evaluate import evaluate

    report_path, plot_path = tmp_path / "out" / "report.md", tmp_path / "curve.png"
    args = ["robustness", robust_model, "--data", "digits", "--eps", "0.1"]
    args += ["--attacks", "fgsm,pgd", "--no-corruptions", "--examples", "64"]
    args += ["--report", str(report_path), "--plot", str(plot_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    # the same evaluation in Python: the digits test split / 255, the first 64
    _, (xt, yt) = digits
    model = kh.load_model(robust_model)
    expected = evaluate(
        model,
        (xt / 255, yt),
        epsilons=[0.1],
        attacks=["fgsm", "pgd"],
        corruptions=(),
        max_examples=64,
        seed=0,
        verbose=0,
    ).to_markdown()
    assert captured.out == (
        f"{expected}\nreport: {report_path}\nplot: {plot_path}\n"
    ), captured.out
    assert report_path.read_text() == expected
    assert plot_path.read_bytes()[:4] == b"\x89PNG"
    # the clean accuracy it states, by hand
    clean = np.mean(np.argmax(model.predict(xt[:64] / 255, verbose=0), -1) == yt[:64])
    assert f"\nClean accuracy: {clean:.3f}\n" in expected
    # progress went to stderr, a line per attack run (stderr is no terminal)
    assert "] fgsm at eps 0.1: accuracy " in captured.err
    assert "] pgd at eps 0.1: accuracy " in captured.err
    assert "accuracy" not in captured.out.split("Clean accuracy")[0]
    # a second run refuses to write over the files unless asked
    assert main(args) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_robustness_on_an_npz_file_plots_beside_the_model(
    robust_model, tmp_path, capsys, digits
):
    _, (xt, yt) = digits
    model_path = tmp_path / "copy.keras"
    model_path.write_bytes(open(robust_model, "rb").read())
    data = tmp_path / "held_out.npz"
    np.savez(data, x=xt[:32] / 255, y=np.eye(10)[yt[:32]])  # one-hot labels
    args = ["robustness", str(model_path), "--data", str(data), "--eps", "0.05,0.1"]
    args += ["--attacks", "fgsm", "--no-corruptions", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no progress
    assert "# Robustness on 32 examples" in captured.out
    assert "| fgsm |" in captured.out and "eps 0.05 | eps 0.1 |" in captured.out
    png = tmp_path / "copy.robustness.png"
    assert captured.out.endswith(f"plot: {png}\n")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((4, 64), "float32"), "takes inputs of shape (None, 8, 8, 1)"),
        (np.full((4, 8, 8, 1), 255.0, "float32"), "outside --value-range 0,1"),
    ],
)
def test_robustness_data_that_does_not_fit(robust_model, tmp_path, capsys, x, message):
    data = tmp_path / "bad.npz"
    np.savez(data, x=x, y=np.zeros(4, "int32"))
    args = ["robustness", robust_model, "--data", str(data), "--eps", "0.1"]
    assert main([*args, "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-harden robustness: error:")
    assert message in err, err
