"""Argument checks shared by the public entry points (never ``assert`` on user input)."""

from __future__ import annotations

import operator

from .errors import InvalidArgumentError

__all__ = ["check_int"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else InvalidArgumentError."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)  # accepts int and numpy integers, rejects floats
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        ) from None
    if number < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {number}")
    return number
