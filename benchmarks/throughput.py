"""Throughput: the tiled ONNX Runtime upscaler against PyTorch eager on the same model.

    python benchmarks/throughput.py                               # compact + paper, 3 CPU sizes
    python benchmarks/throughput.py --configs compact --sizes 960x540 --repeats 5
    python benchmarks/throughput.py --configs compact --sizes 120x68 --sweep 64,128,256,512
    python benchmarks/throughput.py --configs tiny --sizes 32x24 --warmup 0 --repeats 1   # smoke test
    python benchmarks/throughput.py --configs compact --sizes 480x270 --threads 2 --tiles 64,128,256 \
        --halos 0,8,16 --batches 1,2,4 --io float32-nchw,uint8-nhwc --precisions fp32,fp16 \
        --name throughput_cpu_sweeps                                                    # tiling sweep

For each configuration (--configs: compact = the bundled checkpoint
models/eusr-compact.safetensors; paper and tiny = build_eusr(name), random init seeded by
--seed, since throughput does not depend on the weights' values) the ×4 path is exported
once to a temporary float32-nchw ONNX file (TorchScript exporter) and, on a random uint8
W×H×3 image of every --sizes entry, three modes are timed:

* ort-tiled   runtime.Upscaler, backend --backend, default tile (128) and halo (the
              model's recommended halo: 8 for compact, as the bundled model, 16 otherwise),
              end to end: uint8 in, tile gather, inference, stitching, uint8 out.
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
the process's peak RSS (ru_maxrss) after the row. ru_maxrss only ever grows: it is the
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
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import logging
import re
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from benchmarks._common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_common_args,
    backend_options,
    environment,
    expected_errors,
    file_sha256,
    fmt_float,
    import_pyplot,
    markdown_table,
    parse_int_list,
    write_results,
)

MODES = ("ort-tiled", "ort-whole", "torch-eager")
CONFIGS = ("compact", "paper", "tiny")
DEFAULT_SIZES = "120x68,240x135,480x270"
COMPACT_CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
COMPACT_HALO = 8  # the bundled model's recommended halo (benchmarks/seams.py)
SCALE = 4
IO_CHOICES = ("float32-nchw", "uint8-nhwc")
PRECISION_CHOICES = ("fp32", "fp16")
DEFAULT_VARIANT = ("fp32", "float32-nchw")  # (precision, io) of the main rows' ONNX graph
SWEEP_FLAGS = ("tiles", "halos", "batches", "io", "precisions")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


# --------------------------------------------------------------------------- arguments


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'120x68,240x135' -> [(120, 68), (240, 135)] (width, height) for argparse ``type=``."""
    sizes = []
    for item in (t for t in text.split(",") if t.strip()):
        m = _SIZE_RE.match(item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated WIDTHxHEIGHT sizes of positive integers (e.g. 120x68,240x135), "
                f"got {item.strip()!r} in {text!r}")
        sizes.append((int(m.group(1)), int(m.group(2))))
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected at least one WIDTHxHEIGHT size, got {text!r}")
    return sizes


def parse_configs(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {bad or text!r}; choose from {','.join(CONFIGS)}")
    return list(dict.fromkeys(names))


def parse_modes(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {bad or text!r}; choose from {','.join(MODES)}")
    return [m for m in MODES if m in names]


def parse_choices(flag: str, choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type=`` for a comma-separated subset of ``choices`` (order kept, duplicates dropped)."""
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"{flag}: expected comma-separated values out of {','.join(choices)}, got {text!r}")
        return names

    return parse


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="throughput.py", description=doc[0] + "\n\n" + doc[1], formatter_class=HelpFormatter)
    p.add_argument("--configs", type=parse_configs, default=["compact", "paper"],
                   help=f"comma-separated EUSR configurations out of {','.join(CONFIGS)} (default: compact,paper)")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                   help=f"comma-separated input sizes WIDTHxHEIGHT (default: {DEFAULT_SIZES})")
    p.add_argument("--modes", type=parse_modes, default=list(MODES),
                   help=f"comma-separated modes out of {','.join(MODES)}; speedups need torch-eager (default: all)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing each mode")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode and size")
    p.add_argument("--sweep", type=parse_int_list, default=None,
                   help="square input edges for a compact-config size sweep, e.g. 64,128,256,512 (default: none)")
    p.add_argument("--tile", type=int, default=None, help="ort-tiled tile (default: runtime.DEFAULT_TILE)")
    p.add_argument("--halo", type=int, default=None,
                   help="ort-tiled halo (default: the model's recommended halo)")
    sweep = p.add_argument_group(
        "tiling sweep", "ort-tiled on every --configs × --sizes image: the --tiles × --halos grid at the default "
        "batch/io/precision, then --batches, --io and --precisions one axis at a time around the defaults "
        "(tile --tile, halo --halo, batch 1, float32-nchw, fp32). Any of these flags turns the sweep on; an axis "
        "not given stays at its default.")
    sweep.add_argument("--tiles", type=parse_int_list, default=None, help="tile edges, e.g. 64,128,256")
    sweep.add_argument("--halos", type=parse_int_list, default=None, help="halos, e.g. 0,8,16")
    sweep.add_argument("--batches", type=parse_int_list, default=None, help="tiles per inference call, e.g. 1,2,4")
    sweep.add_argument("--io", type=parse_choices("--io", IO_CHOICES), default=None,
                       help=f"ONNX I/O variants out of {','.join(IO_CHOICES)}")
    sweep.add_argument("--precisions", type=parse_choices("--precisions", PRECISION_CHOICES), default=None,
                       help=f"ONNX precisions out of {','.join(PRECISION_CHOICES)} (fp16: float16 layers between "
                            "float32 edges; ORT's x86 CPU provider upcasts fp16 convolutions)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init weights and of the random images")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_common_args(p, name="throughput_cpu")
    p.set_defaults(threads=None)
    for action in p._actions:  # --threads applies to PyTorch too here
        if action.dest == "threads":
            action.help = ("ONNX Runtime intra-op threads and torch.set_num_threads "
                           "(default: each library's own choice)")
    return p


# --------------------------------------------------------------------------- models


@contextlib.contextmanager
def prepared_config(name: str, seed: int, tmp: Path, variants: Sequence[tuple[str, str]] = ()
                    ) -> Iterator[tuple[Any, dict[tuple[str, str], Path], dict[str, Any]]]:
    """(torch ×4 path module in eval mode, exported ONNX paths keyed (precision, io), description)
    of a config. The (fp32, float32-nchw) graph is always exported; ``variants`` adds others for
    the tiling sweep, exported the same way (TorchScript, not validated) from the same weights."""
    try:
        import torch

        from export.to_onnx import DEFAULT_HALO as EXPORT_HALO
        from export.to_onnx import export_onnx
        from train.models.eusr import build_eusr
    except ImportError as exc:
        raise BenchmarkError(f"this benchmark needs the train extra (torch, onnx): {exc}; pip install -e '.[train]'") from exc
    if name == "compact":
        from train.checkpoint import load_model

        if not COMPACT_CHECKPOINT.is_file():
            raise BenchmarkError(f"the compact checkpoint {COMPACT_CHECKPOINT} is not there")
        model = load_model(COMPACT_CHECKPOINT)
        halo = COMPACT_HALO
        desc = {"source": "checkpoint", "path": str(COMPACT_CHECKPOINT.relative_to(REPO_ROOT)),
                "sha256": file_sha256(COMPACT_CHECKPOINT)}
    else:
        torch.manual_seed(seed)
        model = build_eusr(name)
        halo = EXPORT_HALO
        desc = {"source": f"build_eusr({name!r}), random init, torch seed {seed}"}
    model = model.eval()
    path = tmp / f"eusr-{name}-x{SCALE}.onnx"
    t0 = time.perf_counter()
    try:
        export_onnx(model, path, scale=SCALE, halo=halo, validate=False, exporter="torchscript")
    except Exception as exc:
        raise BenchmarkError(f"cannot export the {name!r} configuration to ONNX: {exc}") from exc
    desc.update({
        "config_name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "scale": SCALE,
        "onnx": {"io": "float32-nchw", "exporter": "torchscript", "recommended_halo": halo,
                 "export_seconds": round(time.perf_counter() - t0, 3)},
    })
    paths = {DEFAULT_VARIANT: path}
    for precision, io in dict.fromkeys(v for v in variants if v != DEFAULT_VARIANT):
        vpath = tmp / f"eusr-{name}-x{SCALE}.{precision}.{io}.onnx"
        t0 = time.perf_counter()
        try:
            export_onnx(model, vpath, scale=SCALE, halo=halo, validate=False, exporter="torchscript",
                        io=io, precision=precision)
        except Exception as exc:
            raise BenchmarkError(f"cannot export the {name!r} configuration to ONNX as {precision} {io}: {exc}") from exc
        paths[(precision, io)] = vpath
        desc.setdefault("onnx_variants", []).append(
            {"precision": precision, "io": io, "export_seconds": round(time.perf_counter() - t0, 3)})
    yield model.path(SCALE).eval(), paths, desc


# --------------------------------------------------------------------------- timing


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def time_calls(fn: Callable[[], np.ndarray], warmup: int, repeats: int) -> tuple[list[float], np.ndarray]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(times: Sequence[float], width: int, height: int) -> dict[str, Any]:
    med = statistics.median(times)
    in_mp = width * height / 1e6
    out_mp = in_mp * SCALE * SCALE
    return {
        "times_s": list(times),
        "min_s": min(times),
        "median_s": med,
        "p90_s": percentile(times, 90),
        "max_s": max(times),
        "input_mp_per_s": in_mp / med if med > 0 else float("inf"),
        "output_mp_per_s": out_mp / med if med > 0 else float("inf"),
        "images_per_s": 1.0 / med if med > 0 else float("inf"),
    }


def torch_runner(module: Any, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    def run(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(torch.float32).contiguous()
            y = module(x)
            y = y.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
        return y.numpy()

    return run


def measure_config(name: str, model: Any, onnx_paths: dict[tuple[str, str], Path], sizes: Sequence[tuple[int, int]],
                   args: argparse.Namespace, *, group: str, sweep: bool = False
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All modes on all sizes for one configuration: one row per (size, mode); with ``sweep``
    also the tiling sweep on each size's image, right after its modes (same image, same run)."""
    from runtime import DEFAULT_TILE, Upscaler

    onnx_path = onnx_paths[DEFAULT_VARIANT]
    tile = args.tile if args.tile is not None else DEFAULT_TILE
    opts = backend_options(args.threads)
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(args.seed)
    with Upscaler(onnx_path, backend=args.backend, tile=tile, halo=args.halo, backend_options=opts) as tiled:
        run_torch = torch_runner(model, args.threads) if "torch-eager" in args.modes else None
        for width, height in sizes:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            results: dict[str, dict[str, Any]] = {}
            outputs: dict[str, np.ndarray] = {}
            for mode in args.modes:
                if mode == "ort-tiled":
                    settings = {"tile": tiled.tile, "halo": tiled.halo}
                    times, out = time_calls(lambda: tiled.upscale(image), args.warmup, args.repeats)
                elif mode == "ort-whole":
                    whole_tile = max(width, height)
                    with _quiet_halo_warning(), Upscaler(onnx_path, backend=args.backend, tile=whole_tile, halo=0,
                                                         backend_options=opts) as whole:
                        settings = {"tile": whole_tile, "halo": 0}
                        times, out = time_calls(lambda: whole.upscale(image), args.warmup, args.repeats)
                else:
                    settings = {"threads": _torch_threads()}
                    times, out = time_calls(lambda: run_torch(image), args.warmup, args.repeats)
                outputs[mode] = out
                results[mode] = {**summarize(times, width, height), "settings": settings,
                                 "peak_rss_mib": peak_rss_mib()}
                print(f"  {group} {name} {width}x{height} {mode}: median {results[mode]['median_s'] * 1e3:.1f} ms, "
                      f"{results[mode]['output_mp_per_s']:.3f} MP/s out", file=sys.stderr, flush=True)
            torch_med = results["torch-eager"]["median_s"] if "torch-eager" in results else None
            whole_med = results["ort-whole"]["median_s"] if "ort-whole" in results else None
            for mode, r in results.items():
                row = {"group": group, "config": name, "width": width, "height": height,
                       "input_mp": width * height / 1e6, "output_mp": width * height * SCALE * SCALE / 1e6,
                       "mode": mode, **r}
                row["torch_median_s"] = torch_med
                row["speedup_vs_torch"] = torch_med / r["median_s"] if torch_med is not None and r["median_s"] > 0 else None
                row["ort_whole_median_s"] = whole_med
                row["tiled_overhead"] = (r["median_s"] / whole_med
                                         if mode == "ort-tiled" and whole_med is not None and whole_med > 0 else None)
                row["max_abs_diff_vs_torch"] = (
                    int(np.max(np.abs(outputs[mode].astype(np.int16) - outputs["torch-eager"].astype(np.int16))))
                    if "torch-eager" in outputs else None)
                row["ms_per_input_mp"] = r["median_s"] * 1e3 / row["input_mp"]
                rows.append(row)
            if sweep:
                refs = {mode: (results[mode]["median_s"], outputs[mode]) for mode in results}
                sweep_rows += measure_tiling_sweep(name, onnx_paths, image, refs, args,
                                                   default_tile=tiled.tile, default_halo=tiled.halo)
    return rows, sweep_rows


# --------------------------------------------------------------------------- tiling sweep


def sweep_requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag) is not None for flag in SWEEP_FLAGS)


def sweep_variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(precision, io) graphs the sweep needs: each axis is varied alone, so no fp16 uint8 graph."""
    return ([DEFAULT_VARIANT] + [(p, DEFAULT_VARIANT[1]) for p in args.precisions or ()]
            + [(DEFAULT_VARIANT[0], io) for io in args.io or ()])


def sweep_settings(args: argparse.Namespace, default_tile: int, default_halo: int) -> list[dict[str, Any]]:
    """The combinations to time: the tile × halo grid at the default batch/io/precision, then
    each of batch, io, precision varied alone. One axis at a time keeps the cost additive: the
    full product of 3 tiles × 3 halos × 3 batches × 2 I/O × 2 precisions would be 108 rows."""
    from runtime import DEFAULT_BATCH

    default = {"tile": default_tile, "halo": default_halo, "batch": DEFAULT_BATCH,
               "io": DEFAULT_VARIANT[1], "precision": DEFAULT_VARIANT[0]}
    combos: dict[tuple, dict[str, Any]] = {}

    def add(varied: str, **change: Any) -> None:
        settings = {**default, **change}
        key = tuple(settings.values())
        if key not in combos:
            combos[key] = {**settings, "varied": "default" if settings == default else varied}

    add("default")
    for t in args.tiles or [default_tile]:
        for h in args.halos or [default_halo]:
            add("tile/halo", tile=t, halo=h)
    for b in args.batches or ():
        add("batch", batch=b)
    for io in args.io or ():
        add("io", io=io)
    for precision in args.precisions or ():
        add("precision", precision=precision)
    return list(combos.values())


def _proc_status_mib(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def reset_peak_rss() -> float | None:
    """Reset the kernel's peak-RSS mark (Linux: '5' into /proc/self/clear_refs) so that the next
    row's peak is its own, not the process's running maximum; returns the current RSS in MiB,
    or None where the reset is unavailable (then ru_maxrss, the running mark, is reported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _proc_status_mib("VmRSS")


def row_ms_per_window_mp(times: Sequence[float], window_px: int) -> float:
    """Median ms per megapixel of model input actually computed: flat when the overlap explains the cost."""
    return statistics.median(times) * 1e3 / (window_px / 1e6)


def measure_tiling_sweep(name: str, onnx_paths: dict[tuple[str, str], Path], image: np.ndarray,
                         refs: dict[str, tuple[float, np.ndarray]], args: argparse.Namespace, *,
                         default_tile: int, default_halo: int) -> list[dict[str, Any]]:
    """ort-tiled on ``image`` for every sweep combination; ratios against the sweep's own default
    row and against the torch-eager / ort-whole medians of the same image (``refs``)."""
    from runtime import Upscaler
    from runtime.tiling import plan_tiles

    height, width = image.shape[:2]
    opts = backend_options(args.threads)
    rows: list[dict[str, Any]] = []
    outputs: list[np.ndarray] = []
    for combo in sweep_settings(args, default_tile, default_halo):
        path = onnx_paths[(combo["precision"], combo["io"])]
        rss_before = reset_peak_rss()
        with _quiet_halo_warning(), Upscaler(path, backend=args.backend, tile=combo["tile"], halo=combo["halo"],
                                             batch=combo["batch"], backend_options=opts) as up:
            min_size = up.backend.min_input_size
            times, out = time_calls(lambda: up.upscale(image), args.warmup, args.repeats)
        peak = _proc_status_mib("VmHWM") if rss_before is not None else None
        plan = plan_tiles(height, width, combo["tile"], combo["halo"], min_size=min_size)
        window_px = len(plan) * plan.window_height * plan.window_width
        row = {"group": "tiling", "config": name, "width": width, "height": height,
               "input_mp": width * height / 1e6, "output_mp": width * height * SCALE * SCALE / 1e6,
               "mode": "ort-tiled", **combo, **summarize(times, width, height),
               "tiles": len(plan), "window": [plan.window_height, plan.window_width],
               "nominal_overlap": (combo["tile"] + 2 * combo["halo"]) ** 2 / combo["tile"] ** 2,
               "actual_overlap": window_px / (width * height),
               "ms_per_window_mp": row_ms_per_window_mp(times, window_px),
               "peak_rss_mib": peak if peak is not None else peak_rss_mib(),
               "rss_before_mib": rss_before,
               "peak_rss_kind": "row (VmHWM after a clear_refs reset)" if peak is not None else "process (ru_maxrss)"}
        rows.append(row)
        outputs.append(out)
        print(f"  tiling {name} {width}x{height} tile {combo['tile']} halo {combo['halo']} batch {combo['batch']} "
              f"{combo['io']} {combo['precision']}: median {row['median_s'] * 1e3:.1f} ms, "
              f"{row['output_mp_per_s']:.3f} MP/s out", file=sys.stderr, flush=True)
    default_med = next(r["median_s"] for r in rows if r["varied"] == "default")
    torch_med, torch_out = refs.get("torch-eager", (None, None))
    whole_med = refs["ort-whole"][0] if "ort-whole" in refs else None
    tiled_main = refs["ort-tiled"][0] if "ort-tiled" in refs else None
    for row, out in zip(rows, outputs):
        med = row["median_s"]
        row["default_median_s"] = default_med
        row["speed_vs_default"] = default_med / med if med > 0 else None
        row["torch_median_s"] = torch_med
        row["speedup_vs_torch"] = torch_med / med if torch_med is not None and med > 0 else None
        row["ort_whole_median_s"] = whole_med
        row["time_vs_whole"] = med / whole_med if whole_med else None
        row["main_table_tiled_median_s"] = tiled_main
        row["max_abs_diff_vs_torch"] = (int(np.max(np.abs(out.astype(np.int16) - torch_out.astype(np.int16))))
                                        if torch_out is not None else None)
    return rows


@contextlib.contextmanager
def _quiet_halo_warning() -> Iterator[None]:
    """halo=0 is intended for the whole-image mode (there are no seams): no warning."""
    logger = logging.getLogger("runtime.upscaler")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------- output


TABLE_HEADERS = ["config", "size", "mode", "min ms", "median ms", "p90 ms", "max ms", "in MP/s", "out MP/s",
                 "img/s", "speedup vs torch", "tiled overhead", "max abs Δ vs torch", "peak RSS MiB"]


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append([
            r["config"], f"{r['width']}x{r['height']}", r["mode"],
            fmt_float(r["min_s"] * 1e3, 1), fmt_float(r["median_s"] * 1e3, 1), fmt_float(r["p90_s"] * 1e3, 1),
            fmt_float(r["max_s"] * 1e3, 1), fmt_float(r["input_mp_per_s"], 4), fmt_float(r["output_mp_per_s"], 3),
            fmt_float(r["images_per_s"], 2), fmt_float(r["speedup_vs_torch"], 2), fmt_float(r["tiled_overhead"], 3),
            "-" if r["max_abs_diff_vs_torch"] is None else str(r["max_abs_diff_vs_torch"]),
            fmt_float(r["peak_rss_mib"], 0),
        ])
    return out


SWEEP_HEADERS = ["size", "mode", "median ms", "ms per input MP", "out MP/s", "speedup vs torch", "tiled overhead"]


def sweep_table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[f"{r['width']}x{r['height']}", r["mode"], fmt_float(r["median_s"] * 1e3, 1),
             fmt_float(r["ms_per_input_mp"], 0), fmt_float(r["output_mp_per_s"], 3),
             fmt_float(r["speedup_vs_torch"], 2), fmt_float(r["tiled_overhead"], 3)] for r in rows]


TILING_HEADERS = ["config", "size", "varied", "tile", "halo", "batch", "io", "precision", "tiles", "median ms",
                  "p90 ms", "out MP/s", "img/s", "speed vs default", "speedup vs torch", "time vs whole",
                  "nominal overlap", "actual overlap", "ms per window MP", "max abs Δ vs torch", "peak RSS MiB",
                  "Δ RSS MiB"]


def tiling_table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        # The peak can read a fraction of a MiB below the RSS sampled at the reset: show 0, not -0.
        grew = max(0.0, r["peak_rss_mib"] - r["rss_before_mib"]) if r.get("rss_before_mib") is not None else None
        out.append([
            r["config"], f"{r['width']}x{r['height']}", r["varied"], str(r["tile"]), str(r["halo"]), str(r["batch"]),
            r["io"], r["precision"], str(r["tiles"]), fmt_float(r["median_s"] * 1e3, 1), fmt_float(r["p90_s"] * 1e3, 1),
            fmt_float(r["output_mp_per_s"], 3), fmt_float(r["images_per_s"], 2), fmt_float(r["speed_vs_default"], 2),
            fmt_float(r["speedup_vs_torch"], 2), fmt_float(r["time_vs_whole"], 3), fmt_float(r["nominal_overlap"], 3),
            fmt_float(r["actual_overlap"], 3), fmt_float(r["ms_per_window_mp"], 0),
            "-" if r["max_abs_diff_vs_torch"] is None else str(r["max_abs_diff_vs_torch"]),
            fmt_float(r["peak_rss_mib"], 0), fmt_float(grew, 0),
        ])
    return out


def tiling_references(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per swept image: the medians every ratio of its rows divides by."""
    def ms(v: float | None) -> str:
        return "not measured" if v is None else f"{v * 1e3:.1f} ms"

    lines = []
    for key in dict.fromkeys((r["config"], r["width"], r["height"]) for r in rows):
        r = next(x for x in rows if (x["config"], x["width"], x["height"]) == key)
        d = next(x for x in rows if (x["config"], x["width"], x["height"]) == key and x["varied"] == "default")
        lines.append(f"- {key[0]} {key[1]}x{key[2]}: default row (tile {d['tile']}, halo {d['halo']}, batch "
                     f"{d['batch']}, {d['io']}, {d['precision']}) {ms(d['median_s'])}; torch-eager {ms(r['torch_median_s'])}; "
                     f"ort-whole {ms(r['ort_whole_median_s'])}; the main table's ort-tiled row (same settings as the "
                     f"default row, timed earlier) {ms(r['main_table_tiled_median_s'])}")
    return lines


def plot_tiling(ax_lines: Any, ax_bars: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Left: output MP/s against tile, one line per halo, with torch-eager and ort-whole as
    horizontal references. Right: bars for the default row and each batch/io/precision variant."""
    keys = list(dict.fromkeys((r["config"], r["width"], r["height"]) for r in rows))
    markers = "os^Dv<>"
    ticks: list[float] = []
    tick_labels: list[str] = []
    for k, key in enumerate(keys):
        mine = [r for r in rows if (r["config"], r["width"], r["height"]) == key]
        label = f"{key[0]} {key[1]}x{key[2]} " if len(keys) > 1 else ""
        default = next(r for r in mine if r["varied"] == "default")
        grid = [r for r in mine if r["varied"] in ("default", "tile/halo")]
        for i, halo in enumerate(sorted({r["halo"] for r in grid})):
            pts = sorted((r["tile"], r["output_mp_per_s"]) for r in grid if r["halo"] == halo)
            ax_lines.plot([p[0] for p in pts], [p[1] for p in pts], markers[i % len(markers)] + "-",
                          label=f"{label}ort-tiled halo {halo}")
            for r in (r for r in grid if r["halo"] == halo):
                ax_lines.annotate(f"×{r['actual_overlap']:.2f}", (r["tile"], r["output_mp_per_s"]),
                                  textcoords="offset points", xytext=(5, -10 + 9 * i), fontsize=7, color=f"C{i}")
        out_mp = default["output_mp"]
        for ref, style, colour, mode in (("torch_median_s", ":", "C7", "torch-eager"),
                                         ("ort_whole_median_s", "--", "C8", "ort-whole")):
            if default[ref]:
                for ax in (ax_lines, ax_bars):
                    ax.axhline(out_mp / default[ref], linestyle=style, color=colour,
                               label=f"{label}{mode} (whole image)")
        bars = [default] + [r for r in mine if r["varied"] in ("batch", "io", "precision")]
        xs = np.arange(len(bars)) + k * (len(bars) + 1)
        ax_bars.bar(xs, [r["output_mp_per_s"] for r in bars],
                    color=[{"default": "C0", "batch": "C1", "io": "C2", "precision": "C3"}[r["varied"]] for r in bars])
        for x, r in zip(xs, bars):
            ax_bars.annotate(f"{r['output_mp_per_s']:.3f}", (x, r["output_mp_per_s"]), ha="center", va="bottom",
                             fontsize=7)
        ticks += list(xs)
        tick_labels += [label + ("default: " if r["varied"] == "default" else "")
                        + f"batch {r['batch']}\n{r['io']}\n{r['precision']}" for r in bars]
    ax_bars.set_xticks(ticks, labels=tick_labels, fontsize=7)
    ax_lines.set_xscale("log", base=2)
    ax_lines.set_xticks(sorted({r["tile"] for r in rows}), labels=[str(t) for t in sorted({r["tile"] for r in rows})])
    ax_lines.set_xlabel("tile (core edge, input px)")
    ax_lines.set_ylabel("throughput (output MP/s, median)")
    ax_lines.set_title("ort-tiled: tile × halo (batch 1, fp32, float32-nchw); ×n = actual overlap", fontsize=9)
    ax_lines.grid(True, which="both", alpha=0.3)
    ax_lines.legend(fontsize=7)
    ax_bars.set_ylabel("throughput (output MP/s, median)")
    ax_bars.set_title("ort-tiled at the default tile/halo: batch, I/O, precision", fontsize=9)
    ax_bars.grid(True, axis="y", alpha=0.3)
    ax_bars.legend(fontsize=7)


def plot(rows: Sequence[dict[str, Any]], sweep: Sequence[dict[str, Any]], path: Path, title: str,
         tiling: Sequence[dict[str, Any]] = ()) -> Path | None:
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
    styles = {"ort-tiled": "o-", "ort-whole": "s--", "torch-eager": "^:"}
    if ax is not None:
        for config in dict.fromkeys(r["config"] for r in rows):
            for mode in MODES:
                pts = sorted((r["input_mp"], r["output_mp_per_s"]) for r in rows
                             if r["config"] == config and r["mode"] == mode)
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
    for flag, low in (("tiles", 1), ("halos", 0), ("batches", 1)):
        values = getattr(args, flag)
        if values is not None and any(v < low for v in values):
            parser.error(f"--{flag} expects integers >= {low}, got {','.join(map(str, values))}")
    tiling = sweep_requested(args)
    if tiling and "ort-tiled" not in args.modes:
        parser.error(f"the tiling sweep (--{', --'.join(SWEEP_FLAGS)}) needs ort-tiled in --modes, "
                     f"got --modes {','.join(args.modes)}")

    env = environment(threads=args.threads)
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
                        new_rows, new_tiling = measure_config(name, model, onnx_paths, args.sizes, args,
                                                              group="sizes", sweep=tiling)
                        rows += new_rows
                        tiling_rows += new_tiling
                    if name == "compact" and args.sweep:
                        sweep_rows += measure_config(name, model, onnx_paths, [(s, s) for s in args.sweep], args,
                                                     group="sweep")[0]
    except expected_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total_s = time.perf_counter() - t_start
    env["threads"]["torch"] = _torch_threads()

    data = {
        "benchmark": "throughput",
        "environment": env,
        "settings": {
            "configs": args.configs, "sizes": [f"{w}x{h}" for w, h in args.sizes], "modes": args.modes,
            "warmup": args.warmup, "repeats": args.repeats, "sweep": args.sweep, "tile": args.tile, "halo": args.halo,
            "seed": args.seed, "backend": args.backend, "scale": SCALE,
            "notes": ["speedup_vs_torch = torch_median_s / median_s of the same config and size",
                      "tiled_overhead = ort-tiled median_s / ort-whole median_s",
                      "peak_rss_mib = ru_maxrss of the whole process after the row (a running high-water mark)",
                      "p90 is linear-interpolated from few repeats; no p99 is reported"],
        },
        "models": models,
        "rows": rows,
        "sweep_rows": sweep_rows,
        "total_seconds": total_s,
    }
    if tiling:
        data["settings"]["tiling_sweep"] = {
            "tiles": args.tiles, "halos": args.halos, "batches": args.batches, "io": args.io,
            "precisions": args.precisions,
            "design": "tiles x halos grid at the default batch/io/precision; batches, io, precisions one at a time "
                      "around the defaults",
            "notes": ["speed_vs_default = default_median_s / median_s (the sweep's own default row, same image)",
                      "speedup_vs_torch = torch_median_s / median_s; time_vs_whole = median_s / ort_whole_median_s "
                      "(torch-eager and ort-whole of the main rows, same image, same run)",
                      "nominal_overlap = (tile + 2 halo)^2 / tile^2; actual_overlap = tiles x window pixels / image "
                      "pixels (border tiles are shifted inside the image, so their windows overlap more)",
                      "ms_per_window_mp = median ms / window megapixels computed",
                      "peak_rss_mib: the row's own peak (VmHWM reset through /proc/self/clear_refs before the row, "
                      "whole process: torch and the models stay resident) where peak_rss_kind says so"],
        }
        data["tiling_rows"] = tiling_rows

    md_table = markdown_table(TABLE_HEADERS, table_rows(rows))
    parts = [
        f"# Throughput: runtime.Upscaler (ONNX Runtime) vs PyTorch eager, ×{SCALE}",
        f"{env['date']}, commit {env['git']['commit']}{' (dirty)' if env['git']['dirty'] else ''}, "
        f"{env['host']['cpu']} ({env['host']['usable_cpus']} usable CPUs), threads: ORT "
        f"{env['threads']['onnxruntime_intra_op']}, torch {env['threads']['torch']}; onnxruntime "
        f"{env['versions']['onnxruntime']}, torch {env['versions']['torch']}. Warm-up {args.warmup}, "
        f"{args.repeats} timed repeats per row (min/median/p90/max; no p99 from so few). Speedup = torch-eager "
        f"median / row median; tiled overhead = ort-tiled / ort-whole median; peak RSS is the process's running "
        f"high-water mark. Total {total_s:.1f} s.",
    ]
    if sweep_rows:
        parts += ["## Size sweep (compact)", markdown_table(SWEEP_HEADERS, sweep_table_rows(sweep_rows))]
    tiling_table = markdown_table(TILING_HEADERS, tiling_table_rows(tiling_rows)) if tiling else ""
    if tiling:
        parts += [
            "## Tiling sweep (ort-tiled)",
            "The tile × halo grid at batch 1, float32-nchw, fp32; then batch, I/O and precision varied one at a "
            f"time around the default tile/halo (not their product). Same image and warm-up {args.warmup} / "
            f"{args.repeats} repeats as the main rows. Speed vs default = default row median / row median; speedup "
            "vs torch = torch-eager median / row median; time vs whole = row median / ort-whole median (both from "
            "the Results table, same image, same run). Nominal overlap = (tile + 2·halo)² / tile²; actual overlap "
            "= tiles × window pixels / image pixels (border tiles are shifted inside the image); ms per window MP = "
            "row median / window megapixels computed (flat when the overlap explains the cost). Peak RSS: the "
            "row's own peak of the whole process (peak reset before the row; torch and the models stay resident); "
            "Δ RSS = that peak − the RSS at the reset. fp16 is float16 layers between float32 edges; ONNX "
            "Runtime's x86 CPU provider runs fp16 convolutions by casting to float32, so it is not expected to "
            "be faster here.",
            "Reference medians:\n" + "\n".join(tiling_references(tiling_rows)),
            tiling_table,
        ]
    parts += ["## Results", md_table]
    paths = write_results(args.out, args.name, data, "\n\n".join(parts))
    png = None
    if not args.no_plot:
        png = plot(rows, sweep_rows, args.out / f"{args.name}.png",
                   f"{env['host']['cpu']}, ORT threads {env['threads']['onnxruntime_intra_op']}, "
                   f"torch threads {env['threads']['torch']}"
                   + (f", warm-up {args.warmup}, {args.repeats} repeats" if tiling else ""),
                   tiling=tiling_rows)
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
