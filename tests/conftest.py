"""Shared fixtures. The CPU is split into two logical devices before TensorFlow
starts, so `tf.distribute.MirroredStrategy` tests have two replicas."""

import os

import pytest

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

if BACKEND == "jax":
    # Two host devices for `keras.distribution.DataParallel` tests; must be set
    # before JAX starts.
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    # Full float32 matmuls and convolutions on a GPU too (JAX defaults to
    # TF32 there), so the tolerances measured on CPU hold.
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
elif BACKEND == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [
            tf.config.LogicalDeviceConfiguration(),
            tf.config.LogicalDeviceConfiguration(),
        ],
    )

import keras  # noqa: E402

from keras_harden.data import load_digits  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip_tf = pytest.mark.skip(reason=f"needs TensorFlow itself; backend is {BACKEND}")
    skip_jax = pytest.mark.skip(
        reason=f"exercises the JAX backend; backend is {BACKEND}"
    )
    for item in items:
        if "tf_only" in item.keywords and BACKEND != "tensorflow":
            item.add_marker(skip_tf)
        if "jax_only" in item.keywords and BACKEND != "jax":
            item.add_marker(skip_jax)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with float32 policy and leaves none behind.

    The session is cleared without Keras's forced `gc.collect()`
    (`free_memory=False`): with TensorFlow loaded a full collection takes
    about 0.3 s, which after every test was most of the suite's time (the
    82 corruption tests: 26 s with it, 2.6 s without). Python's own
    collector still runs as objects pile up."""
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def digits():
    """The digits split: ((x_train, y_train), (x_test, y_test)), 8x8x1 in [0, 255]."""
    return load_digits()
