"""Test doubles for the executor, shipped for the project's tests and for users' own.

:class:`EmulatedDevice` is the executor's device interface on the CPU with lazy or random
scheduling, so a missing wait gives wrong pixels; :class:`BackendStageFactory` and
:class:`DeferredStageFactory` run CPU backends as device stages on it. The runtime never
imports this package (a test checks it).
"""

from __future__ import annotations

from .emulated import (
    SCHEDULES,
    BackendStageFactory,
    DeferredStageFactory,
    EmulatedDevice,
    EmulatedDeviceBuffer,
    EmulatedEvent,
    EmulatedStream,
)

__all__ = [
    "SCHEDULES",
    "EmulatedDevice",
    "EmulatedStream",
    "EmulatedEvent",
    "EmulatedDeviceBuffer",
    "BackendStageFactory",
    "DeferredStageFactory",
]
