"""keras_harden.robust against foolbox and a plain PGD loop, side by side.

Two claims, measured in one run over several seeds (medians and ranges):

- Strength: on the digits conv net, trained normally and adversarially, at
  L-inf eps 0.05, 0.1 and 0.2, our worst-case accuracy (`robust.evaluate`'s
  `report.worst_case[eps]`, its default attacks: FGSM, PGD-20, APGD-CE,
  APGD-DLR, Square; and, cheaper, the per-example worst of our FGSM, PGD-20
  and APGD-CE with 100 or 20 steps) is at most that of
  foolbox's `LinfPGD(steps=20)` (its default step, 0.01 / 0.3 of eps),
  foolbox's `FGSM`, and a plain 20-step PGD written below with
  `tf.GradientTape` (step `2.5 eps / 20`, random start, the last iterate).
  All attacks see the same model and test images; each row is the accuracy
  of the model on the points that attack returned.
- Speed: `robust.pgd(model, x_test, y_test, eps, steps=20)` over the digits
  test set at least 3x faster than foolbox's `LinfPGD(steps=20)` on the same
  model: wall-time medians over `--rounds` interleaved rounds after a warm-up,
  and each one's first call (with its tracing) on a freshly loaded model.

Then where our PGD's time goes (the gradient calls against the host NumPy
step maths), and per example what each reference breaks that ours misses.

The models (Adam 1e-3, 15 epochs, batch 64, logits; images / 255) are
cached under `/tmp/robustness_bench/` by seed; `--reuse` loads them, so a
rerun measures the attacks only. The adversarially trained model comes from
`keras_harden.robust.AdversarialTraining` when the package has it, else from
the PGD-training loop below (labelled a stand-in in the output).

foolbox is not a dependency of keras_harden: install it for this script only
(`.venv/bin/pip install foolbox`); without it the foolbox rows are skipped.
TensorFlow backend only (foolbox's TensorFlow model and the tape reference).

    .venv/bin/python benchmarks/robustness.py --seeds 3 --reuse
"""

import argparse
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

if keras.backend.backend() != "tensorflow":
    sys.exit(
        "benchmarks/robustness.py runs on the TensorFlow backend only (foolbox's "
        f"TensorFlowModel, the tape reference). Received: "
        f"KERAS_BACKEND={keras.backend.backend()}"
    )

import tensorflow as tf  # noqa: E402

import keras_harden as kh  # noqa: E402
from keras_harden import robust  # noqa: E402

try:
    import foolbox
except ImportError:  # not a dependency of keras_harden
    foolbox = None

CACHE = "/tmp/robustness_bench"
EPSILONS = (0.05, 0.1, 0.2)
SPEED_EPS = 0.1
ADV_EPS = 0.1  # the adversarial training's radius
STANDIN_STEPS = 10  # the stand-in's PGD steps per training batch
EPOCHS, BATCH, LR = 15, 64, 1e-3


# -- data and models ---------------------------------------------------------------


def load_data(examples=None):
    (x, y), (x_test, y_test) = kh.data.load_digits()
    x, x_test = (x / 255.0).astype("float32"), (x_test / 255.0).astype("float32")
    if examples:
        x_test, y_test = x_test[:examples], y_test[:examples]
    return (x, y.astype("int32")), (x_test, y_test.astype("int32"))


def conv_net():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10),
        ]
    )


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_standard(x, y, seed):
    keras.utils.set_random_seed(seed)
    model = conv_net()
    model.compile(keras.optimizers.Adam(LR), _loss())
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    return model


def train_adversarial_standin(x, y, seed):
    """STAND-IN for the package's adversarial training: Madry et al.'s PGD
    training, each batch replaced by its 10-step PGD points (eps 0.1, step
    2.5 eps / 10, random start) before the Adam step."""
    keras.utils.set_random_seed(seed)
    model = conv_net()
    optimizer = keras.optimizers.Adam(LR)
    loss_fn = _loss()
    step = 2.5 * ADV_EPS / STANDIN_STEPS

    @tf.function
    def train_step(xb, yb):
        adv = tf.clip_by_value(
            xb + tf.random.uniform(tf.shape(xb), -ADV_EPS, ADV_EPS), 0.0, 1.0
        )
        for _ in range(STANDIN_STEPS):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                loss = loss_fn(yb, model(adv, training=False))
            adv = adv + step * tf.sign(tape.gradient(loss, adv))
            adv = tf.clip_by_value(adv, xb - ADV_EPS, xb + ADV_EPS)
            adv = tf.clip_by_value(adv, 0.0, 1.0)
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(adv, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    order = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        perm = order.permutation(len(x))
        for start in range(0, len(x), BATCH):
            part = perm[start : start + BATCH]
            train_step(tf.constant(x[part]), tf.constant(y[part]))
    return model


# Use the package's modules not yet exported from `keras_harden.robust`
# (`--unreleased`): work in progress in the working tree.
UNRELEASED = {"on": False}


def _landed(module):
    """Whether `keras_harden/robust/<module>.py` is committed (git tracks
    it), not work in progress in the working tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join("keras_harden", "robust", f"{module}.py")
    try:
        done = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path],
            cwd=root,
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return done.returncode == 0


def _package(name, module):
    """`keras_harden.robust.<name>` once exported or its module committed;
    with `--unreleased`, the module's own even before; else None."""
    exported = getattr(robust, name, None)
    if callable(exported):  # not the submodule of the same name
        return exported
    if not (UNRELEASED["on"] or _landed(module)):
        return None
    try:
        return getattr(importlib.import_module(f"keras_harden.robust.{module}"), name)
    except (ImportError, AttributeError):
        return None


def _package_adversarial_training():
    return _package("AdversarialTraining", "adversarial_training")


def train_adversarial_package(x, y, seed):
    """The package's `AdversarialTraining(model, "pgd", eps=0.1)` (its
    defaults: 10 steps of 2.5 eps / 10 from a uniform start), compiled and
    fitted like the standard model; the classifier it trained in place."""
    keras.utils.set_random_seed(seed)
    model = conv_net()
    wrapped = _package_adversarial_training()(model, "pgd", eps=ADV_EPS, seed=seed)
    wrapped.compile(keras.optimizers.Adam(LR), _loss())
    wrapped.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    return model


def adversarial_trainer(standin=False):
    """`(label, train function)`: the package's class when it is there."""
    if not standin and _package_adversarial_training() is not None:
        return "adv-package", train_adversarial_package
    return "adv-standin", train_adversarial_standin


def model_path(kind, seed):
    return os.path.join(CACHE, f"{kind}_seed{seed}.keras")


def get_model(kind, train, x, y, seed, reuse):
    """The trained model of `kind` and `seed` (from the cache with `reuse`),
    saved to the cache; and the training's wall seconds (0 when loaded)."""
    path = model_path(kind, seed)
    if reuse and os.path.exists(path):
        return keras.saving.load_model(path, compile=False), 0.0
    start = time.perf_counter()
    model = train(x, y, seed)
    seconds = time.perf_counter() - start
    os.makedirs(CACHE, exist_ok=True)
    model.save(path)
    return model, seconds


# -- the attacks -------------------------------------------------------------------


def _plain_pgd_loop(model, x, y, noise, eps, steps):
    """The simplest PGD: from `x + noise` (uniform in the cube), `steps`
    sign steps of `2.5 eps / steps` on the summed cross-entropy, clip to the
    cube and to [0, 1]; the last iterate, the whole set in one batch."""
    step = 2.5 * eps / steps
    adv = tf.clip_by_value(x + noise, 0.0, 1.0)
    for _ in tf.range(steps):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            logits = model(adv, training=False)
            loss = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True
                )
            )
        adv = adv + step * tf.sign(tape.gradient(loss, adv))
        adv = tf.clip_by_value(tf.clip_by_value(adv, x - eps, x + eps), 0.0, 1.0)
    return adv


def _noise(x, eps, seed):
    return tf.random.Generator.from_seed(seed).uniform(x.shape, -eps, eps)


def plain_pgd(model, x, y, eps, steps=20, seed=0):
    """`_plain_pgd_loop`, eager: the reference."""
    x, y = tf.constant(x), tf.constant(y)
    return _plain_pgd_loop(model, x, y, _noise(x, eps, seed), eps, steps).numpy()


def compiled_plain_pgd(model, steps=20):
    """`_plain_pgd_loop` as one `tf.function` (the floor of an on-device
    loop; for the speed table only)."""
    run = tf.function(
        lambda x, y, noise, eps: _plain_pgd_loop(model, x, y, noise, eps, steps)
    )

    def attack(x, y, eps, seed=0):
        x = tf.constant(x)
        return run(x, tf.constant(y), _noise(x, eps, seed), tf.constant(eps)).numpy()

    return attack


def foolbox_model(model):
    return foolbox.TensorFlowModel(lambda t: model(t, training=False), bounds=(0, 1))


def foolbox_attack(attack, fmodel, x, y, eps):
    # int64 labels, the dtype of the predicted classes: with two dtypes
    # eagerpy 0.30 calls `np.find_common_type`, which NumPy 2 removed
    labels = tf.constant(y, tf.int64)
    _, clipped, _ = attack(fmodel, tf.constant(x), labels, epsilons=[eps])
    return clipped[0].numpy()


def attacks(apgd_steps, seed):
    """`{name: (model, fmodel, x, y, eps) -> points}`, ours first."""
    table = {
        "ours fgsm": lambda m, f, x, y, e: robust.fgsm(m, x, y, e),
        "ours pgd-20": lambda m, f, x, y, e: robust.pgd(
            m, x, y, e, steps=20, seed=seed
        ),
    }
    table["ours pgd-20, 5 restarts"] = lambda m, f, x, y, e: robust.pgd(
        m, x, y, e, steps=20, restarts=5, seed=seed
    )
    for n in apgd_steps:
        table[f"ours apgd-ce-{n}"] = lambda m, f, x, y, e, n=n: robust.apgd(
            m, x, y, e, steps=n, seed=seed
        )
    table["plain pgd-20"] = lambda m, f, x, y, e: plain_pgd(m, x, y, e, seed=seed)
    if foolbox is not None:
        pgd20 = foolbox.attacks.LinfPGD(steps=20)
        fgsm = foolbox.attacks.FGSM()
        table["foolbox LinfPGD-20"] = lambda m, f, x, y, e: foolbox_attack(
            pgd20, f, x, y, e
        )
        table["foolbox FGSM"] = lambda m, f, x, y, e: foolbox_attack(fgsm, f, x, y, e)
    return table


def correct(model, points, y):
    logits = model.predict(points, batch_size=512, verbose=0)
    return np.argmax(logits, axis=-1) == y


def _package_evaluate():
    return _package("evaluate", "evaluate")


def our_evaluate(model, x, y, attacks, seed):
    """`({eps: robust mask}, seconds)` of the package's `robust.evaluate`
    over `EPSILONS` (no corruptions): per example, whether every one of
    `attacks` (None: its defaults) failed at that eps and every smaller one."""
    start = time.perf_counter()
    report = _package_evaluate()(
        model,
        (x, y),
        list(EPSILONS),
        attacks=attacks,
        corruptions=(),
        seed=seed,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    masks = np.asarray(report.robust_examples, bool)
    by_eps = {e: masks[:, k] for k, e in enumerate(report.epsilons)}
    for e in EPSILONS:  # the report's accuracy is the masks' mean
        assert abs(report.worst_case[e] - by_eps[e].mean()) < 1e-9
    return by_eps, seconds


def check_ball(points, x, eps, name):
    gap = float(np.abs(points.astype(np.float64) - x).max())
    if gap > eps + 1e-6 or points.min() < 0 or points.max() > 1:
        raise AssertionError(f"{name}: points outside the ball ({gap} > {eps})")


# -- speed -------------------------------------------------------------------------


def _timed(function):
    """`(wall s, this process's CPU s)`: other jobs on a shared machine
    inflate the wall time, not the CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed(path, x, y, rounds, seed):
    """`{name: (first call s, [warm s per round])}` on a freshly loaded model
    (so that our first call includes its tf.function tracing), the rounds
    interleaved."""
    model = keras.saving.load_model(path, compile=False)
    runs = {
        "ours pgd-20": lambda: robust.pgd(model, x, y, SPEED_EPS, steps=20, seed=seed),
        "ours pgd-20, batch_size=512": lambda: robust.pgd(
            model, x, y, SPEED_EPS, steps=20, seed=seed, batch_size=512
        ),
    }
    if foolbox is not None:
        fmodel = foolbox_model(model)
        pgd20 = foolbox.attacks.LinfPGD(steps=20)
        runs["foolbox LinfPGD-20"] = lambda: foolbox_attack(
            pgd20, fmodel, x, y, SPEED_EPS
        )
    runs["plain pgd-20 (eager)"] = lambda: plain_pgd(model, x, y, SPEED_EPS, seed=seed)
    compiled = compiled_plain_pgd(model)
    runs["plain pgd-20 (tf.function)"] = lambda: compiled(x, y, SPEED_EPS, seed=seed)
    first = {name: _timed(run) for name, run in runs.items()}
    warm = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            warm[name].append(_timed(run))
    return {name: (first[name], warm[name]) for name in runs}


@contextlib.contextmanager
def profiled():
    """Times, while active, the gradient calls and the host step maths of our
    attacks: `{part: [seconds, calls]}` (parts the package no longer has are
    left out)."""
    common = sys.modules["keras_harden.robust._common"]
    pgd_module = sys.modules["keras_harden.robust.pgd"]
    totals = {}
    patches = [
        (common, "loss_and_input_gradients", GRADIENT),
        (common.Task, "project", "project + cast_inside (NumPy)"),
        (common.Best, "update", "best-point update (NumPy)"),
        (pgd_module, "ascent_step", "sign step (NumPy)"),
        (pgd_module, "random_point", "random start (NumPy)"),
        (common.Task, "evaluate", EVALUATE),
    ]
    saved = []
    for owner, name, label in patches:
        original = getattr(owner, name, None)
        if original is None:
            continue
        saved.append((owner, name, original))
        totals[label] = [0.0, 0]

        def wrapper(*args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label][0] += time.perf_counter() - start
                totals[_label][1] += 1

        setattr(owner, name, wrapper)
    try:
        yield totals
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


GRADIENT = "gradient call (tf.function + to NumPy)"
EVALUATE = "Task.evaluate (the gradient call + argmax, padding)"


def profile_pgd(model, x, y, seed, rounds=3):
    """`(wall s per pgd call, {part: (s, calls) per pgd call}, s per bare
    gradient call at batch 128)`."""
    robust.pgd(model, x, y, SPEED_EPS, steps=20, seed=seed)  # warm
    wall = 0.0
    with profiled() as totals:
        for _ in range(rounds):
            wall += _timed(
                lambda: robust.pgd(model, x, y, SPEED_EPS, steps=20, seed=seed)
            )[0]
    # the floor of one gradient call: the compiled function alone, batch 128
    grad_module = sys.modules["keras_harden._gradients"]
    common = sys.modules["keras_harden.robust._common"]
    xb = keras.ops.convert_to_tensor(x[:128])
    yb = keras.ops.convert_to_tensor(y[:128])
    function = grad_module._input_gradient_function(
        model, common.cross_entropy_logits, xb, yb
    )
    function(None, None, xb, yb)
    n = 50
    bare = _timed(lambda: [function(None, None, xb, yb) for _ in range(n)])[0] / n
    return (
        wall / rounds,
        {k: (s / rounds, c / rounds) for k, (s, c) in totals.items()},
        bare,
    )


# -- printing ----------------------------------------------------------------------


def _spread(values, scale=1.0, digits=1):
    values = [v * scale for v in values]
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}, {max(values):.{digits}f}]"
    )


def print_strength(kind, results, names, epsilons):
    """`results[seed]` = `{"clean": mask, eps: {name: correct mask}}`."""
    seeds = sorted(results)
    print(
        f"\n### {kind}: accuracy (%) under attack, median [min, max] over "
        f"{len(seeds)} seeds, {len(results[seeds[0]]['clean'])} test images\n"
    )
    print("| attack | " + " | ".join(f"eps {e}" for e in epsilons) + " |")
    print("| --- |" + " ---: |" * len(epsilons))
    clean = [float(results[s]["clean"].mean()) for s in seeds]
    print(f"| clean | {_spread(clean, 100)} |" + " |" * (len(epsilons) - 1))
    for name in names:
        cells = [
            _spread([float(results[s][e][name].mean()) for s in seeds], 100)
            for e in epsilons
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def print_gaps(kind, results, pairs, epsilons):
    """`ours - reference` in accuracy points per seed; the examples the
    reference breaks that ours misses, and the other way round (summed over
    seeds)."""
    seeds = sorted(results)
    print(
        f"\n### {kind}: ours minus reference, accuracy points, median [min, max] "
        "over seeds (ok: <= 0 on every seed); misses: examples the reference "
        "breaks and ours does not; extra: the other way round (summed over "
        "seeds)\n"
    )
    print("| ours vs reference | " + " | ".join(f"eps {e}" for e in epsilons) + " |")
    print("| --- |" + " ---: |" * len(epsilons))
    for ours, ref in pairs:
        cells = []
        for e in epsilons:
            gaps = [
                float(results[s][e][ours].mean() - results[s][e][ref].mean())
                for s in seeds
            ]
            missed = sum(
                int(np.sum(results[s][e][ours] & ~results[s][e][ref])) for s in seeds
            )
            extra = sum(
                int(np.sum(~results[s][e][ours] & results[s][e][ref])) for s in seeds
            )
            verdict = "ok" if max(gaps) <= 0 else "WORSE"
            cells.append(
                f"{_spread(gaps, 100)} {verdict}; misses {missed}, extra {extra}"
            )
        print(f"| {ours} vs {ref} | " + " | ".join(cells) + " |")


def print_speed(speeds, rounds, n):
    fb = "foolbox LinfPGD-20"
    print(
        f"\n### speed: 20-step PGD over {n} test images at eps {SPEED_EPS}; "
        f"warm = median of {rounds} interleaved rounds per seed; first = the "
        "first call on a freshly loaded model (ours: with its tf.function "
        "tracing); then median [min, max] over seeds. Ratio = foolbox's time "
        "/ this one's (> 1: faster than foolbox)\n"
    )
    print(
        "| model | attack | first wall s | warm wall s | warm CPU s "
        "| ratio warm wall | ratio warm CPU | ratio first wall |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, runs in speeds.items():
        if not runs:
            continue
        for name in runs[0]:
            first = [r[name][0][0] for r in runs]
            wall = [statistics.median(t[0] for t in r[name][1]) for r in runs]
            cpu = [statistics.median(t[1] for t in r[name][1]) for r in runs]
            if fb in runs[0]:
                fb_wall = [statistics.median(t[0] for t in r[fb][1]) for r in runs]
                fb_cpu = [statistics.median(t[1] for t in r[fb][1]) for r in runs]
                fb_first = [r[fb][0][0] for r in runs]
                ratios = " | ".join(
                    _spread([a / b for a, b in zip(top, bottom, strict=True)], digits=2)
                    for top, bottom in (
                        (fb_wall, wall),
                        (fb_cpu, cpu),
                        (fb_first, first),
                    )
                )
            else:
                ratios = "n/a | n/a | n/a"
            print(
                f"| {kind} | {name} | {_spread(first, digits=3)} "
                f"| {_spread(wall, digits=3)} | {_spread(cpu, digits=3)} | {ratios} |"
            )


def print_profile(profile):
    wall, totals, bare = profile
    print(
        f"\n### where our pgd-20's time goes (the first model, warm, mean of 3 "
        f"calls: {wall:.3f} s per call)\n"
    )
    print("| part | s per pgd call | share | calls per pgd call |")
    print("| --- | ---: | ---: | ---: |")
    for label, (seconds, calls) in totals.items():
        print(f"| {label} | {seconds:.3f} | {seconds / wall:.0%} | {calls:.0f} |")
    inside = totals.get(EVALUATE, (0.0, 0))[0]
    hosted = sum(s for k, (s, _) in totals.items() if k not in (GRADIENT, EVALUATE))
    rest = wall - inside - hosted
    print(
        f"| rest (Python loop, batching, checks) | {rest:.3f} | {rest / wall:.0%} | |"
    )
    calls = totals.get(GRADIENT, (0.0, 0))[1]
    print(
        f"\nthe compiled gradient function alone, batch 128: {bare * 1e3:.2f} ms "
        f"per call; x {calls:.0f} calls = {bare * calls:.3f} s"
    )


# -- the run -----------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--examples", type=int, help="test images (default: all)")
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow intra/inter op threads"
    )
    parser.add_argument("--rounds", type=int, default=5, help="warm speed rounds")
    parser.add_argument(
        "--apgd-steps", default="100,20", help="APGD-CE step counts, comma-separated"
    )
    parser.add_argument(
        "--evaluate-attacks",
        default="default",
        help="robust.evaluate's attacks: comma-separated names, 'default' (its "
        "defaults, Square included) or 'none' (skip it)",
    )
    parser.add_argument("--reuse", action="store_true", help="load cached models")
    parser.add_argument(
        "--standin",
        action="store_true",
        help="train the adversarial model with this script's PGD loop even "
        "when the package has AdversarialTraining",
    )
    parser.add_argument(
        "--unreleased",
        action="store_true",
        help="use the package's evaluate / AdversarialTraining modules even "
        "before they are committed or exported (work in progress)",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-strength", action="store_true")
    args = parser.parse_args(argv)
    UNRELEASED["on"] = args.unreleased
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    apgd_steps = [int(n) for n in args.apgd_steps.split(",")]
    started = time.perf_counter()

    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}, backend "
        f"{keras.backend.backend()}, threads {args.threads}/{args.threads}, "
        f"foolbox {foolbox.__version__ if foolbox else 'MISSING'}"
    )
    if foolbox is None:
        print(
            "foolbox is not installed: its rows are skipped. Install it for this "
            "benchmark only: .venv/bin/pip install foolbox"
        )
    (x, y), (x_test, y_test) = load_data(args.examples)
    print(f"digits: {len(x)} training images, {len(x_test)} test images")
    adv_kind, adv_train = adversarial_trainer(args.standin)
    if adv_kind == "adv-standin":
        print(
            "adversarial model: STAND-IN, this script's PGD training (10 steps of "
            "2.5 eps / 10, eps 0.1), not keras_harden's AdversarialTraining"
        )
    else:
        print(
            "adversarial model: keras_harden AdversarialTraining(model, 'pgd', "
            "eps=0.1) with its defaults"
        )
    evaluate_label = None
    if args.evaluate_attacks != "none" and _package_evaluate() is not None:
        chosen = args.evaluate_attacks
        evaluate_attacks = None if chosen == "default" else chosen.split(",")
        evaluate_label = f"ours robust.evaluate ({chosen})"
    elif args.evaluate_attacks != "none":
        print("robust.evaluate is not in the package: its row is skipped")
    kinds = {"standard": train_standard, adv_kind: adv_train}

    strength = {kind: {} for kind in kinds}
    attack_seconds = {}
    speeds = {kind: [] for kind in kinds}
    profile = None
    names = list(attacks(apgd_steps, 0))
    worst = [f"ours worst (fgsm, pgd-20, apgd-ce-{n})" for n in apgd_steps]
    ours_rows = worst + ([evaluate_label] if evaluate_label else [])
    for seed in range(args.seeds):
        for kind, train in kinds.items():
            model, trained = get_model(kind, train, x, y, seed, args.reuse)
            if trained:
                print(f"trained {kind} seed {seed} in {trained:.1f} s", flush=True)
            if not args.skip_speed:
                speeds[kind].append(
                    speed(model_path(kind, seed), x_test, y_test, args.rounds, seed)
                )
                if profile is None:
                    profile = profile_pgd(model, x_test, y_test, seed)
            if args.skip_strength:
                continue
            fmodel = foolbox_model(model) if foolbox is not None else None
            table = attacks(apgd_steps, seed)
            per_seed = {"clean": correct(model, x_test, y_test)}
            for eps in EPSILONS:
                keras.utils.set_random_seed(seed)  # foolbox's random starts
                per_eps = {}
                for name, attack in table.items():
                    start = time.perf_counter()
                    points = attack(model, fmodel, x_test, y_test, eps)
                    attack_seconds.setdefault((kind, name), []).append(
                        time.perf_counter() - start
                    )
                    check_ball(points, x_test, eps, name)
                    per_eps[name] = correct(model, points, y_test)
                for n, label in zip(apgd_steps, worst, strict=True):
                    per_eps[label] = (
                        per_eps["ours fgsm"]
                        & per_eps["ours pgd-20"]
                        & per_eps[f"ours apgd-ce-{n}"]
                    )
                per_seed[eps] = per_eps
            if evaluate_label:
                masks, seconds = our_evaluate(
                    model, x_test, y_test, evaluate_attacks, seed
                )
                attack_seconds.setdefault((kind, evaluate_label), []).append(seconds)
                for eps in EPSILONS:
                    per_seed[eps][evaluate_label] = masks[eps]
            for eps in EPSILONS:
                everything = np.ones(len(x_test), bool)
                for name in [*names, *ours_rows]:
                    everything &= per_seed[eps][name]
                per_seed[eps]["every attack above"] = everything
            strength[kind][seed] = per_seed
            print(
                f"seed {seed} {kind} done at {time.perf_counter() - started:.0f} s",
                flush=True,
            )

    references = [n for n in names if not n.startswith("ours")]
    if not args.skip_strength:
        for kind in kinds:
            rows = [*names, *ours_rows, "every attack above"]
            print_strength(kind, strength[kind], rows, EPSILONS)
            pairs = [(w, r) for w in ours_rows for r in references]
            pairs += [
                (ours, r)
                for ours in ("ours pgd-20", "ours pgd-20, 5 restarts")
                for r in references
                if "pgd" in r.lower()
            ]
            pairs += [("ours fgsm", r) for r in references if "fgsm" in r.lower()]
            print_gaps(kind, strength[kind], pairs, EPSILONS)
        timed = [*names] + ([evaluate_label] if evaluate_label else [])
        print(
            "\n### wall seconds per attack call (one eps; robust.evaluate: all "
            f"{len(EPSILONS)} eps in one call), median [min, max]\n"
        )
        print("| attack | " + " | ".join(kinds) + " |")
        print("| --- |" + " ---: |" * len(kinds))
        for name in timed:
            cells = [_spread(attack_seconds[(k, name)], digits=2) for k in kinds]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if not args.skip_speed:
        print_speed(speeds, args.rounds, len(x_test))
        print_profile(profile)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    print(
        "command: .venv/bin/python benchmarks/robustness.py " + " ".join(sys.argv[1:])
    )


if __name__ == "__main__":
    main()
