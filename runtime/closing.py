"""``with`` support for the runtime's objects that own resources: one mixin, not six copies."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["Closing"]

_C = TypeVar("_C", bound="Closing")  # typing.Self needs Python 3.11; the project supports 3.10


class Closing:
    """``with obj: ...`` closes ``obj`` on the way out, error or not; ``close`` must be idempotent."""

    def close(self) -> None:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
