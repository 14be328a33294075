"""The shared argument checks: what passes, what is refused, and the exact
messages (each names the argument and ends with what it received)."""

import numpy as np
import pytest

from keras_harden._validation import (
    check_bool,
    check_int,
    check_number,
    check_positive,
)


def test_accepted_values_come_back_typed():
    assert check_bool("flag", False) is False
    assert check_int("steps", np.int64(3), minimum=1) == 3
    assert type(check_int("steps", np.int64(3))) is int
    assert check_int("limit", None, minimum=1, optional=True) is None
    assert check_number("rate", 1) == 1.0 and type(check_number("rate", 1)) is float
    assert check_number("p", 1.0, low=0, high=1, low_open=True) == 1.0
    assert check_positive("max_norm", None, optional=True) is None


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: check_bool("flag", 1),
            "`flag` must be True or False. Received: flag=1",
        ),
        (
            lambda: check_int("steps", 0, minimum=1),
            "`steps` must be an integer >= 1. Received: steps=0",
        ),
        (
            lambda: check_int("steps", 2.0, minimum=1),
            "`steps` must be an integer >= 1. Received: steps=2.0",
        ),
        (
            lambda: check_int("limit", False, minimum=1, optional=True),
            "`limit` must be None or an integer >= 1. Received: limit=False",
        ),
        (
            lambda: check_number("p", 0, low=0, high=1, low_open=True),
            r"`p` must be a number in \(0, 1\]. Received: p=0",
        ),
        (
            lambda: check_number("p", 1.5, low=0, high=1),
            r"`p` must be a number in \[0, 1\]. Received: p=1.5",
        ),
        (
            lambda: check_number("x", float("nan")),
            "`x` must be a number. Received: x=nan",
        ),
        (
            lambda: check_number("x", "3"),
            "`x` must be a number. Received: x='3'",
        ),
        (
            lambda: check_number("t", 2, low=1, low_open=True, high=2, high_open=True),
            r"`t` must be a number in \(1, 2\). Received: t=2",
        ),
        (
            lambda: check_number("top", 3, high=2),
            "`top` must be a number <= 2. Received: top=3",
        ),
        (
            lambda: check_positive("eps", -1e-3),
            "`eps` must be a number > 0. Received: eps=-0.001",
        ),
        (
            lambda: check_positive("eps", True),
            "`eps` must be a number > 0. Received: eps=True",
        ),
    ],
)
def test_refusals_name_the_argument_and_the_value(call, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()
