"""The one clamp for every number a visitor or an API client sends: beam width, opacity, speech rate."""
from __future__ import annotations


def clamp(value, low, high, default, kind=float):
    """``value`` as ``kind`` (int or float), limited to low..high; None, "" or text that is not a number
    give ``default``. Ints are rounded, not truncated: clamp("4.6", 1, 10, 3, int) == 5."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    if number != number:  # NaN
        return default
    number = min(high, max(low, number))
    return int(round(number)) if kind is int else kind(number)
