"""The checks every option shares: a count is an int (never a bool) within bounds (at least 1 unless
told otherwise); a number is a real number (never a bool) within bounds. Each caller keeps its own
message, which says what to set.
"""

from __future__ import annotations

import math

__all__ = ["is_count", "count", "is_number", "number"]


def is_count(value, minimum: int | None = 1, maximum: int | None = None) -> bool:
    # bool is an int subclass: True would pass for 1 without this exclusion.
    return (isinstance(value, int) and not isinstance(value, bool)
            and (minimum is None or value >= minimum) and (maximum is None or value <= maximum))


def count(value, message: str, *, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` if it is an int in [``minimum``, ``maximum``] (None: no bound on that side), else ValueError(``message``)."""
    if not is_count(value, minimum, maximum):
        raise ValueError(message)
    return value


def is_number(value, *, low: float | None = None, high: float | None = None, low_open: bool = False,
              high_open: bool = False, finite: bool = True) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if math.isnan(value) or (finite and math.isinf(value)):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def number(value, message: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, finite: bool = True) -> float:
    """``value`` if it is a real number in [low, high] (open at an end with ``low_open`` / ``high_open``),
    else ValueError(``message``)."""
    if not is_number(value, low=low, high=high, low_open=low_open, high_open=high_open, finite=finite):
        raise ValueError(message)
    return value
