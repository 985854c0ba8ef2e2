"""The checks every option shares: a count is an int (never a bool) at least some minimum; a number is
a real number (never a bool) within bounds. Each caller keeps its own message, which says what to set.
"""

from __future__ import annotations

import math

__all__ = ["is_count", "count", "is_number", "number"]


def is_count(value, minimum: int = 1) -> bool:
    # bool is an int subclass: True would pass for 1 without this exclusion.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def count(value, message: str, *, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else ValueError(``message``)."""
    if not is_count(value, minimum):
        raise ValueError(message)
    return value


def is_number(value, *, low: float | None = None, high: float | None = None, low_open: bool = False,
              finite: bool = True) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if math.isnan(value) or (finite and math.isinf(value)):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or value <= high


def number(value, message: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           finite: bool = True) -> float:
    """``value`` if it is a real number in [low, high] ((low, high] with ``low_open``), else ValueError(``message``)."""
    if not is_number(value, low=low, high=high, low_open=low_open, finite=finite):
        raise ValueError(message)
    return value
