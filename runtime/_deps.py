"""Lazy imports of heavy optional packages, with an install hint when one is missing.

``import runtime`` must work with only numpy and Pillow installed, so onnxruntime, tqdm,
tensorrt, cuda-python and torch are imported here, inside the functions that need them,
never at module level.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError, UpscaleError

__all__ = ["require"]


def require(
    module: str,
    *,
    pip: str,
    purpose: str,
    error: type[UpscaleError] = MissingDependencyError,
) -> ModuleType:
    """Import ``module`` or raise ``error`` saying what needs it and how to install it.

    ``pip`` is the argument for ``pip install`` (the distribution name, which can differ
    from the module name); ``purpose`` completes "... is needed for <purpose>".
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(
            f"Python package {module!r} is needed for {purpose} but cannot be imported "
            f"({exc}); install it with: pip install {pip}"
        ) from exc
