"""Whole-number arithmetic shared by the training loop, the cache and the UI."""

from __future__ import annotations

__all__ = ["ceil_div"]


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up, in integers (batches of ``b`` that hold ``a`` items)."""
    return -(-a // b)
