"""Keras's own optimizer tests, as shipped in the installed keras wheel, run
against every Keras optimizer wrapped in `HardenedOptimizer` without rules: a
wrapper must pass the tests of what it wraps.

Each Keras test module builds its optimizer through one module-level name
(`adam_test.Adam`, ...); for the length of each test that name is replaced by
a factory returning `HardenedOptimizer(Adam(...))`. Importing `keras.src`
here is the only way to reach those tests; the package itself never does.

Left out, each for its reason (`LEFT_OUT`): tests that call a private member
of the optimizer (`_clip_gradients`, `_apply_weight_decay`, ...), tests
that count the optimizer's variables (the wrapper adds its statistics), and
tests that give the inner optimizer `clipnorm`/`clipvalue`, which the wrapper
refuses (Keras clips each replica's share under `tf.distribute`; the
wrapper's rules replace it).
"""

import importlib
import unittest
from unittest import mock

import pytest

from keras_harden.optimizers import HardenedOptimizer

# The wrapper's JAX path (`stateless_apply`) is exercised by the rest of the
# JAX pass; Keras's own tests run in the TensorFlow pass, to keep CI short.
pytestmark = pytest.mark.tf_only

# Keras test module -> the optimizer class it tests.
MODULES = {
    "adadelta": "Adadelta",
    "adafactor": "Adafactor",
    "adagrad": "Adagrad",
    "adam": "Adam",
    "adamax": "Adamax",
    "adamw": "AdamW",
    "ftrl": "Ftrl",
    "lamb": "Lamb",
    "lion": "Lion",
    "muon": "Muon",
    "nadam": "Nadam",
    "rmsprop": "RMSprop",
    "schedule_free_adamw": "ScheduleFreeAdamW",
    "sgd": "SGD",
}

_REFUSED_CLIP = (
    "gives the inner optimizer clipnorm/clipvalue, which the wrapper refuses, "
    "and calls the private `_clip_gradients`"
)
_EVERYWHERE = {"test_clip_norm": _REFUSED_CLIP, "test_clip_value": _REFUSED_CLIP}
LEFT_OUT = {
    "adam": {
        "test_clipnorm_indexed_slices": "gives the inner optimizer clipnorm, "
        "which the wrapper refuses",
        "test_ema": "reads the private `_model_variables_moving_average` "
        "(test_wrappers.py trains with EMA through SwapEMAWeights instead)",
        "test_ema_overwrite_frequency": "reads the private "
        "`_model_variables_moving_average`",
    },
    "muon": {
        "test_should_use_adamw": "calls the private `_should_use_adamw`",
        "test_muon_weight_decay": "calls the private `_apply_weight_decay`",
        "test_adamw_weight_decay": "calls the private `_apply_weight_decay`",
    },
    "nadam": {"test_build_with_empty_var_list": "reads the private `_u_product`"},
    "sgd": {"test_single_step": "counts the optimizer's variables"},
}


def _wrapped(optimizer_class):
    def make(*args, **kwargs):
        return HardenedOptimizer(optimizer_class(*args, **kwargs))

    return make


def _suite_class(module_name, class_name):
    module = importlib.import_module(f"keras.src.optimizers.{module_name}_test")
    cases = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, unittest.TestCase)
        and obj.__module__ == module.__name__
    ]
    assert len(cases) == 1, f"{module_name}_test holds {len(cases)} test classes"
    optimizer_class = getattr(module, class_name)

    def setUp(self):  # noqa: N802 - unittest's name
        super(cls, self).setUp()
        patch = mock.patch.object(module, class_name, _wrapped(optimizer_class))
        patch.start()
        self.addCleanup(patch.stop)

    attributes = {"setUp": setUp, "__module__": __name__}
    left_out = {**_EVERYWHERE, **LEFT_OUT.get(module_name, {})}
    for test_name, reason in left_out.items():
        assert hasattr(cases[0], test_name), f"{module_name}_test.{test_name} is gone"
        attributes[test_name] = unittest.skip(f"left out: {reason}")(
            getattr(cases[0], test_name)
        )
    cls = type(f"TestHardened{class_name}", (cases[0],), attributes)
    return cls


for _module_name, _class_name in MODULES.items():
    _cls = _suite_class(_module_name, _class_name)
    globals()[_cls.__name__] = _cls
del _cls


def test_every_keras_optimizer_test_module_is_run():
    """A Keras release that adds an optimizer adds it to this suite."""
    import pathlib

    import keras

    folder = pathlib.Path(keras.__file__).parent / "src" / "optimizers"
    shipped = {p.name[: -len("_test.py")] for p in folder.glob("*_test.py")}
    # Not an optimizer to wrap: the base class, the loss-scale wrapper (the
    # wrapper refuses to hold one), MultiOptimizer, and sparse-gradient tests
    # written against the base class.
    not_wrapped = {
        "optimizer",
        "loss_scale_optimizer",
        "multi_optimizer",
        "optimizer_sparse",
    }
    assert shipped - not_wrapped == set(MODULES)
