"""The shared count and number checks: bools refused, bounds exact, the caller's message raised."""

import math

import pytest

from interlock.checks import count, is_count, is_number, number


def test_counts():
    assert count(3, "m") == 3 and count(0, "m", minimum=0) == 0
    for bad in (True, 0, -1, 1.0, "2", None):
        assert not is_count(bad)
        with pytest.raises(ValueError, match="^say what to set$"):
            count(bad, "say what to set")


def test_numbers():
    assert number(0.5, "x", low=0, high=1) == 0.5 and number(1, "x", low=0, high=1) == 1
    assert is_number(math.inf, low=0, finite=False) and not is_number(math.inf)
    for bad, kw in ((0, {"low": 0, "low_open": True}), (1.5, {"high": 1}), (True, {}), (math.nan, {}), ("1", {})):
        assert not is_number(bad, **kw)
        with pytest.raises(ValueError, match="^nope$"):
            number(bad, "nope", **kw)


def test_count_maximum():
    assert count(4, "m", maximum=4) == 4 and is_count(0, 0, 0)
    for bad in (5, True, 0):
        assert not is_count(bad, 1, 4)
        with pytest.raises(ValueError, match="^at most 4$"):
            count(bad, "at most 4", maximum=4)


def test_number_high_open():
    # a dropout probability: [0, 1), so 1 itself is refused while 0.999 passes
    assert number(0.999, "p", low=0, high=1, high_open=True) == 0.999 and number(0, "p", low=0, high=1, high_open=True) == 0
    for bad in (1, 1.0, 2, -0.1, True):
        assert not is_number(bad, low=0, high=1, high_open=True)
    assert is_number(1, low=0, high=1)


def test_count_without_minimum():
    # an index that later checks bound: any int, never a bool
    assert is_count(-3, None) and is_count(0, None, 0) and not is_count(True, None) and not is_count(2.0, None)
