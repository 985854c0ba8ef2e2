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
