"""Every `>>>` example in the package's docstrings runs, with the output it
shows. The examples print NumPy values and tuples, not backend tensors."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_harden as kh

pytestmark = pytest.mark.tf_only

MODULES = ["keras_harden"] + sorted(
    info.name
    for info in pkgutil.walk_packages(kh.__path__, "keras_harden.")
    if not info.name.endswith("__main__")
)


def _doctests(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    tests = finder.find(
        module, module_name, extraglobs={"keras": keras, "kh": kh, "np": np}
    )
    return [test for test in tests if test.examples]


def test_the_package_has_examples():
    count = sum(len(t.examples) for name in MODULES for t in _doctests(name))
    assert count > 100, count


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name):
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    report = []
    for test in _doctests(module_name):
        keras.utils.clear_session()  # layer names in outputs start afresh
        runner.run(test, out=report.append)
    summary = runner.summarize(verbose=False)
    assert summary.failed == 0, "".join(report)
