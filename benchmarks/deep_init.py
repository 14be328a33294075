"""Deep plain networks on the digits data: Keras's initializers versus ours.

Plain Dense networks (no normalisation, no residual connections), width 64,
`depth` hidden layers with ReLU or tanh, then a Dense(10) classifier, trained
with Adam(1e-3), batch 64, for `--epochs` epochs on scikit-learn's digits
(pixels scaled to [0, 1], flattened to 64 features). For every initializer the
script prints the first layer's gradient norm at step 0 (on one fixed batch of
64) and the test accuracy after training.

Initializers: Keras's `glorot` (the Dense default), `he` (he_normal),
`orthogonal`; ours: `delta_orthogonal` (DeltaOrthogonal, which is plain
orthogonal on Dense kernels, gain sqrt(2) for ReLU and 1 for tanh), `zero`
(ZerO), `lsuv` (lsuv on 256 training images after an orthonormal pre-init,
measured after each layer's activation, target standard deviation 0.5: the
setting that trained tanh best in trial runs; flags change it), `zero_lsuv`
(ZerO, then lsuv without the orthonormal pre-init, same LSUV settings)
and `seed_search` (seed_search over DeltaOrthogonal seeds, 8 trials x 20
steps; the winning seed's model is rebuilt and trained from scratch).

Run everything (32 cells; 20-60 minutes on 2 cores, depending on load):

    .venv/bin/python benchmarks/deep_init.py

or a subset:

    .venv/bin/python benchmarks/deep_init.py --depths 64 \
        --inits he,orthogonal,zero_lsuv   # the headline, 6 cells, a few minutes

`--repeats 3` runs each cell with seeds 0, 1, 2 and prints the median (and
each accuracy). Training on CPU is not bit-reproducible (threaded
reductions), so a rerun of an unstable cell can differ by 0.1 or more.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_harden as kh  # noqa: E402

KERAS_INITS = ("glorot", "he", "orthogonal")
OUR_INITS = ("delta_orthogonal", "zero", "lsuv", "seed_search", "zero_lsuv")
DEFAULT_INITS = (
    "glorot",
    "he",
    "orthogonal",
    "delta_orthogonal",
    "zero",
    "lsuv",
    "seed_search",
    "zero_lsuv",
)
LSUV = {"target_std": 0.5, "pre_activation": False}


def gain(activation):
    return 2.0**0.5 if activation == "relu" else 1.0


def build(depth, activation, init, seed):
    """The plain network; `init` picks every kernel initializer (classifier too)."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    for i in range(depth + 1):
        if init == "glorot":
            k = "glorot_uniform"
        elif init == "he":
            k = "he_normal"
        elif init == "orthogonal":
            k = "orthogonal"
        elif init in ("delta_orthogonal", "lsuv", "seed_search"):
            # One int seed per layer, derived from the model's seed.
            k = kh.initializers.DeltaOrthogonal(
                gain=gain(activation), seed=seed * 1000 + i
            )
        elif init in ("zero", "zero_lsuv"):
            k = kh.initializers.ZerO()
        else:
            raise ValueError(f"unknown init {init!r}")
        last = i == depth
        layers.append(
            keras.layers.Dense(
                10 if last else 64,
                activation=None if last else activation,
                kernel_initializer=k,
            )
        )
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def first_layer_grad_norm(model, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grad = tape.gradient(loss, model.layers[0].kernel)
    return float(tf.norm(grad))


def run_one(depth, activation, init, data, epochs, trials, steps, seed=0):
    """One cell: `seed` sets the model's initial draw and the data shuffling."""
    (x, y), (xt, yt) = data
    t0 = time.perf_counter()
    note = ""
    if init == "seed_search":
        result = kh.initializers.seed_search(
            lambda s: build(depth, activation, init, s),
            (x, y),
            seeds=list(range(seed * trials, (seed + 1) * trials)),
            steps=steps,
        )
        seed = result.seed
        eligible = sum(row["eligible"] for row in result.table)
        note = f"seed {seed} ({eligible}/{len(result.table)} eligible)"
    model = build(depth, activation, init, seed)
    if init in ("lsuv", "zero_lsuv"):
        report = kh.initializers.lsuv(
            model,
            x[:256],
            target_std=LSUV["target_std"],
            pre_activation=LSUV["pre_activation"],
            orthonormal=init == "lsuv",
            seed=0,
        )
        note = f"{sum(r.converged for r in report)}/{len(report)} converged"
    grad = first_layer_grad_norm(model, x[:64], y[:64])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    loss, acc = model.evaluate(xt, yt, verbose=0)
    return grad, acc, time.perf_counter() - t0, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="32,64")
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--inits", default=",".join(DEFAULT_INITS))
    parser.add_argument("--lsuv-target", type=float, default=0.5)
    parser.add_argument(
        "--lsuv-pre-activation",
        action="store_true",
        help="measure LSUV before each layer's activation (default: after)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=8, help="seed_search trials")
    parser.add_argument("--steps", type=int, default=20, help="seed_search steps")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per cell (model seeds 0..)"
    )
    args = parser.parse_args(argv)
    LSUV.update(target_std=args.lsuv_target, pre_activation=args.lsuv_pre_activation)

    (x, y), (xt, yt) = kh.data.load_digits()
    data = ((x.reshape(-1, 64) / 255.0, y), (xt.reshape(-1, 64) / 255.0, yt))
    depths = [int(d) for d in args.depths.split(",")]
    activations = args.activations.split(",")
    inits = args.inits.split(",")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"command: {' '.join(sys.argv)}")
    print("| depth | act | init | grad norm layer 1, step 0 | test acc | s | note |")
    print("| ---: | --- | --- | ---: | ---: | ---: | --- |")
    for depth in depths:
        for activation in activations:
            for init in inits:
                grads, accs, secs, notes = [], [], [], []
                for repeat in range(args.repeats):
                    g, a, s, n = run_one(
                        depth,
                        activation,
                        init,
                        data,
                        args.epochs,
                        args.trials,
                        args.steps,
                        seed=repeat,
                    )
                    grads.append(g)
                    accs.append(a)
                    secs.append(s)
                    notes.append(n)
                    keras.utils.clear_session()
                ours = "**" if init in OUR_INITS else ""
                note = "; ".join(n for n in notes if n)
                if args.repeats > 1:
                    note = f"accs {', '.join(f'{a:.3f}' for a in accs)}; {note}"
                acc = statistics.median(accs)
                print(
                    f"| {depth} | {activation} | {ours}{init}{ours} | "
                    f"{statistics.median(grads):.3g} | {acc:.3f} | "
                    f"{statistics.median(secs):.0f} | {note} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
