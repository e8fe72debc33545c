"""Decides whether a live object still carries everything the operator wants on it. Pure.

The live object is a superset of what the operator applied: the API server adds defaults,
status and fields other managers own. So the test is "desired is contained in live", with
quantities compared by value (the API server rewrites `1000m` as `1`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity


def _same_quantity(desired: Any, live: Any) -> bool:
    if not isinstance(desired, str | int) or not isinstance(live, str | int):
        return False
    try:
        return bool(parse_quantity(desired) == parse_quantity(live))
    except (ValueError, InvalidOperation, TypeError):
        return False


def contains(live: Any, desired: Any) -> bool:
    """True when every field of `desired` has the same value in `live`.

    Lists are compared position by position; entries that another manager appended after
    the operator's are tolerated, as server-side apply keeps them.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) >= len(desired)
            and all(contains(lv, dv) for lv, dv in zip(live, desired, strict=False))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live  # True == 1 in Python, not in JSON
    if desired == live:
        return True
    if isinstance(desired, float | int) and isinstance(live, float | int):
        return Decimal(str(desired)) == Decimal(str(live))
    return _same_quantity(desired, live)
