"""Deprecated location of :class:`runtime.utils.DefaultsHelpFormatter` (removed once nothing imports it)."""

from .utils import DefaultsHelpFormatter

__all__ = ["DefaultsHelpFormatter"]
