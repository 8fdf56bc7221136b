"""How much memory this machine has free now: the one reading the memory budgets share.

Linux reports ``MemAvailable`` (what can be allocated without swapping, page cache
included) in /proc/meminfo; elsewhere ``None`` and the callers fall back to a fixed size.
"""

from __future__ import annotations

__all__ = ["available_memory_bytes"]


def available_memory_bytes() -> int | None:
    """``MemAvailable`` in bytes, or None where /proc/meminfo is missing or unreadable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
