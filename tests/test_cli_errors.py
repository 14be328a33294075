"""The command line answers a bad path or value before Keras starts: one line
on stderr, `keras-harden <command>: error: ...`, exit status 1, and neither
Keras nor TensorFlow nor JAX imported. The cases run in one child Python
(this process has imported TensorFlow already), each through `main(argv)`;
the entry point itself runs with poisoned `keras`/`tensorflow`/`jax`
modules first on the path, which end the process if anything imports them."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from keras_harden import cli
from tests.toolkit import subprocess_env


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides conftest's: these tests make no Keras state to clear (and
    clearing a session costs more than most of them take)."""
    yield


ENTRY = os.path.join(os.path.dirname(sys.executable), "keras-harden")
BACKENDS = ("keras", "tensorflow", "jax")

# argv (with {placeholders} for the files made below) -> what the one line says
CASES = {
    # diagnose
    "missing model": (
        "diagnose {tmp}/missing.keras --data digits",
        "no model at '{tmp}/missing.keras'",
    ),
    "truncated model": (
        "diagnose {truncated} --data digits",
        "is not a Keras model file",
    ),
    "zip, not a model": ("diagnose {notes_zip} --data digits", "no config.json"),
    "folder, not a SavedModel": (
        "diagnose {tmp} --data digits",
        "folder without a saved_model.pb",
    ),
    "data neither digits nor a folder": (
        "diagnose {model} --data no-such-folder",
        "'no-such-folder' is neither",
    ),
    "steps 0": ("diagnose {model} --data digits --steps 0", "--steps must be at"),
    "epochs 0": ("diagnose {model} --data digits --epochs 0", "--epochs must be at"),
    "save, not .keras": (
        "diagnose {model} --data digits --save {tmp}/out.h5",
        "--save must name a .keras file",
    ),
    "save over a model": (
        "diagnose {model} --data digits --save {model}",
        "already exists; pass --overwrite",
    ),
    "plot on a folder": (
        "diagnose {model} --data digits --plot {tmp} --overwrite",
        "is a folder",
    ),
    "plot below a file": (
        "diagnose {model} --data digits --plot {truncated}/report.png",
        "is a file, not a folder",
    ),
    # fuse
    "fuse -o not .keras": (
        "fuse {model} {model} --method uniform -o {tmp}/out.txt",
        "-o must name a .keras file",
    ),
    "fuse -o exists": (
        "fuse {model} {model} --method uniform -o {model}",
        "already exists; pass --overwrite",
    ),
    "ties without a base": (
        "fuse {model} {model} --method ties -o {tmp}/o.keras",
        "--method ties merges fine-tunes of one base",
    ),
    "density for uniform": (
        "fuse {model} {model} --method uniform --density 0.5 -o {tmp}/o.keras",
        "--density applies to task-vector methods only",
    ),
    "density for dare": (
        "fuse {model} --base {model} --method dare --density 0.5 -o {tmp}/o.keras",
        "--density applies to --method ties, not dare",
    ),
    "density above 1": (
        "fuse {model} --base {model} --method ties --density 1.5 -o {tmp}/o.keras",
        "--density must be in (0, 1]; got 1.5",
    ),
    "drop rate 1": (
        "fuse {model} --base {model} --method dare --drop-rate 1 -o {tmp}/o.keras",
        "--drop-rate must be in [0, 1); got 1",
    ),
    "t is nan": (
        "fuse {model} {model} --base {model} --method slerp --t nan -o {tmp}/o.keras",
        "--t must be in [0, 1]; got nan",
    ),
    "scaling inf": (
        "fuse {model} --base {model} --method ties --scaling inf -o {tmp}/o.keras",
        "--scaling must be a finite number; got inf",
    ),
    "slerp of three": (
        "fuse {model} {model} {model} --base {model} --method slerp -o {tmp}/o.keras",
        "exactly two fine-tunes; got 3",
    ),
    "one model to average": (
        "fuse {model} --method uniform -o {tmp}/o.keras",
        "fuse needs at least two models",
    ),
    "greedy without data": (
        "fuse {model} {model} -o {tmp}/o.keras",
        "--method greedy needs --data",
    ),
    "metric for uniform": (
        "fuse {model} {model} --method uniform --metric accuracy -o {tmp}/o.keras",
        "--metric applies to --method greedy",
    ),
    "fuse a missing model": (
        "fuse {model} {tmp}/gone.keras --method uniform -o {tmp}/o.keras",
        "no model at '{tmp}/gone.keras'",
    ),
    # export
    "export a missing model": (
        "export {tmp}/missing.keras {tmp}/sm",
        "no model at '{tmp}/missing.keras'",
    ),
    "export over a file": (
        "export {model} {model} --overwrite",
        "is a file; export writes a SavedModel folder",
    ),
    "export into a folder of notes": (
        "export {model} {notes_dir} --overwrite",
        "holding files that are not a SavedModel (notes.txt)",
    ),
    "export over a SavedModel": (
        "export {model} {saved_model}",
        "already exists; pass --overwrite",
    ),
    # robustness
    "robustness, missing model": (
        "robustness {tmp}/missing.keras --data digits --eps 0.1",
        "no model at '{tmp}/missing.keras'",
    ),
    "robustness, missing npz": (
        "robustness {model} --data {tmp}/missing.npz --eps 0.1",
        "--data must be 'digits' or a .npz file",
    ),
    "robustness, npz not a zip": (
        "robustness {model} --data {truncated} --eps 0.1",
        "is not a .npz file",
    ),
    "robustness, npz without y": (
        "robustness {model} --data {x_only} --eps 0.1",
        "lacks the array y",
    ),
    "eps not numbers": (
        "robustness {model} --data digits --eps 0.1,abc",
        "--eps takes finite numbers separated by commas; got '0.1,abc'",
    ),
    "eps with an empty item": (
        "robustness {model} --data digits --eps 0.1,",
        "--eps takes finite numbers",
    ),
    "eps 0": (
        "robustness {model} --data digits --eps 0,0.1",
        "--eps takes radii > 0; got '0,0.1'",
    ),
    "eps nan": ("robustness {model} --data digits --eps nan", "--eps takes finite"),
    "value range reversed": (
        "robustness {model} --data digits --eps 0.1 --value-range 1,0",
        "LOW < HIGH; got '1,0'",
    ),
    "value range of one number": (
        "robustness {model} --data digits --eps 0.1 --value-range 1",
        "--value-range takes 2 numbers; got '1'",
    ),
    "unknown attack": (
        "robustness {model} --data digits --eps 0.1 --attacks fgsm,cw",
        "--attacks takes names from fgsm,pgd,apgd-ce,apgd-dlr,square",
    ),
    "examples 0": (
        "robustness {model} --data digits --eps 0.1 --examples 0",
        "--examples must be at least 1; got 0",
    ),
    "batch size 0": (
        "robustness {model} --data digits --eps 0.1 --batch-size 0",
        "--batch-size must be at least 1",
    ),
    "seed -1": (
        "robustness {model} --data digits --eps 0.1 --seed -1",
        "--seed must be at least 0; got -1",
    ),
    "report on a folder": (
        "robustness {model} --data digits --eps 0.1 --report {tmp} --no-plot",
        "--report '{tmp}' is a folder",
    ),
    "plot exists": (
        "robustness {model} --data digits --eps 0.1 --plot {truncated}",
        "already exists; pass --overwrite",
    ),
    "default plot exists": (
        "robustness {plotted_model} --data digits --eps 0.1",
        "(the default --plot) already exists",
    ),
    "plot and no-plot": (
        "robustness {model} --data digits --eps 0.1 --plot {tmp}/p.png --no-plot",
        "--plot and --no-plot exclude each other",
    ),
    # demo
    "demo into a file": ("demo --out {truncated}", "--out '{truncated}' is a file"),
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


def _write_model_like(path):
    """A zip holding `config.json`: passes the checks made before Keras."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    truncated = tmp / "truncated.keras"
    truncated.write_bytes(b"PK\x03\x04 not a whole archive")
    notes_zip = tmp / "notes.keras"
    with zipfile.ZipFile(notes_zip, "w") as archive:
        archive.writestr("notes.txt", "hello")
    notes_dir = tmp / "notes"
    notes_dir.mkdir()
    (notes_dir / "notes.txt").write_text("keep")
    saved_model = tmp / "sm"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"")
    x_only = tmp / "x_only.npz"
    np.savez(x_only, x=np.zeros((2, 8, 8, 1), "float32"))
    plotted = tmp / "plotted" / "m.keras"
    plotted.parent.mkdir()
    _write_model_like(plotted)
    (tmp / "plotted" / "m.robustness.png").write_bytes(b"an earlier plot")
    return {
        "tmp": str(tmp),
        "model": _write_model_like(tmp / "model.keras"),
        "truncated": str(truncated),
        "notes_zip": str(notes_zip),
        "notes_dir": str(notes_dir),
        "saved_model": str(saved_model),
        "x_only": str(x_only),
        "plotted_model": str(plotted),
    }


@pytest.fixture(scope="module")
def results(files):
    argvs = {name: argv.format(**files).split() for name, (argv, _) in CASES.items()}
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_exit_1_before_keras(case, results, files):
    argv, message = CASES[case]
    code, out, err, imported = results[case]
    command = argv.split()[0]
    assert code == 1 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"keras-harden {command}: error: "), err
    assert message.format(**files) in err, err
    assert imported == [], f"imported {imported} before answering"


def test_nothing_is_written_by_a_refused_command(results, files):
    # the runs above refused, so the files they name are as they were made
    tmp = files["tmp"]
    assert sorted(os.listdir(files["notes_dir"])) == ["notes.txt"]
    assert not os.path.exists(os.path.join(tmp, "o.keras"))
    assert not os.path.exists(os.path.join(tmp, "model.robustness.png"))
    with open(os.path.join(tmp, "plotted", "m.robustness.png"), "rb") as f:
        assert f.read() == b"an earlier plot"


POISON = "raise SystemExit('keras-harden imported {name}')\n"


@pytest.fixture(scope="module")
def poisoned_env(tmp_path_factory):
    """This environment with modules `keras`, `tensorflow` and `jax` first on
    the path that end the process on import."""
    folder = tmp_path_factory.mktemp("poison")
    for name in BACKENDS:
        (folder / f"{name}.py").write_text(POISON.format(name=name))
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    return env


@pytest.mark.parametrize("module", [False, True], ids=["entry point", "python -m"])
def test_the_entry_point_answers_without_keras(files, poisoned_env, module):
    command = [sys.executable, "-m", "keras_harden"] if module else [ENTRY]
    argv = ["robustness", files["model"], "--data", "digits", "--eps", "0.1,x"]
    run = subprocess.run(
        command + argv, capture_output=True, text=True, env=poisoned_env, timeout=60
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (
        "keras-harden robustness: error: --eps takes finite numbers separated "
        "by commas; got '0.1,x'\n"
    )


def test_the_poison_works(files, poisoned_env):
    # valid arguments: Keras is imported next, and the poisoned one says so
    argv = ["diagnose", files["model"], "--data", "digits"]
    run = subprocess.run(
        [ENTRY, *argv], capture_output=True, text=True, env=poisoned_env, timeout=60
    )
    assert run.returncode == 1
    assert "keras-harden imported keras" in run.stderr


def test_usage_errors_stay_argparse_s(capsys):
    # a missing option is a usage error: exit 2, with the usage
    with pytest.raises(SystemExit) as info:
        cli.main(["robustness", "m.keras", "--data", "digits", "--epsilon", "0.1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: keras-harden robustness")
    assert "the following arguments are required: --eps" in err


EXPORT_TARGETS = ["new", "empty", "file", "notes", "saved_model", "saved_model+notes"]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", EXPORT_TARGETS)
def test_export_folder_check_agrees_with_the_library(tmp_path, kind, overwrite):
    # the check made before Keras refuses exactly what kh.saving's does
    from keras_harden.saving import check_export_target

    path = tmp_path / "target"
    if kind == "file":
        path.write_text("x")
    elif kind != "new":
        path.mkdir()
    if kind.startswith("saved_model"):
        (path / "saved_model.pb").write_bytes(b"")
        (path / "variables").mkdir()
    if kind.endswith("notes"):
        (path / "notes.txt").write_text("keep")
    try:
        check_export_target(str(path), overwrite)
        library = None
    except ValueError as error:
        library = str(error)
    try:
        cli._check_export_folder(str(path), overwrite)
        ours = None
    except cli.CommandError as error:
        ours = str(error)
    assert (ours is None) == (library is None), (ours, library)
    # by hand: only a new or empty folder, or a SavedModel with --overwrite
    allowed = kind in ("new", "empty") or (kind == "saved_model" and overwrite)
    assert (ours is None) == allowed


def test_the_merge_options_are_the_library_s():
    import importlib

    merge = importlib.import_module("keras_harden.fusion.merge")
    assert cli._MERGE_ARGUMENTS == merge.ARGUMENTS
    assert set(cli._MERGE_METHODS) == set(merge.ARGUMENTS)


@pytest.mark.parametrize(
    "model, plot",
    [
        ("runs/m.keras", "runs/m.robustness.png"),
        ("m.keras", "m.robustness.png"),
        ("exported/sm/", "exported/sm.robustness.png"),
        ("weights.h5", "weights.h5.robustness.png"),
    ],
)
def test_default_plot_beside_the_model(model, plot):
    assert cli._default_plot(model) == plot


def test_error_lines_are_one_line():
    # a message holding newlines (a library error) is printed on one line
    assert cli._one_line(ValueError("first\n  second\tthird")) == ("first second third")
    assert cli._one_line(KeyError()) == "KeyError"
