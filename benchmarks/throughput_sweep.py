"""The tiling sweep of ``throughput.py``: ort-tiled on one image across tile, halo, batch,
I/O and precision.

The tiles × halos grid at batch 1, float32-nchw, fp32; then batch, I/O (uint8-nhwc graph)
and precision (fp16 graph: float16 layers between float32 edges) varied one axis at a
time around the default tile/halo. One axis at a time keeps the cost additive (the full
product would be ~100 rows). Each row is compared with the sweep's own default row and
with the torch-eager / ort-whole rows of the same image in the same run, and gets its own
peak RSS (the kernel's peak mark is reset before it). The flags, the rows, their table and
their plot panels live here; ``throughput.py`` calls :func:`measure_tiling_sweep` right
after an image's main modes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import backend_for, fmt_float, parse_choices, parse_int_list
from benchmarks.rss import peak_rss_mib, reset_peak_rss, row_peak_rss_mib
from benchmarks.throughput_models import DEFAULT_VARIANT, SCALE, quiet_halo_warning
from benchmarks.timing import summarize, time_calls

__all__ = [
    "IO_CHOICES",
    "PRECISION_CHOICES",
    "SWEEP_FLAGS",
    "TILING_HEADERS",
    "add_sweep_args",
    "check_sweep_args",
    "sweep_requested",
    "sweep_variants",
    "sweep_settings",
    "measure_tiling_sweep",
    "row_ms_per_window_mp",
    "sweep_record",
    "sweep_markdown",
    "tiling_table_rows",
    "tiling_references",
    "plot_tiling",
]

IO_CHOICES = ("float32-nchw", "uint8-nhwc")
PRECISION_CHOICES = ("fp32", "fp16")
SWEEP_FLAGS = ("tiles", "halos", "batches", "io", "precisions")


# --------------------------------------------------------------------------- arguments


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """--tiles, --halos, --batches, --io, --precisions: any of them turns the sweep on."""
    sweep = p.add_argument_group(
        "tiling sweep",
        "ort-tiled on every --configs × --sizes image: the --tiles × --halos grid at the default "
        "batch/io/precision, then --batches, --io and --precisions one axis at a time around the defaults "
        "(tile --tile, halo --halo, batch 1, float32-nchw, fp32). Any of these flags turns the sweep on; an axis "
        "not given stays at its default.",
    )
    sweep.add_argument("--tiles", type=parse_int_list, default=None, help="tile edges, e.g. 64,128,256")
    sweep.add_argument("--halos", type=parse_int_list, default=None, help="halos, e.g. 0,8,16")
    sweep.add_argument("--batches", type=parse_int_list, default=None, help="tiles per inference call, e.g. 1,2,4")
    sweep.add_argument(
        "--io",
        type=parse_choices("--io", IO_CHOICES),
        default=None,
        help=f"ONNX I/O variants out of {','.join(IO_CHOICES)}",
    )
    sweep.add_argument(
        "--precisions",
        type=parse_choices("--precisions", PRECISION_CHOICES),
        default=None,
        help=f"ONNX precisions out of {','.join(PRECISION_CHOICES)} (fp16: float16 layers between "
        "float32 edges; ORT's x86 CPU provider upcasts fp16 convolutions)",
    )


def check_sweep_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error (exit 2) for out-of-range sweep values, or a sweep without ort-tiled."""
    for flag, low in (("tiles", 1), ("halos", 0), ("batches", 1)):
        values = getattr(args, flag)
        if values is not None and any(v < low for v in values):
            parser.error(f"--{flag} expects integers >= {low}, got {','.join(map(str, values))}")
    if sweep_requested(args) and "ort-tiled" not in args.modes:
        parser.error(
            f"the tiling sweep (--{', --'.join(SWEEP_FLAGS)}) needs ort-tiled in --modes, "
            f"got --modes {','.join(args.modes)}"
        )


def sweep_requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag) is not None for flag in SWEEP_FLAGS)


def sweep_variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(precision, io) graphs the sweep needs: each axis is varied alone, so no fp16 uint8 graph."""
    return (
        [DEFAULT_VARIANT]
        + [(p, DEFAULT_VARIANT[1]) for p in args.precisions or ()]
        + [(DEFAULT_VARIANT[0], io) for io in args.io or ()]
    )


def sweep_settings(args: argparse.Namespace, default_tile: int, default_halo: int) -> list[dict[str, Any]]:
    """The combinations to time: the tile × halo grid at the default batch/io/precision, then
    each of batch, io, precision varied alone. One axis at a time keeps the cost additive: the
    full product of 3 tiles × 3 halos × 3 batches × 2 I/O × 2 precisions would be 108 rows."""
    from runtime import DEFAULT_BATCH

    default = {
        "tile": default_tile,
        "halo": default_halo,
        "batch": DEFAULT_BATCH,
        "io": DEFAULT_VARIANT[1],
        "precision": DEFAULT_VARIANT[0],
    }
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


# --------------------------------------------------------------------------- measuring


def row_ms_per_window_mp(times: Sequence[float], window_px: int) -> float:
    """Median ms per megapixel of model input actually computed: flat when the overlap explains the cost."""
    return statistics.median(times) * 1e3 / (window_px / 1e6)


def measure_tiling_sweep(
    name: str,
    onnx_paths: dict[tuple[str, str], Path],
    image: np.ndarray,
    refs: dict[str, tuple[float, np.ndarray]],
    args: argparse.Namespace,
    *,
    default_tile: int,
    default_halo: int,
    torch_at: Callable[[int], np.ndarray | None] | None = None,
) -> list[dict[str, Any]]:
    """ort-tiled on ``image`` for every sweep combination; ratios against the sweep's own default
    row and against the torch-eager / ort-whole medians of the same image (``refs``); uint8
    agreement against ``torch_at(border)``, torch-eager given the row's mirrored border (its halo)."""
    from runtime import Upscaler
    from runtime.tiling import plan_tiles

    height, width = image.shape[:2]
    opts = backend_for(args.backend, args.threads)
    rows: list[dict[str, Any]] = []
    outputs: list[np.ndarray] = []
    for combo in sweep_settings(args, default_tile, default_halo):
        path = onnx_paths[(combo["precision"], combo["io"])]
        rss_before = reset_peak_rss()
        with (
            quiet_halo_warning(),
            Upscaler(path, backend=opts, tile=combo["tile"], halo=combo["halo"], batch=combo["batch"]) as up,
        ):
            limits = up.backend.window_limits()  # the smallest window the backend runs, as the upscaler plans
            min_size = 1 if limits is None else limits[0]
            times, out = time_calls(lambda: up.upscale(image), args.warmup, args.repeats)
        peak = row_peak_rss_mib() if rss_before is not None else None
        plan = plan_tiles(height, width, combo["tile"], combo["halo"], min_size=min_size)
        window_px = len(plan) * plan.window_height * plan.window_width
        row = {
            "group": "tiling",
            "config": name,
            "width": width,
            "height": height,
            "input_mp": width * height / 1e6,
            "output_mp": width * height * SCALE * SCALE / 1e6,
            "mode": "ort-tiled",
            **combo,
            **summarize(times, width, height, SCALE),
            "tiles": len(plan),
            "window": [plan.window_height, plan.window_width],
            "nominal_overlap": (combo["tile"] + 2 * combo["halo"]) ** 2 / combo["tile"] ** 2,
            "actual_overlap": window_px / (width * height),
            "ms_per_window_mp": row_ms_per_window_mp(times, window_px),
            "border": plan.border,
            "peak_rss_mib": peak if peak is not None else peak_rss_mib(),
            "rss_before_mib": rss_before,
            "peak_rss_kind": "row (VmHWM after a clear_refs reset)" if peak is not None else "process (ru_maxrss)",
        }
        rows.append(row)
        outputs.append(out)
        print(
            f"  tiling {name} {width}x{height} tile {combo['tile']} halo {combo['halo']} batch {combo['batch']} "
            f"{combo['io']} {combo['precision']}: median {row['median_s'] * 1e3:.1f} ms, "
            f"{row['output_mp_per_s']:.3f} MP/s out",
            file=sys.stderr,
            flush=True,
        )
    default_med = next(r["median_s"] for r in rows if r["varied"] == "default")
    torch_med = refs["torch-eager"][0] if "torch-eager" in refs else None
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
        torch_out = torch_at(row["border"]) if torch_at is not None else None
        row["max_abs_diff_vs_torch"] = (
            int(np.max(np.abs(out.astype(np.int16) - torch_out.astype(np.int16)))) if torch_out is not None else None
        )
    return rows


# --------------------------------------------------------------------------- report


def sweep_record(args: argparse.Namespace) -> dict[str, Any]:
    """The ``settings.tiling_sweep`` entry of the JSON: the axes and what each ratio divides."""
    return {
        "tiles": args.tiles,
        "halos": args.halos,
        "batches": args.batches,
        "io": args.io,
        "precisions": args.precisions,
        "design": "tiles x halos grid at the default batch/io/precision; batches, io, precisions one at a time "
        "around the defaults",
        "notes": [
            "speed_vs_default = default_median_s / median_s (the sweep's own default row, same image)",
            "speedup_vs_torch = torch_median_s / median_s; time_vs_whole = median_s / ort_whole_median_s "
            "(torch-eager and ort-whole of the main rows, same image, same run)",
            "nominal_overlap = (tile + 2 halo)^2 / tile^2; actual_overlap = tiles x window pixels / image "
            "pixels (border tiles are shifted inside the image, so their windows overlap more)",
            "ms_per_window_mp = median ms / window megapixels computed",
            "peak_rss_mib: the row's own peak (VmHWM reset through /proc/self/clear_refs before the row, "
            "whole process: torch and the models stay resident) where peak_rss_kind says so",
        ],
    }


def sweep_markdown(args: argparse.Namespace, rows: Sequence[dict[str, Any]], table: str) -> list[str]:
    """The Markdown section of the sweep: how to read it, the reference medians, the table."""
    return [
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
        "Reference medians:\n" + "\n".join(tiling_references(rows)),
        table,
    ]


TILING_HEADERS = [
    "config",
    "size",
    "varied",
    "tile",
    "halo",
    "batch",
    "io",
    "precision",
    "tiles",
    "median ms",
    "p90 ms",
    "out MP/s",
    "img/s",
    "speed vs default",
    "speedup vs torch",
    "time vs whole",
    "nominal overlap",
    "actual overlap",
    "ms per window MP",
    "max abs Δ vs torch",
    "peak RSS MiB",
    "Δ RSS MiB",
]


def tiling_table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        # The peak can read a fraction of a MiB below the RSS sampled at the reset: show 0, not -0.
        grew = max(0.0, r["peak_rss_mib"] - r["rss_before_mib"]) if r.get("rss_before_mib") is not None else None
        out.append(
            [
                r["config"],
                f"{r['width']}x{r['height']}",
                r["varied"],
                str(r["tile"]),
                str(r["halo"]),
                str(r["batch"]),
                r["io"],
                r["precision"],
                str(r["tiles"]),
                fmt_float(r["median_s"] * 1e3, 1),
                fmt_float(r["p90_s"] * 1e3, 1),
                fmt_float(r["output_mp_per_s"], 3),
                fmt_float(r["images_per_s"], 2),
                fmt_float(r["speed_vs_default"], 2),
                fmt_float(r["speedup_vs_torch"], 2),
                fmt_float(r["time_vs_whole"], 3),
                fmt_float(r["nominal_overlap"], 3),
                fmt_float(r["actual_overlap"], 3),
                fmt_float(r["ms_per_window_mp"], 0),
                "-" if r["max_abs_diff_vs_torch"] is None else str(r["max_abs_diff_vs_torch"]),
                fmt_float(r["peak_rss_mib"], 0),
                fmt_float(grew, 0),
            ]
        )
    return out


def tiling_references(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per swept image: the medians every ratio of its rows divides by."""

    def ms(v: float | None) -> str:
        return "not measured" if v is None else f"{v * 1e3:.1f} ms"

    lines = []
    for key in dict.fromkeys((r["config"], r["width"], r["height"]) for r in rows):
        r = next(x for x in rows if (x["config"], x["width"], x["height"]) == key)
        d = next(x for x in rows if (x["config"], x["width"], x["height"]) == key and x["varied"] == "default")
        lines.append(
            f"- {key[0]} {key[1]}x{key[2]}: default row (tile {d['tile']}, halo {d['halo']}, batch "
            f"{d['batch']}, {d['io']}, {d['precision']}) {ms(d['median_s'])}; torch-eager {ms(r['torch_median_s'])}; "
            f"ort-whole {ms(r['ort_whole_median_s'])}; the main table's ort-tiled row (same settings as the "
            f"default row, timed earlier) {ms(r['main_table_tiled_median_s'])}"
        )
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
            ax_lines.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                markers[i % len(markers)] + "-",
                label=f"{label}ort-tiled halo {halo}",
            )
            for r in (r for r in grid if r["halo"] == halo):
                ax_lines.annotate(
                    f"×{r['actual_overlap']:.2f}",
                    (r["tile"], r["output_mp_per_s"]),
                    textcoords="offset points",
                    xytext=(5, -10 + 9 * i),
                    fontsize=7,
                    color=f"C{i}",
                )
        out_mp = default["output_mp"]
        for ref, style, colour, mode in (
            ("torch_median_s", ":", "C7", "torch-eager"),
            ("ort_whole_median_s", "--", "C8", "ort-whole"),
        ):
            if default[ref]:
                for ax in (ax_lines, ax_bars):
                    ax.axhline(
                        out_mp / default[ref], linestyle=style, color=colour, label=f"{label}{mode} (whole image)"
                    )
        bars = [default] + [r for r in mine if r["varied"] in ("batch", "io", "precision")]
        xs = np.arange(len(bars)) + k * (len(bars) + 1)
        ax_bars.bar(
            xs,
            [r["output_mp_per_s"] for r in bars],
            color=[{"default": "C0", "batch": "C1", "io": "C2", "precision": "C3"}[r["varied"]] for r in bars],
        )
        for x, r in zip(xs, bars):
            ax_bars.annotate(
                f"{r['output_mp_per_s']:.3f}", (x, r["output_mp_per_s"]), ha="center", va="bottom", fontsize=7
            )
        ticks += list(xs)
        tick_labels += [
            label
            + ("default: " if r["varied"] == "default" else "")
            + f"batch {r['batch']}\n{r['io']}\n{r['precision']}"
            for r in bars
        ]
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
