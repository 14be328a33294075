"""`keras-harden audit`: the report of `kh.privacy.audit` on stdout, the JSON
and the plot written, and every argument error answered in one line before
Keras starts."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from keras_harden.cli import main
from keras_harden.data import load_digits
from keras_harden.privacy.audit import audit
from keras_harden.privacy.audit_report import AuditReport
from keras_harden.saving import save_model
from tests.toolkit import subprocess_env

N = 200


def _mlp(outputs=None):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation=outputs),
        ]
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A digits MLP (logits, compiled) overfit to 200 examples, saved with
    and without its compile settings, and the members and non-members as
    `.npz` files (non-members with one-hot labels)."""
    tmp = tmp_path_factory.mktemp("audit_cli")
    (x, y), (xt, yt) = load_digits()
    xm, ym, xn, yn = x[:N] / 255, y[:N], xt[:N] / 255, yt[:N]
    keras.utils.set_random_seed(0)
    model = _mlp()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(np.tile(xm, (10, 1, 1, 1)), np.tile(ym, 10), epochs=3, verbose=0)
    compiled = save_model(model, tmp / "mlp.keras")
    bare = _mlp()
    bare.set_weights(model.get_weights())
    uncompiled = save_model(bare, tmp / "bare.keras")
    np.savez(tmp / "members.npz", x=xm, y=ym)
    np.savez(tmp / "non_members.npz", x=xn, y=np.eye(10)[yn])
    np.savez(tmp / "flat.npz", x=xn.reshape(N, 64), y=yn)
    np.savez(tmp / "x_only.npz", x=xn)
    (tmp / "notes.npz").write_text("not a zip")
    (tmp / "taken.json").write_text("{}")
    keras.utils.clear_session()
    return {
        "tmp": str(tmp),
        "model": compiled,
        "bare": uncompiled,
        "members": str(tmp / "members.npz"),
        "non_members": str(tmp / "non_members.npz"),
        "flat": str(tmp / "flat.npz"),
        "x_only": str(tmp / "x_only.npz"),
        "notes": str(tmp / "notes.npz"),
        "taken": str(tmp / "taken.json"),
        "x": (xm, ym, xn, yn),
    }


def _argv(files, *more, model="model"):
    return [
        "audit",
        files[model],
        "--members",
        files["members"],
        "--non-members",
        files["non_members"],
        *more,
    ]


def test_prints_writes_and_agrees_with_the_library(files, tmp_path, capsys):
    json_path, plot_path = tmp_path / "out" / "audit.json", tmp_path / "roc.png"
    assert main(_argv(files, "--json", str(json_path), "--plot", str(plot_path))) == 0
    captured = capsys.readouterr()
    xm, ym, xn, yn = files["x"]
    from keras_harden.saving import load_model

    expected = audit(load_model(files["model"]), (xm, ym), (xn, yn)).to_markdown()
    assert captured.out == f"{expected}\njson: {json_path}\nplot: {plot_path}\n"
    assert "| loss |" in expected and "lira" not in expected
    # 200 non-members: one warning (0.1%), as one line on stderr too
    assert captured.err.startswith("keras-harden audit: warning: Only 200 non-members")
    assert captured.err.count("\n") == 1
    report = AuditReport.load(json_path)
    assert report.to_markdown() == expected and report.n_non_members == N
    assert plot_path.read_bytes()[:4] == b"\x89PNG"
    # a second run refuses to write over them
    assert main(_argv(files, "--json", str(json_path))) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(_argv(files, "--json", str(json_path), "--overwrite")) == 0


def test_lira_with_two_shadows(files, capsys):
    argv = _argv(files, "--attack", "loss", "lira", "--shadow-models", "2")
    assert main([*argv, "--shadow-epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert "| loss |" in captured.out and "| lira (2 shadows) |" in captured.out
    # progress on stderr, a line per shadow
    assert "LiRA shadow 1/2: trained on " in captured.err
    assert "LiRA shadow 2/2: trained on " in captured.err
    assert "LiRA" not in captured.out


def test_outputs_of_a_model_saved_without_its_loss(files, capsys):
    assert main(_argv(files, model="bare")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-harden audit: error: ")
    assert "pass --outputs logits or --outputs probabilities" in err
    assert main(_argv(files, "--outputs", "logits", "--quiet", model="bare")) == 0
    assert "| loss |" in capsys.readouterr().out
    argv = _argv(files, "--outputs", "logits", "--attack", "lira", model="bare")
    assert main(argv) == 1
    assert "holds no compile settings" in capsys.readouterr().err


def test_data_that_does_not_fit(files, capsys):
    argv = ["audit", files["model"], "--members", files["flat"]]
    assert main([*argv, "--non-members", files["non_members"]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "takes inputs of shape (None, 8, 8, 1)" in err and "(200, 64)" in err


def test_an_unknown_attack_is_a_usage_error(files, capsys):
    with pytest.raises(SystemExit) as info:
        main(_argv(files, "--attack", "shadow"))
    assert info.value.code == 2
    assert "invalid choice: 'shadow'" in capsys.readouterr().err


# -- argument errors, answered before Keras --------------------------------------

CASES = {
    "missing model": ("audit {tmp}/gone.keras {data}", "no model at"),
    "missing members": (
        "audit {model} --members {tmp}/gone.npz --non-members {non_members}",
        "--members '{tmp}/gone.npz': no such file",
    ),
    "non-members not a zip": (
        "audit {model} --members {members} --non-members {notes}",
        "--non-members '{notes}' is not a .npz file",
    ),
    "members without y": (
        "audit {model} --members {x_only} --non-members {non_members}",
        "lacks the array y",
    ),
    "shadow models without lira": (
        "audit {model} {data} --shadow-models 8",
        "--shadow-models applies to --attack lira only",
    ),
    "shadow epochs without lira": (
        "audit {model} {data} --attack loss --shadow-epochs 3",
        "--shadow-epochs applies to --attack lira only",
    ),
    "one shadow": (
        "audit {model} {data} --attack lira --shadow-models 1",
        "--shadow-models must be at least 2; got 1",
    ),
    "zero shadow epochs": (
        "audit {model} {data} --attack lira --shadow-epochs 0",
        "--shadow-epochs must be at least 1; got 0",
    ),
    "batch size 0": ("audit {model} {data} --batch-size 0", "--batch-size must be"),
    "seed -1": ("audit {model} {data} --seed -1", "--seed must be at least 0"),
    "json not .json": (
        "audit {model} {data} --json {tmp}/out.txt",
        "--json must name a .json file",
    ),
    "json exists": ("audit {model} {data} --json {taken}", "already exists"),
    "plot on a folder": ("audit {model} {data} --plot {tmp}", "is a folder"),
    "plot and json one file": (
        "audit {model} {data} --json {tmp}/a.json --plot {tmp}/a.json",
        "--plot and --json both name",
    ),
}

RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from keras_harden.cli import main

    results = {}
    for name, argv in json.loads(sys.argv[1]).items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        imported = [m for m in ("keras", "tensorflow", "jax") if m in sys.modules]
        results[name] = [code, out.getvalue(), err.getvalue(), imported]
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def results(files):
    names = {k: v for k, v in files.items() if isinstance(v, str)}
    names["data"] = f"--members {files['members']} --non-members {files['non_members']}"
    argvs = {case: argv.format(**names).split() for case, (argv, _) in CASES.items()}
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return names, json.loads(run.stdout)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_exit_1_before_keras(case, results):
    names, found = results
    code, out, err, imported = found[case]
    assert code == 1 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("keras-harden audit: error: "), err
    assert CASES[case][1].format(**names) in err, err
    assert imported == [], f"imported {imported} before answering"


def test_refused_runs_wrote_nothing(results, files):
    names, _ = results
    with open(files["taken"]) as f:
        assert f.read() == "{}"
    assert zipfile.is_zipfile(files["members"])
    assert not os.path.exists(os.path.join(names["tmp"], "a.json"))
    assert not os.path.exists(os.path.join(names["tmp"], "out.txt"))
