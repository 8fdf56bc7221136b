"""Peak resident memory of tiled upscaling: does it scale with the tile, not the image?

    python benchmarks/memory.py                       # 2048×2048 RGB, tiny config, tile auto, halo 16
    python benchmarks/memory.py --size 512 --budget-mb 500
    python benchmarks/memory.py --model runtime/models/eusr-compact-x4.onnx --tile 256

Claim checked (DESIGN.md, "Performance targets"): peak resident memory when upscaling a
2048×2048 image stays below the output array plus 500 MB (--budget-mb; MB = 10^6 bytes).

How: the "tiny" EUSR configuration (random weights, seeded: memory does not depend on
the weights' values) is exported to a temporary ONNX file (or --model is used as is);
then a fresh Python subprocess that imports only ``runtime`` (never torch; the child
records whether torch got imported) creates the Upscaler, makes a random uint8
size×size×3 image, reads its baseline RSS (VmRSS), upscales, and reads its peak RSS: the
kernel's high-water mark of the child's own memory (``VmHWM``; ``ru_maxrss`` where there is
no /proc). Not ``ru_maxrss`` on Linux: exec carries the forking parent's mark into it, so a
child of a 500 MB pytest process would report 500 MB whatever it used. The budget applies
to that absolute peak, interpreter, ONNX Runtime and input image included; the increase
over the baseline is reported too.

Exit status: 0 within budget, 1 over budget, 2 bad arguments or a failed run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import json
import resource
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
    require_clean_tree,
    results_dir,
    write_results,
)
from benchmarks.rss import proc_status_kib
from runtime.errors import UpscaleError

MB = 1_000_000
MIB = 1 << 20
DEFAULT_SIZE = 2048
DEFAULT_BUDGET_MB = 500.0
CHILD_FLAG = "--_child"


def child(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement, inside the fresh subprocess: imports ``runtime`` only."""
    t0 = time.perf_counter()
    rss_start = proc_status_kib("VmRSS")
    import runtime
    from runtime import Upscaler

    rss_imported = proc_status_kib("VmRSS")
    with Upscaler(
        args.model,
        backend=backend_for(args.backend, args.threads, args.model),
        tile=args.tile,
        halo=args.halo,
        batch=args.batch,
        memory_budget_mb=args.memory_budget_mb,
    ) as up:
        rng = np.random.default_rng(args.seed)
        image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        rss_baseline = proc_status_kib("VmRSS")
        peak_before = _peak_kib()
        t1 = time.perf_counter()
        out = up.upscale(image)
        upscale_s = time.perf_counter() - t1
        peak = _peak_kib()
        rss_after = proc_status_kib("VmRSS")
        io = up.backend.io.value
        scale = up.scale
        plan = up.plan(args.size, args.size).describe()
        upscaler = repr(up)
    return {
        "runtime_version": runtime.__version__,
        "upscaler": upscaler,
        "plan": plan,
        "model_io": io,
        "scale": scale,
        "input_shape": list(image.shape),
        "output_shape": list(out.shape),
        "output_bytes": int(out.nbytes),
        "rss_start_kib": rss_start,
        "rss_imported_kib": rss_imported,
        "rss_baseline_kib": rss_baseline,
        "peak_before_upscale_kib": peak_before,
        "peak_rss_kib": peak,
        "rss_after_kib": rss_after,
        "upscale_seconds": upscale_s,
        "total_seconds": time.perf_counter() - t0,
        "torch_imported": "torch" in sys.modules,
        "onnxruntime_imported": "onnxruntime" in sys.modules,
    }


def _peak_kib() -> int:
    """This process's own peak RSS in KiB (VmHWM; ru_maxrss, which exec inherits, without /proc)."""
    hwm = proc_status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@contextlib.contextmanager
def tiny_model(args: argparse.Namespace) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The ONNX model to measure: --model, or the seeded tiny config exported to a temp file."""
    if args.model is not None:
        path = Path(args.model)
        if not path.is_file() or path.suffix.lower() != ".onnx":
            raise BenchmarkError(f"--model {path}: expected an existing .onnx file")
        yield path, {"source": "onnx", "path": str(path)}
        return
    try:
        import torch

        from export.to_onnx import export_onnx
        from train.models.eusr import build_eusr
    except ImportError as exc:
        raise BenchmarkError(
            f"exporting the {args.config!r} config needs the train extra (torch, onnx): {exc}; "
            "or pass --model an .onnx file"
        ) from exc
    torch.manual_seed(args.seed)
    model = build_eusr(args.config)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        path = Path(tmp) / f"eusr-{args.config}-x4.onnx"
        export_onnx(model, path, scale=4, io=args.io, validate=False, exporter=args.exporter)
        yield (
            path,
            {
                "source": f"build_eusr({args.config!r}), random init, torch seed {args.seed}",
                "config_name": args.config,
                "io": args.io,
                "exporter": args.exporter,
            },
        )


def run_child(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        CHILD_FLAG,
        "--model",
        str(model),
        "--size",
        str(args.size),
        "--tile",
        str(args.tile),
        "--halo",
        str(args.halo),
        "--batch",
        str(args.batch),
        "--memory-budget-mb",
        str(args.memory_budget_mb),
        "--seed",
        str(args.seed),
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


def verdict(measured: dict[str, Any], budget_mb: float) -> dict[str, Any]:
    """Budget = output bytes + budget_mb·10^6; checked against the absolute peak RSS."""
    peak = measured["peak_rss_kib"] * 1024
    baseline = measured["rss_baseline_kib"] * 1024
    budget = measured["output_bytes"] + budget_mb * MB
    return {
        "budget_extra_mb": budget_mb,
        "budget_bytes": budget,
        "peak_rss_bytes": peak,
        "increase_over_baseline_bytes": peak - baseline,
        "peak_over_output_bytes": peak - measured["output_bytes"],
        "ratio": peak / budget if budget > 0 else float("inf"),
        "margin_bytes": budget - peak,
        "passed": peak <= budget,
    }


def _tile_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        tile = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an int >= 1, got {text!r}") from None
    if tile < 1:
        raise argparse.ArgumentTypeError(f"expected auto or an int >= 1, got {text!r}")
    return tile


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memory.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=HelpFormatter,
    )
    from runtime import DEFAULT_BATCH, DEFAULT_HALO, DEFAULT_TILE
    from runtime.upscaler import MIN_MEMORY_BUDGET_MB

    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="input edge: a size x size x 3 uint8 image")
    p.add_argument(
        "--budget-mb",
        type=float,
        default=DEFAULT_BUDGET_MB,
        help="allowed peak RSS beyond the output array, in MB (10^6 bytes)",
    )
    p.add_argument("--model", default=None, help="an .onnx model to measure instead of the exported tiny config")
    p.add_argument("--config", default="tiny", help="EUSR configuration to export when no --model is given")
    p.add_argument(
        "--io", choices=("float32-nchw", "uint8-nhwc"), default="float32-nchw", help="I/O of the exported model"
    )
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo", help="torch.onnx exporter")
    p.add_argument(
        "--tile",
        type=_tile_arg,
        default="auto",
        help=f"Upscaler tile: auto (the CPU default) or a core edge such as {DEFAULT_TILE}",
    )
    p.add_argument(
        "--memory-budget-mb",
        type=float,
        default=MIN_MEMORY_BUDGET_MB,
        help="Upscaler(memory_budget_mb=): activations one call may take with --tile auto; default: the "
        "smallest default budget (the Upscaler's own default grows with the free memory, to 2048 MB)",
    )
    p.add_argument("--halo", type=int, default=DEFAULT_HALO, help="Upscaler halo")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="Upscaler tiles per call")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the random image")
    p.add_argument(CHILD_FLAG, dest="child", action="store_true", help=argparse.SUPPRESS)
    add_common_args(p, name="memory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    for name in ("size", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.halo < 0 or args.budget_mb < 0 or not args.memory_budget_mb > 0:
        parser.error("--halo and --budget-mb must be >= 0, --memory-budget-mb > 0")
    if args.child:
        print(json.dumps(child(args)))
        return 0
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        with tiny_model(args) as (model_path, model):
            measured = run_child(args, model_path)
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = verdict(measured, args.budget_mb)
    data = {
        "benchmark": "memory",
        "environment": env,
        "model": model,
        "settings": {
            "size": args.size,
            "tile": args.tile,
            "halo": args.halo,
            "batch": args.batch,
            "memory_budget_mb": args.memory_budget_mb,
            "seed": args.seed,
            "budget_mb": args.budget_mb,
            "checked": "absolute peak RSS (VmHWM) of the measuring subprocess",
        },
        "measured": measured,
        "verdict": v,
    }

    def mib(b: float) -> str:
        return f"{b / MIB:.1f} MiB"

    rows = [
        ["input", f"{args.size}x{args.size}x3 uint8", mib(args.size * args.size * 3)],
        ["output array", "x".join(map(str, measured["output_shape"])), mib(measured["output_bytes"])],
        ["RSS after import runtime", "", mib(measured["rss_imported_kib"] * 1024)],
        ["RSS baseline (session + input)", "", mib(measured["rss_baseline_kib"] * 1024)],
        ["peak RSS", f"{measured['upscale_seconds']:.1f} s upscale", mib(v["peak_rss_bytes"])],
        ["peak - baseline", "", mib(v["increase_over_baseline_bytes"])],
        ["peak - output", "", mib(v["peak_over_output_bytes"])],
        ["budget (output + extra)", f"+{args.budget_mb:g} MB", mib(v["budget_bytes"])],
        ["peak / budget", f"margin {mib(v['margin_bytes'])}", f"{v['ratio']:.3f}"],
        ["verdict", "torch imported: " + str(measured["torch_imported"]), "PASS" if v["passed"] else "FAIL"],
    ]
    rows.insert(0, ["tiles", measured["upscaler"], measured["plan"]])
    md = markdown_table(["quantity", "detail", "value"], rows)
    markdown = "\n\n".join(
        [
            f"# Peak memory: {args.size}x{args.size} RGB, tile {args.tile}, halo {args.halo}, batch {args.batch}",
            f"{env['date']}, commit {commit_label(env)}, {env['host']['cpu']}; model: {model['source']}.",
            md,
        ]
    )
    paths = write_results(args.out, args.name, data, markdown)
    print(
        f"peak RSS {mib(v['peak_rss_bytes'])} vs budget {mib(v['budget_bytes'])} (output {mib(measured['output_bytes'])} "
        f"+ {args.budget_mb:g} MB): ratio {v['ratio']:.3f}, margin {mib(v['margin_bytes'])} -> "
        f"{'PASS' if v['passed'] else 'FAIL'}"
    )
    print(f"wrote {paths['json']}, {paths['md']}")
    print()
    print(md)
    return 0 if v["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
