"""Do `kh.harden`'s short trials rank its remedies as full training does?

For one setup of the stability suite (`benchmarks/stability.py`) and each
seed: runs `kh.harden`, prints its trials, then trains every remedy it tried
(except a re-initialisation) for the setup's full epochs from the same
initial weights and prints the test accuracy, the chosen one marked `*`.

    .venv/bin/python benchmarks/harden_trials.py --setup conv_high_lr --seeds 0,1,2
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

import keras_harden as kh  # noqa: E402
from benchmarks import stability  # noqa: E402


def remedy_optimizer(trial_name, setup):
    """The optimizer a trial named `trial_name` used, rebuilt fresh."""
    inner = setup.optimizer()
    config = inner.get_config()
    base = trial_name
    if trial_name.endswith(", lr / 10"):
        config["learning_rate"] = config["learning_rate"] / 10
        base = trial_name[: -len(", lr / 10")]
    inner = type(inner).from_config(config)
    if base == "plain":
        return kh.optimizers.HardenedOptimizer(inner)
    if base == "agc":
        return kh.optimizers.AdaptiveGradientClipping(inner)
    limit = float(base.split()[1])  # "clip 0.317"
    return kh.optimizers.GradientClipping(inner, global_clipnorm=limit)


def run_seed(setup, seed, data):
    train, _, test = data
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = setup.build()
    initial = model.get_weights()
    rx = kh.harden(
        model,
        train,
        optimizer=setup.optimizer(),
        loss=stability.LOSS,
        batch_size=stability.BATCH_SIZE,
    )
    print(f"seed {seed}: first-step norm {rx.first_step_norm:.3g}")
    for trial in rx.trials:
        if "lsuv" in trial.name:
            print(f"  {trial.name:24s} (re-initialisation: not retrained)")
            continue
        keras.utils.clear_session()
        keras.utils.set_random_seed(seed)
        full = setup.build()
        full.set_weights(initial)
        full.compile(
            optimizer=remedy_optimizer(trial.name, setup), loss=stability.LOSS
        )
        keras.utils.set_random_seed(seed)
        full.fit(
            *train, batch_size=stability.BATCH_SIZE, epochs=setup.epochs, verbose=0
        )
        mark = "*" if trial is rx.choice else " "
        accuracy = trial.held_out_accuracy
        print(
            f" {mark}{trial.name:24s} trial held-out acc "
            f"{'-' if accuracy is None else f'{accuracy:.3f}'}, loss "
            f"{trial.held_out_loss:.4f}; full test acc "
            f"{stability.accuracy(full, test):.3f}",
            flush=True,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", default="conv_high_lr", choices=stability.SETUPS)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    setup = stability.SETUPS[args.setup]
    data = stability.load_data()
    for seed in (int(s) for s in args.seeds.split(",")):
        run_seed(setup, seed, data)


if __name__ == "__main__":
    main()
