"""FP16 ONNX vs float32 ONNX on whole photos (ONNX Runtime CPU, no tiling).

    python benchmarks/fp16_onnx.py                          # bundled checkpoint, exported to a temp dir
    python benchmarks/fp16_onnx.py --models /tmp/m.onnx     # files of to_onnx.py -o /tmp/m.onnx --precision both --io both
    python benchmarks/fp16_onnx.py --checkpoint CKPT data/photos/test/ihc.png

The four graphs of one checkpoint (float32/fp16 × float32-nchw/uint8-nhwc, named as
``export.onnx_io.export_paths`` names them) run on each whole image (gray replicated to
RGB), so precision is measured apart from tiling. Per image:

* fp16 vs fp32 float graphs as ONNX Runtime CPU runs them (the acceptance check; on x86
  ORT upcasts fp16 convolutions to float32, so this mostly measures fp16 weights);
* the fp16 graph's fp16-rounding twin (``export.fp16.emulate_fp16``: every fp16 tensor
  rounded as a GPU stores it, float32 accumulation) vs fp32: the estimate for TensorRT;
* each uint8 graph vs its own float graph rounded: at most one grey level apart.

Pass: finite, PSNR >= ``export.to_onnx.MIN_PSNR_FP16_DB`` (60 dB) for both fp16 rows, uint8
within 1 level. Exit 1 when an image fails, 2 when the benchmark cannot run. Writes
``<out>/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_allow_dirty,
    add_out_args,
    commit_label,
    environment,
    fmt_float,
    load_image_uint8,
    markdown_table,
    require_clean_tree,
    results_dir,
    write_results,
)
from benchmarks.parity import compare
from runtime.errors import UpscaleError
from runtime.utils import IMAGE_SUFFIXES, file_sha256, is_image_path, list_images

DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
DEFAULT_IMAGES = REPO_ROOT / "data" / "photos" / "test"
MAX_UINT8_DIFF = 1


@contextlib.contextmanager
def _model_files(models: Path | None, checkpoint: Path) -> Iterator[tuple[dict[tuple[str, str], Path], dict[str, Any]]]:
    """{(precision, io): path} of the four graphs: the files beside ``models`` or a fresh,
    unvalidated export of ``checkpoint`` into a temporary folder."""
    from export.onnx_io import EXPORT_PRECISIONS, ModelIO, export_paths

    ios, precisions = list(ModelIO), list(EXPORT_PRECISIONS)  # the exporter's fp32 and fp16, not int8
    if models is not None:
        paths = export_paths(models, ios, precisions)
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise BenchmarkError(
                f"--models {models}: missing {', '.join(missing)}; write them with "
                f"python export/to_onnx.py CKPT -o {models} --precision both --io both"
            )
        yield (
            {(p.value, i.value): f for (p, i), f in paths.items()},
            {"source": "onnx", "path": str(models), "sha256": {str(f.name): file_sha256(f) for f in paths.values()}},
        )
        return
    if not checkpoint.is_file():
        raise BenchmarkError(f"--checkpoint {checkpoint}: no such file (expected an EUSR .safetensors)")
    from export.to_onnx import export_onnx_all

    with tempfile.TemporaryDirectory(prefix="fp16-onnx-") as tmp:
        try:
            paths = export_onnx_all(
                checkpoint, Path(tmp) / "model.onnx", ios=ios, precisions=precisions, validate=False
            )
        except Exception as exc:  # CheckpointError, ExportError: say which file
            raise BenchmarkError(f"--checkpoint {checkpoint}: cannot export it to ONNX: {exc}") from exc
        yield (
            {(p.value, i.value): f for (p, i), f in paths.items()},
            {"source": "checkpoint", "path": str(checkpoint), "sha256": file_sha256(checkpoint)},
        )


def _sessions(files: dict[tuple[str, str], Path], threads: int | None) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    from export.fp16 import emulate_fp16

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads

    def session(model: Any) -> Any:
        data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    return {
        "fp32": session(files[("fp32", "float32-nchw")]),
        "fp16": session(files[("fp16", "float32-nchw")]),
        "fp16_rounded": session(emulate_fp16(onnx.load(str(files[("fp16", "float32-nchw")])))),
        "fp32_uint8": session(files[("fp32", "uint8-nhwc")]),
        "fp16_uint8": session(files[("fp16", "uint8-nhwc")]),
    }


def _uint8_vs_float(y8: np.ndarray, yf: np.ndarray) -> dict[str, Any]:
    with np.errstate(invalid="ignore"):
        expected = np.clip(np.round(yf), 0, 255).astype(np.int16).transpose(0, 2, 3, 1)
    diff = np.abs(y8.astype(np.int16) - expected)
    return {"max_diff": int(diff.max()), "differ_share": float(np.mean(diff > 0))}


def measure_image(sessions: dict[str, Any], rgb: np.ndarray, min_psnr: float) -> dict[str, Any]:
    """All comparisons for one H×W×3 uint8 image; ``passed``/``reasons`` by the limits."""
    x8 = np.ascontiguousarray(rgb[None])
    xf = np.ascontiguousarray(x8.transpose(0, 3, 1, 2).astype(np.float32))
    t0 = time.perf_counter()
    out = {k: s.run(["sr"], {"lr": x8 if k.endswith("uint8") else xf})[0] for k, s in sessions.items()}
    row: dict[str, Any] = {
        "fp16": compare(out["fp16"], out["fp32"]),
        "fp16_rounded": compare(out["fp16_rounded"], out["fp32"]),
        "uint8_fp32": _uint8_vs_float(out["fp32_uint8"], out["fp32"]),
        "uint8_fp16": _uint8_vs_float(out["fp16_uint8"], out["fp16"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    reasons = []
    for key in ("fp16", "fp16_rounded"):
        r = row[key]
        if r["nonfinite"]:
            reasons.append(f"{key}: {r['nonfinite']} NaN/Inf values")
        if not r["psnr"] >= min_psnr:
            reasons.append(f"{key}: PSNR {r['psnr']:.2f} dB < {min_psnr:g} dB")
    for key in ("uint8_fp32", "uint8_fp16"):
        if row[key]["max_diff"] > MAX_UINT8_DIFF:
            reasons.append(f"{key}: {row[key]['max_diff']} levels from its float graph > {MAX_UINT8_DIFF}")
    row["passed"], row["reasons"] = not reasons, reasons
    return row


def _markdown(data: dict[str, Any]) -> str:
    env = data["environment"]
    rows = [
        [
            r["image"],
            f"{r['size'][0]}x{r['size'][1]}",
            fmt_float(r["fp16"]["psnr"]),
            fmt_float(r["fp16"]["max_abs_err"], 3),
            r["fp16"]["nonfinite"],
            fmt_float(r["fp16_rounded"]["psnr"]),
            fmt_float(r["fp16_rounded"]["max_abs_err"], 3),
            r["fp16_rounded"]["nonfinite"],
            f"{r['uint8_fp32']['max_diff']} / {r['uint8_fp16']['max_diff']}",
            f"{100 * r['fp16_rounded']['uint8_differ_any']:.2f}%",
            "yes" if r["passed"] else "NO",
        ]
        for r in data["rows"]
    ]
    lines = [
        "# FP16 ONNX vs float32 ONNX, whole photos, ONNX Runtime CPU",
        "",
        f"{env['date']}, commit {commit_label(env)}, "
        f"{env['host']['cpu']}, onnxruntime {env['versions']['onnxruntime']}; model {data['model']['path']}; "
        f"limits: finite, PSNR >= {data['min_psnr']:g} dB, uint8 within {MAX_UINT8_DIFF} level of its float graph.",
        "",
        f"**{'PASS' if data['passed'] else 'FAIL'}**",
        "",
        "*ORT fp16*: the fp16 graph as ONNX Runtime's CPU provider runs it (x86: convolutions upcast to "
        "float32, so mostly the fp16 weights count). *fp16-rounded*: its twin that rounds every fp16 "
        "tensor (fp16 storage, float32 accumulation, as on a GPU). *uint8 diff*: max |uint8 graph - "
        "rounded float graph| for fp32 / fp16. *differ*: share of fp16-rounded output values whose "
        "uint8 rounding differs from fp32's.",
        "",
        markdown_table(
            [
                "image",
                "size",
                "ORT fp16 PSNR dB",
                "max abs",
                "NaN/Inf",
                "fp16-rounded PSNR dB",
                "max abs",
                "NaN/Inf",
                "uint8 diff",
                "differ",
                "pass",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fp16_onnx.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "images", nargs="*", type=Path, help=f"images or folders (default: {DEFAULT_IMAGES.relative_to(REPO_ROOT)})"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="EUSR checkpoint exported (unvalidated) to a temporary folder when --models is not given",
    )
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="-o path given to to_onnx.py --precision both --io both; its four files are used",
    )
    add_out_args(p, what="folder for the JSON and Markdown results")
    p.add_argument("--name", default="fp16_onnx", help="stem of the result files (<out>/<name>.json, .md)")
    p.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice)"
    )
    add_allow_dirty(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    from export.to_onnx import MIN_PSNR_FP16_DB

    try:
        git = require_clean_tree(args.allow_dirty)
        files: list[Path] = []
        for item in args.images or [DEFAULT_IMAGES]:
            if item.is_dir():
                files += list_images(item, error=BenchmarkError)
            elif item.is_file() and is_image_path(item):
                files.append(item)
            else:
                raise BenchmarkError(f"{item}: not an image file or folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not files:
            raise BenchmarkError(f"no images in {[str(i) for i in args.images or [DEFAULT_IMAGES]]}")
        env = environment(threads=args.threads, git=git)
        rows = []
        with _model_files(args.models, args.checkpoint) as (paths, model_meta):
            sessions = _sessions(paths, args.threads)
            for f in files:
                img = load_image_uint8(f)
                rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
                row = {
                    "image": f.stem,
                    "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                    **measure_image(sessions, rgb, MIN_PSNR_FP16_DB),
                }
                rows.append(row)
                print(
                    f"{f.stem}: ORT fp16 {row['fp16']['psnr']:.2f} dB, fp16-rounded "
                    f"{row['fp16_rounded']['psnr']:.2f} dB, uint8 diff {row['uint8_fp32']['max_diff']}/"
                    f"{row['uint8_fp16']['max_diff']} ({row['seconds']} s){'' if row['passed'] else ' FAIL'}"
                )
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = {
        "environment": env,
        "model": model_meta,
        "min_psnr": MIN_PSNR_FP16_DB,
        "max_uint8_diff": MAX_UINT8_DIFF,
        "passed": all(r["passed"] for r in rows),
        "rows": rows,
    }
    paths_out = write_results(args.out, args.name, data, _markdown(data))
    print(f"{'PASS' if data['passed'] else 'FAIL'}; wrote {paths_out['json']} and {paths_out['md']}")
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
