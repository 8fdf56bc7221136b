"""The JSON sidecar of a TensorRT engine (``model.plan`` → ``model.plan.json``), and the GPU query.

``export/to_trt.py`` writes the sidecar beside every engine; the TensorRT backend (and a
C++ application loading the same plan) reads it to learn, without TensorRT, what the
engine is: the model's I/O contract and scale (the ONNX ``fourpp_eusr`` metadata), the
optimisation profiles, the I/O tensors as the engine reports them, the build options, and
what it was built *for*: the TensorRT version and the GPU (name + compute capability).
NVIDIA's developer guide says a serialized engine is, by default, only compatible with
the TensorRT version and GPU model that built it, so :func:`check_compatible` compares
those with the running ones before deserialising and says which differ.

Pure Python (json): importable with numpy and Pillow only. The GPU query uses NVIDIA's
``cuda-python`` (``cudaGetDeviceProperties``) when installed, else ``nvidia-smi``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError, UpscaleError
from .model_info import ModelInfo, ModelIO, parse_metadata

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_SUFFIX",
    "EngineMismatchError",
    "GpuInfo",
    "GpuQueryError",
    "sidecar_path",
    "query_gpu",
    "read_sidecar",
    "check_compatible",
    "model_info_from_sidecar",
    "tf32_allowed",
]

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
SIDECAR_SUFFIX = ".json"
_REQUIRED = ("format", "tensorrt_version", "model", "io_tensors", "profiles", "engine_sha256")


class EngineMismatchError(ModelError):
    """The engine was built for another TensorRT version or GPU than the one here."""


class GpuQueryError(UpscaleError):
    """Neither cuda-python nor nvidia-smi could say which GPU this is."""


@dataclass(frozen=True)
class GpuInfo:
    """What a TensorRT engine is specific to: the GPU model and its compute capability."""

    name: str
    compute_capability: str  # "9.0"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.plan`` → ``model.plan.json``."""
    return Path(f"{os.fspath(engine_path)}{SIDECAR_SUFFIX}")


# --------------------------------------------------------------------------- GPU query


def _gpu_from_cuda_python(device: int) -> GpuInfo:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6, the project's minimum
    except ImportError:
        raise GpuQueryError("cuda-python is not installed (pip install 'cuda-python>=12.6')") from None
    err, prop = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise GpuQueryError(f"cudaGetDeviceProperties({device}) failed with {getattr(err, 'name', err)}")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return GpuInfo(name=str(name).strip(), compute_capability=f"{prop.major}.{prop.minor}")


def _gpu_from_nvidia_smi(device: int) -> GpuInfo:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise GpuQueryError("nvidia-smi is not on PATH")
    # CUDA numbers the devices listed in CUDA_VISIBLE_DEVICES; nvidia-smi numbers all of them.
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    selector = visible[device] if device < len(visible) else str(device)
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", selector],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuQueryError(f"nvidia-smi failed: {exc}") from None
    name, _, cc = out.splitlines()[0].rpartition(",") if out else ("", "", "")
    if not name.strip() or not cc.strip():
        raise GpuQueryError(f"nvidia-smi gave no name/compute capability for GPU {selector}: {out!r}")
    return GpuInfo(name=name.strip(), compute_capability=cc.strip())


def query_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (cuda-python, else nvidia-smi).

    Raises :class:`GpuQueryError` with both reasons when neither works (no GPU, no driver).
    """
    reasons = []
    for query in (_gpu_from_cuda_python, _gpu_from_nvidia_smi):
        try:
            return query(device)
        except GpuQueryError as exc:
            reasons.append(str(exc))
    raise GpuQueryError(f"cannot identify CUDA device {device}: " + "; ".join(reasons))


# --------------------------------------------------------------------------- sidecar


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check the sidecar at ``path``; raises :class:`ModelError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{path}: no such sidecar; the TensorRT backend needs the JSON that export/to_trt.py "
            "writes beside the engine (rebuild the engine with export/to_trt.py)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the engine sidecar ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: the engine sidecar must be a JSON object, got {type(data).__name__}")
    if data.get("format") != SIDECAR_FORMAT:
        raise ModelError(
            f"{path}: sidecar format {data.get('format')!r} is not supported (expected "
            f"{SIDECAR_FORMAT}); rebuild the engine with this version's export/to_trt.py"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"{path}: the engine sidecar lacks {missing}; rebuild the engine with export/to_trt.py")
    return data


def check_compatible(
    sidecar: Mapping[str, Any],
    *,
    engine: str,
    trt_version: str,
    gpu: GpuInfo | None,
    strict_gpu: bool = True,
) -> None:
    """Raise :class:`EngineMismatchError` if ``engine`` was built for another TensorRT or GPU.

    The TensorRT version must match exactly (a plan from another version does not
    deserialise). A different GPU (name or compute capability) is an error unless
    ``strict_gpu`` is false, then a warning. ``gpu=None`` (unknown here) skips the GPU
    check with a warning.
    """
    rebuild = f"rebuild it on this machine: python export/to_trt.py MODEL.onnx -o {engine}"
    built_trt = sidecar.get("tensorrt_version")
    if built_trt != trt_version:
        raise EngineMismatchError(
            f"{engine}: built with TensorRT {built_trt} but this is TensorRT {trt_version}; "
            f"an engine only runs on the TensorRT version that built it: {rebuild}"
        )
    built_gpu = sidecar.get("gpu") or {}
    if gpu is None or not built_gpu:
        log.warning(
            "%s: cannot compare GPUs (built for %s, running on %s); TensorRT engines are GPU-specific",
            engine,
            built_gpu.get("name", "an unrecorded GPU"),
            "an unknown GPU" if gpu is None else gpu.name,
        )
        return
    same_cc = built_gpu.get("compute_capability") == gpu.compute_capability
    if same_cc and built_gpu.get("name") == gpu.name:
        return
    message = (
        f"{engine}: built for {built_gpu.get('name')} (compute capability "
        f"{built_gpu.get('compute_capability')}) but this GPU is {gpu.name} (compute capability "
        f"{gpu.compute_capability}); TensorRT engines are specific to the GPU model: {rebuild}"
    )
    if strict_gpu or not same_cc:
        raise EngineMismatchError(message)
    log.warning("%s", message)


def model_info_from_sidecar(sidecar: Mapping[str, Any], *, engine: str, scale: int | None = None) -> ModelInfo:
    """The runtime's :class:`~runtime.model_info.ModelInfo` for an engine.

    From the ONNX ``fourpp_eusr`` metadata the sidecar carries when the ONNX had it (the
    same parser as for ONNX models), else from the sidecar's own ``model`` section.
    """
    metadata = (sidecar.get("onnx") or {}).get("metadata")
    if isinstance(metadata, Mapping):
        return parse_metadata(json.dumps(metadata), model=engine, scale=scale)
    model = sidecar.get("model") or {}
    try:
        io = ModelIO(model.get("io"))
    except ValueError:
        raise ModelError(
            f"{engine}: sidecar model io {model.get('io')!r} is not one of {[m.value for m in ModelIO]}"
        ) from None
    meta_scale = model.get("scale")
    if isinstance(meta_scale, bool) or not isinstance(meta_scale, int) or meta_scale < 1:
        raise ModelError(f"{engine}: sidecar model scale must be a positive integer, got {meta_scale!r}")
    if scale is not None and scale != meta_scale:
        raise ModelError(f"{engine}: scale={scale} was asked for but the engine's sidecar says scale {meta_scale}")
    halo = model.get("recommended_halo")
    return ModelInfo(
        io=io,
        scale=meta_scale,
        input_name=str(model.get("input")),
        output_name=str(model.get("output")),
        recommended_halo=halo if isinstance(halo, int) and not isinstance(halo, bool) else None,
        config_name=model.get("config_name"),
        source="inferred",
        metadata={},
    )


def tf32_allowed(sidecar: Mapping[str, Any]) -> bool:
    """Whether the engine's float32 layers may run in TF32 (``BuilderFlag.TF32`` kept).

    ``build_options.allow_tf32`` as ``export/to_trt.py`` records it; an engine whose sidecar
    predates the option was built with TensorRT's default, which is TF32 on.
    """
    options = sidecar.get("build_options") or {}
    value = options.get("allow_tf32", True) if isinstance(options, Mapping) else True
    return bool(value)
