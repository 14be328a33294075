"""`kh.distribute.fit`: the supported multi-worker path (Keras's own `fit` fails
under MultiWorkerMirroredStrategy, keras-team/keras#20585)."""

import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_harden as kh
from tests.distribute_problem import GLOBAL_BATCH, build_and_compile, dataset

pytestmark = pytest.mark.tf_only
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(rule, tmp_path, timeout=180):
    ports = ",".join(str(p) for p in _free_ports(2))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    outs = [str(tmp_path / f"worker{i}.npz") for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distribute_worker",
                str(i),
                ports,
                outs[i],
                rule,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return [list(np.load(o).values()) for o in outs]


def _single_process(rule):
    model = build_and_compile(rule)
    kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
    return [w.numpy() for w in model.weights]


def test_fit_matches_keras_fit_on_one_device():
    ours = _single_process("sgd")
    keras.utils.clear_session()
    model = build_and_compile("sgd")
    model.fit(dataset(), epochs=1, verbose=0)
    for a, b in zip(ours, model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-6)


def test_fit_under_mirrored_strategy_equals_one_device():
    import tensorflow as tf

    expected = _single_process("sgd")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_and_compile("sgd")
    kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
    for a, b in zip(expected, model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sgd"])
def test_two_workers_equal_single_process(rule, tmp_path):
    worker0, worker1 = _run_workers(rule, tmp_path)
    expected = _single_process(rule)
    for a, b, c in zip(worker0, worker1, expected, strict=True):
        np.testing.assert_array_equal(a, b)  # both workers agree exactly
        np.testing.assert_allclose(a, c, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["worker0.npz", "worker1.npz"]


def test_bad_arguments():
    model = build_and_compile("sgd")
    with pytest.raises(ValueError, match="global_batch_size=0"):
        kh.distribute.fit(model, dataset(), global_batch_size=0)
    with pytest.raises(ValueError, match="epochs=0"):
        kh.distribute.fit(model, dataset(), global_batch_size=16, epochs=0)
    uncompiled = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="compiled"):
        kh.distribute.fit(uncompiled, dataset(), global_batch_size=16)
