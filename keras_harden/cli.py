"""The `keras-harden` command line.

    keras-harden demo [--out saved_models/] [--quick]
    keras-harden diagnose MODEL.keras --data digits|DIR [--steps N] [--plot PNG]
                 [--prescribe] [--epochs N] [--save OUT.keras]
    keras-harden fuse A.keras B.keras ... --method uniform|greedy|ensemble|align
                 [--data digits|DIR] [--metric accuracy|crossentropy] -o OUT.keras
                 [--overwrite]
    keras-harden fuse TUNE.keras ... --base BASE.keras
                 --method task_arithmetic|ties|dare|dare_ties|slerp
                 [--scaling S] [--density D] [--drop-rate P] [--seed N] [--t T]
                 [--data digits|DIR] -o OUT.keras [--overwrite]
    keras-harden export MODEL.keras OUT_DIR [--overwrite]

Nothing is written over by surprise: an existing output needs `--overwrite`,
and a file is never replaced by a folder, nor a folder's other files deleted.

Errors (a missing or unreadable file, models that cannot be fused, data that
does not fit the model) print one line, `keras-harden <command>: error: ...`,
on stderr and exit with status 1; usage errors exit with status 2. Set
`KERAS_HARDEN_TRACEBACK=1` to see the full traceback instead. Our warnings
(models that do not seem to share a start, ...) are one line each,
`keras-harden <command>: warning: ...`.
"""

import argparse
import contextlib
import os
import sys
import warnings

__all__ = ["main"]


class CommandError(Exception):
    """An error the user can fix; printed as one line."""


# -- helpers -------------------------------------------------------------------


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
                message = _one_line(w.message)
                print(f"keras-harden {command}: warning: {message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _check_file(path, what="model"):
    if not os.path.exists(path):
        raise CommandError(f"no {what} at {path!r}")
    return path


def _load(path):
    import keras_harden as kh

    _check_file(path)
    return kh.load_model(path)


def _image_shape(model, path):
    shape = tuple(model.input_shape) if hasattr(model, "input_shape") else ()
    if isinstance(shape[0], tuple):
        raise CommandError(f"{path!r} has several inputs; image data needs one")
    if len(shape) != 4 or shape[-1] not in (1, 3) or None in shape[1:]:
        raise CommandError(
            f"{path!r} takes inputs of shape {shape}; --data needs an image "
            "model with inputs (height, width, 1 or 3)"
        )
    return shape[1], shape[2], shape[3]


def _load_data(spec, model, path, split="test"):
    """`(x, y)` arrays fitting `model`'s input, from "digits" or a folder."""
    import numpy as np

    import keras_harden as kh

    height, width, channels = _image_shape(model, path)
    if spec == "digits":
        if height != width or height % 8:
            raise CommandError(
                f"{path!r} takes {height}x{width} images; the digits data comes "
                "in square sizes that are multiples of 8"
            )
        train, test = kh.data.load_digits(image_size=height, channels=channels)
        return train if split == "train" else test
    if not os.path.isdir(spec):
        raise CommandError(
            f"--data must be 'digits' or a folder of class sub-folders; "
            f"{spec!r} is neither"
        )
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
            print(f"saved: {kh.save_model(rx.model, args.save)}")
    return 0


# -- fuse ----------------------------------------------------------------------

_MERGE_METHODS = ("task_arithmetic", "ties", "dare", "dare_ties", "slerp")
_MERGE_OPTIONS = ("scaling", "density", "drop_rate", "seed", "t")


def _cmd_fuse(args):
    import keras

    import keras_harden as kh

    if not args.output.endswith(".keras"):
        raise CommandError(f"-o must name a .keras file; got {args.output!r}")
    _check_target(kh.saving.check_save_target, args.output, args.overwrite)
    merging = args.method in _MERGE_METHODS
    if merging and not args.base:
        raise CommandError(
            f"--method {args.method} merges fine-tunes of one base: give the "
            "base with --base BASE.keras"
        )
    if args.base and not merging:
        raise CommandError(f"--base applies to task-vector methods, not {args.method}")
    for option in _MERGE_OPTIONS:
        if getattr(args, option) is not None and not merging:
            flag = "--" + option.replace("_", "-")
            raise CommandError(f"{flag} applies to task-vector methods only")
    if len(args.models) < (1 if merging else 2):
        raise CommandError("fuse needs at least two models")
    for path in args.models + ([args.base] if args.base else []):
        _check_file(path)
    if args.method == "greedy" and not args.data:
        raise CommandError("--method greedy needs --data (held-out images to score)")
    if args.metric and args.method != "greedy":
        raise CommandError(f"--metric applies to --method greedy, not {args.method}")
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
    """Checks an output path before any work, so a refusal costs nothing."""
    try:
        check(path, overwrite)
    except ValueError as error:
        if not overwrite and "overwrite=True" in str(error):
            raise CommandError(
                f"{path!r} already exists; pass --overwrite to replace it"
            ) from None
        raise CommandError(str(error)) from None


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


# -- demo ----------------------------------------------------------------------


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
        "export models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the whole library on the digits data (the main job)"
    )
    demo.add_argument("--out", default="saved_models/", help="output folder")
    demo.add_argument(
        "--quick", action="store_true", help="fewer epochs (under a minute)"
    )
    demo.set_defaults(func=_cmd_demo)

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
    diagnose.set_defaults(func=_cmd_diagnose)

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
    fuse.set_defaults(func=_cmd_fuse)

    export = sub.add_parser("export", help="write an inference-mode SavedModel")
    export.add_argument("model", help="a .keras file")
    export.add_argument("out_dir", help="the SavedModel folder to write")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier SavedModel in OUT_DIR (a file, or a folder "
        "holding other files, is never replaced)",
    )
    export.set_defaults(func=_cmd_export)
    return parser


def _one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv=None):
    """Runs the `keras-harden` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with _console(args.command):
            for name in ("model",):
                if hasattr(args, name):
                    _check_file(getattr(args, name))
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
