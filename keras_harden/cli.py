"""The `keras-harden` command line.

    keras-harden demo [--out saved_models/] [--quick]
    keras-harden diagnose MODEL.keras --data digits|DIR [--steps N] [--plot PNG]
                 [--prescribe]
    keras-harden fuse A.keras B.keras ... --method uniform|greedy|ensemble
                 [--data digits|DIR] [--metric accuracy|crossentropy] -o OUT.keras
                 [--overwrite]
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
import math
import os
import sys
import time
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
    from keras_harden.diagnostics._core import looks_like_probabilities

    return not looks_like_probabilities(model.predict(x[:32], verbose=0))


# -- diagnose ------------------------------------------------------------------


def _cmd_diagnose(args):
    import keras_harden as kh

    model = _load(args.model)
    x, y = _load_data(args.data, model, args.model, split="train")
    report = kh.diagnostics.diagnose(model, (x, y), steps=args.steps)
    if report.verdict != "healthy" or args.prescribe:
        # the concrete remedy, checked by short training trials on a copy
        report = kh.diagnostics.diagnose(
            model, (x, y), steps=args.steps, prescribe=True
        )
    print(f"# {args.model} on {args.data} ({report.loss_name})\n")
    print(report.to_markdown())
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


# -- fuse ----------------------------------------------------------------------


def _cmd_fuse(args):
    import keras

    import keras_harden as kh

    if not args.output.endswith(".keras"):
        raise CommandError(f"-o must name a .keras file; got {args.output!r}")
    _check_target(kh.saving.check_save_target, args.output, args.overwrite)
    if len(args.models) < 2:
        raise CommandError("fuse needs at least two models")
    for path in args.models:
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


def _serve(path, x):
    """Runs a SavedModel's `serve` endpoint on `x` (any Keras backend)."""
    import keras
    import numpy as np

    import keras_harden as kh

    if keras.backend.backend() == "tensorflow":
        return kh.load_model(path).predict(x, verbose=0)
    import tensorflow as tf

    artifact = tf.saved_model.load(path)
    outputs = artifact.serve(tf.constant(x))
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return np.asarray(outputs)


def _cmd_export(args):
    import numpy as np

    import keras_harden as kh

    _check_target(kh.saving.check_export_target, args.out_dir, args.overwrite)
    model = _load(args.model)
    path = kh.export(model, args.out_dir, overwrite=args.overwrite)
    shape = [d or 2 for d in model.input_shape[1:]]
    x = np.random.default_rng(0).uniform(0, 255, size=[2, *shape]).astype("float32")
    diff = float(np.max(np.abs(_serve(path, x) - model.predict(x, verbose=0))))
    print(f"wrote SavedModel {path} (serve = model(x, training=False))")
    print(f"reloaded: max |serve(x) - model.predict(x)| = {diff:.2e}")
    if not diff <= 1e-4:
        raise CommandError(f"exported model disagrees with {args.model!r} ({diff:.2e})")
    return 0


# -- demo ----------------------------------------------------------------------


DEMO_DEPTH = 10
DEMO_WIDTH = 64
DEMO_LR = 0.05


class _StepRecorder:
    """Per-batch loss (from the loss tracker's running sums, so the loss of
    that batch alone) as a Keras callback."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.losses = []
                self._previous = (0.0, 0.0)

            def on_epoch_begin(self, epoch, logs=None):
                self._previous = (0.0, 0.0)

            def on_train_batch_end(self, batch, logs=None):
                tracker = next(m for m in self.model.metrics if m.name == "loss")
                total = float(keras.ops.convert_to_numpy(tracker.total))
                count = float(keras.ops.convert_to_numpy(tracker.count))
                prev_total, prev_count = self._previous
                if count < prev_count:  # reset by a SpikeGuard rollback
                    prev_total, prev_count = 0.0, 0.0
                self._previous = (total, count)
                step = count - prev_count
                self.losses.append((total - prev_total) / step if step else math.nan)

        return Recorder()


def _tune_lr(k):
    """Fine-tunes use smaller learning rates than the first run."""
    return round(DEMO_LR * (0.2 + 0.1 * k), 6)


def _demo_net(kernel_init, augmentation=None, name="net"):
    """A deep plain ReLU MLP for 8x8 digits (no normalisation, no residuals)."""
    import keras

    layers = [keras.Input((8, 8, 1))]
    if augmentation is not None:
        layers.append(augmentation)
    layers += [keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
    for i in range(DEMO_DEPTH):
        layers.append(
            keras.layers.Dense(
                DEMO_WIDTH, activation="relu", kernel_initializer=kernel_init(i)
            )
        )
    layers.append(keras.layers.Dense(10, kernel_initializer=kernel_init(DEMO_DEPTH)))
    return keras.Sequential(layers, name=name)


def _diverged(losses):
    """Non-finite, or above 10x the loss of guessing (ln 10 for 10 classes)."""
    return any(not math.isfinite(v) or v > 10 * math.log(10) for v in losses)


def _plot_demo(path_loss, path_grad, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finish(figure, ylabel, title, path):
        """Log-scale axes over training steps, legend, grid; saved and closed."""
        ax = figure.axes[0]
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)

    figure, ax = plt.subplots(figsize=(7, 4))
    for label, losses in runs["loss"]:
        values = [v if math.isfinite(v) and v > 0 else math.nan for v in losses]
        ax.plot(range(len(values)), values, label=label, linewidth=1)
        if len(values) and any(not math.isfinite(v) for v in losses):
            last = max(i for i, v in enumerate(values) if not math.isnan(v))
            ax.plot([last], [values[last]], "rx")
            ax.annotate(
                " NaN/Inf next: run lost", (last, values[last]), color="tab:red"
            )
    finish(
        figure,
        "batch loss",
        "digits, 10-layer plain ReLU net, SGD(0.05, momentum 0.9)",
        path_loss,
    )

    figure, ax = plt.subplots(figsize=(7, 4))
    for label, steps, values in runs["grad"]:
        values = [v if math.isfinite(v) and v > 0 else math.nan for v in values]
        ax.plot(steps, values, label=label, linewidth=1)
    finish(figure, "global gradient norm", "gradient norm (GradientMonitor)", path_grad)


def _table(rows):
    header = ("run", "test accuracy", "diverged?", "time (s)")
    lines = [header] + [
        (r[0], f"{r[1]:.4f}", "yes" if r[2] else "no", f"{r[3]:.1f}") for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "| "
            + " | ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
            + " |"
        )
        if n == 0:
            out.append(
                "| "
                + " | ".join(
                    "-" * w if i == 0 else "-" * (w - 1) + ":"
                    for i, w in enumerate(widths)
                )
                + " |"
            )
    return "\n".join(out)


def _cmd_demo(args):
    import keras
    import numpy as np

    import keras_harden as kh

    out = args.out
    os.makedirs(out, exist_ok=True)
    quick = args.quick
    epochs_plain, epochs_hard, epochs_tune, n_tunes = (
        (2, 4, 1, 3) if quick else (10, 20, 4, 5)
    )
    start_all = time.time()
    keras.utils.set_random_seed(0)
    (x_all, y_all), (x_test, y_test) = kh.data.load_digits()
    x, y = x_all[:-300], y_all[:-300]
    x_val, y_val = x_all[-300:], y_all[-300:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rows = []
    plots = {"loss": [], "grad": []}

    def train_and_record(model, epochs, callbacks, row, curve):
        """Fits on the digits; adds a results row and a loss curve. Returns
        whether the loss diverged."""
        recorder = _StepRecorder()
        start = time.time()
        model.fit(x, y, epochs=epochs, batch_size=32, callbacks=[recorder, *callbacks])
        seconds = time.time() - start
        diverged = _diverged(recorder.losses)
        rows.append((row, _accuracy(model, x_test, y_test), diverged, seconds))
        plots["loss"].append((curve, recorder.losses))
        return diverged

    def he_times(scale):
        return lambda i: keras.initializers.VarianceScaling(
            2.0 * scale**2, "fan_in", "truncated_normal", seed=i
        )

    print("== 1. a deliberately unstable setup ==")
    print(
        f"{DEMO_DEPTH}-layer plain ReLU MLP, He init scaled 1.5x, "
        f"SGD(learning_rate={DEMO_LR}, momentum=0.9)."
    )
    plain = _demo_net(he_times(1.5), name="plain")
    plain.compile(
        optimizer=keras.optimizers.SGD(DEMO_LR, momentum=0.9),
        loss=loss,
        metrics=["accuracy"],
    )
    report = kh.diagnostics.diagnose(plain, (x, y), steps=5)
    print(
        f"kh.diagnostics.diagnose: {report.verdict}; layers responsible: "
        f"{len(report.layers)} of {len(report.stats)}; first advice: "
        f"{report.recommendations[0]}"
    )
    with open(os.path.join(out, "demo_diagnosis.md"), "w") as f:
        f.write(report.to_markdown())
    report.plot(os.path.join(out, "demo_diagnosis.png"))
    monitor = kh.diagnostics.GradientMonitor(per_layer=False, data=(x[:64], y[:64]))
    plain_diverged = train_and_record(
        plain,
        epochs_plain,
        [monitor, keras.callbacks.TerminateOnNaN()],
        row="plain: 1.5x He init + SGD",
        curve="plain SGD, 1.5x He init",
    )
    plots["grad"].append(
        (
            "plain SGD (norm on a probe batch)",
            [r["step"] for r in monitor.records],
            [r.get("grad_norm", math.nan) for r in monitor.records],
        )
    )
    print(f"-> diverged: {'yes' if plain_diverged else 'no'}")

    print("\n== 2. the same net and optimizer, hardened ==")
    print(
        "kh.initializers.DeltaOrthogonal(gain=sqrt(2)) init, "
        "kh.optimizers.AdaptiveGradientClipping(SGD), "
        'kh.augment.pipeline("light", flip=None, crop_scale=(0.6, 1)), '
        "SpikeGuard + GradientMonitor."
    )

    def hardened_net(seed, name):
        return _demo_net(
            lambda i: kh.initializers.DeltaOrthogonal(gain=2**0.5, seed=seed + i),
            augmentation=kh.augment.pipeline(
                "light", flip=None, crop_scale=(0.6, 1.0), seed=seed
            ),
            name=name,
        )

    def hardened_optimizer(lr):
        return kh.optimizers.AdaptiveGradientClipping(
            keras.optimizers.SGD(lr, momentum=0.9)
        )

    base = hardened_net(0, "hardened")
    base.compile(optimizer=hardened_optimizer(DEMO_LR), loss=loss, metrics=["accuracy"])
    check = kh.diagnostics.diagnose(base, (x, y), steps=5)
    print(f"kh.diagnostics.diagnose: {check.verdict}")
    monitor = kh.diagnostics.GradientMonitor(per_layer=False)
    guard = kh.diagnostics.SpikeGuard()
    train_and_record(
        base,
        epochs_hard,
        [monitor, guard],
        row="hardened: kh init + AGC + augment",
        curve="hardened (kh init, AGC, augment)",
    )
    steps = [r["step"] for r in monitor.records]
    plots["grad"].append(
        ("hardened, before clipping", steps, [r["grad_norm"] for r in monitor.records])
    )
    plots["grad"].append(
        (
            "hardened, after clipping",
            steps,
            [r["clipped_grad_norm"] for r in monitor.records],
        )
    )
    print(f"-> SpikeGuard rollbacks: {len(guard.events)}")

    print(f"\n== 3. {n_tunes} fine-tunes of the hardened net, one greedy soup ==")
    # Each fine-tune starts from the hardened net's weights and optimizer
    # state with its own learning rate and data order. They reuse the trained
    # model object (restoring its state each time), so the training step is
    # traced once; each result is kept as a separate model for the soup.
    start_weights = [np.array(w) for w in base.get_weights()]
    start_optimizer = [
        np.array(keras.ops.convert_to_numpy(v)) for v in base.optimizer.variables
    ]
    tunes = []
    for k in range(n_tunes):
        base.set_weights(start_weights)
        for variable, value in zip(
            base.optimizer.variables, start_optimizer, strict=True
        ):
            variable.assign(value)
        base.optimizer.learning_rate = _tune_lr(k)
        keras.utils.set_random_seed(100 + k)
        t = time.time()
        history = base.fit(x, y, epochs=epochs_tune, batch_size=32, verbose=2)
        tune = keras.models.clone_model(base)
        tune.set_weights(base.get_weights())
        rows.append(
            (
                f"fine-tune {k} (lr {_tune_lr(k):g})",
                _accuracy(tune, x_test, y_test),
                _diverged(history.history["loss"]),
                time.time() - t,
            )
        )
        tunes.append(tune)
    t = time.time()
    # chosen by held-out cross-entropy: accuracy on 300 digits ties too often
    soup, soup_report = kh.fusion.greedy_soup(
        tunes,
        (x_val, y_val),
        metric=keras.metrics.SparseCategoricalCrossentropy(from_logits=True),
        higher_is_better=False,
    )
    soup_time = time.time() - t
    print(soup_report)
    rows.append(
        (
            f"greedy soup of fine-tunes {soup_report.kept}",
            _accuracy(soup, x_test, y_test),
            False,
            soup_time,
        )
    )

    print("\n== 4. save, export, reload ==")
    # the demo replaces its own earlier outputs, never anything else
    keras_path = kh.save_model(
        soup, os.path.join(out, "demo_soup.keras"), overwrite=True
    )
    saved_path = kh.export(
        soup, os.path.join(out, "demo_soup_savedmodel"), overwrite=True
    )
    expected = soup.predict(x_test, verbose=0)
    diffs = {}
    reloaded = {
        "keras": kh.load_model(keras_path).predict(x_test, verbose=0),
        "SavedModel": _serve(saved_path, x_test),
    }
    for (label, values), path in zip(
        reloaded.items(), (keras_path, saved_path), strict=True
    ):
        diffs[label] = float(np.max(np.abs(values - expected)))
        print(f"{path}: max |reloaded - soup| = {diffs[label]:.2e}")
    match = all(d <= 1e-4 for d in diffs.values())

    print("\n== 5. results (digits test set, 450 images) ==")
    loss_png = os.path.join(out, "demo_loss.png")
    grad_png = os.path.join(out, "demo_grad_norm.png")
    _plot_demo(loss_png, grad_png, plots)
    print(_table(rows))
    print(
        f"reloaded .keras and SavedModel outputs match the soup: "
        f"{'yes' if match else 'NO'}"
    )
    print(f"plots: {loss_png}, {grad_png}, {os.path.join(out, 'demo_diagnosis.png')}")
    print(f"total time: {time.time() - start_all:.1f} s")
    if not match:
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
        help="run kh.harden's trials even when the verdict is healthy (they "
        "always run otherwise)",
    )
    diagnose.set_defaults(func=_cmd_diagnose)

    fuse = sub.add_parser("fuse", help="merge models into one")
    fuse.add_argument("models", nargs="+", help="two or more .keras files")
    fuse.add_argument(
        "--method", choices=("uniform", "greedy", "ensemble"), default="greedy"
    )
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
