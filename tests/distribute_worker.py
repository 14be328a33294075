"""One worker of the multi-worker test: `python -m tests.distribute_worker
INDEX PORTS OUT_PREFIX RULE[,RULE...]`. For each rule, trains the shared tiny model
with `kh.distribute.fit` under `MultiWorkerMirroredStrategy` over 127.0.0.1 and
writes its final weights to OUT_PREFIX-RULE.npz."""

import json
import os
import sys


def main(index, ports, out_prefix, rules):
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]},
            "task": {"type": "worker", "index": int(index)},
        }
    )
    import numpy as np
    import tensorflow as tf

    import keras_harden as kh
    from tests.distribute_problem import GLOBAL_BATCH, build_and_compile, dataset

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    for rule in rules.split(","):
        with strategy.scope():
            model = build_and_compile(rule)
        kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
        np.savez(f"{out_prefix}-{rule}.npz", *[w.numpy() for w in model.weights])
    # Keras's own fit under this strategy (keras-team/keras#20585): record what
    # happens, so the test notices the day Keras fixes it.
    try:
        model.fit(dataset(), epochs=1, verbose=0, shuffle=False)
        outcome = "ok"
    except ValueError as error:
        outcome = f"ValueError: {str(error)[:200]}"
    with open(f"{out_prefix}-keras-fit.txt", "w") as f:
        f.write(outcome)


if __name__ == "__main__":
    main(*sys.argv[1:])
