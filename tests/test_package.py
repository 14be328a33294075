import subprocess
import sys

import numpy as np
import pytest

import keras_harden as kh


def test_version_and_families():
    assert kh.__version__.count(".") == 2
    for family in ("optimizers", "initializers", "augment", "fusion", "diagnostics"):
        assert hasattr(kh, family)


def test_load_digits_shapes_and_range():
    (x, y), (xt, yt) = kh.data.load_digits(image_size=16, channels=3)
    assert x.shape[1:] == (16, 16, 3) and x.dtype == np.float32
    assert len(x) + len(xt) == 1797
    assert x.min() == 0.0 and x.max() == 255.0
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 12}, "image_size=12"),
        ({"channels": 2}, "channels=2"),
        ({"test_fraction": 1.5}, "test_fraction=1.5"),
    ],
)
def test_load_digits_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kh.data.load_digits(**kwargs)


def test_import_alone_in_fresh_process():
    code = "import keras_harden as kh; print(kh.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == kh.__version__
