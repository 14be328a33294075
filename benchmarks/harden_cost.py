"""What `kh.harden` costs next to a user's 3 x 3 grid, measured side by side.

For each chosen setup of the stability suite (`benchmarks/stability.py`) and
seed, in one process and back to back: the user's grid (learning rate x {1,
1/3, 1/10} times Keras's `global_clipnorm` in {None, 1, 5}, nine full runs)
and `kh.harden` with its winner's full training (no training is needed after
it). It prints, per run, the wall time and this process's CPU time (which
other jobs on a shared machine do not inflate) and the ratios harden / grid;
then medians and ranges over the seeds. The goal: at most 0.5. `--epochs`
lengthens every run, to see how the search's fixed cost (a compile per
candidate) weighs on longer runs.

    .venv/bin/python benchmarks/harden_cost.py \\
        --setups deep_mlp,conv_high_lr,lstm_healthy --seeds 2
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import stability  # noqa: E402


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(name, seed, data, epochs=None):
    """`{grid_wall, grid_cpu, harden_wall, harden_cpu, ...}` for one seed
    (`epochs` overrides the setup's)."""
    setup = stability.SETUPS[name]
    if epochs:
        setup = dataclasses.replace(setup, epochs=epochs)
    grid = stability.user_grid()

    def run_grid():
        return {
            value: stability.run_one(setup, factory, seed, data)["val_acc"]
            for value, factory in grid.items()
        }

    def run_harden():
        return stability.run_one(setup, stability.PRESCRIPTION, seed, data)

    _, grid_wall, grid_cpu = _timed(run_grid)
    rx, harden_wall, harden_cpu = _timed(run_harden)
    return {
        "grid_wall": grid_wall,
        "grid_cpu": grid_cpu,
        "harden_wall": harden_wall,
        "harden_cpu": harden_cpu,
        "choice": rx.get("choice"),
    }


def _spread(values):
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="deep_mlp,conv_high_lr,lstm_healthy")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="override the setups' epochs")
    args = parser.parse_args(argv)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    data = stability.load_data()
    print(
        "| setup | seed | grid wall s | harden wall s | wall ratio | grid CPU s "
        "| harden CPU s | CPU ratio | harden chose |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    ratios = {}
    for name in args.setups.split(","):
        for seed in range(args.seeds):
            m = measure(name, seed, data, args.epochs)
            wall = m["harden_wall"] / m["grid_wall"]
            cpu = m["harden_cpu"] / m["grid_cpu"]
            ratios.setdefault(name, []).append((wall, cpu))
            print(
                f"| {name} | {seed} | {m['grid_wall']:.1f} | {m['harden_wall']:.1f} "
                f"| {wall:.2f} | {m['grid_cpu']:.1f} | {m['harden_cpu']:.1f} "
                f"| {cpu:.2f} | {m['choice']} |",
                flush=True,
            )
    print("\n| setup | wall ratio, median [range] | CPU ratio, median [range] |")
    print("| --- | ---: | ---: |")
    for name, pairs in ratios.items():
        print(
            f"| {name} | {_spread([w for w, _ in pairs])} "
            f"| {_spread([c for _, c in pairs])} |"
        )


if __name__ == "__main__":
    main()
