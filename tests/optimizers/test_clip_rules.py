"""Golden values for the stateless clip rules, applied through the wrapper
with SGD(1.0), so the applied step is minus the clipped gradient."""

import numpy as np
import pytest

from keras_harden.optimizers import (
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    UnitwiseClip,
)
from tests.optimizers._helpers import step_of
from tests.toolkit import assert_config_round_trip


def test_clip_by_value():
    applied, _, _ = step_of(ClipByValue(0.5), [[[1.0, -2.0, 0.3]]])
    np.testing.assert_allclose(applied[0], [0.5, -0.5, 0.3], rtol=1e-6)


def test_clip_by_norm_is_per_tensor():
    # (3, 4) -> norm 5 -> (0.6, 0.8); (0.3, 0.4) -> norm 0.5 -> unchanged.
    applied, opt, _ = step_of(ClipByNorm(1.0), [[[3.0, 4.0], [0.3, 0.4]]])
    np.testing.assert_allclose(applied[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(applied[1], [0.3, 0.4], rtol=1e-6)
    # Statistics: before sqrt(25 + 0.25); after sqrt(1 + 0.25).
    assert float(opt.gradient_norm) == pytest.approx(np.sqrt(25.25))
    assert float(opt.clipped_gradient_norm) == pytest.approx(np.sqrt(1.25))


def test_clip_by_global_norm_keeps_direction():
    # Global norm 13 -> everything / 13.
    applied, opt, _ = step_of(ClipByGlobalNorm(1.0), [[[3.0, 4.0], [0.0, 12.0]]])
    np.testing.assert_allclose(applied[0], [3 / 13, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(applied[1], [0.0, 12 / 13], rtol=1e-6)
    assert float(opt.gradient_norm) == pytest.approx(13.0)
    assert float(opt.clipped_gradient_norm) == pytest.approx(1.0)


def test_rules_apply_in_order():
    # Value 1.0 first: (3, 4) -> (1, 1), norm sqrt(2); then global norm 1.0
    # -> (1, 1) / sqrt(2). The other order would give (0.6, 0.8).
    applied, _, _ = step_of([ClipByValue(1.0), ClipByGlobalNorm(1.0)], [[[3.0, 4.0]]])
    np.testing.assert_allclose(applied[0], [2**-0.5, 2**-0.5], rtol=1e-6)


def test_unitwise_clip_through_wrapper_with_exclude():
    # As in test_gradient_ops: limits 0.5 and 1e-4 for W = [[3, 0], [4, 0]].
    weights = [np.float32([[3.0, 0.0], [4.0, 0.0]]), np.float32([3.0, 4.0])]
    grads = [[[[0.6, 0.3], [0.8, 0.4]], [0.0, 2.0]]]
    applied, _, _ = step_of(UnitwiseClip(0.1), grads, weights)
    np.testing.assert_allclose(applied[0], [[0.3, 6e-5], [0.4, 8e-5]], rtol=1e-5)
    np.testing.assert_allclose(applied[1], [0.0, 0.5], rtol=1e-6)
    # `exclude` matches the variable path ("w1"): the bias is left alone.
    applied, _, _ = step_of(UnitwiseClip(0.1, exclude=["w1"]), grads, weights)
    np.testing.assert_allclose(applied[1], [0.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ClipByValue(0), "Received: clip_value=0"),
        (lambda: ClipByNorm(-1.0), "Received: clip_norm=-1.0"),
        (lambda: ClipByGlobalNorm("1"), "Received: clip_norm='1'"),
        (lambda: UnitwiseClip(clip_factor=0.0), "Received: clip_factor=0.0"),
        (lambda: UnitwiseClip(eps=-1e-3), "Received: eps=-0.001"),
        (lambda: UnitwiseClip(exclude=[3]), "Received: exclude=[3]"),
        (lambda: UnitwiseClip(exclude=["("]), "Received: exclude=['(']"),
    ],
)
def test_argument_errors(make, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace("[", r"\[")
    ):
        make()


@pytest.mark.parametrize(
    "rule",
    [
        ClipByValue(0.5),
        ClipByNorm(2.0),
        ClipByGlobalNorm(1.0),
        UnitwiseClip(0.02, exclude=["head"]),
    ],
)
def test_config_round_trip(rule):
    assert_config_round_trip(rule)
