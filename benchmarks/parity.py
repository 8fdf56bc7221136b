"""Parity: does a runtime backend/precision reproduce PyTorch float32 on real images?

    python benchmarks/parity.py data/photos/test/ihc.png data/photos/test/coins.png
    python benchmarks/parity.py --backend onnxruntime --model m.onnx --tile 64 --halo 8 data/photos/test
    python benchmarks/parity.py --precision fp16 --model m_fp16.onnx data/photos/test
    python benchmarks/parity.py --backend torch-cuda --fp16 --precision fp16 data/photos/test   # GPU pipeline

Reference: the ×scale path of the ``--reference`` checkpoint (``train.checkpoint.load_model``)
run in PyTorch float32 on the whole image, given the same mirrored border context as the
runtime's border tiles (the halo: ``runtime.tiling.pad_border``, output cropped back). Candidate: ``runtime.Upscaler(--model,
backend=--backend)`` (GPU backends: the pipelined executor; torch-cuda runs the
``--reference`` checkpoint unless ``--model`` is another checkpoint) fed the same float32 array (0..255), so its raw float output comes
back unrounded (needs a float32-nchw model); once on the whole image (tile >= the image's
sides: "whole") and once tiled with ``--tile``/``--halo`` ("tiled"). Each image is the LR
input as it is (gray replicated to RGB, alpha dropped; ``--max-size N`` centre-crops).

Metrics per image and mode, candidate vs reference: PSNR (peak 255, float, over the
values where both are finite), max abs error (grey levels), the share of values
whose uint8-rounded results differ by more than one level, and the count of NaN/Inf
values in the candidate. An image/mode passes when PSNR >= ``--min-psnr`` (default by
``--precision``: fp32 80 dB, fp16 50 dB, int8 40 dB) and NaN/Inf count <= ``--max-nan``
(0). Exit status 1 when any image/mode fails, 2 when the benchmark cannot run.

``--precision`` only chooses the default threshold and is recorded: the candidate's
precision is the model's/backend's own (e.g. an fp16 ONNX or a TensorRT engine). The GPU
backends torch-cuda and onnxruntime-cuda run float32 without TF32 unless ``--allow-tf32``
(recorded as ``allow_tf32`` in the results; a TensorRT engine's TF32 is chosen when it is
built).
Tests and other tools can call :func:`run_parity` with any candidate function.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks.common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_common_args,
    backend_for,
    commit_label,
    environment,
    fmt_float,
    load_image_uint8,
    markdown_table,
    prepared_model,
    require_clean_tree,
    results_dir,
    with_border,
    write_results,
)
from runtime.errors import UpscaleError
from runtime.upscaler import DEFAULT_TILE
from runtime.utils import IMAGE_SUFFIXES, file_sha256, is_image_path, list_images

DEFAULT_REFERENCE = REPO_ROOT / "models" / "eusr-compact.safetensors"
MIN_PSNR_BY_PRECISION = {"fp32": 80.0, "fp16": 50.0, "int8": 40.0}
MODES = ("whole", "tiled")

Image = tuple[str, np.ndarray]
"""(name, H×W×3 float32 array in 0..255)."""
CandidateFn = Callable[[np.ndarray, str], np.ndarray]
"""candidate(image, mode) -> H·s×W·s×3 float array; mode is one of MODES."""
ReferenceFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    min_psnr: float = 80.0
    max_nan: int = 0

    @classmethod
    def for_precision(cls, precision: str, *, min_psnr: float | None = None, max_nan: int = 0) -> Thresholds:
        return cls(MIN_PSNR_BY_PRECISION[precision] if min_psnr is None else min_psnr, max_nan)


# --------------------------------------------------------------------------- measuring


def compare(candidate: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Candidate vs reference float outputs (same shape): PSNR, max abs error, uint8
    differ share (> 1 level), non-finite counts. Error metrics use the values where both
    are finite; with none such, PSNR is nan (fails)."""
    from runtime.metrics import psnr

    cand = np.asarray(candidate, np.float64)
    ref = np.asarray(reference, np.float64)
    if cand.shape != ref.shape:
        raise BenchmarkError(f"candidate output shape {cand.shape} differs from the reference's {ref.shape}")
    cand_bad = ~np.isfinite(cand)
    ref_bad = ~np.isfinite(ref)
    ok = ~(cand_bad | ref_bad)
    if ok.any():
        c, r = cand[ok], ref[ok]
        p = psnr(c, r, peak=255.0)
        max_abs = float(np.max(np.abs(c - r)))
        cq = np.clip(np.rint(c), 0, 255)
        rq = np.clip(np.rint(r), 0, 255)
        diff_q = np.abs(cq - rq)
        differ = float(np.mean(diff_q > 1))
        differ_any = float(np.mean(diff_q > 0))
    else:
        p = max_abs = differ = differ_any = math.nan
    return {
        "psnr": p,
        "max_abs_err": max_abs,
        "uint8_differ_gt1": differ,
        "uint8_differ_any": differ_any,
        "nonfinite": int(cand_bad.sum()),
        "nan": int(np.isnan(cand).sum()),
        "inf": int(np.isinf(cand).sum()),
        "reference_nonfinite": int(ref_bad.sum()),
        "values": int(cand.size),
    }


def run_parity(
    candidate_fn: CandidateFn,
    reference_fn: ReferenceFn,
    images: Sequence[Image],
    thresholds: Thresholds,
    *,
    modes: Sequence[str] = MODES,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compare ``candidate_fn(image, mode)`` with ``reference_fn(image)`` on every image and
    mode. Returns ``{"passed", "thresholds", "rows", "failures"}``; each row has the image,
    mode, size, metrics of :func:`compare`, seconds, ``passed`` and ``reasons``."""
    echo = echo or (lambda line: None)
    rows: list[dict[str, Any]] = []
    for name, image in images:
        image = np.ascontiguousarray(image, dtype=np.float32)
        t0 = time.perf_counter()
        ref = np.asarray(reference_fn(image), np.float32)
        ref_seconds = time.perf_counter() - t0
        for mode in modes:
            t0 = time.perf_counter()
            cand = candidate_fn(image, mode)
            seconds = time.perf_counter() - t0
            m = compare(cand, ref)
            reasons = []
            if not (m["psnr"] >= thresholds.min_psnr):  # nan fails too
                reasons.append(f"PSNR {fmt_float(m['psnr'])} < {thresholds.min_psnr:g} dB")
            if m["nonfinite"] > thresholds.max_nan:
                reasons.append(f"{m['nonfinite']} NaN/Inf values > {thresholds.max_nan}")
            row = {
                "image": name,
                "mode": mode,
                "size": [int(image.shape[1]), int(image.shape[0])],
                **m,
                "seconds": seconds,
                "reference_seconds": ref_seconds,
                "passed": not reasons,
                "reasons": reasons,
            }
            rows.append(row)
            echo(
                f"  {name} {mode}: PSNR {fmt_float(m['psnr'])} dB, max abs err {fmt_float(m['max_abs_err'], 4)}, "
                f"uint8 >1 {100 * m['uint8_differ_gt1']:.4f}%, NaN/Inf {m['nonfinite']}"
                + ("" if not reasons else "  FAIL: " + "; ".join(reasons))
            )
    failures = [f"{r['image']} ({r['mode']}): {'; '.join(r['reasons'])}" for r in rows if not r["passed"]]
    return {"passed": bool(rows) and not failures, "thresholds": asdict(thresholds), "rows": rows, "failures": failures}


# --------------------------------------------------------------------------- inputs and runners


def collect_images(entries: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            files += list_images(entry, error=BenchmarkError)
        elif entry.is_file():
            if not is_image_path(entry):
                raise BenchmarkError(f"{entry}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.append(entry)
        else:
            raise BenchmarkError(f"{entry}: no such file or folder")
    return files


def load_input(path: Path, max_size: int | None = None) -> np.ndarray:
    """H×W×3 float32 in 0..255: gray replicated to RGB, alpha dropped, optionally centre-cropped."""
    img = load_image_uint8(path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if max_size is not None:
        h, w = img.shape[:2]
        ch, cw = min(h, max_size), min(w, max_size)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        img = img[y0 : y0 + ch, x0 : x0 + cw]
    return np.ascontiguousarray(img, dtype=np.float32)


class TorchReference:
    """Whole-image PyTorch float32 output of a checkpoint's ×scale path (H×W×3 in, float out),
    on the image with ``border`` pixels of mirrored context (the runtime's halo: what its
    border tiles see, :func:`benchmarks.common.with_border`), cropped back, and clamped to
    0..255 like the runtime's float results."""

    def __init__(self, checkpoint: Path, scale: int, threads: int | None = None, *, border: int = 0) -> None:
        try:
            import torch

            from train.checkpoint import load_model
        except ImportError as exc:
            raise BenchmarkError(f"the PyTorch reference needs the train extra (torch): {exc}") from exc
        if not Path(checkpoint).is_file():
            raise BenchmarkError(f"--reference {checkpoint}: no such file")
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            model = load_model(checkpoint)
        except Exception as exc:  # CheckpointError and friends
            raise BenchmarkError(f"--reference {checkpoint}: cannot load the checkpoint: {exc}") from exc
        if scale not in model.scales:
            raise BenchmarkError(f"--reference {checkpoint}: the model has scales {list(model.scales)}, not {scale}")
        self._torch = torch
        self._path = model.path(scale).float().eval()
        self.scale = scale
        self.border = border
        self._run = with_border(self._forward, border, scale)
        self.info = {
            "path": str(checkpoint),
            "sha256": file_sha256(Path(checkpoint)),
            "scale": scale,
            "config": model.config.to_dict(),
            "torch_threads": torch.get_num_threads(),
            "runner": "torch float32, whole image",
            "border": border,
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        # clamped to 0..255 as the runtime returns float results (its array convention)
        return np.clip(np.asarray(self._run(image)), 0.0, 255.0)

    def _forward(self, image: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))[None]
        with torch.inference_mode():
            y = self._path(x)[0]
        return y.float().numpy().transpose(1, 2, 0)


@contextlib.contextmanager
def _candidate_source(
    model: str | Path | None, backend: str, reference: Path | None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The model file the candidate backend loads: a checkpoint for torch-cuda (``--model``
    if it is one, else the reference), an engine for tensorrt, else an ONNX file."""
    if backend == "torch-cuda":
        path = Path(model) if model is not None and str(model).lower().endswith(".safetensors") else reference
        if path is None or not Path(path).is_file():
            raise BenchmarkError(
                f"--backend torch-cuda needs a .safetensors checkpoint (--model or --reference), got {path}"
            )
        yield Path(path), {"source": "checkpoint", "path": str(path), "sha256": file_sha256(Path(path))}
    elif backend == "tensorrt":
        if model is None or not Path(model).is_file():
            raise BenchmarkError(f"--backend tensorrt needs --model an engine file, got {model}")
        yield Path(model), {"source": "engine", "path": str(model), "sha256": file_sha256(Path(model))}
    else:
        with prepared_model(model) as prepared:
            yield prepared.onnx_path, prepared.description


def candidate_options(backend: str, *, threads: int | None = None, fp16: bool = False, allow_tf32: bool = False) -> Any:
    """The candidate's typed backend options for ``--backend``, ``--threads``, ``--fp16`` and
    ``--allow-tf32`` (refused for backends without a TF32 switch, so a result never claims it)."""
    from runtime.backends import OPTIONS, TorchCuda

    if fp16 and backend != "torch-cuda":
        raise BenchmarkError("--fp16 applies to --backend torch-cuda; other backends run at their model's precision")
    gpu = backend in OPTIONS and OPTIONS[backend]().pipelined
    options = TorchCuda(fp16=True) if fp16 else backend_for(backend, None if gpu else threads)
    if any(f.name == "allow_tf32" for f in dataclasses.fields(options)):
        options = dataclasses.replace(options, allow_tf32=allow_tf32)
    elif allow_tf32:
        raise BenchmarkError(
            f"--allow-tf32 applies to --backend torch-cuda and onnxruntime-cuda, not {options.name} "
            "(a TensorRT engine's TF32 is chosen when it is built, by export/to_trt.py)"
        )
    return options


@contextlib.contextmanager
def upscaler_candidate(
    model: str | Path | None,
    *,
    backend: str,
    tile: int,
    halo: int | None,
    threads: int | None,
    whole_tile: int,
    reference: Path | None = None,
    fp16: bool = False,
    allow_tf32: bool = False,
) -> Iterator[tuple[CandidateFn, dict[str, Any]]]:
    """``candidate(image, mode)`` from ``runtime.Upscaler``: "whole" uses one tile of
    ``whole_tile`` (>= every image side), "tiled" uses ``tile``/``halo``; both share one
    backend instance (for the pipelined GPU backends: one stage factory and device, the
    "whole" executor with one slot of batch 1). ``fp16`` asks torch-cuda for half precision,
    ``allow_tf32`` lets the GPU backends use TF32 (:func:`candidate_options`)."""
    from runtime import Upscaler
    from runtime.model_info import ModelIO

    options = candidate_options(backend, threads=threads, fp16=fp16, allow_tf32=allow_tf32)
    with _candidate_source(model, backend, reference) as (path, description):
        with Upscaler(path, backend=options, tile=tile, halo=halo) as tiled:
            if tiled.info.io is not ModelIO.FLOAT32_NCHW:
                raise BenchmarkError(
                    f"--model {path}: parity needs a float32-nchw model (raw float "
                    f"output), this one has {tiled.info.io.value} I/O"
                )
            extra = {"batch": 1, "slots": 1, "device": tiled.device} if tiled.pipelined else {}
            # one window; the halo is its mirrored border context, as for the tiles
            whole = Upscaler(backend=tiled.backend, tile=whole_tile, halo=tiled.halo, **extra)
            ups = {"whole": whole, "tiled": tiled}

            def candidate(image: np.ndarray, mode: str) -> np.ndarray:
                return ups[mode].upscale(image)

            info = tiled.info
            device = tiled.device.describe() if tiled.pipelined and hasattr(tiled.device, "describe") else None
            try:
                yield (
                    candidate,
                    {
                        **description,
                        "backend_requested": backend,
                        "backend": getattr(tiled.backend, "name", backend),
                        "providers": list(getattr(tiled.backend, "providers", ())),
                        "scale": tiled.scale,
                        "tile": tile,
                        "halo": tiled.halo,
                        "whole_tile": whole_tile,
                        "config_name": info.config_name,
                        "recommended_halo": info.recommended_halo,
                        "pipelined": tiled.pipelined,
                        "fp16": fp16,
                        "allow_tf32": getattr(options, "allow_tf32", None),
                        "gpu": device,
                        **({"slots": tiled.slots, "batch": tiled.batch} if tiled.pipelined else {}),
                    },
                )
            finally:
                whole.close()


# --------------------------------------------------------------------------- report


def table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["image", "mode", "size", "PSNR dB", "max abs err", "uint8 >1 level", "NaN/Inf", "pass"]
    body = [
        [
            r["image"],
            r["mode"],
            f"{r['size'][0]}x{r['size'][1]}",
            fmt_float(r["psnr"]),
            fmt_float(r["max_abs_err"], 4),
            "-" if math.isnan(r["uint8_differ_gt1"]) else f"{100 * r['uint8_differ_gt1']:.4f}%",
            r["nonfinite"],
            "yes" if r["passed"] else "**NO**",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="parity.py",
        description=doc.split("\n\n")[0] + "\n\n" + "\n\n".join(doc.split("\n\n")[2:5]),
        formatter_class=HelpFormatter,
    )
    p.add_argument("images", type=Path, nargs="+", help="image files or folders of images (used as LR input)")
    p.add_argument(
        "--model",
        default=None,
        help="candidate: an .onnx model or a .safetensors checkpoint (exported to a temporary ONNX) "
        "(default: runtime/models/eusr-compact-x4.onnx)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=DEFAULT_REFERENCE,
        help="PyTorch float32 reference checkpoint (.safetensors) (default: models/eusr-compact.safetensors)",
    )
    p.add_argument(
        "--precision",
        choices=sorted(MIN_PSNR_BY_PRECISION),
        default="fp32",
        help="the candidate's precision: picks the default --min-psnr (fp32 80, fp16 50, int8 40 dB)",
    )
    p.add_argument("--min-psnr", type=float, default=None, help="PSNR threshold in dB (default: by --precision)")
    p.add_argument("--max-nan", type=int, default=0, help="most NaN/Inf output values allowed per image and mode")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="Upscaler tile for the tiled mode (LR pixels)")
    p.add_argument(
        "--halo",
        type=int,
        default=None,
        help="Upscaler halo for the tiled mode (default: the model's recommended halo)",
    )
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run: whole, tiled")
    p.add_argument("--max-size", type=int, default=None, help="centre-crop inputs to at most N×N (quick runs)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="--backend torch-cuda only: run the checkpoint in half precision (use with --precision fp16)",
    )
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help="--backend torch-cuda / onnxruntime-cuda: let float32 convolutions use TF32 (10-bit mantissas; "
        "faster, not float32; recorded in the results)",
    )
    add_common_args(p, name="parity")
    p.set_defaults(backend="auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    if args.tile < 1:
        parser.error("--tile must be >= 1")
    if (args.halo is not None and args.halo < 0) or args.max_nan < 0:
        parser.error("--halo and --max-nan must be >= 0")
    if args.max_size is not None and args.max_size < 1:
        parser.error("--max-size must be >= 1")
    modes = [m for m in args.modes.replace(" ", "").split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    thresholds = Thresholds.for_precision(args.precision, min_psnr=args.min_psnr, max_nan=args.max_nan)
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        paths = collect_images(args.images)
        images = [(p.stem, load_input(p, args.max_size)) for p in paths]
        whole_tile = max(max(img.shape[:2]) for _, img in images)
        with upscaler_candidate(
            args.model,
            backend=args.backend,
            tile=args.tile,
            halo=args.halo,
            threads=args.threads,
            whole_tile=whole_tile,
            reference=args.reference,
            fp16=args.fp16,
            allow_tf32=args.allow_tf32,
        ) as (candidate, model):
            reference = TorchReference(args.reference, model["scale"], args.threads, border=model["halo"])
            print(
                f"parity: {model['path']} on {model['backend']} ({args.precision}) vs PyTorch float32 "
                f"{args.reference}; {len(images)} images; PSNR >= {thresholds.min_psnr:g} dB, "
                f"NaN/Inf <= {thresholds.max_nan}",
                flush=True,
            )
            report = run_parity(
                candidate, reference, images, thresholds, modes=modes, echo=lambda s: print(s, flush=True)
            )
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row, path in zip(report["rows"], [p for p in paths for _ in modes]):
        row["path"] = str(path)
    data = {
        "benchmark": "parity",
        "environment": env,
        "passed": report["passed"],
        "allow_tf32": args.allow_tf32,
        "model": model,
        "reference": reference.info,
        "settings": {
            "precision": args.precision,
            "allow_tf32": args.allow_tf32,
            "thresholds": report["thresholds"],
            "modes": modes,
            "max_size": args.max_size,
            "input": "each image as LR input, float32 0..255, gray -> RGB",
            "metrics": "candidate vs reference float output: PSNR (peak 255), max abs error, share of "
            "values whose uint8-rounded results differ by > 1 level, NaN/Inf count",
        },
        "rows": report["rows"],
        "failures": report["failures"],
    }
    md_table = table(report["rows"])
    verdict = "PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"])
    markdown = "\n\n".join(
        [
            f"# Parity: {Path(model['path']).name} on {model['backend']} ({args.precision}) vs PyTorch float32",
            f"{env['date']}, commit {commit_label(env)}, {env['host']['cpu']}; reference {reference.info['path']}; "
            f"tiled: tile {model['tile']}, halo {model['halo']}; whole: one tile of {whole_tile}; "
            f"TF32 {'allowed' if model['allow_tf32'] else 'off' if model['allow_tf32'] is False else 'n/a'}; "
            f"thresholds PSNR >= {thresholds.min_psnr:g} dB, NaN/Inf <= {thresholds.max_nan}.",
            f"**{verdict}**",
            md_table,
        ]
    )
    paths_out = write_results(args.out, args.name, data, markdown)
    print(f"wrote {paths_out['json']}, {paths_out['md']}")
    print(verdict)
    print()
    print(md_table)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
