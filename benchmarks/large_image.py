"""Images larger than memory: peak RSS of a streamed upscale as the image grows (issue 16, point 5).

    python benchmarks/large_image.py                          # 20000x20000 RGB, tiny config, 2 GB limit
    python benchmarks/large_image.py --sizes 2000,5000,10000  # RSS must stay flat as the image grows
    python benchmarks/large_image.py --model runtime/models/eusr-compact-x4.onnx --sizes 4000

Claim checked (issue 16 acceptance): a 20000×20000 input upscales with peak RSS under 2 GB
(--limit-mb; MB = 10^6 bytes) and the output is readable. Its ×4 output is 80000×80000×3 =
19.2 GB, so it cannot be held in memory: runtime.streaming writes it band by band into a tiled
BigTIFF while reading the input TIFF lazily.

How: the "tiny" EUSR configuration (random weights, seeded: memory and speed do not depend
on the weights' values; throughput_models.build_config) is exported to ONNX (or --model is
used). For each size an uncompressed RGB TIFF of seeded noise is written in chunks of rows
into a temporary folder (--work-dir), so making it needs no image-sized array either. A
fresh Python process that imports only ``runtime`` upscales it with
:func:`runtime.streaming.upscale_to_tiff` and reports its own peak RSS (the kernel's
high-water mark VmHWM, not ru_maxrss, which exec inherits from the parent), its RSS after
each band, and the time. Then this process checks the output: tifffile opens it (shape,
dtype, tiles), and a few regions (the four corners, with the image border, and the centre)
read with :func:`runtime.streaming.read_region` are compared with the Upscaler run on the
input crop around them (cut at least 4·halo from the compared region, so the crop's own
borders' mirrored context stays out of it; where the crop reaches the image border it is the same
border). Sizes up to --exact-max are also compared with ``Upscaler.upscale`` of the whole
image, pixel for pixel. Outputs are deleted after their check unless --keep.

Exit status: 0 every size within the limit and checked, 1 over the limit or a check failed,
2 bad arguments or a failed run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    BenchmarkError,
    HelpFormatter,
    add_common_args,
    backend_for,
    commit_label,
    environment,
    markdown_table,
    parse_int_list,
    require_clean_tree,
    results_dir,
    write_results,
)
from benchmarks.rss import proc_status_kib
from runtime.errors import UpscaleError

MB = 1_000_000
MIB = 1 << 20
DEFAULT_SIZES = "20000"
DEFAULT_LIMIT_MB = 2000.0
CHILD_FLAG = "--_child"
ROWS_PER_CHUNK = 256
SCALE = 4


# --------------------------------------------------------------------------- the measured child


def child(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement, inside the fresh subprocess: imports ``runtime`` only."""
    t0 = time.perf_counter()
    rss_start = proc_status_kib("VmRSS")
    import runtime
    from runtime import Upscaler
    from runtime.streaming import upscale_to_tiff

    rss_imported = proc_status_kib("VmRSS")
    samples: list[tuple[int, int | None]] = []
    with Upscaler(
        args.model,
        backend=backend_for(args.backend, args.threads, args.model),
        memory_budget_mb=args.memory_budget_mb,
    ) as up:
        rss_baseline = proc_status_kib("VmRSS")
        t1 = time.perf_counter()
        result = upscale_to_tiff(
            up,
            args.src,
            args.dst,
            memory_budget_mb=args.band_budget_mb,
            on_band=lambda done, total: samples.append((done, proc_status_kib("VmRSS"))),
        )
        seconds = time.perf_counter() - t1
        peak = proc_status_kib("VmHWM")
        plan = up.plan(args.size, args.size).describe()
        upscaler = repr(up)
    rss_bands = [kib for _, kib in samples if kib is not None]
    return {
        "runtime_version": runtime.__version__,
        "upscaler": upscaler,
        "plan": plan,
        "bands": len(result.bands),
        "tile_rows": result.bands[-1][1],
        "lazy_input": result.lazy_input,
        "bigtiff": result.bigtiff,
        "output_shape": list(result.shape),
        "rss_start_kib": rss_start,
        "rss_imported_kib": rss_imported,
        "rss_baseline_kib": rss_baseline,
        "peak_rss_kib": peak,
        "rss_after_band_kib": {
            "first": rss_bands[0] if rss_bands else None,
            "last": rss_bands[-1] if rss_bands else None,
            "max": max(rss_bands) if rss_bands else None,
            "every_tenth": rss_bands[::10],
        },
        "upscale_seconds": seconds,
        "total_seconds": time.perf_counter() - t0,
        "torch_imported": "torch" in sys.modules,
    }


# --------------------------------------------------------------------------- the parent


def make_input(path: Path, size: int, seed: int) -> None:
    """An uncompressed size×size RGB TIFF of seeded noise, written ROWS_PER_CHUNK rows at a time."""
    import tifffile

    rng = np.random.default_rng(seed)

    def rows() -> Iterator[np.ndarray]:
        for y in range(0, size, ROWS_PER_CHUNK):
            chunk = rng.integers(0, 256, (min(ROWS_PER_CHUNK, size - y), size, 3), dtype=np.uint8)
            yield from chunk

    with tifffile.TiffWriter(path, bigtiff=size * size * 3 > 2**32 - 2**26) as tif:
        tif.write(rows(), shape=(size, size, 3), dtype=np.uint8, photometric="rgb", metadata=None)


def run_child(args: argparse.Namespace, model: Path, src: Path, dst: Path, size: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        CHILD_FLAG,
        "--model",
        str(model),
        "--src",
        str(src),
        "--dst",
        str(dst),
        "--size",
        str(size),
        "--band-budget-mb",
        str(args.band_budget_mb),
        "--memory-budget-mb",
        str(args.memory_budget_mb),
        "--backend",
        args.backend,
    ]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchmarkError(f"the measuring subprocess failed (exit {res.returncode}):\n{res.stderr.strip()}")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchmarkError(f"the measuring subprocess printed no result:\n{res.stdout}\n{res.stderr}")
    return json.loads(lines[-1])


def check_output(args: argparse.Namespace, model: Path, src: Path, dst: Path, size: int) -> dict[str, Any]:
    """Open the output, compare regions (and, for small sizes, everything) with the Upscaler."""
    import tifffile

    from runtime import Upscaler
    from runtime.streaming import read_region

    with tifffile.TiffFile(dst) as tif:
        page: Any = tif.pages[0]  # a TiffPage: the file was just written with one page
        opened = {
            "shape": list(page.shape),
            "dtype": str(page.dtype),
            "tile": [int(page.tilelength), int(page.tilewidth)],
            "bigtiff": bool(tif.is_bigtiff),
            "bytes_on_disk": dst.stat().st_size,
        }
    expected_shape = [size * SCALE, size * SCALE, 3]
    regions = []
    with Upscaler(
        str(model), backend=backend_for(args.backend, args.threads, model), memory_budget_mb=args.memory_budget_mb
    ) as up:
        halo = up.halo
        edge = min(args.region, size)
        margin = 4 * halo
        far, mid = size - edge, (size - edge) // 2
        for y, x in dict.fromkeys([(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]):  # corners, centre
            cy0, cy1 = max(0, y - margin), min(size, y + edge + margin)
            cx0, cx1 = max(0, x - margin), min(size, x + edge + margin)
            crop = read_region(src, (cy0, cy1, cx0, cx1))
            ref = up.upscale(crop)[
                (y - cy0) * SCALE : (y - cy0 + edge) * SCALE, (x - cx0) * SCALE : (x - cx0 + edge) * SCALE
            ]
            got = read_region(dst, (y * SCALE, (y + edge) * SCALE, x * SCALE, (x + edge) * SCALE))
            diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
            mse = float(np.mean(diff.astype(np.float64) ** 2))
            regions.append(
                {
                    "lr_box": [y, y + edge, x, x + edge],
                    "max_abs_diff": int(diff.max()),
                    "differing_fraction": float(np.mean(diff > 0)),
                    "psnr_db": None if mse == 0 else 10 * np.log10(255.0**2 / mse),
                }
            )
        exact = None
        if size <= args.exact_max:
            whole = up.upscale(tifffile.imread(src))
            exact = bool(np.array_equal(tifffile.imread(dst), whole))
    ok = (
        opened["shape"] == expected_shape
        and opened["dtype"] == "uint8"
        and all(r["max_abs_diff"] <= args.region_tolerance for r in regions)
        and exact is not False
    )
    return {"opened": opened, "regions": regions, "exact_whole_image_equal": exact, "passed": ok}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="large_image.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=HelpFormatter,
    )
    from runtime.streaming import DEFAULT_BAND_BUDGET_MB
    from runtime.upscaler import MIN_MEMORY_BUDGET_MB

    p.add_argument("--sizes", default=DEFAULT_SIZES, help="input edges, comma-separated: size x size x 3 uint8")
    p.add_argument("--limit-mb", type=float, default=DEFAULT_LIMIT_MB, help="allowed peak RSS, MB (10^6 bytes)")
    p.add_argument("--model", default=None, help="an .onnx model to measure instead of the exported tiny config")
    p.add_argument(
        "--config",
        default="tiny",
        help="EUSR configuration to export when no --model is given, or 'nearest' (nearest-neighbour x4: the "
        "streaming path without learned compute, for sizes the learned model would take hours on)",
    )
    p.add_argument("--nearest-halo", type=int, default=16, help="the halo the nearest model's metadata records")
    p.add_argument(
        "--band-budget-mb",
        type=float,
        default=DEFAULT_BAND_BUDGET_MB,
        help="upscale_to_tiff(memory_budget_mb=): what one band of tile rows may take",
    )
    p.add_argument(
        "--memory-budget-mb",
        type=float,
        default=MIN_MEMORY_BUDGET_MB,
        help="Upscaler(memory_budget_mb=): activations one model call may take (tile='auto'); default: the "
        "smallest default budget, so the figure does not depend on the free memory",
    )
    p.add_argument("--region", type=int, default=64, help="edge (LR pixels) of each region checked against a crop")
    p.add_argument(
        "--region-tolerance",
        type=int,
        default=255,
        help="largest allowed |difference| of a region vs its crop's upscale (the crop tiles differently; "
        "reported either way)",
    )
    p.add_argument(
        "--exact-max", type=int, default=2000, help="sizes up to this are also compared whole, pixel for pixel"
    )
    p.add_argument("--work-dir", type=Path, default=None, help="where inputs and outputs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the input and output TIFFs")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the noise image")
    p.add_argument(CHILD_FLAG, dest="child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    add_common_args(p, name="large_image")
    return p


def export_nearest(path: Path, halo: int) -> Path:
    """A nearest-neighbour ×SCALE float32-nchw ONNX model with the runtime's metadata: what the
    full-size run uses when the learned model would take hours on this machine."""
    import warnings

    import onnx
    import torch

    class Nearest(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, scale_factor=SCALE, mode="nearest")

    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Nearest(),
            (torch.zeros(1, 3, 8, 8),),
            str(path),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(path))
    meta = {
        "format": 1,
        "scale": SCALE,
        "io": "float32-nchw",
        "input": "lr",
        "output": "sr",
        "value_range": [0, 255],
        "config_name": "nearest",
        "config": {"kind": "nearest"},
        "checkpoint_sha256": "0" * 64,
        "recommended_halo": halo,
    }
    entry = model.metadata_props.add()
    entry.key, entry.value = "fourpp_eusr", json.dumps(meta)
    onnx.save(model, str(path))
    return path


def export_model(args: argparse.Namespace, tmp: Path) -> tuple[Path, dict[str, Any]]:
    if args.model is not None:
        path = Path(args.model)
        if not path.is_file() or path.suffix.lower() != ".onnx":
            raise BenchmarkError(f"--model {path}: expected an existing .onnx file")
        return path, {"source": "onnx", "path": str(path)}
    if args.config == "nearest":
        return export_nearest(tmp / f"nearest-x{SCALE}.onnx", args.nearest_halo), {
            "source": f"nearest-neighbour x{SCALE} (torch interpolate exported to ONNX): the streaming path at "
            "memory speed, no learned compute",
            "config_name": "nearest",
            "recommended_halo": args.nearest_halo,
        }
    from benchmarks.throughput_models import build_config
    from export.to_onnx import export_onnx

    model, halo, desc = build_config(args.config, args.seed)
    path = tmp / f"eusr-{args.config}-x{SCALE}.onnx"
    export_onnx(model, path, scale=SCALE, halo=halo, validate=False, exporter="torchscript")
    desc.update({"config_name": args.config, "recommended_halo": halo, "exporter": "torchscript"})
    return path, desc


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    sizes = parse_int_list(args.sizes)
    if any(s < 1 for s in sizes) or not args.limit_mb > 0 or args.region < 1:
        parser.error("--sizes must be >= 1, --limit-mb > 0, --region >= 1")
    out_dir = results_dir(args, parser)
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        work = Path(tempfile.mkdtemp(prefix="bench-large-", dir=args.work_dir))
        rows = []
        measured: list[dict[str, Any]] = []
        try:
            need = max(s * s * 3 * (1 + SCALE * SCALE) for s in sizes) * 1.02
            free = shutil.disk_usage(work).free
            if need > free:
                raise BenchmarkError(
                    f"{work}: {free / 1e9:.1f} GB free, the largest size needs {need / 1e9:.1f} GB "
                    "(input + uncompressed output); pick smaller --sizes or another --work-dir"
                )
            model_path, model = export_model(args, work)
            for size in sizes:
                src, dst = work / f"in-{size}.tif", work / f"out-{size}.tif"
                t0 = time.perf_counter()
                make_input(src, size, args.seed)
                made = time.perf_counter() - t0
                print(f"{size}x{size}: input written in {made:.1f} s; upscaling...", flush=True)
                m = run_child(args, model_path, src, dst, size)
                check = check_output(args, model_path, src, dst, size)
                peak = m["peak_rss_kib"] * 1024
                entry = {
                    "size": size,
                    "input_bytes": src.stat().st_size,
                    "input_seconds": made,
                    "measured": m,
                    "check": check,
                    "peak_rss_bytes": peak,
                    "within_limit": peak <= args.limit_mb * MB,
                }
                measured.append(entry)
                out_px = (size * SCALE) ** 2
                rows.append(
                    [
                        f"{size}x{size}",
                        f"{m['output_shape'][1]}x{m['output_shape'][0]}",
                        f"{check['opened']['bytes_on_disk'] / 1e9:.2f}",
                        m["bands"],
                        f"{m['rss_baseline_kib'] / 1024:.0f}",
                        f"{peak / MIB:.0f}",
                        f"{(m['rss_after_band_kib']['max'] or 0) / 1024:.0f}",
                        f"{m['upscale_seconds']:.1f}",
                        f"{out_px / m['upscale_seconds'] / 1e6:.2f}",
                        "yes" if check["passed"] else "NO",
                        {None: "-", True: "equal", False: "DIFFER"}[check["exact_whole_image_equal"]],
                        max(r["max_abs_diff"] for r in check["regions"]),
                    ]
                )
                print(f"  peak RSS {peak / MIB:.0f} MiB, {m['upscale_seconds']:.1f} s, check passed: {check['passed']}")
                if not args.keep:
                    src.unlink()
                    dst.unlink()
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    passed = all(e["within_limit"] and e["check"]["passed"] for e in measured)
    data = {
        "benchmark": "large_image",
        "environment": env,
        "model": model,
        "settings": {
            "sizes": sizes,
            "limit_mb": args.limit_mb,
            "band_budget_mb": args.band_budget_mb,
            "memory_budget_mb": args.memory_budget_mb,
            "region": args.region,
            "exact_max": args.exact_max,
            "seed": args.seed,
            "input": "uncompressed RGB TIFF of seeded uniform noise, written in 256-row chunks",
            "output": "tiled 256x256 TIFF (BigTIFF above 4 GB), uncompressed",
            "checked": "absolute peak RSS (VmHWM) of the measuring subprocess",
        },
        "results": measured,
        "passed": passed,
    }
    headers = [
        "input",
        "output",
        "output GB",
        "bands",
        "RSS before (MiB)",
        "peak RSS (MiB)",
        "max RSS after a band (MiB)",
        "seconds",
        "output MP/s",
        "readable",
        "whole-image check",
        "max |diff| vs crops",
    ]
    md = markdown_table(headers, rows)
    markdown = "\n\n".join(
        [
            f"# Streamed upscale of large images: peak RSS vs a {args.limit_mb:g} MB limit",
            f"{env['date']}, commit {commit_label(env)}, {env['host']['cpu']}; model: {model['source']}; "
            f"band budget {args.band_budget_mb:g} MB, activations {args.memory_budget_mb:g} MB.",
            md,
            f"Verdict: {'PASS' if passed else 'FAIL'} (peak RSS within {args.limit_mb:g} MB and output checked, "
            "every size).",
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_results(out_dir, args.name, data, markdown)
    print(f"wrote {paths['json']}, {paths['md']}")
    print()
    print(md)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
