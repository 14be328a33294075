"""One worker of the multi-worker test: `python -m tests.distribute_worker
INDEX PORTS OUT RULE`. Trains the shared tiny model with `kh.distribute.fit` under
`MultiWorkerMirroredStrategy` over 127.0.0.1 and writes its final weights to OUT."""

import json
import os
import sys


def main(index, ports, out, rule):
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
    with strategy.scope():
        model = build_and_compile(rule)
    kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
    np.savez(out, *[w.numpy() for w in model.weights])


if __name__ == "__main__":
    main(*sys.argv[1:])
