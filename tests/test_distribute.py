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


MULTI_WORKER_RULES = ["agc", "zclip"]


@pytest.fixture(scope="module")
def two_worker_weights(tmp_path_factory):
    """Runs two worker processes once for all rules; returns {rule: (w0, w1)}."""
    tmp = tmp_path_factory.mktemp("workers")
    ports = ",".join(str(p) for p in _free_ports(2))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    rules = ",".join(MULTI_WORKER_RULES)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distribute_worker",
                str(i),
                ports,
                str(tmp / f"worker{i}"),
                rules,
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
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    expected_files = sorted(
        [f"worker{i}-{rule}.npz" for i in range(2) for rule in MULTI_WORKER_RULES]
        + [f"worker{i}-keras-fit.txt" for i in range(2)]
    )
    assert sorted(os.listdir(tmp)) == expected_files  # nothing else left behind
    weights = {
        rule: tuple(
            list(np.load(tmp / f"worker{i}-{rule}.npz").values()) for i in range(2)
        )
        for rule in MULTI_WORKER_RULES
    }
    keras_fit = [(tmp / f"worker{i}-keras-fit.txt").read_text() for i in range(2)]
    return weights, keras_fit


def _single_process(rule):
    model = build_and_compile(rule)
    kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
    return [w.numpy() for w in model.weights]


def test_fit_matches_keras_fit_on_one_device():
    ours = _single_process("sgd")
    keras.utils.clear_session()
    model = build_and_compile("sgd")
    model.fit(dataset(), epochs=1, verbose=0, shuffle=False)
    for a, b in zip(ours, model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-6)


def test_fit_under_mirrored_strategy_equals_one_device():
    import tensorflow as tf

    expected = _single_process("sgd")
    # Reduction through one device: collective instance keys restart with each
    # new strategy in a process, and earlier tests' strategies may still hold them.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model = build_and_compile("sgd")
    kh.distribute.fit(model, dataset(), global_batch_size=GLOBAL_BATCH, verbose=0)
    for a, b in zip(expected, model.weights, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("rule", MULTI_WORKER_RULES)
def test_two_workers_equal_single_process(rule, two_worker_weights):
    worker0, worker1 = two_worker_weights[0][rule]
    expected = _single_process(rule)
    for a, b, c in zip(worker0, worker1, expected, strict=True):
        np.testing.assert_array_equal(a, b)  # both workers agree exactly
        np.testing.assert_allclose(a, c, atol=1e-5)


@pytest.mark.slow
def test_keras_fit_still_fails_under_multi_worker(two_worker_weights):
    # keras-team/keras#20585, the reason kh.distribute.fit exists. If this starts
    # failing, Keras fixed it: update the README section on multi-worker training.
    for outcome in two_worker_weights[1]:
        assert outcome.startswith("ValueError") and "PerReplica" in outcome


def test_bad_arguments():
    model = build_and_compile("sgd")
    with pytest.raises(ValueError, match="global_batch_size=0"):
        kh.distribute.fit(model, dataset(), global_batch_size=0)
    with pytest.raises(ValueError, match="epochs=0"):
        kh.distribute.fit(model, dataset(), global_batch_size=16, epochs=0)
    uncompiled = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="compiled"):
        kh.distribute.fit(uncompiled, dataset(), global_batch_size=16)
