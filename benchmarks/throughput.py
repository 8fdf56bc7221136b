"""Throughput: the tiled ONNX Runtime upscaler against PyTorch eager on the same model.

    python benchmarks/throughput.py                               # compact + paper, 3 CPU sizes
    python benchmarks/throughput.py --configs compact --sizes 960x540 --repeats 5
    python benchmarks/throughput.py --configs compact --sizes 120x68 --sweep 64,128,256,512
    python benchmarks/throughput.py --configs tiny --sizes 32x24 --warmup 0 --repeats 1   # smoke test
    python benchmarks/throughput.py --configs compact --sizes 480x270,960x540 --threads 2 --backend onnxruntime \
        --modes ort-tiled,ort-auto,ort-whole --warmup 1 --repeats 5 --interleave   # tiles vs the halo arithmetic
    python benchmarks/throughput.py --configs compact --sizes 480x270 --threads 2 --tiles 64,128,256 \
        --halos 0,8,16 --batches 1,2,4 --io float32-nchw,uint8-nhwc --precisions fp32,fp16 \
        --name throughput_cpu_sweeps                                                    # tiling sweep

For each configuration (--configs: compact = the bundled checkpoint
models/eusr-compact.safetensors; paper and tiny = build_eusr(name), random init seeded by
--seed, since throughput does not depend on the weights' values) the ×4 path is exported
once to a temporary float32-nchw ONNX file (TorchScript exporter) and, on a random uint8
W×H×3 image of every --sizes entry, four modes are timed:

* ort-tiled   runtime.Upscaler, backend --backend, fixed tile --tile (default 128) and halo
              (the model's recommended halo: 8 for compact, as the bundled model, 16
              otherwise), end to end: uint8 in, tile gather, inference, stitching, uint8 out.
* ort-auto    the same with tile="auto", the CPU default: the whole image when it fits the
              memory budget, else evenly split windows that do (the plan is in the row).
* ort-whole   the same Upscaler with tile >= image and halo 0: one window, the whole image
              (close to engine-only time plus the uint8 <-> float32 conversions).
* torch-eager the same model in PyTorch, whole image, float32, torch.inference_mode,
              torch.set_num_threads(--threads) when given; timed from the uint8 H×W×3
              array to the rounded uint8 result, like the Upscaler.

Each mode runs --warmup untimed calls, then --repeats timed ones. Reported per row:
min / median / p90 / max latency (with a handful of repeats p90 is close to the max and
a p99 would be meaningless, so none is given), input and output megapixels per second
and images per second (from the median), speedup = torch-eager median / this mode's
median (same configuration and size, same run), the tiled overhead = ort-tiled median /
ort-whole median, the largest |difference| of the uint8 output from torch-eager's, and
the process's peak RSS (ru_maxrss) after the row. For ort-tiled and ort-auto the row also
has the plan, its overlap (window pixels computed / image pixels: what the halo arithmetic
says tiling costs) and vs halo = median / (ort-whole median × overlap): 1.0 means the tiles
cost exactly what the extra pixels cost, above that is per-call overhead (gather, pad, stitch,
Python, and the backend being less efficient on smaller inputs).

--interleave times the modes of a size round-robin (each mode's warm-up first, then one call
of every mode per repeat) instead of one mode's repeats after the other, so that a shared
machine's load drifts into every mode alike and the ratios of one run stay comparable.

ru_maxrss only ever grows: it is the
high-water mark of the whole process so far (models, torch and all earlier rows
included), not the memory of that row alone; benchmarks/memory.py measures the
upscaler's memory in a fresh process.

--sweep 64,128,256,512 adds square sizes for the compact configuration (all three modes)
to show time per megapixel against image size (tiles pay off only once the image is
larger than a tile). The PNG plots output MP/s against input size per mode and
configuration (and ms per input megapixel for the sweep).

--tiles, --halos, --batches, --io, --precisions add a tiling sweep of ort-tiled on every
--configs × --sizes image, right after that image's three modes: the tiles × halos grid at
batch 1, float32-nchw, fp32, then batch, I/O (uint8-nhwc graph) and precision (fp16 graph:
float16 layers between float32 edges) varied one axis at a time around the default
tile/halo. One axis at a time keeps the cost additive (the full product would be ~100
rows). The extra graphs are exported like the main one (TorchScript, same weights). Each
row reports speed vs the sweep's own default row, speedup vs torch-eager and time vs
ort-whole of the same image in the same run, the nominal overlap (tile+2·halo)²/tile² and
the actual one (window pixels computed / image pixels), and the row's own peak RSS (the
kernel's peak mark is reset before each sweep row). The PNG then plots output MP/s
against tile per halo, and bars for the batch/I/O/precision variants.

Timings on a shared or busy machine are noisy: run on a quiet one and say which.

Code: this file is the command line, the three modes and the main tables; the tiling sweep
is ``benchmarks/throughput_sweep.py``, the configurations and their ONNX export
``benchmarks/throughput_models.py``, the timing and RSS helpers ``benchmarks/timing.py`` and
``benchmarks/rss.py`` (shared with ``throughput_gpu.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    HelpFormatter,
    add_common_args,
    backend_for,
    commit_label,
    environment,
    fmt_float,
    import_pyplot,
    markdown_table,
    parse_choices,
    parse_int_list,
    parse_sizes,
    require_clean_tree,
    results_dir,
    with_border,
    write_results,
)
from benchmarks.rss import peak_rss_mib
from benchmarks.throughput_models import (
    CONFIGS,
    DEFAULT_VARIANT,
    SCALE,
    prepared_config,
    quiet_halo_warning,
    torch_uint8_runner,
)
from benchmarks.throughput_sweep import (
    SWEEP_FLAGS,
    TILING_HEADERS,
    add_sweep_args,
    check_sweep_args,
    measure_tiling_sweep,
    plot_tiling,
    sweep_markdown,
    sweep_record,
    sweep_requested,
    sweep_variants,
    tiling_table_rows,
)
from benchmarks.timing import summarize, time_calls
from runtime.errors import UpscaleError

__all__ = [
    "MODES",
    "CONFIGS",
    "SCALE",
    "TABLE_HEADERS",
    "SWEEP_HEADERS",
    "TILING_HEADERS",
    "SWEEP_FLAGS",
    "parse_sizes",
    "parse_configs",
    "parse_modes",
    "torch_runner",
    "measure_config",
    "table_rows",
    "sweep_table_rows",
    "plot",
    "main",
]

MODES = ("ort-tiled", "ort-auto", "ort-whole", "torch-eager")
DEFAULT_SIZES = "120x68,240x135,480x270"


# --------------------------------------------------------------------------- arguments


def parse_configs(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {bad or text!r}; choose from {','.join(CONFIGS)}")
    return list(dict.fromkeys(names))


def parse_modes(text: str) -> list[str]:
    """A comma-separated subset of MODES, returned in MODES order."""
    names = parse_choices("--modes", MODES)(text)
    return [m for m in MODES if m in names]


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        prog="throughput.py", description=doc[0] + "\n\n" + doc[1], formatter_class=HelpFormatter
    )
    p.add_argument(
        "--configs",
        type=parse_configs,
        default=["compact", "paper"],
        help=f"comma-separated EUSR configurations out of {','.join(CONFIGS)} (default: compact,paper)",
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"comma-separated input sizes WIDTHxHEIGHT (default: {DEFAULT_SIZES})",
    )
    p.add_argument(
        "--modes",
        type=parse_modes,
        default=list(MODES),
        help=f"comma-separated modes out of {','.join(MODES)}; speedups need torch-eager (default: all)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing each mode")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode and size")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="time the modes of a size round-robin (one call of each per repeat) so machine load hits all alike",
    )
    p.add_argument(
        "--sweep",
        type=parse_int_list,
        default=None,
        help="square input edges for a compact-config size sweep, e.g. 64,128,256,512 (default: none)",
    )
    p.add_argument("--tile", type=int, default=None, help="ort-tiled tile (default: runtime.DEFAULT_TILE)")
    p.add_argument("--halo", type=int, default=None, help="ort-tiled halo (default: the model's recommended halo)")
    add_sweep_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init weights and of the random images")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_common_args(p, name="throughput_cpu")
    p.set_defaults(threads=None)
    for action in p._actions:  # --threads applies to PyTorch too here
        if action.dest == "threads":
            action.help = "ONNX Runtime intra-op threads and torch.set_num_threads (default: each library's own choice)"
    return p


# --------------------------------------------------------------------------- measuring


def torch_runner(module: Any, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    return torch_uint8_runner(module)


def measure_config(
    name: str,
    model: Any,
    onnx_paths: dict[tuple[str, str], Path],
    sizes: Sequence[tuple[int, int]],
    args: argparse.Namespace,
    *,
    group: str,
    sweep: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All modes on all sizes for one configuration: one row per (size, mode); with ``sweep``
    also the tiling sweep on each size's image, right after its modes (same image, same run)."""
    from runtime import DEFAULT_TILE, Upscaler

    onnx_path = onnx_paths[DEFAULT_VARIANT]
    tile = args.tile if args.tile is not None else DEFAULT_TILE
    opts = backend_for(args.backend, args.threads, onnx_path)
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(args.seed)
    with contextlib.ExitStack() as upscalers:
        tiled = upscalers.enter_context(Upscaler(onnx_path, backend=opts, tile=tile, halo=args.halo))
        auto = (
            upscalers.enter_context(Upscaler(onnx_path, backend=opts, tile="auto", halo=args.halo))
            if "ort-auto" in args.modes
            else None
        )
        run_torch = torch_runner(model, args.threads) if "torch-eager" in args.modes else None
        for width, height in sizes:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            with contextlib.ExitStack() as per_size:
                runners: dict[str, tuple[Callable[[], np.ndarray], dict[str, Any]]] = {}
                for mode in args.modes:
                    if mode in ("ort-tiled", "ort-auto"):
                        up = tiled if mode == "ort-tiled" else auto
                        assert up is not None
                        plan = up.plan(height, width)
                        settings = {
                            "tile": up.tile,
                            "halo": up.halo,
                            "plan": plan.describe(),
                            "windows": len(plan),
                            "window": list(plan.window_shape),
                            "overlap": plan.overlap,
                            "border": plan.border,
                        }
                        runners[mode] = (functools.partial(up.upscale, image), settings)
                    elif mode == "ort-whole":
                        whole_tile = max(width, height)
                        per_size.enter_context(quiet_halo_warning())
                        whole = per_size.enter_context(Upscaler(onnx_path, backend=opts, tile=whole_tile, halo=0))
                        runners[mode] = (functools.partial(whole.upscale, image), {"tile": whole_tile, "halo": 0})
                    else:
                        assert run_torch is not None
                        runners[mode] = (functools.partial(run_torch, image), {"threads": _torch_threads()})
                timed = _time_modes({m: fn for m, (fn, _) in runners.items()}, args)
            results: dict[str, dict[str, Any]] = {}
            outputs: dict[str, np.ndarray] = {}
            for mode, (times, out) in timed.items():
                outputs[mode] = out
                results[mode] = {
                    **summarize(times, width, height, SCALE),
                    "settings": runners[mode][1],
                    "peak_rss_mib": peak_rss_mib(),
                }
                print(
                    f"  {group} {name} {width}x{height} {mode}: median {results[mode]['median_s'] * 1e3:.1f} ms, "
                    f"{results[mode]['output_mp_per_s']:.3f} MP/s out"
                    + (f", {runners[mode][1]['plan']}" if "plan" in runners[mode][1] else ""),
                    file=sys.stderr,
                    flush=True,
                )
            torch_refs = {0: outputs["torch-eager"]} if "torch-eager" in outputs else {}

            def torch_at(border: int, image: np.ndarray = image, refs: dict = torch_refs) -> np.ndarray | None:
                """torch-eager's output with ``border`` pixels of mirrored context, as the
                runtime's tiles see it (untimed; border 0 is the timed output itself)."""
                if not refs or run_torch is None:
                    return None
                if border not in refs:
                    refs[border] = with_border(run_torch, border, SCALE)(image)
                return refs[border]

            torch_med = results["torch-eager"]["median_s"] if "torch-eager" in results else None
            whole_med = results["ort-whole"]["median_s"] if "ort-whole" in results else None
            for mode, r in results.items():
                row = {
                    "group": group,
                    "config": name,
                    "width": width,
                    "height": height,
                    "input_mp": width * height / 1e6,
                    "output_mp": width * height * SCALE * SCALE / 1e6,
                    "mode": mode,
                    **r,
                }
                row["torch_median_s"] = torch_med
                row["speedup_vs_torch"] = (
                    torch_med / r["median_s"] if torch_med is not None and r["median_s"] > 0 else None
                )
                row["ort_whole_median_s"] = whole_med
                row["tiled_overhead"] = (
                    r["median_s"] / whole_med
                    if mode in ("ort-tiled", "ort-auto") and whole_med is not None and whole_med > 0
                    else None
                )
                overlap = r["settings"].get("overlap")
                row["overlap"] = overlap
                row["vs_halo_arithmetic"] = (
                    row["tiled_overhead"] / overlap if row["tiled_overhead"] is not None and overlap else None
                )
                want = torch_at(r["settings"].get("border", 0))
                row["max_abs_diff_vs_torch"] = (
                    int(np.max(np.abs(outputs[mode].astype(np.int16) - want.astype(np.int16))))
                    if want is not None
                    else None
                )
                row["ms_per_input_mp"] = r["median_s"] * 1e3 / row["input_mp"]
                rows.append(row)
            if sweep:
                refs = {mode: (results[mode]["median_s"], outputs[mode]) for mode in results}
                sweep_rows += measure_tiling_sweep(
                    name,
                    onnx_paths,
                    image,
                    refs,
                    args,
                    default_tile=tiled.tile,
                    default_halo=tiled.halo,
                    torch_at=torch_at,
                )
    return rows, sweep_rows


def _time_modes(
    runners: dict[str, Callable[[], np.ndarray]], args: argparse.Namespace
) -> dict[str, tuple[list[float], np.ndarray]]:
    """Each mode's timed calls and last output: mode after mode, or round-robin with --interleave."""
    if not args.interleave:
        return {mode: time_calls(fn, args.warmup, args.repeats) for mode, fn in runners.items()}  # type: ignore[misc]
    outputs = {}
    for mode, fn in runners.items():
        for _ in range(args.warmup):
            outputs[mode] = fn()
    times: dict[str, list[float]] = {mode: [] for mode in runners}
    for _ in range(args.repeats):
        for mode, fn in runners.items():
            t0 = time.perf_counter()
            outputs[mode] = fn()
            times[mode].append(time.perf_counter() - t0)
    return {mode: (times[mode], outputs[mode]) for mode in runners}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------- output


TABLE_HEADERS = [
    "config",
    "size",
    "mode",
    "min ms",
    "median ms",
    "p90 ms",
    "max ms",
    "in MP/s",
    "out MP/s",
    "img/s",
    "speedup vs torch",
    "tiled overhead",
    "overlap",
    "vs halo",
    "max abs Δ vs torch",
    "peak RSS MiB",
]


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append(
            [
                r["config"],
                f"{r['width']}x{r['height']}",
                r["mode"],
                fmt_float(r["min_s"] * 1e3, 1),
                fmt_float(r["median_s"] * 1e3, 1),
                fmt_float(r["p90_s"] * 1e3, 1),
                fmt_float(r["max_s"] * 1e3, 1),
                fmt_float(r["input_mp_per_s"], 4),
                fmt_float(r["output_mp_per_s"], 3),
                fmt_float(r["images_per_s"], 2),
                fmt_float(r["speedup_vs_torch"], 2),
                fmt_float(r["tiled_overhead"], 3),
                fmt_float(r.get("overlap"), 3),
                fmt_float(r.get("vs_halo_arithmetic"), 3),
                "-" if r["max_abs_diff_vs_torch"] is None else str(r["max_abs_diff_vs_torch"]),
                fmt_float(r["peak_rss_mib"], 0),
            ]
        )
    return out


SWEEP_HEADERS = ["size", "mode", "median ms", "ms per input MP", "out MP/s", "speedup vs torch", "tiled overhead"]


def sweep_table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            f"{r['width']}x{r['height']}",
            r["mode"],
            fmt_float(r["median_s"] * 1e3, 1),
            fmt_float(r["ms_per_input_mp"], 0),
            fmt_float(r["output_mp_per_s"], 3),
            fmt_float(r["speedup_vs_torch"], 2),
            fmt_float(r["tiled_overhead"], 3),
        ]
        for r in rows
    ]


def plot(
    rows: Sequence[dict[str, Any]],
    sweep: Sequence[dict[str, Any]],
    path: Path,
    title: str,
    tiling: Sequence[dict[str, Any]] = (),
) -> Path | None:
    plt = import_pyplot()
    if plt is None:
        return None
    # With a tiling sweep on one size the throughput-vs-size panel would be three dots: left out.
    main_panel = not tiling or len({(r["width"], r["height"]) for r in rows}) > 1
    ncols = int(main_panel) + bool(sweep) + 2 * bool(tiling)
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.5 + 0.5 * bool(tiling)), squeeze=False)
    panels = iter(axes[0])
    if tiling:
        plot_tiling(next(panels), next(panels), tiling)
    if not main_panel:
        rows = []
    ax = next(panels) if main_panel else None
    styles = {"ort-tiled": "o-", "ort-auto": "D-", "ort-whole": "s--", "torch-eager": "^:"}
    if ax is not None:
        for config in dict.fromkeys(r["config"] for r in rows):
            for mode in MODES:
                pts = sorted(
                    (r["input_mp"], r["output_mp_per_s"]) for r in rows if r["config"] == config and r["mode"] == mode
                )
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[mode], label=f"{config} {mode}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input size (megapixels)")
        ax.set_ylabel("throughput (output MP/s, median)")
        ax.set_title("throughput vs input size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if sweep:
        ax = next(panels)
        for mode in MODES:
            pts = sorted((r["width"], r["ms_per_input_mp"]) for r in sweep if r["mode"] == mode)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[mode], label=f"compact {mode}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("square input edge (px)")
        ax.set_ylabel("ms per input megapixel (median)")
        ax.set_title("compact: time per megapixel vs size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.tile is not None and args.tile < 1:
        parser.error("--tile must be >= 1")
    if args.halo is not None and args.halo < 0:
        parser.error("--halo must be >= 0")
    if args.sweep is not None and any(s < 1 for s in args.sweep):
        parser.error("--sweep sizes must be >= 1")
    check_sweep_args(parser, args)
    tiling = sweep_requested(args)

    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    tiling_rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    configs = list(args.configs)
    if args.sweep and "compact" not in configs:
        configs.append("compact")
    t_start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
            for name in configs:
                variants = sweep_variants(args) if tiling and name in args.configs else ()
                with prepared_config(name, args.seed, Path(tmp), variants) as (model, onnx_paths, desc):
                    models[name] = desc
                    if name in args.configs:
                        new_rows, new_tiling = measure_config(
                            name, model, onnx_paths, args.sizes, args, group="sizes", sweep=tiling
                        )
                        rows += new_rows
                        tiling_rows += new_tiling
                    if name == "compact" and args.sweep:
                        sweep_rows += measure_config(
                            name, model, onnx_paths, [(s, s) for s in args.sweep], args, group="sweep"
                        )[0]
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total_s = time.perf_counter() - t_start
    env["threads"]["torch"] = _torch_threads()

    data = {
        "benchmark": "throughput",
        "environment": env,
        "settings": {
            "configs": args.configs,
            "sizes": [f"{w}x{h}" for w, h in args.sizes],
            "modes": args.modes,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "interleave": args.interleave,
            "sweep": args.sweep,
            "tile": args.tile,
            "halo": args.halo,
            "seed": args.seed,
            "backend": args.backend,
            "scale": SCALE,
            "notes": [
                "speedup_vs_torch = torch_median_s / median_s of the same config and size",
                "tiled_overhead = ort-tiled (or ort-auto) median_s / ort-whole median_s",
                "overlap = window pixels computed / image pixels of the row's plan (the halo arithmetic)",
                "vs_halo_arithmetic = tiled_overhead / overlap: 1.0 = tiles cost exactly their extra pixels",
                "peak_rss_mib = ru_maxrss of the whole process after the row (a running high-water mark)",
                "p90 is linear-interpolated from few repeats; no p99 is reported",
            ],
        },
        "models": models,
        "rows": rows,
        "sweep_rows": sweep_rows,
        "total_seconds": total_s,
    }
    if tiling:
        data["settings"]["tiling_sweep"] = sweep_record(args)
        data["tiling_rows"] = tiling_rows

    md_table = markdown_table(TABLE_HEADERS, table_rows(rows))
    parts = [
        f"# Throughput: runtime.Upscaler (ONNX Runtime) vs PyTorch eager, ×{SCALE}",
        f"{env['date']}, commit {commit_label(env)}, "
        f"{env['host']['cpu']} ({env['host']['usable_cpus']} usable CPUs), threads: ORT "
        f"{env['threads']['onnxruntime_intra_op']}, torch {env['threads']['torch']}; onnxruntime "
        f"{env['versions']['onnxruntime']}, torch {env['versions']['torch']}. Warm-up {args.warmup}, "
        f"{args.repeats} timed repeats per row (min/median/p90/max; no p99 from so few). Speedup = torch-eager "
        f"median / row median; tiled overhead = ort-tiled (ort-auto) / ort-whole median; overlap = window pixels / "
        f"image pixels; vs halo = tiled overhead / overlap{'; modes timed round-robin' if args.interleave else ''}; "
        "peak RSS is the process's running "
        f"high-water mark. Total {total_s:.1f} s.",
    ]
    if sweep_rows:
        parts += ["## Size sweep (compact)", markdown_table(SWEEP_HEADERS, sweep_table_rows(sweep_rows))]
    tiling_table = markdown_table(TILING_HEADERS, tiling_table_rows(tiling_rows)) if tiling else ""
    if tiling:
        parts += sweep_markdown(args, tiling_rows, tiling_table)
    parts += ["## Results", md_table]
    paths = write_results(args.out, args.name, data, "\n\n".join(parts))
    png = None
    if not args.no_plot:
        png = plot(
            rows,
            sweep_rows,
            args.out / f"{args.name}.png",
            f"{env['host']['cpu']}, ORT threads {env['threads']['onnxruntime_intra_op']}, "
            f"torch threads {env['threads']['torch']}"
            + (f", warm-up {args.warmup}, {args.repeats} repeats" if tiling else ""),
            tiling=tiling_rows,
        )
    print(f"wrote {paths['json']}, {paths['md']}" + (f", {png}" if png else ""))
    if sweep_rows:
        print()
        print(markdown_table(SWEEP_HEADERS, sweep_table_rows(sweep_rows)))
    if tiling:
        print()
        print(tiling_table)
    print()
    print(md_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
