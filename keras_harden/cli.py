"""The `keras-harden` command line.

    keras-harden demo [--out saved_models/] [--quick]
    keras-harden diagnose MODEL.keras --data digits|DIR [--steps N] [--plot PNG]
                 [--prescribe] [--epochs N] [--save OUT.keras] [--overwrite]
    keras-harden fuse A.keras B.keras ... --method uniform|greedy|ensemble|align
                 [--data digits|DIR] [--metric accuracy|crossentropy] -o OUT.keras
                 [--overwrite]
    keras-harden fuse TUNE.keras ... --base BASE.keras
                 --method task_arithmetic|ties|dare|dare_ties|slerp
                 [--scaling S] [--density D] [--drop-rate P] [--seed N] [--t T]
                 [--data digits|DIR] -o OUT.keras [--overwrite]
    keras-harden export MODEL.keras OUT_DIR [--overwrite]
    keras-harden robustness MODEL.keras --data digits|DATA.npz --eps E1,E2,...
                 [--norm linf|l2] [--attacks fgsm,pgd,apgd-ce,apgd-dlr,square]
                 [--no-corruptions] [--examples N] [--value-range LOW,HIGH]
                 [--seed N] [--batch-size N] [--report OUT.md]
                 [--plot OUT.png | --no-plot] [--quiet] [--overwrite]
    keras-harden audit MODEL.keras --members M.npz --non-members N.npz
                 [--attack loss|lira ...] [--shadow-models N --shadow-epochs E]
                 [--outputs logits|probabilities] [--seed N] [--batch-size N]
                 [--plot ROC.png] [--json OUT.json] [--quiet] [--overwrite]

Nothing is written over by surprise: an existing output needs `--overwrite`,
and a file is never replaced by a folder, nor a folder's other files deleted.

Every path and value is checked before Keras is imported (with the standard
library only), so a mistake is answered at once, before TensorFlow or JAX
starts. Errors (a missing or unreadable file, a value out of range, models
that cannot be fused, data that does not fit the model) print one line,
`keras-harden <command>: error: ...`, on stderr and exit with status 1; usage
errors (an unknown option, a missing argument, a choice not offered) are
argparse's and exit with status 2. Set `KERAS_HARDEN_TRACEBACK=1` to see the
full traceback instead. Our warnings (models that do not seem to share a
start, signs of gradient masking, ...) are one line each,
`keras-harden <command>: warning: ...`.
"""

import argparse
import contextlib
import importlib.util
import math
import os
import sys
import warnings
import zipfile

__all__ = ["main"]


class CommandError(ValueError):
    """An error the user can fix; printed as one line."""


# -- checks before Keras starts (standard library only) -----------------------


def _check_model(path):
    """A `.keras` file (a zip archive holding `config.json`) or a SavedModel
    folder at `path`."""
    if not os.path.exists(path):
        raise CommandError(f"no model at {path!r}")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise CommandError(
                f"{path!r} is a folder without a saved_model.pb: neither a "
                ".keras file nor a SavedModel"
            )
        return path
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"{path!r} is not a Keras model file (a .keras file is a zip "
            "archive; this one is truncated or of another format)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise CommandError(f"cannot read {path!r}: {error}") from None
    if "config.json" not in names:
        raise CommandError(
            f"{path!r} is a zip archive but not a Keras model file (no "
            "config.json inside)"
        )
    return path


def _check_image_data(spec):
    """`--data` of diagnose and fuse: "digits" or a folder."""
    if spec != "digits" and not os.path.isdir(spec):
        raise CommandError(
            f"--data must be 'digits' or a folder of class sub-folders; "
            f"{spec!r} is neither"
        )


def _check_writable(path, flag):
    """The nearest existing folder above `path` is a folder we may write in
    (the missing ones in between are created when the file is written)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CommandError(f"{flag} {path!r}: {parent!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {path!r}: cannot write in {parent!r}")


def _check_output_file(path, flag, overwrite, suffix=None):
    """An output file: the right extension, not a folder, new unless
    `--overwrite`, in a folder we may write in."""
    if suffix and not path.endswith(suffix):
        raise CommandError(f"{flag} must name a {suffix} file; got {path!r}")
    if os.path.isdir(path):
        raise CommandError(
            f"{flag} {path!r} is a folder; a file is never replaced by a folder "
            "nor a folder by a file"
        )
    if os.path.lexists(path) and not overwrite:
        raise CommandError(f"{path!r} already exists; pass --overwrite to replace it")
    _check_writable(path, flag)


# What a TensorFlow SavedModel folder holds (as `keras_harden.saving` counts it)
_SAVED_MODEL_ENTRIES = {
    "saved_model.pb",
    "saved_model.pbtxt",
    "fingerprint.pb",
    "keras_metadata.pb",
    "variables",
    "assets",
}


def _check_export_folder(path, overwrite):
    """OUT_DIR of export: new, an empty folder, or (with `--overwrite`) an
    earlier SavedModel and nothing else; the rule of
    `keras_harden.saving.check_export_target`, without importing Keras."""
    path = path.rstrip("/") or path
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise CommandError(
                f"{path!r} is a file; export writes a SavedModel folder and never "
                "replaces a file"
            )
        entries = sorted(os.listdir(path))
        if entries:
            foreign = [e for e in entries if e not in _SAVED_MODEL_ENTRIES]
            if foreign or "saved_model.pb" not in entries:
                shown = ", ".join(foreign[:5] or entries[:5])
                raise CommandError(
                    f"{path!r} is a folder holding files that are not a SavedModel "
                    f"({shown}); export never deletes them"
                )
            if not overwrite:
                raise CommandError(
                    f"{path!r} already exists; pass --overwrite to replace it"
                )
    _check_writable(path, "OUT_DIR")


def _check_at_least(value, flag, minimum=1):
    if value is not None and value < minimum:
        raise CommandError(f"{flag} must be at least {minimum}; got {value}")


def _check_interval(value, flag, low, high, low_open=False, high_open=False):
    """A finite number in the interval (argparse's `float` takes "nan")."""
    if value is None:
        return
    inside = math.isfinite(value)
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        if low is None:
            where = "a finite number"
        else:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            where = f"in {left}{low:g}, {high:g}{right}"
        raise CommandError(f"{flag} must be {where}; got {value:g}")


def _numbers(text, flag, count=None):
    """Finite numbers separated by commas."""
    items = [item.strip() for item in text.split(",")]
    try:
        values = [float(item) for item in items]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise CommandError(
            f"{flag} takes finite numbers separated by commas; got {text!r}"
        )
    if count is not None and len(values) != count:
        raise CommandError(f"{flag} takes {count} numbers; got {text!r}")
    return values


def _check_plotting(flag):
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(f"{flag} needs matplotlib: pip install matplotlib")


# -- running (Keras imported) --------------------------------------------------


@contextlib.contextmanager
def _console(command):
    """Quiet TensorFlow (start-up notes; the retracing warnings that scoring
    many small models causes), and our own warnings as one line each,
    `keras-harden <command>: warning: ...`, on stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    logger = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        if logger is not None:
            logger.setLevel(level)
        for w in caught:
            if os.path.abspath(w.filename).startswith(package):
                _warn(command, w.message)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _warn(command, message):
    print(f"keras-harden {command}: warning: {_one_line(message)}", file=sys.stderr)


def _load(path):
    import keras_harden as kh

    _check_model(path)
    return kh.load_model(path)


def _image_shape(model, path):
    shape = tuple(model.input_shape) if hasattr(model, "input_shape") else ()
    if shape and isinstance(shape[0], tuple):
        raise CommandError(f"{path!r} has several inputs; image data needs one")
    if len(shape) != 4 or shape[-1] not in (1, 3) or None in shape[1:]:
        raise CommandError(
            f"{path!r} takes inputs of shape {shape}; --data needs an image "
            "model with inputs (height, width, 1 or 3)"
        )
    return shape[1], shape[2], shape[3]


def _digits(model, path, split):
    """The digits split, sized for `model`'s inputs, in [0, 255]."""
    import keras_harden as kh

    height, width, channels = _image_shape(model, path)
    if height != width or height % 8:
        raise CommandError(
            f"{path!r} takes {height}x{width} images; the digits data comes "
            "in square sizes that are multiples of 8"
        )
    train, test = kh.data.load_digits(image_size=height, channels=channels)
    return train if split == "train" else test


def _load_data(spec, model, path, split="test"):
    """`(x, y)` arrays fitting `model`'s input, from "digits" or a folder."""
    import numpy as np

    import keras_harden as kh

    if spec == "digits":
        return _digits(model, path, split)
    height, width, channels = _image_shape(model, path)
    dataset = kh.data.image_folder(spec, image_size=(height, width), batch_size=64)
    xs, ys = [], []
    for x, y in dataset:
        x = np.asarray(x, dtype="float32")
        if channels == 1 and x.shape[-1] == 3:
            x = x @ np.array([0.299, 0.587, 0.114], dtype="float32")[:, None]
        xs.append(x)
        ys.append(np.asarray(y))
    if not xs:
        raise CommandError(f"no images found under {spec!r}")
    return np.concatenate(xs), np.concatenate(ys)


def _accuracy(model, x, y):
    import numpy as np

    predictions = model.predict(x, verbose=0, batch_size=256)
    if isinstance(predictions, dict):
        predictions = next(iter(predictions.values()))
    return float(np.mean(np.argmax(predictions, axis=-1) == np.asarray(y)))


def _outputs_logits(model, x):
    """Whether `model`'s outputs are logits (not rows of probabilities)."""
    from keras_harden._outputs import looks_like_probabilities

    return not looks_like_probabilities(model.predict(x[:32], verbose=0))


# -- diagnose ------------------------------------------------------------------


def _check_diagnose(args):
    _check_model(args.model)
    _check_image_data(args.data)
    _check_at_least(args.steps, "--steps")
    _check_at_least(args.epochs, "--epochs")
    if args.plot:
        _check_output_file(args.plot, "--plot", args.overwrite)
        _check_plotting("--plot")
    if args.save:
        _check_output_file(args.save, "--save", args.overwrite, suffix=".keras")


def _cmd_diagnose(args):
    import keras

    import keras_harden as kh

    model = _load(args.model)
    x, y = _load_data(args.data, model, args.model, split="train")
    report = kh.diagnostics.diagnose(model, (x, y), steps=args.steps)
    print(f"# {args.model} on {args.data} ({report.loss_name})\n")
    print(report.to_markdown())
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    if report.verdict != "healthy" or args.prescribe:
        # the concrete remedy, found by kh.harden's search on the loaded model
        compiled = getattr(model, "optimizer", None)
        optimizer = (
            compiled
            if compiled is not None
            else keras.optimizers.SGD(0.01, momentum=0.9)
        )
        loss = getattr(
            model, "loss", None
        ) or keras.losses.SparseCategoricalCrossentropy(
            from_logits=_outputs_logits(model, x)
        )
        rx = kh.harden(model, (x, y), optimizer, loss, epochs=args.epochs, verbose=0)
        print("\n### Prescription\n")
        print(rx.to_markdown())
        if args.save:
            saved = kh.save_model(rx.model, args.save, overwrite=args.overwrite)
            print(f"saved: {saved}")
    return 0


# -- fuse ----------------------------------------------------------------------

_MERGE_METHODS = ("task_arithmetic", "ties", "dare", "dare_ties", "slerp")
_MERGE_OPTIONS = ("scaling", "density", "drop_rate", "seed", "t")
# the options each task-vector method reads (`kh.fusion.merge`'s rule)
_MERGE_ARGUMENTS = {
    "task_arithmetic": {"scaling"},
    "ties": {"scaling", "density"},
    "dare": {"scaling", "drop_rate", "seed"},
    "dare_ties": {"scaling", "drop_rate", "seed"},
    "slerp": {"t"},
}


def _flag(option):
    return "--" + option.replace("_", "-")


def _check_fuse(args):
    _check_output_file(args.output, "-o", args.overwrite, suffix=".keras")
    merging = args.method in _MERGE_METHODS
    if merging and not args.base:
        raise CommandError(
            f"--method {args.method} merges fine-tunes of one base: give the "
            "base with --base BASE.keras"
        )
    if args.base and not merging:
        raise CommandError(f"--base applies to task-vector methods, not {args.method}")
    for option in _MERGE_OPTIONS:
        if getattr(args, option) is None:
            continue
        if not merging:
            raise CommandError(f"{_flag(option)} applies to task-vector methods only")
        if option not in _MERGE_ARGUMENTS[args.method]:
            users = [m for m in _MERGE_METHODS if option in _MERGE_ARGUMENTS[m]]
            raise CommandError(
                f"{_flag(option)} applies to --method {' / '.join(users)}, not "
                f"{args.method}"
            )
    _check_interval(args.scaling, "--scaling", None, None)
    _check_interval(args.density, "--density", 0, 1, low_open=True)
    _check_interval(args.drop_rate, "--drop-rate", 0, 1, high_open=True)
    _check_interval(args.t, "--t", 0, 1)
    if len(args.models) < (1 if merging else 2):
        raise CommandError("fuse needs at least two models")
    if args.method == "slerp" and len(args.models) != 2:
        raise CommandError(
            f"--method slerp interpolates between exactly two fine-tunes; got "
            f"{len(args.models)}"
        )
    for path in args.models + ([args.base] if args.base else []):
        _check_model(path)
    if args.data:
        _check_image_data(args.data)
    if args.method == "greedy" and not args.data:
        raise CommandError("--method greedy needs --data (held-out images to score)")
    if args.metric and args.method != "greedy":
        raise CommandError(f"--metric applies to --method greedy, not {args.method}")


def _cmd_fuse(args):
    import keras

    import keras_harden as kh

    # the library's own check of the target too (symbolic links, races)
    _check_target(kh.saving.check_save_target, args.output, args.overwrite)
    merging = args.method in _MERGE_METHODS
    models = [_load(path) for path in args.models]
    data = _load_data(args.data, models[0], args.models[0]) if args.data else None
    if args.method != "ensemble":
        kh.fusion.check_compatible(models)
    # batch-norm statistics of averaged weights are recomputed from --data
    recalibrate = data[0] if data is not None else None
    if args.method == "uniform":
        fused = kh.fusion.average_weights(models, recalibrate=recalibrate)
        detail = f"uniform soup of {len(models)} models"
    elif args.method == "align":
        # activation matching and REPAIR need inputs; without --data the
        # models are aligned by their weights and averaged as they are
        fused = kh.fusion.average_weights(
            models, align=True, align_data=recalibrate, repair=recalibrate
        )
        how = "activations" if data is not None else "weights"
        detail = f"average of {len(models)} models aligned by {how}"
        if data is not None:
            detail += ", repaired on --data"
    elif merging:
        base = _load(args.base)
        options = {
            name: getattr(args, name)
            for name in _MERGE_OPTIONS
            if getattr(args, name) is not None
        }
        fused = kh.fusion.merge(
            base, models, args.method, recalibrate=recalibrate, **options
        )
        detail = f"{args.method} merge of {len(models)} fine-tunes of {args.base}"
    elif args.method == "greedy":
        if args.metric == "crossentropy":
            metric = keras.metrics.SparseCategoricalCrossentropy(
                from_logits=_outputs_logits(models[0], data[0])
            )
        else:
            metric = "accuracy"
        fused, report = kh.fusion.greedy_soup(
            models,
            data,
            metric=metric,
            recalibrate=recalibrate,
            higher_is_better=args.metric != "crossentropy",
        )
        detail = (
            f"greedy soup by held-out {report.metric}, keeping models {report.kept}"
        )
    else:
        fused = kh.fusion.ensemble(models, method="average")
        detail = f"output-averaging ensemble of {len(models)} models"
    if data is not None:
        _print_scores(args, models, fused, detail, data)
    else:
        print(detail)
    kh.save_model(fused, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}")
    return 0


def _print_scores(args, models, fused, detail, data):
    """Each input's accuracy on --data, and the result's. Where the result's
    batch-norm statistics were recomputed from --data, the inputs' are scored
    that way too, and the gain recalibration alone gives is stated."""
    import keras_harden as kh
    from keras_harden.fusion._common import batchnorm_layers

    x, y = data
    raw = [_accuracy(model, x, y) for model in models]
    recalibrated = args.method != "ensemble" and bool(batchnorm_layers(models[0]))
    if not recalibrated:
        for path, score in zip(args.models, raw, strict=True):
            print(f"{path}: accuracy {score:.4f}")
        print(f"{detail}: accuracy {_accuracy(fused, x, y):.4f}")
        return
    alone = [
        _accuracy(kh.fusion.average_weights([model], recalibrate=x), x, y)
        for model in models
    ]
    for path, before, after in zip(args.models, raw, alone, strict=True):
        print(
            f"{path}: accuracy {after:.4f} after batch-norm recalibration on "
            f"--data ({before:.4f} before)"
        )
    result = _accuracy(fused, x, y)
    print(f"{detail}: accuracy {result:.4f} after the same recalibration")
    print(
        f"change over the best input: {result - max(raw):+.4f} (batch-norm "
        f"recalibration alone: {max(alone) - max(raw):+.4f})"
    )


# -- export --------------------------------------------------------------------


def _check_target(check, path, overwrite):
    """The library's check of an output path, as one line."""
    try:
        check(path, overwrite)
    except ValueError as error:
        if not overwrite and "overwrite=True" in str(error):
            raise CommandError(
                f"{path!r} already exists; pass --overwrite to replace it"
            ) from None
        raise CommandError(str(error)) from None


def _check_export(args):
    _check_model(args.model)
    _check_export_folder(args.out_dir, args.overwrite)


def _cmd_export(args):
    import numpy as np

    import keras_harden as kh

    _check_target(kh.saving.check_export_target, args.out_dir, args.overwrite)
    model = _load(args.model)
    path = kh.export(model, args.out_dir, overwrite=args.overwrite)
    shape = [d or 2 for d in model.input_shape[1:]]
    x = np.random.default_rng(0).uniform(0, 255, size=[2, *shape]).astype("float32")
    diff = float(np.max(np.abs(kh.saving.serve(path, x) - model.predict(x, verbose=0))))
    print(f"wrote SavedModel {path} (serve = model(x, training=False))")
    print(f"reloaded: max |serve(x) - model.predict(x)| = {diff:.2e}")
    if not diff <= 1e-4:
        raise CommandError(f"exported model disagrees with {args.model!r} ({diff:.2e})")
    return 0


# -- robustness ----------------------------------------------------------------

# `keras_harden.robust.evaluate.ATTACKS`, named here so that a wrong name is
# answered before Keras starts (a test keeps the two lists equal)
_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square")


def _default_plot(model):
    """`robustness.png` beside the model, named after it: `m.keras` ->
    `m.robustness.png`, SavedModel folder `sm/` -> `sm.robustness.png`."""
    stem = model.rstrip("/") or model
    if stem.endswith(".keras"):
        stem = stem[: -len(".keras")]
    return stem + ".robustness.png"


def _check_robustness(args):
    _check_model(args.model)
    if args.data != "digits":
        if not os.path.isfile(args.data):
            raise CommandError(
                f"--data must be 'digits' or a .npz file with arrays x and y; "
                f"{args.data!r} is neither"
            )
        if not zipfile.is_zipfile(args.data):
            raise CommandError(
                f"--data {args.data!r} is not a .npz file (np.savez writes a zip "
                "archive; this one is truncated or of another format)"
            )
        with zipfile.ZipFile(args.data) as archive:
            names = {n[: -len(".npy")] for n in archive.namelist()}
        missing = [key for key in ("x", "y") if key not in names]
        if missing:
            raise CommandError(
                f"--data {args.data!r} lacks the array{'s' * (len(missing) > 1)} "
                f"{' and '.join(missing)} (np.savez(path, x=images, y=labels)); it "
                f"holds {', '.join(sorted(names)) or 'nothing'}"
            )
    epsilons = _numbers(args.eps, "--eps")
    if any(e <= 0 for e in epsilons):
        raise CommandError(f"--eps takes radii > 0; got {args.eps!r}")
    low, high = _numbers(args.value_range, "--value-range", count=2)
    if not low < high:
        raise CommandError(
            f"--value-range takes LOW,HIGH with LOW < HIGH; got {args.value_range!r}"
        )
    attacks = [name.strip() for name in args.attacks.split(",")] if args.attacks else []
    unknown = [name for name in attacks if name not in _ATTACKS]
    if args.attacks is not None and (unknown or not attacks):
        raise CommandError(
            f"--attacks takes names from {','.join(_ATTACKS)} separated by "
            f"commas; got {args.attacks!r}"
        )
    _check_at_least(args.examples, "--examples")
    _check_at_least(args.batch_size, "--batch-size")
    _check_at_least(args.seed, "--seed", minimum=0)
    if args.report:
        _check_output_file(args.report, "--report", args.overwrite)
    if args.plot and args.no_plot:
        raise CommandError("--plot and --no-plot exclude each other")
    if args.plot is None and not args.no_plot:
        args.plot = _default_plot(args.model)
        if os.path.lexists(args.plot) and not args.overwrite:
            raise CommandError(
                f"{args.plot!r} (the default --plot) already exists; pass "
                "--overwrite to replace it, --plot PATH or --no-plot"
            )
    if args.plot:
        _check_output_file(args.plot, "--plot", args.overwrite)
        if args.report and os.path.abspath(args.plot) == os.path.abspath(args.report):
            raise CommandError(f"--plot and --report both name {args.plot!r}")
        _check_plotting("--plot (or pass --no-plot)")
    args.epsilons = epsilons
    args.value_range_pair = (low, high)
    args.attack_names = list(dict.fromkeys(attacks)) or None


def _npz_data(path, flag="--data"):
    """`(x, y)` of a `.npz` file holding `x` and `y`, labels as class
    indices (one-hot rows are turned into them)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(x):
        raise CommandError(
            f"{flag} {path!r} must hold inputs x of shape (n, ...) and n labels y "
            f"(integers or one-hot rows), n >= 1; got x {x.shape} and y {y.shape}"
        )
    return x.astype("float32"), y


def _cmd_robustness(args):
    import numpy as np

    from keras_harden.robust.evaluate import evaluate
    from keras_harden.saving import write_atomically

    model = _load(args.model)
    low, high = args.value_range_pair
    if args.data == "digits":
        x, y = _digits(model, args.model, split="test")
        x = low + x / np.float32(255) * np.float32(high - low)
    else:
        x, y = _npz_data(args.data)
        expected = tuple(model.input_shape[1:])
        fits = len(expected) == x.ndim - 1 and all(
            e is None or e == s for e, s in zip(expected, x.shape[1:], strict=True)
        )
        if not fits:
            raise CommandError(
                f"{args.model!r} takes inputs of shape {(None, *expected)}; "
                f"x in {args.data!r} has shape {x.shape}"
            )
        if x.size and (x.min() < low or x.max() > high):
            raise CommandError(
                f"x in {args.data!r} spans [{x.min():g}, {x.max():g}], outside "
                f"--value-range {low:g},{high:g}: give the range the model's "
                "inputs live in"
            )
    if args.quiet:
        verbose = 0
    else:
        verbose = 1 if sys.stderr.isatty() else 2
    # progress goes to stderr; stdout carries the report alone
    with contextlib.redirect_stdout(sys.stderr):
        report = evaluate(
            model,
            (x, y),
            epsilons=args.epsilons,
            norm=args.norm,
            attacks=args.attack_names,
            corruptions=() if args.no_corruptions else None,
            value_range=(low, high),
            batch_size=args.batch_size,
            max_examples=args.examples,
            seed=args.seed,
            verbose=verbose,
        )
    markdown = report.to_markdown()
    print(markdown)
    for warning in report.warnings:
        _warn(args.command, warning)
    if args.report:

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(markdown)

        print(f"report: {write_atomically(args.report, write)}")
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


# -- audit ---------------------------------------------------------------------

_AUDIT_ATTACKS = ("loss", "lira")
_AUDIT_SHADOW_MODELS = 4
_AUDIT_SHADOW_EPOCHS = 10


def _check_audit_npz(path, flag):
    """A `.npz` file holding arrays `x` and `y`."""
    if not os.path.isfile(path):
        raise CommandError(f"{flag} {path!r}: no such file (a .npz with arrays x, y)")
    if not zipfile.is_zipfile(path):
        raise CommandError(
            f"{flag} {path!r} is not a .npz file (np.savez writes a zip archive; "
            "this one is truncated or of another format)"
        )
    with zipfile.ZipFile(path) as archive:
        names = {n[: -len(".npy")] for n in archive.namelist()}
    missing = [key for key in ("x", "y") if key not in names]
    if missing:
        raise CommandError(
            f"{flag} {path!r} lacks the array{'s' * (len(missing) > 1)} "
            f"{' and '.join(missing)} (np.savez(path, x=inputs, y=labels)); it "
            f"holds {', '.join(sorted(names)) or 'nothing'}"
        )


def _check_audit(args):
    _check_model(args.model)
    _check_audit_npz(args.members, "--members")
    _check_audit_npz(args.non_members, "--non-members")
    attacks = list(dict.fromkeys(args.attack or ["loss"]))
    if "lira" not in attacks:
        for option in ("shadow_models", "shadow_epochs"):
            if getattr(args, option) is not None:
                raise CommandError(f"{_flag(option)} applies to --attack lira only")
    _check_at_least(args.shadow_models, "--shadow-models", minimum=2)
    _check_at_least(args.shadow_epochs, "--shadow-epochs")
    _check_at_least(args.batch_size, "--batch-size")
    _check_at_least(args.seed, "--seed", minimum=0)
    if args.json:
        _check_output_file(args.json, "--json", args.overwrite, suffix=".json")
    if args.plot:
        _check_output_file(args.plot, "--plot", args.overwrite)
        if args.json and os.path.abspath(args.plot) == os.path.abspath(args.json):
            raise CommandError(f"--plot and --json both name {args.plot!r}")
        _check_plotting("--plot")
    args.attack_names = attacks


def _audit_data(path, flag, model, model_path):
    """`(x, y)` of a `.npz` file, labels as class indices, `x` fitting
    `model`'s input."""
    x, y = _npz_data(path, flag)
    expected = tuple(model.input_shape[1:])
    fits = len(expected) == x.ndim - 1 and all(
        e is None or e == s for e, s in zip(expected, x.shape[1:], strict=True)
    )
    if not fits:
        raise CommandError(
            f"{model_path!r} takes inputs of shape {(None, *expected)}; x in "
            f"{path!r} has shape {x.shape}"
        )
    return x, y


def _cmd_audit(args):
    from keras_harden.privacy.audit import audit, resolve_from_logits

    model = _load(args.model)
    members = _audit_data(args.members, "--members", model, args.model)
    non_members = _audit_data(args.non_members, "--non-members", model, args.model)
    from_logits = None if args.outputs is None else args.outputs == "logits"
    if from_logits is None:
        try:
            resolve_from_logits(model)
        except ValueError:
            raise CommandError(
                f"{args.model!r} holds no compiled cross-entropy that says whether "
                "its outputs are logits or probabilities: pass --outputs logits "
                "or --outputs probabilities"
            ) from None
    if "lira" in args.attack_names and not model.get_compile_config():
        raise CommandError(
            f"--attack lira trains shadow models compiled as {args.model!r} was, "
            "but the file holds no compile settings (save the model after "
            "model.compile)"
        )
    # progress goes to stderr; stdout carries the report alone
    with contextlib.redirect_stdout(sys.stderr):
        report = audit(
            model,
            members,
            non_members,
            attacks=args.attack_names,
            shadow_models=args.shadow_models or _AUDIT_SHADOW_MODELS,
            shadow_epochs=args.shadow_epochs or _AUDIT_SHADOW_EPOCHS,
            from_logits=from_logits,
            seed=args.seed,
            batch_size=args.batch_size,
            verbose=0 if args.quiet else 1,
        )
    print(report.to_markdown())
    for warning in report.warnings:
        _warn(args.command, warning)
    if args.json:
        print(f"json: {report.save(args.json)}")
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


# -- demo ----------------------------------------------------------------------


def _check_demo(args):
    if os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise CommandError(f"--out {args.out!r} is a file; the demo needs a folder")
    _check_writable(os.path.join(args.out, "demo_soup.keras"), "--out")
    _check_plotting("the demo")


def _cmd_demo(args):
    from keras_harden import demo

    if not demo.run(args.out, quick=args.quick):
        raise CommandError("reloaded models do not match the soup")
    return 0


# -- entry point ---------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-harden",
        description="Keep Keras training from blowing up; diagnose, fuse and "
        "export models, and measure how they hold up under attack and "
        "corruption (robustness).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the whole library on the digits data (the main job)"
    )
    demo.add_argument("--out", default="saved_models/", help="output folder")
    demo.add_argument(
        "--quick", action="store_true", help="fewer epochs (under a minute)"
    )
    demo.set_defaults(func=_cmd_demo, check=_check_demo)

    diagnose = sub.add_parser("diagnose", help="is this model's training sane?")
    diagnose.add_argument("model", help="a .keras file or SavedModel folder")
    diagnose.add_argument(
        "--data", required=True, help="'digits' or a folder of class sub-folders"
    )
    diagnose.add_argument("--steps", type=int, default=10, help="batches to use")
    diagnose.add_argument("--plot", help="also write the report as this PNG")
    diagnose.add_argument(
        "--prescribe",
        action="store_true",
        help="run kh.harden's search even when the verdict is healthy (it "
        "always runs otherwise)",
    )
    diagnose.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="the run kh.harden's winner trains for (default 1)",
    )
    diagnose.add_argument(
        "--save", help="write the model trained by kh.harden's winner here (.keras)"
    )
    diagnose.add_argument(
        "--overwrite", action="store_true", help="replace existing --plot/--save files"
    )
    diagnose.set_defaults(func=_cmd_diagnose, check=_check_diagnose)

    fuse = sub.add_parser(
        "fuse",
        help="merge models into one",
        description="Which method when: docs/fusion.md. Shared start (fine-tunes "
        "of one model): uniform, greedy, or a task-vector method with --base. "
        "Different starts: align (or ensemble, at k times the cost).",
    )
    fuse.add_argument(
        "models",
        nargs="+",
        help="two or more .keras files (the fine-tunes, with --base)",
    )
    fuse.add_argument(
        "--method",
        choices=("uniform", "greedy", "ensemble", "align", *_MERGE_METHODS),
        default="greedy",
    )
    fuse.add_argument(
        "--base", help="the model the fine-tunes started from (task-vector methods)"
    )
    fuse.add_argument("--scaling", type=float, help="task-vector scaling")
    fuse.add_argument("--density", type=float, help="share of entries TIES keeps")
    fuse.add_argument("--drop-rate", type=float, help="share of entries DARE drops")
    fuse.add_argument("--seed", type=int, help="DARE's random seed")
    fuse.add_argument("--t", type=float, help="SLERP's position between two tunes")
    fuse.add_argument(
        "--data",
        help="'digits' or a folder of held-out images: scores the models and "
        "recomputes batch-norm statistics",
    )
    fuse.add_argument(
        "--metric",
        choices=("accuracy", "crossentropy"),
        help="what --method greedy scores on --data: accuracy (the default) or "
        "crossentropy, which ties less often on small data",
    )
    fuse.add_argument("-o", "--output", required=True, help="the .keras to write")
    fuse.add_argument(
        "--overwrite", action="store_true", help="replace an existing -o file"
    )
    fuse.set_defaults(func=_cmd_fuse, check=_check_fuse)

    export = sub.add_parser("export", help="write an inference-mode SavedModel")
    export.add_argument("model", help="a .keras file")
    export.add_argument("out_dir", help="the SavedModel folder to write")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier SavedModel in OUT_DIR (a file, or a folder "
        "holding other files, is never replaced)",
    )
    export.set_defaults(func=_cmd_export, check=_check_export)

    robustness = sub.add_parser(
        "robustness",
        help="accuracy under attack and corruption (kh.robust.evaluate)",
        description="Runs kh.robust.evaluate: every attack at every --eps (an "
        "example counts as robust only when no attack breaks it), accuracy "
        "under common corruptions, and the checks for gradient masking. "
        "Prints the report as Markdown on stdout (progress on stderr) and "
        "writes its plot. Details: docs/robust.md.",
    )
    robustness.add_argument("model", help="a .keras file or SavedModel folder")
    robustness.add_argument(
        "--data",
        required=True,
        help="'digits' (the digits test split, scaled to --value-range) or a "
        ".npz file with arrays x (inputs, already in --value-range) and y "
        "(integer or one-hot labels)",
    )
    robustness.add_argument(
        "--eps",
        required=True,
        metavar="E1,E2,...",
        help="attack radii separated by commas, in input units (e.g. "
        "0.05,0.1,0.2 for L-inf on [0, 1])",
    )
    robustness.add_argument(
        "--norm", choices=("linf", "l2"), default="linf", help="default linf"
    )
    robustness.add_argument(
        "--attacks",
        metavar="NAMES",
        help=f"names separated by commas from {','.join(_ATTACKS)} (default: all)",
    )
    robustness.add_argument(
        "--no-corruptions",
        action="store_true",
        help="skip the common corruptions (attacks only)",
    )
    robustness.add_argument(
        "--examples",
        type=int,
        metavar="N",
        help="evaluate the first N examples (default: all)",
    )
    robustness.add_argument(
        "--value-range",
        default="0,1",
        metavar="LOW,HIGH",
        help="LOW,HIGH of the model's inputs (default 0,1: the digits' pixels "
        "/ 255); the attacks and corruptions stay inside it",
    )
    robustness.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="the seed; the evaluation replays exactly (default 0)",
    )
    robustness.add_argument(
        "--batch-size",
        type=int,
        default=128,
        metavar="N",
        help="examples per model call (default 128)",
    )
    robustness.add_argument(
        "--report", metavar="PATH.md", help="also write the Markdown report here"
    )
    robustness.add_argument(
        "--plot",
        metavar="PATH.png",
        help="the plot to write (default: MODEL.robustness.png beside the "
        "model: m.keras -> m.robustness.png)",
    )
    robustness.add_argument("--no-plot", action="store_true", help="write no plot")
    robustness.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr"
    )
    robustness.add_argument(
        "--overwrite", action="store_true", help="replace existing --report/--plot"
    )
    robustness.set_defaults(func=_cmd_robustness, check=_check_robustness)

    audit = sub.add_parser(
        "audit",
        help="membership inference: does the model give its training set away? "
        "(kh.privacy.audit)",
        description="Runs kh.privacy.audit: membership-inference attacks that "
        "tell --members (examples the model trained on) from --non-members "
        "(examples it did not), and prints, per attack, the AUC and the "
        "true-positive rate at 1% and 0.1% false-positive rate as Markdown "
        "on stdout (progress on stderr). The loss attack needs only the "
        "model; lira trains shadow models like it (its architecture, compiled "
        "as saved). Details: docs/privacy.md.",
    )
    audit.add_argument("model", help="a .keras file (compiled, for --attack lira)")
    audit.add_argument(
        "--members",
        required=True,
        metavar="M.npz",
        help="a .npz file with arrays x (inputs) and y (integer or one-hot "
        "labels) of examples the model trained on",
    )
    audit.add_argument(
        "--non-members",
        required=True,
        metavar="N.npz",
        help="the same for examples from the same distribution it did not "
        "train on (at least 100 for the TPR at 1%% FPR, 1,000 for 0.1%%)",
    )
    audit.add_argument(
        "--attack",
        action="extend",
        nargs="+",
        choices=_AUDIT_ATTACKS,
        help="the attacks: loss (the default) and/or lira",
    )
    audit.add_argument(
        "--shadow-models",
        type=int,
        metavar="N",
        help=f"lira's shadow models (default {_AUDIT_SHADOW_MODELS}, at least 2)",
    )
    audit.add_argument(
        "--shadow-epochs",
        type=int,
        metavar="E",
        help="epochs each shadow model trains (default "
        f"{_AUDIT_SHADOW_EPOCHS}; best: as many as the model trained)",
    )
    audit.add_argument(
        "--outputs",
        choices=("logits", "probabilities"),
        help="what the model outputs (default: its compiled loss says)",
    )
    audit.add_argument(
        "--seed", type=int, default=0, metavar="N", help="the seed (default 0)"
    )
    audit.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="examples per model call and per shadow training step (default 32)",
    )
    audit.add_argument("--plot", metavar="ROC.png", help="write the log-log ROC here")
    audit.add_argument(
        "--json", metavar="OUT.json", help="write the report as JSON here"
    )
    audit.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr"
    )
    audit.add_argument(
        "--overwrite", action="store_true", help="replace existing --plot/--json"
    )
    audit.set_defaults(func=_cmd_audit, check=_check_audit)
    return parser


def _one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv=None):
    """Runs the `keras-harden` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        args.check(args)  # the standard library only: Keras is not imported yet
        with _console(args.command):
            return args.func(args)
    except KeyboardInterrupt:
        print(f"keras-harden {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, no traceback
        if os.environ.get("KERAS_HARDEN_TRACEBACK"):
            raise
        print(
            f"keras-harden {args.command}: error: {_one_line(error)}", file=sys.stderr
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
