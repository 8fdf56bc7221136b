"""Deprecated location of :func:`runtime.utils.check_int` (removed once nothing imports it)."""

from .utils import check_int

__all__ = ["check_int"]
