"""The walk-through behind `keras-harden demo` (`make demo`).

On the digits: a deep plain ReLU net that diverges, `kh.harden`'s search on
the same setup, the net hardened by hand (initializer, AGC, augmentation,
SpikeGuard), fine-tunes merged into one
greedy soup, saved, exported and reloaded; a results table and plots in
`out`. `run(out, quick=True)` is the short version the tests use.
"""

import math
import os
import time

__all__ = ["run"]

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
    from keras_harden._plotting import pyplot, save_figure

    plt = pyplot("keras-harden demo")

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
        save_figure(figure, path)

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


def run(out, quick=False):
    """Runs the walk-through, writing its files to `out`; returns whether
    the reloaded `.keras` file and SavedModel give the soup's outputs."""
    import keras
    import numpy as np

    import keras_harden as kh
    from keras_harden.fusion.soup import accuracy

    os.makedirs(out, exist_ok=True)
    epochs_plain, epochs_search, epochs_hard, epochs_tune, n_tunes = (
        (2, 2, 4, 1, 3) if quick else (10, 10, 20, 4, 5)
    )
    start_all = time.time()
    keras.utils.set_random_seed(0)
    (x_all, y_all), (x_test, y_test) = kh.data.load_digits()
    x, y = x_all[:-300], y_all[:-300]
    x_val, y_val = x_all[-300:], y_all[-300:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rows = []
    plots = {"loss": [], "grad": []}

    def test_accuracy(model):
        return accuracy(y_test, model.predict(x_test, verbose=0, batch_size=256))

    def train_and_record(model, epochs, callbacks, row, curve):
        """Fits on the digits; adds a results row and a loss curve. Returns
        whether the loss diverged."""
        recorder = _StepRecorder()
        start = time.time()
        model.fit(x, y, epochs=epochs, batch_size=32, callbacks=[recorder, *callbacks])
        seconds = time.time() - start
        diverged = _diverged(recorder.losses)
        rows.append((row, test_accuracy(model), diverged, seconds))
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

    print("\n== 2. kh.harden: a search for the remedy, on the same setup ==")
    searched = _demo_net(he_times(1.5), name="searched")
    t = time.time()
    rx = kh.harden(
        searched,
        (x, y),
        keras.optimizers.SGD(DEMO_LR, momentum=0.9),
        loss,
        epochs=epochs_search,
        validation_data=(x_val, y_val),
        verbose=2,
    )
    rows.append(
        (
            f"kh.harden: {rx.choice.name}",
            test_accuracy(searched),
            False,
            time.time() - t,
        )
    )
    print(rx)
    with open(os.path.join(out, "demo_harden.md"), "w") as f:
        f.write(rx.to_markdown())
    rx.plot(os.path.join(out, "demo_harden.png"))

    print("\n== 3. the same net and optimizer, hardened by hand ==")
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

    print(f"\n== 4. {n_tunes} fine-tunes of the hardened net, one greedy soup ==")
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
                test_accuracy(tune),
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
            test_accuracy(soup),
            False,
            soup_time,
        )
    )

    print("\n== 5. save, export, reload ==")
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
        "SavedModel": kh.saving.serve(saved_path, x_test),
    }
    for (label, values), path in zip(
        reloaded.items(), (keras_path, saved_path), strict=True
    ):
        diffs[label] = float(np.max(np.abs(values - expected)))
        print(f"{path}: max |reloaded - soup| = {diffs[label]:.2e}")
    match = all(d <= 1e-4 for d in diffs.values())

    print("\n== 6. results (digits test set, 450 images) ==")
    loss_png = os.path.join(out, "demo_loss.png")
    grad_png = os.path.join(out, "demo_grad_norm.png")
    _plot_demo(loss_png, grad_png, plots)
    print(_table(rows))
    print(
        f"reloaded .keras and SavedModel outputs match the soup: "
        f"{'yes' if match else 'NO'}"
    )
    print(
        f"plots: {loss_png}, {grad_png}, {os.path.join(out, 'demo_diagnosis.png')}, "
        f"{os.path.join(out, 'demo_harden.png')}"
    )
    print(f"total time: {time.time() - start_all:.1f} s")
    return match
