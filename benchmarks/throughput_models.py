"""The EUSR configurations the throughput benchmarks time, as PyTorch modules and ONNX files.

compact = the bundled checkpoint (models/eusr-compact.safetensors, or another one given);
paper and tiny = ``build_eusr(name)`` with random weights seeded by ``seed``: throughput
does not depend on the weights' values. Shared by ``throughput.py`` (CPU, which also
exports ONNX graphs) and ``throughput_gpu.py``. torch is imported when a model is built.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchmarkError
from runtime.utils import file_sha256

__all__ = [
    "SCALE",
    "CONFIGS",
    "COMPACT_CHECKPOINT",
    "COMPACT_HALO",
    "DEFAULT_VARIANT",
    "build_config",
    "prepared_config",
    "quiet_halo_warning",
    "torch_uint8_runner",
]

SCALE = 4
CONFIGS = ("compact", "paper", "tiny")
COMPACT_CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
COMPACT_HALO = 8  # the bundled model's recommended halo (benchmarks/seams.py)
DEFAULT_VARIANT = ("fp32", "float32-nchw")  # (precision, io) of the main rows' ONNX graph


def _shown(path: Path) -> str:
    """A path relative to the repository when inside it (results stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def build_config(
    name: str, seed: int, *, checkpoint: Path = COMPACT_CHECKPOINT, what: str = "the compact checkpoint"
) -> tuple[Any, int, dict[str, Any]]:
    """(EUSR module in eval mode, recommended halo, description) of one configuration.

    ``checkpoint`` holds the compact configuration's weights (``what`` names it in errors)."""
    try:
        import torch

        from export.to_onnx import DEFAULT_HALO as EXPORT_HALO
        from train.models.eusr import build_eusr
    except ImportError as exc:
        raise BenchmarkError(
            f"this benchmark needs the train extra (torch, onnx): {exc}; pip install -e '.[train]'"
        ) from exc
    if name not in CONFIGS:
        raise BenchmarkError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    if name == "compact":
        from train.checkpoint import load_model

        if not checkpoint.is_file():
            raise BenchmarkError(f"{what} {checkpoint}: no such file (expected an EUSR .safetensors checkpoint)")
        model = load_model(checkpoint)
        halo = COMPACT_HALO
        desc = {"source": "checkpoint", "path": _shown(checkpoint), "sha256": file_sha256(checkpoint)}
    else:
        torch.manual_seed(seed)
        model = build_eusr(name)
        halo = EXPORT_HALO
        desc = {"source": f"build_eusr({name!r}), random init, torch seed {seed}"}
    return model.eval(), halo, desc


@contextlib.contextmanager
def prepared_config(
    name: str, seed: int, tmp: Path, variants: Sequence[tuple[str, str]] = ()
) -> Iterator[tuple[Any, dict[tuple[str, str], Path], dict[str, Any]]]:
    """(torch ×4 path module in eval mode, exported ONNX paths keyed (precision, io), description)
    of a config. The (fp32, float32-nchw) graph is always exported; ``variants`` adds others for
    the tiling sweep, exported the same way (TorchScript, not validated) from the same weights."""
    model, halo, desc = build_config(name, seed)
    from export.to_onnx import export_onnx

    path = tmp / f"eusr-{name}-x{SCALE}.onnx"
    t0 = time.perf_counter()
    try:
        export_onnx(model, path, scale=SCALE, halo=halo, validate=False, exporter="torchscript")
    except Exception as exc:
        raise BenchmarkError(f"cannot export the {name!r} configuration to ONNX: {exc}") from exc
    desc.update(
        {
            "config_name": name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "scale": SCALE,
            "onnx": {
                "io": "float32-nchw",
                "exporter": "torchscript",
                "recommended_halo": halo,
                "export_seconds": round(time.perf_counter() - t0, 3),
            },
        }
    )
    paths = {DEFAULT_VARIANT: path}
    for precision, io in dict.fromkeys(v for v in variants if v != DEFAULT_VARIANT):
        vpath = tmp / f"eusr-{name}-x{SCALE}.{precision}.{io}.onnx"
        t0 = time.perf_counter()
        try:
            export_onnx(
                model, vpath, scale=SCALE, halo=halo, validate=False, exporter="torchscript", io=io, precision=precision
            )
        except Exception as exc:
            raise BenchmarkError(
                f"cannot export the {name!r} configuration to ONNX as {precision} {io}: {exc}"
            ) from exc
        paths[(precision, io)] = vpath
        desc.setdefault("onnx_variants", []).append(
            {"precision": precision, "io": io, "export_seconds": round(time.perf_counter() - t0, 3)}
        )
    yield model.path(SCALE).eval(), paths, desc


@contextlib.contextmanager
def quiet_halo_warning() -> Iterator[None]:
    """halo=0 is intended for the whole-image mode (there are no seams) and for sweep rows: no warning."""
    logger = logging.getLogger("runtime.upscaler")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def torch_uint8_runner(forward: Any) -> Any:
    """``image -> image`` for a torch ``forward`` (N×3×H×W float32 in 0..255): an H×W×3 uint8
    in, rounded and clamped H×W×3 uint8 out, as the runtime's uint8 path returns it, so the
    eager rows of every benchmark time the same conversions."""
    import numpy as np
    import torch

    def run(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(torch.float32).contiguous()
            y = forward(x)
            y = y.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
        out: np.ndarray = y.numpy()
        return out

    return run
