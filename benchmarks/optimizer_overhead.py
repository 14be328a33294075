"""Step-time overhead of the keras_harden optimizer wrappers.

A ResNet-20 (CIFAR shape 32x32x3, synthetic data, batch 128) is trained with
`jit_compile=True` under each optimizer; every wrapper's step time is divided
by the plain inner optimizer's, measured in the same run. Variants run in
interleaved rounds (the order rotates each round) and the figures are
medians, so load from other processes hits every variant alike. Wall-time
and process CPU-time ratios are both printed.

Run:

    .venv/bin/python benchmarks/optimizer_overhead.py  # 7 rounds x 2 steps
    .venv/bin/python benchmarks/optimizer_overhead.py --rounds 3 --steps 1  # quick

The default run took 8.5 min on the shared 2-core development machine under
load average 11-13, most of it the six XLA compiles (35-50 s each there).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_harden as kh  # noqa: E402

kho = kh.optimizers


def resnet20(num_classes=10, seed=0):
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2): 3 stages of 3 basic
    blocks, 16/32/64 filters, batch norm, about 0.27 M parameters."""
    init = keras.initializers.HeNormal(seed=seed)

    def conv(x, filters, stride=1):
        return keras.layers.Conv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=init,
        )(x)

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(inputs, 16)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            y = keras.layers.ReLU()(
                keras.layers.BatchNormalization()(conv(x, filters, stride))
            )
            y = keras.layers.BatchNormalization()(conv(y, filters))
            if stride != 1 or x.shape[-1] != filters:
                x = keras.layers.Conv2D(
                    filters, 1, strides=stride, use_bias=False, kernel_initializer=init
                )(x)
            x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init)(x)
    return keras.Model(inputs, outputs, name="resnet20")


def inner():
    return keras.optimizers.SGD(0.05, momentum=0.9)


VARIANTS = {
    "plain SGD (baseline)": inner,
    "Keras SGD(global_clipnorm=1)": lambda: keras.optimizers.SGD(
        0.05, momentum=0.9, global_clipnorm=1.0
    ),
    "GradientClipping(global_clipnorm=1)": lambda: kho.GradientClipping(
        inner(), global_clipnorm=1.0
    ),
    "AdaptiveGradientClipping": lambda: kho.AdaptiveGradientClipping(inner()),
    "AutoClip": lambda: kho.AutoClip(inner()),
    "ZClip": lambda: kho.ZClip(inner()),
    "AdaGC": lambda: kho.AdaGC(inner()),
}
BASELINE = "plain SGD (baseline)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--steps", type=int, default=2, help="steps per variant per round"
    )
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,)).astype("int32")
    weights = resnet20().get_weights()

    models = {}
    for name, make in VARIANTS.items():
        model = resnet20()
        model.set_weights(weights)
        model.compile(
            optimizer=make(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        start = time.perf_counter()
        model.train_on_batch(x, y)  # trace + XLA compile
        model.train_on_batch(x, y)
        print(f"compiled {name} in {time.perf_counter() - start:.1f} s", flush=True)
        models[name] = model

    names = list(models)
    times = {name: [] for name in names}
    ratios = {name: [] for name in names}
    cpu_ratios = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round, this_cpu = {}, {}
        for name in order:
            model = models[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            this_round[name] = (time.perf_counter() - start) / args.steps
            this_cpu[name] = (time.process_time() - start_cpu) / args.steps
            times[name].append(this_round[name])
        for name in names:
            ratios[name].append(this_round[name] / this_round[BASELINE])
            cpu_ratios[name].append(this_cpu[name] / this_cpu[BASELINE])
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print()
    print(
        f"ResNet-20, 32x32x3, batch {args.batch}, jit_compile=True, "
        f"{args.rounds} rounds x {args.steps} steps, keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    print()
    print(
        "| optimizer | median step, wall (ms) | wall-time ratio vs plain | "
        "CPU-time ratio vs plain |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        print(
            f"| {name} | {1000 * statistics.median(times[name]):.1f} | "
            f"{statistics.median(ratios[name]):.3f} | "
            f"{statistics.median(cpu_ratios[name]):.3f} |"
        )
    print()
    print(
        "Ratios are medians of per-round ratios (each round times every "
        "variant back to back). CPU time is this process's, all threads: it "
        "is less sensitive than wall time to other processes on the machine."
    )


if __name__ == "__main__":
    main()
