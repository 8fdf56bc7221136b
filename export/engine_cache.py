"""Build options of a TensorRT engine, the engine cache key, and the cache folder.

A TensorRT plan is only valid for the ONNX graph, the build options, the TensorRT version
and the GPU it was built with: NVIDIA's developer guide says serialized engines are by
default only compatible with the TensorRT version and the GPU model that built them. So
the cache key is the SHA-256 of all of those (see :func:`cache_key`): the ONNX bytes'
hash, *every* field of :class:`BuildOptions`, the TensorRT version, the GPU name and its
compute capability. A unit test changes each field in turn and checks that the key
changes, so a new option cannot be forgotten (vs-mlrt's key once missed some).

Options that do not change the engine (where the timing cache lives, progress output)
are deliberately not fields of :class:`BuildOptions`.

Writes are atomic (:func:`runtime.utils.atomic_write_bytes`: temporary file in the same
folder, fsync, ``os.replace``; re-exported here with ``atomic_write_json`` and
``file_sha256`` for the callers that import them from this module) and a cached
engine is reused only after it deserialises (the caller passes the check), never on the
strength of its file name or size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from export.errors import BuildOptionsError
from runtime.errors import InvalidArgumentError
from runtime.layout import ModelIO, Precision
from runtime.utils import atomic_write_bytes, atomic_write_json, check_int, file_sha256

__all__ = [
    "KEY_FORMAT",
    "Precision",
    "BuildOptions",
    "BuildOptionsError",
    "ProfileShapes",
    "cache_key",
    "EngineCache",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_sha256",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

KEY_FORMAT = 1
"""Bumped when the meaning of the key's inputs changes, so old cache entries stop matching."""

ProfileShapes = tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int]]
"""``(min, opt, max)`` input shapes of one optimisation profile, in the model's layout."""


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Everything that changes the engine TensorRT builds from a given ONNX graph.

    Windows are ``tile + 2*halo`` pixels per side (the runtime's fixed window, see
    ``runtime/tiling.py``); each optimisation profile admits ``min_batch..batch`` windows
    of ``min_window..tile + 2*halo`` pixels per side (height and width independently:
    images smaller than a window give smaller windows), and TensorRT tunes its kernels for
    the ``opt`` shape, a full batch of full windows.

    ``profiles`` identical profiles are built, one per concurrent execution context: the
    TensorRT developer guide says each execution context (one per CUDA stream of the
    pipeline) must use a separate optimisation profile. The runtime gives stage ``k``
    profile ``k``, so this bounds the number of slots in flight.

    Defaults follow the runtime's (``runtime/upscaler.py``: tile 128, GPU batch 8;
    ``runtime/pipeline.py``: 3 slots).
    """

    precision: Precision
    tile: int = 128
    halo: int = 16
    batch: int = 8
    min_batch: int = 1
    min_window: int = 32
    profiles: int = 3
    opt_level: int | None = None
    """``IBuilderConfig.builder_optimization_level`` (0..5); None keeps TensorRT's default (3)."""
    workspace: int | None = None
    """Workspace memory pool limit in bytes (``MemoryPoolType.WORKSPACE``); None: TensorRT's default."""
    allow_tf32: bool = False
    """Keep ``BuilderFlag.TF32`` (TensorRT's default: float32 convolutions and matmuls may round
    their inputs to 10-bit mantissas). Off, the builder clears it, so the float32 layers of every
    engine (all of an fp32 graph, the float32 edges of an fp16/int8 one) compute in float32."""

    def __post_init__(self) -> None:
        try:
            precision = Precision.parse(self.precision, what="--precision")
        except InvalidArgumentError as e:
            raise BuildOptionsError(str(e)) from None
        object.__setattr__(self, "precision", precision)
        for name, minimum in (
            ("tile", 1),
            ("halo", 0),
            ("batch", 1),
            ("min_batch", 1),
            ("min_window", 1),
            ("profiles", 1),
        ):
            self._check_int(name, minimum)
        if self.min_batch > self.batch:
            raise BuildOptionsError(f"--min-batch {self.min_batch} must not exceed --batch {self.batch}")
        if self.min_window > self.window:
            raise BuildOptionsError(
                f"--min-window {self.min_window} must not exceed the window tile + 2*halo = "
                f"{self.tile} + 2*{self.halo} = {self.window}"
            )
        if self.opt_level is not None and (
            isinstance(self.opt_level, bool) or not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= 5
        ):
            raise BuildOptionsError(f"--opt-level must be an integer 0..5 (TensorRT's range), got {self.opt_level!r}")
        if self.workspace is not None:
            self._check_int("workspace", 1)
        if not isinstance(self.allow_tf32, bool):
            raise BuildOptionsError(f"--allow-tf32 must be True or False, got {self.allow_tf32!r}")

    def _check_int(self, name: str, minimum: int) -> None:
        """Field ``name`` as a plain int >= ``minimum`` (numpy integers too, so the options
        stay JSON-ready), else :class:`BuildOptionsError` naming its CLI flag."""
        flag = "--" + name.replace("_", "-")
        object.__setattr__(self, name, check_int(flag, getattr(self, name), minimum, error=BuildOptionsError))

    @property
    def window(self) -> int:
        """Largest (and optimal) window edge: ``tile + 2*halo``."""
        return self.tile + 2 * self.halo

    def profile_shapes(self, io: ModelIO | str) -> ProfileShapes:
        """``(min, opt, max)`` input shapes for the model layout ``io`` (NCHW or NHWC)."""
        layout = ModelIO(io)
        return (
            layout.batch_shape(self.min_batch, self.min_window, self.min_window),
            layout.batch_shape(self.batch, self.window, self.window),
            layout.batch_shape(self.batch, self.window, self.window),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (enums as their values), in declaration order."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BuildOptionsError(f"unknown build options {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


def cache_key(
    *,
    onnx_sha256: str,
    options: BuildOptions,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
) -> str:
    """SHA-256 (hex) identifying the engine built from these inputs; see the module doc."""
    payload = {
        "key_format": KEY_FORMAT,
        "onnx_sha256": onnx_sha256,
        "options": options.to_dict(),
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- files


def default_cache_dir() -> Path:
    """``$FOURPP_EUSR_CACHE`` or ``$XDG_CACHE_HOME/fourpp-eusr`` (``~/.cache/fourpp-eusr``)."""
    env = os.environ.get("FOURPP_EUSR_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fourpp-eusr"


class EngineCache:
    """A folder of ``<key>.plan`` engines, each with its ``<key>.plan.json`` sidecar."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def plan_path(self, key: str) -> Path:
        return self.root / f"{key}.plan"

    def lookup(self, key: str, deserialises: Callable[[bytes], bool]) -> tuple[bytes, dict[str, Any]] | None:
        """The cached ``(plan, sidecar)`` for ``key`` if present, consistent (the sidecar
        names this key and the plan's hash) and ``deserialises(plan)`` is true; else None."""
        plan_path = self.plan_path(key)
        side_path = Path(f"{plan_path}.json")
        try:
            plan = plan_path.read_bytes()
            sidecar = json.loads(side_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("engine cache entry %s is unreadable (%s); rebuilding", plan_path, exc)
            return None
        if not isinstance(sidecar, dict) or sidecar.get("cache_key") != key:
            log.warning("engine cache entry %s: its sidecar names another key; rebuilding", plan_path)
            return None
        if sidecar.get("engine_sha256") != hashlib.sha256(plan).hexdigest():
            log.warning("engine cache entry %s does not match its sidecar's hash; rebuilding", plan_path)
            return None
        if not deserialises(plan):
            log.warning("engine cache entry %s does not deserialise; rebuilding", plan_path)
            return None
        return plan, sidecar

    def store(self, key: str, plan: bytes, sidecar: Mapping[str, Any]) -> Path:
        """Write the plan, then its sidecar (each atomically); returns the plan's path."""
        path = atomic_write_bytes(self.plan_path(key), plan)
        atomic_write_json(f"{path}.json", {**sidecar, "engine": path.name})
        return path
