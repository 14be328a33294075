"""Argument checks shared by the package.

Each raises `ValueError` naming the argument and ending
`Received: name=value`, and returns the value (numbers as `float`, integers
as `int`). Booleans are never numbers here: `True` is not an integer >= 1.
"""

import math
import numbers

__all__ = ["check_bool", "check_int", "check_number", "check_positive"]


def _received(name, value):
    return f"Received: {name}={value!r}"


def check_bool(name, value):
    """`value` if it is `True` or `False`."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. {_received(name, value)}")
    return value


def check_int(name, value, minimum=None, optional=False):
    """`value` as an int if it is an integer (not a bool) >= `minimum`; `None`
    passes when `optional`.

    >>> check_int("steps", 3, minimum=1)
    3
    >>> check_int("steps", True, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: `steps` must be an integer >= 1. Received: steps=True
    """
    if optional and value is None:
        return None
    bad = isinstance(value, bool) or not isinstance(value, numbers.Integral)
    if not bad and minimum is not None:
        bad = value < minimum
    if bad:
        what = "an integer" if minimum is None else f"an integer >= {minimum}"
        if optional:
            what = "None or " + what
        raise ValueError(f"`{name}` must be {what}. {_received(name, value)}")
    return int(value)


def _interval(low, high, low_open, high_open):
    if low is not None and high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f" in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    name,
    value,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    optional=False,
):
    """`value` as a float if it is a finite real number (not a bool) within
    the bounds (`low_open`/`high_open` exclude a bound); `None` passes when
    `optional`.

    >>> check_number("beta", 0.5, low=0, high=1, low_open=True, high_open=True)
    0.5
    >>> check_number("beta", 1, low=0, high=1, low_open=True, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `beta` must be a number in (0, 1). Received: beta=1
    """
    if optional and value is None:
        return None
    bad = (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
    )
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        what = "a number" + _interval(low, high, low_open, high_open)
        if optional:
            what = "None or " + what
        raise ValueError(f"`{name}` must be {what}. {_received(name, value)}")
    return float(value)


def check_positive(name, value, optional=False):
    """`check_number(name, value, low=0, low_open=True, optional=optional)`."""
    return check_number(name, value, low=0, low_open=True, optional=optional)
