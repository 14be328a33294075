"""Images per second of augmentation layers mapped over a `tf.data` pipeline.

64x64x3 float images in [0, 255], batches of 128, the layer mapped on batches
(`num_parallel_calls=AUTOTUNE`), a cached batch repeated so that nothing but
the augmentation is measured. Variants run interleaved in rounds (the order
rotated each round); each figure is the median over the rounds, ratios are
against the baseline of the same run, with the range of the per-round ratios
(each variant against the baseline timed in the same round, so the load of the
moment cancels).

Two comparisons:

1. RandAugment, 2 operations per image, magnitude 0.5 (no magnitude noise):
   ours vs `keras.layers.RandAugment(num_ops=2, factor=0.5)` vs keras-cv's
   `RandAugment(augmentations_per_image=2, magnitude=0.5,
   magnitude_stddev=0)` when keras-cv is importable.
2. The "light" preset (`kh.augment.pipeline("light")`) vs its own layers
   (`keras.layers.RandomFlip` then our `RandomResizedCrop`) called one after
   the other by hand: the cost of the composing layer. For reference, Keras's
   nearest built-in composition (`RandomFlip` + `RandomZoom`) is timed too.

3. With `--accuracy`: the claim that augmentation does not cost accuracy.
   scikit-learn's digits upsampled to 16x16, a small conv net, Adam, trained
   `--epochs` epochs from the same seeds with and without
   `kh.augment.pipeline("standard", flip=None, magnitude=0.3,
   crop_scale=(0.6, 1.0))`; test accuracy per seed and mean.

Run (keras-cv lives in its own venv, see benchmarks/RESULTS.md):

    .venv-cv/bin/python benchmarks/augment_throughput.py --rounds 11 --steps 24
    .venv/bin/python benchmarks/augment_throughput.py --skip-throughput --accuracy
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_harden as kh


def make_batch(batch_size, size, seed=0):
    """Smooth random images (low-frequency noise upsampled), like photos more
    than white noise, in [0, 255]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (batch_size, size // 8, size // 8, 3))
    images = tf.image.resize(coarse.astype("float32"), (size, size), "bicubic")
    return tf.clip_by_value(images, 0.0, 255.0)


WARMUP = 4  # batches before the clock starts: iterator start-up, autotuning


def throughput(fn, batch, steps):
    """Images per second after the warm-up, and the start-up: seconds from
    building the map (tracing) to the first batch."""
    start = time.perf_counter()
    ds = tf.data.Dataset.from_tensors(batch).repeat(steps + WARMUP)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    iterator = iter(ds)
    next(iterator)
    startup = time.perf_counter() - start
    for _ in range(WARMUP - 1):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    elapsed = time.perf_counter() - start
    return steps * int(batch.shape[0]) / elapsed, startup


def randaugment_variants():
    variants = {
        "keras_harden.augment.RandAugment": kh.augment.RandAugment(
            num_ops=2, magnitude=0.5, seed=1
        ),
        "keras.layers.RandAugment": keras.layers.RandAugment(
            num_ops=2, factor=0.5, seed=1
        ),
    }
    try:
        import keras_cv
    except ImportError:
        print("keras-cv not importable: its column is skipped")
    else:
        variants["keras_cv.layers.RandAugment"] = keras_cv.layers.RandAugment(
            value_range=(0, 255),
            augmentations_per_image=2,
            magnitude=0.5,
            magnitude_stddev=0.0,
            seed=1,
        )
    return variants


def light_variants(size):
    preset = kh.augment.pipeline("light", seed=1)
    flip = keras.layers.RandomFlip("horizontal", seed=1)
    crop = kh.augment.RandomResizedCrop(scale=(0.25, 1.0), seed=2)
    keras_flip = keras.layers.RandomFlip("horizontal", seed=1)
    keras_zoom = keras.layers.RandomZoom((-0.5, 0.0), seed=2)
    return {
        'kh.augment.pipeline("light")': preset,
        "same layers by hand": lambda x: crop(flip(x)),
        "keras RandomFlip+RandomZoom (reference)": lambda x: keras_zoom(keras_flip(x)),
    }


def run(title, variants, baseline, batch, steps, rounds):
    samples = {name: [] for name in variants}
    startups = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        # Rotate the order each round: no variant always runs first.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rate, startup = throughput(variants[name], batch, steps)
            samples[name].append(rate)
            startups[name].append(startup)
    print(f"\n{title}")
    header = f"{'variant':45s} {'images/s (median)':>18s} {'min-max':>12s}"
    print(f"{header} {'ratio per round: median (min-max)':>34s} {'start-up s':>11s}")
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        ratios = ratio_summary(values, samples[baseline])
        startup = statistics.median(startups[name])
        print(f"{name:45s} {median:18.0f} {spread:>12s} {ratios:>34s} {startup:11.2f}")
    return samples


def ratio_summary(values, baseline):
    ratios = [v / b for v, b in zip(values, baseline, strict=True)]
    low, high = min(ratios), max(ratios)
    return f"{statistics.median(ratios):.2f} ({low:.2f}-{high:.2f})"


def digits_accuracy(epochs, seeds):
    (x, y), (x_test, y_test) = kh.data.load_digits(image_size=16, channels=1)

    def build(augment, seed):
        init = keras.initializers.GlorotUniform(seed=seed)
        layers = [keras.Input((16, 16, 1))] + ([augment] if augment else [])
        layers += [
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(
                16, 3, padding="same", activation="relu", kernel_initializer=init
            ),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ]
        model = keras.Sequential(layers)
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    variants = {
        "no augmentation": lambda seed: None,
        'pipeline("standard", magnitude=0.3, crop_scale=(0.6, 1))': lambda seed: (
            kh.augment.pipeline(
                "standard", flip=None, magnitude=0.3, crop_scale=(0.6, 1.0), seed=seed
            )
        ),
    }
    print(f"\nDigits 16x16, {epochs} epochs, test accuracy per seed")
    for name, make in variants.items():
        accuracies = []
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            model = build(make(seed), seed)
            model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
            accuracies.append(model.evaluate(x_test, y_test, verbose=0)[1])
        shown = " ".join(f"{a:.4f}" for a in accuracies)
        print(f"{name:60s} {shown}  mean {statistics.mean(accuracies):.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=24, help="batches per timing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--accuracy", action="store_true", help="digits accuracy check")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.accuracy:
        digits_accuracy(args.epochs, args.seeds)
    if args.skip_throughput:
        return
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}, backend ")
    print(f"{keras.backend.backend()}; {args.rounds} rounds of {args.steps} batches")
    print(f"after {WARMUP} warm-up batches per timing")
    batch = make_batch(args.batch_size, args.size)

    ra = run(
        "RandAugment, 2 ops per image, magnitude 0.5 (ratio vs Keras 3)",
        randaugment_variants(),
        "keras.layers.RandAugment",
        batch,
        args.steps,
        args.rounds,
    )
    ours = ra["keras_harden.augment.RandAugment"]
    if "keras_cv.layers.RandAugment" in ra:
        ratios = ratio_summary(ours, ra["keras_cv.layers.RandAugment"])
        print(f"ours / keras-cv per round: {ratios}")
    run(
        "Light preset (ratio vs the same layers by hand)",
        light_variants(args.size),
        "same layers by hand",
        batch,
        args.steps,
        args.rounds,
    )


if __name__ == "__main__":
    main()
