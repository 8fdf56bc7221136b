"""Peers, side by side in one run: the default runtime path against ONNX Runtime, OpenVINO and PyTorch.

    python benchmarks/peers.py                      # the full run (~25 min on 2 cores), into benchmarks/results/
    python benchmarks/peers.py --quick --out /tmp/p --allow-dirty     # smoke test: tiny image, 1 repeat
    python benchmarks/peers.py --configs compact --sizes 480x270 --threads 2  # the acceptance point only

Rows, each measured in the same run on the same image, for every --configs × --sizes × --threads:

* default           runtime.Upscaler(model) as a user gets it: backend "auto" and the tile policy
                    are the Upscaler's defaults, read at run time and recorded (what "auto" resolved
                    to, the tile, halo and windows it planned); only the threads are set.
* default-int8      the same with the bundled INT8 model (Upscaler(precision="int8") where the
                    Upscaler has that switch): compact only, the gated model is the bundled one's.
* ort-whole         ONNX Runtime CPU, the whole image in one window (tile >= image, halo 0).
* ort-tiled         ONNX Runtime CPU, --tile (128) with the model's recommended halo.
* ov-fp32-whole, ov-fp32-tiled   OpenVINO (runtime.backends.OpenVino, f32), as above.
* ov-int8-whole, ov-int8-tiled   OpenVINO on the INT8 Q/DQ model (runtime/models/eusr-compact-x4-int8.onnx).
* torch-whole       PyTorch eager float32 on the whole image (torch.inference_mode): the reference.
* torch-tiled-naive PyTorch eager through Real-ESRGAN's tile_process (tile 128, pad 10, one forward
                    per tile, no batching; benchmarks/naive_tiler.py).

Configurations: compact = the bundled model (checkpoint models/eusr-compact.safetensors, its ONNX
runtime/models/eusr-compact-x4.onnx); paper = build_eusr("paper") with random weights seeded by
--seed (no paper checkpoint ships; speed does not depend on the weights' values), exported to a
temporary ONNX (TorchScript exporter). No INT8 model exists for the paper configuration: its INT8
rows say so.

Every (configuration, threads) group runs in its own process (benchmarks/peers_worker.py: thread
pools set once, the same starting memory). Per size: each row is set up and warmed up (--warmup
uint8 calls) with the kernel's peak-RSS mark reset before it (the row's peak RSS and its growth);
then --repeats timed calls in round robin (repeat i of every row, then repeat i+1: a change of load
hits every row alike); then one call on the float32 image for accuracy against torch-whole given
the row's mirrored border context (PSNR, peak 255, and max |Δ| of the raw outputs; tiled rows also
against their own backend in one window with the same border).

Derived in the run: MP/s in and out (median), speed vs torch-whole and vs ort-whole of the same
config, size and threads; for tiled rows, time vs their backend's whole-image row against the halo
arithmetic (window pixels computed / image pixels: 1.00 means the tiles cost exactly what their
overlap costs); achieved GFLOP/s = 2 × Conv MACs (counted from the ONNX graph) / median, of the
image and of the windows actually computed, against the nominal fp32 / VNNI INT8 peak of the
row's cores (benchmarks/flops.py states the assumptions); and the issue-15 acceptance ratios at
compact 480x270, 2 threads (and paper 480x270).

--quick: compact and paper at 64x36, threads 1, warm-up 1, 1 repeat, tile 32 for the fixed-tile
and naive rows (so they really tile): checks the script, measures nothing.

The full run (about 25 minutes on 2 quiet cores, estimated from the per-row costs: 7 calls per row,
the paper configuration costs 6.1x the compact one per pixel) leaves out what --skip names, listed
in the results: the paper configuration at 960x540 and at 1 thread, compact 960x540 at 1 thread,
the naive tiler at compact 960x540, and the paper 480x270 fixed-tile and naive rows (its default,
whole-image and torch rows stay, for the acceptance ratio). --skip '' measures everything (about
75 minutes). Timings on a shared machine are noisy: run on a quiet one.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks.common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_allow_dirty,
    add_out_args,
    commit_label,
    environment,
    fmt_float,
    import_pyplot,
    markdown_table,
    package_version,
    parse_choices,
    parse_int_list,
    parse_sizes,
    require_clean_tree,
    results_dir,
    write_results,
)
from benchmarks.flops import conv_macs_per_pixel, cpu_flags, cpu_peaks
from benchmarks.naive_tiler import PAD as NAIVE_PAD
from benchmarks.naive_tiler import TILE as NAIVE_TILE
from benchmarks.peers_worker import INT8_KINDS, ROW_KINDS, WHOLE_OF
from benchmarks.throughput_models import COMPACT_CHECKPOINT, SCALE
from runtime.errors import UpscaleError
from runtime.utils import file_sha256

__all__ = ["ROW_KINDS", "CONFIGS", "ACCEPTANCE_TARGETS", "parse_skip", "skipped", "derive", "acceptance", "main"]

CONFIGS = ("compact", "paper", "tiny")
DEFAULT_SIZES = "120x68,240x135,480x270,960x540"
DEFAULT_SKIP = (
    "paper:960x540:*,paper:*:1,compact:960x540:1,compact:960x540:2:torch-tiled-naive,"
    "paper:480x270:2:ort-tiled,paper:480x270:2:ov-fp32-tiled,paper:480x270:2:torch-tiled-naive"
)
QUICK = {"configs": ["compact", "paper"], "sizes": [(64, 36)], "threads": [1], "warmup": 1, "repeats": 1, "tile": 32}
DEFAULT_IMAGE = REPO_ROOT / "data" / "photos" / "test" / "ihc.png"
INT8_MODEL = REPO_ROOT / "runtime" / "models" / "eusr-compact-x4-int8.onnx"
FP32_FLOOR_DB = 80.0
SEAM_FLOOR_DB = 50.0
"""Tiled vs one window of the same backend; INT8 rows get the INT8 floor instead where it is
lower (requantization turns fp32's 80+ dB seam differences into level flips: 48.8 dB measured
at tile 32, halo 8)."""
INT8_FLOOR_DB = 40.0
"""calibration's default gate floor, used when the gate JSON gives none."""
HALO_OVERHEAD_TARGET = 1.10
ACCEPTANCE_TARGETS = {
    "default_vs_ort_whole": 1.2,
    "default_vs_torch": 2.0,
    "int8_vs_ort_whole": 1.8,
    "paper_default_vs_torch": 1.5,
}
MIN_REPEATS = 5


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def parse_skip(text: str) -> list[tuple[str, str, str, str]]:
    """'paper:960x540:*,compact:960x540:2:torch-tiled-naive' -> [("paper", "960x540", "*", "*"),
    ("compact", "960x540", "2", "torch-tiled-naive")]: CONFIG:WxH:THREADS[:ROW], * matches any."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) not in (3, 4):
            raise argparse.ArgumentTypeError(
                f"--skip: expected CONFIG:WIDTHxHEIGHT:THREADS[:ROW] entries (each part may be *), got {item!r}"
            )
        config, size, threads, row = (*parts, "*")[:4]
        if config != "*" and config not in CONFIGS:
            raise argparse.ArgumentTypeError(f"--skip {item!r}: unknown configuration {config!r}")
        if size != "*":
            ((w, h),) = parse_sizes(size)
            size = f"{w}x{h}"
        if threads != "*" and not threads.isdigit():
            raise argparse.ArgumentTypeError(f"--skip {item!r}: threads must be a number or *, got {threads!r}")
        if row != "*" and row not in ROW_KINDS:
            raise argparse.ArgumentTypeError(f"--skip {item!r}: unknown row {row!r}; rows: {','.join(ROW_KINDS)}")
        out.append((config, size, threads, row))
    return out


def _matches(entry: tuple[str, str, str, str], config: str, size: tuple[int, int], threads: int) -> bool:
    c, s, t, _ = entry
    return c in ("*", config) and s in ("*", f"{size[0]}x{size[1]}") and t in ("*", str(threads))


def skipped(skip: Sequence[tuple[str, str, str, str]], config: str, size: tuple[int, int], threads: int) -> bool:
    """Whether every row of (config, size, threads) is skipped."""
    return any(e[3] == "*" and _matches(e, config, size, threads) for e in skip)


def skipped_rows(
    skip: Sequence[tuple[str, str, str, str]], config: str, size: tuple[int, int], threads: int
) -> list[str]:
    """The rows skipped at (config, size, threads) by entries naming a row."""
    return [e[3] for e in skip if e[3] != "*" and _matches(e, config, size, threads)]


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="peers.py", description="\n\n".join(doc[:3]), formatter_class=HelpFormatter)
    p.add_argument(
        "--configs",
        type=parse_choices("--configs", CONFIGS),
        default=None,
        help="comma-separated configurations out of compact,paper,tiny (default: compact,paper)",
    )
    p.add_argument(
        "--sizes", type=parse_sizes, default=None, help=f"input sizes WIDTHxHEIGHT (default: {DEFAULT_SIZES})"
    )
    p.add_argument("--threads", type=parse_int_list, default=None, help="thread counts, one group each (default: 1,2)")
    p.add_argument(
        "--rows",
        type=parse_choices("--rows", ROW_KINDS),
        default=list(ROW_KINDS),
        help=f"row kinds out of {','.join(ROW_KINDS)} (default: all; ratios need torch-whole and ort-whole)",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed uint8 calls per row before timing (default: 1)")
    p.add_argument(
        "--repeats", type=int, default=None, help=f"timed calls per row, round robin (default: {MIN_REPEATS})"
    )
    p.add_argument("--tile", type=int, default=None, help="tile of the *-tiled rows (default: 128)")
    p.add_argument("--naive-tile", type=int, default=None, help=f"tile of torch-tiled-naive (default: {NAIVE_TILE})")
    p.add_argument("--naive-pad", type=int, default=NAIVE_PAD, help="tile_pad of torch-tiled-naive")
    p.add_argument(
        "--skip",
        type=parse_skip,
        default=None,
        help=f"CONFIG:WxH:THREADS[:ROW] combinations not measured, * matches any (default: {DEFAULT_SKIP}; "
        "'' measures everything, about 3x the time)",
    )
    p.add_argument(
        "--order",
        choices=("round-robin", "blocks"),
        default="round-robin",
        help="round-robin: all rows of a size set up, then timed in turns (load changes hit every row alike; "
        "holds every row's memory at once, ~8 GB at 960x540); blocks: one row after the other",
    )
    p.add_argument(
        "--image",
        type=Path,
        default=DEFAULT_IMAGE,
        help="photo cropped and resized to every size (default: data/photos/test/ihc.png; 'noise' for seeded noise)",
    )
    p.add_argument("--int8-model", type=Path, default=INT8_MODEL, help="INT8 Q/DQ ONNX of the compact configuration")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: compact,paper at 64x36, 1 thread, 1 repeat, tile 32"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the paper/tiny random weights (and of noise images)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_out_args(p, what="folder for the JSON, Markdown and PNG")
    p.add_argument("--name", default="peers", help="stem of the result files")
    add_allow_dirty(p)
    return p


def _settle(args: argparse.Namespace) -> None:
    """Fill the defaults (--quick's or the full run's) of everything not given."""
    quick = QUICK if args.quick else {}
    args.configs = args.configs or quick.get("configs") or ["compact", "paper"]
    args.sizes = args.sizes or quick.get("sizes") or parse_sizes(DEFAULT_SIZES)
    args.threads = args.threads or quick.get("threads") or [1, 2]
    args.warmup = args.warmup if args.warmup is not None else quick.get("warmup", 1)
    args.repeats = args.repeats if args.repeats is not None else quick.get("repeats", MIN_REPEATS)
    args.tile = args.tile if args.tile is not None else quick.get("tile", 128)
    args.naive_tile = args.naive_tile if args.naive_tile is not None else quick.get("tile", NAIVE_TILE)
    if args.skip is None:
        args.skip = [] if args.quick else parse_skip(DEFAULT_SKIP)


# --------------------------------------------------------------------------- models


@contextlib.contextmanager
def _config_models(name: str, seed: int, tmp: Path, int8_model: Path) -> Iterator[dict[str, Any]]:
    """The ONNX files and descriptions of one configuration, for the workers."""
    from runtime.upscaler import default_model_path

    info: dict[str, Any] = {"config": name}
    if name == "compact":
        onnx = default_model_path()
        if not onnx.is_file():
            raise BenchmarkError(f"the bundled model {onnx} is missing; the compact rows need it")
        meta = _metadata(onnx)
        ckpt = file_sha256(COMPACT_CHECKPOINT) if COMPACT_CHECKPOINT.is_file() else None
        if ckpt is not None and meta.get("checkpoint_sha256") not in (None, ckpt):
            raise BenchmarkError(
                f"{onnx} was exported from checkpoint {meta.get('checkpoint_sha256')}, not from "
                f"{COMPACT_CHECKPOINT} ({ckpt}): PyTorch and the ONNX rows would run different weights"
            )
        info.update(
            onnx=str(onnx),
            default_model=None,
            description={
                "onnx": _shown(onnx),
                "onnx_sha256": file_sha256(onnx),
                "checkpoint": _shown(COMPACT_CHECKPOINT),
                "checkpoint_sha256": ckpt,
            },
        )
        if int8_model.is_file():
            info["int8_onnx"] = str(int8_model)
            info["description"]["int8_onnx"] = _shown(int8_model)
            info["description"]["int8_sha256"] = file_sha256(int8_model)
            gate = int8_model.with_name(int8_model.name.removesuffix(".onnx") + ".gate.json")
            info["gate"] = _gate_summary(gate)
        else:
            info["int8_missing"] = (
                f"{_shown(int8_model)} is not there; make it with `python -m calibration bundle` (needs the calib extra)"
            )
        yield info
        return
    from benchmarks.throughput_models import prepared_config

    with prepared_config(name, seed, tmp) as (_, paths, desc):
        (onnx,) = paths.values()
        info.update(onnx=str(onnx), default_model=str(onnx), description=desc)
        info["int8_missing"] = (
            f"no INT8 model of the {name} configuration (random weights; `python -m calibration` makes one for a "
            "trained checkpoint)"
        )
        yield info


def _metadata(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "fourpp_eusr":
            return json.loads(prop.value)
    return {}


def _gate_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    keys = ("passed", "min_psnr_vs_fp32", "psnr_y_loss", "max_abs_error", "floors", "candidate_sha256")
    return {"path": _shown(path), **{k: d.get(k) for k in keys}}


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- running the groups


def _run_group(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    tag = f"{spec['config']}-t{spec['threads']}"
    spec_path, out_path = tmp / f"spec-{tag}.json", tmp / f"rows-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "benchmarks.peers_worker", str(spec_path), str(out_path)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if res.returncode != 0 or not out_path.is_file():
        raise BenchmarkError(f"the {tag} group failed (exit {res.returncode}); its log is above")
    return json.loads(out_path.read_text())


# --------------------------------------------------------------------------- derived values


def _sibling_whole(row: dict[str, Any]) -> str | None:
    """The whole-image row a tiled row's cost and seams are compared with."""
    kind = row["kind"]
    if kind in WHOLE_OF:
        return WHOLE_OF[kind]
    if kind in ("default", "default-int8"):
        backend = (row.get("settings") or {}).get("backend", {}).get("name")
        int8 = kind == "default-int8"
        return {
            "openvino": "ov-int8-whole" if int8 else "ov-fp32-whole",
            "onnxruntime": None if int8 else "ort-whole",
        }.get(backend)
    return None


def int8_floor(gate: dict[str, Any] | None) -> float:
    """The INT8 floor vs float32: the gate's own (its JSON's floors), else the calibration default."""
    floors = (gate or {}).get("floors") or {}
    return float(floors.get("min_psnr_vs_fp32", INT8_FLOOR_DB))


def derive(
    rows: list[dict[str, Any]], macs: dict[str, dict[str, float]], peaks: Any, *, int8_floor_db: float = 40.0
) -> None:
    """Ratios within each (config, size, threads) group, GFLOP/s and floors, in place."""
    groups: dict[tuple[str, int, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["config"], r["width"], r["height"], r["threads"]), {})[r["kind"]] = r
    for (config, width, height, threads), by_kind in groups.items():
        torch_med = by_kind.get("torch-whole", {}).get("median_s")
        ort_med = by_kind.get("ort-whole", {}).get("median_s")
        for kind, r in by_kind.items():
            med = r["median_s"]
            r["input_mp"] = width * height / 1e6
            r["output_mp"] = r["input_mp"] * SCALE * SCALE
            r["speedup_vs_torch"] = torch_med / med if torch_med and med > 0 else None
            r["speedup_vs_ort_whole"] = ort_med / med if ort_med and med > 0 else None
            per_px = macs[config]["int8" if r["precision"] == "int8" and "int8" in macs[config] else "fp32"]
            computed = r.get("computed_px")
            r["macs_image"] = per_px * width * height
            r["macs_computed"] = per_px * computed if computed else None
            r["gflops_image"] = 2 * r["macs_image"] / med / 1e9
            r["gflops_computed"] = 2 * r["macs_computed"] / med / 1e9 if computed else None
            peak = peaks.int8_gops(threads) if r["precision"] == "int8" else peaks.fp32_gflops(threads)
            r["peak_gflops"] = peak
            r["peak_kind"] = "VNNI INT8" if r["precision"] == "int8" else "fp32 FMA"
            r["fraction_of_peak"] = r["gflops_computed"] / peak if peak and computed else None
            r["halo_arithmetic"] = computed / (width * height) if computed else None
            sibling = _sibling_whole(r)
            whole = by_kind.get(sibling) if sibling and sibling != kind else None
            r["whole_row"] = sibling if whole else None
            r["time_vs_whole"] = med / whole["median_s"] if whole else None
            r["overhead_vs_halo"] = (
                r["time_vs_whole"] / r["halo_arithmetic"] if whole and r["halo_arithmetic"] else None
            )
            acc = r.get("accuracy_vs_torch") or {}
            floor = _floor_db(r, int8_floor_db)
            r["floor_db"] = floor
            r["meets_floor"] = None if floor is None or acc.get("psnr_db") is None else _ge(acc["psnr_db"], floor)
            seam = r.get("accuracy_vs_whole")
            seam_floor = min(SEAM_FLOOR_DB, int8_floor_db) if r["precision"] == "int8" else SEAM_FLOOR_DB
            r["seam_floor_db"] = seam_floor
            r["meets_seam_floor"] = _ge(seam["psnr_db"], seam_floor) if seam and kind != "torch-tiled-naive" else None


def _floor_db(row: dict[str, Any], int8_floor_db: float) -> float | None:
    """The parity floor of a row vs PyTorch float32: fp32 80 dB, INT8 the gate's floor;
    the naive tiler (pad 10, maybe below the model's halo) has none."""
    if row["kind"] in ("torch-whole", "torch-tiled-naive"):
        return None
    return int8_floor_db if row["precision"] == "int8" else FP32_FLOOR_DB


def _ge(value: Any, floor: float) -> bool:
    v = float(value)
    return math.isinf(v) and v > 0 or (not math.isnan(v) and v >= floor)


def _find(rows: Sequence[dict[str, Any]], config: str, size: str, threads: int, kind: str) -> dict[str, Any] | None:
    w, h = (int(v) for v in size.split("x"))
    for r in rows:
        if (r["config"], r["width"], r["height"], r["threads"], r["kind"]) == (config, w, h, threads, kind):
            return r if r.get("status") == "ok" else None
    return None


def acceptance(rows: Sequence[dict[str, Any]], gate: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 15's acceptance ratios, from this run's rows (None where a row was not measured)."""
    out: list[dict[str, Any]] = []

    def ratio(claim: str, key: str, config: str, num: str, den: str, size: str = "480x270", threads: int = 2) -> None:
        a, b = _find(rows, config, size, threads, num), _find(rows, config, size, threads, den)
        value = b["median_s"] / a["median_s"] if a and b else None
        target = ACCEPTANCE_TARGETS[key]
        out.append(
            {
                "claim": claim,
                "value": value,
                "target": f">= {target}",
                "passed": None if value is None else value >= target,
                "rows": f"{config} {size} {threads} threads: {den} median / {num} median",
            }
        )

    ratio(
        "default CPU path (fp32) vs ONNX Runtime whole image fp32",
        "default_vs_ort_whole",
        "compact",
        "default",
        "ort-whole",
    )
    ratio("default CPU path (fp32) vs PyTorch eager", "default_vs_torch", "compact", "default", "torch-whole")
    ratio("INT8 path vs ONNX Runtime whole image fp32", "int8_vs_ort_whole", "compact", "default-int8", "ort-whole")
    int8 = _find(rows, "compact", "480x270", 2, "default-int8")
    floor = int8_floor(gate)
    if int8 is not None or gate is not None:
        acc = (int8 or {}).get("accuracy_vs_torch") or {}
        out.append(
            {
                "claim": "INT8 path passes the gate",
                "value": acc.get("psnr_db"),
                "target": f">= {floor:g} dB vs fp32 here; gate JSON passed",
                "passed": (gate or {}).get("passed") is True
                and (int8 is None or _ge(acc.get("psnr_db", "nan"), floor)),
                "rows": f"compact 480x270 2 threads default-int8 vs torch-whole; gate {(gate or {}).get('path')}: "
                f"passed={(gate or {}).get('passed')}, worst {fmt_float((gate or {}).get('min_psnr_vs_fp32'), 2)} dB, "
                f"PSNR-Y loss {fmt_float((gate or {}).get('psnr_y_loss'), 3)} dB",
            }
        )
    ratio(
        "paper configuration: default path vs PyTorch eager",
        "paper_default_vs_torch",
        "paper",
        "default",
        "torch-whole",
    )
    for size in ("480x270", "960x540"):
        r = _find(rows, "compact", size, 2, "default")
        value = r.get("overhead_vs_halo") if r else None
        out.append(
            {
                "claim": f"tiled cost vs halo arithmetic at the default policy, {size}",
                "value": value,
                "target": f"<= {HALO_OVERHEAD_TARGET}",
                "passed": None if value is None else value <= HALO_OVERHEAD_TARGET,
                "rows": (
                    f"compact {size} 2 threads: (default / {r.get('whole_row')}) / halo arithmetic "
                    f"{fmt_float(r['halo_arithmetic'], 3)} ({_windows(r['settings'])})"
                    if r and r.get("whole_row")
                    else f"compact {size} 2 threads default: not measured or no whole-image row of its backend"
                ),
            }
        )
    floors = [r for r in rows if r.get("status") == "ok" and r.get("meets_floor") is not None]
    seams = [r for r in rows if r.get("status") == "ok" and r.get("meets_seam_floor") is not None]
    out.append(
        {
            "claim": f"parity floors (fp32 >= {FP32_FLOOR_DB:g} dB, INT8 >= {floor:g} dB vs PyTorch fp32; tiled vs "
            f"one window >= {SEAM_FLOOR_DB:g} dB, INT8 {min(SEAM_FLOOR_DB, floor):g} dB)",
            "value": sum(bool(r["meets_floor"]) for r in floors) + sum(bool(r["meets_seam_floor"]) for r in seams),
            "target": f"all {len(floors) + len(seams)} checks",
            "passed": all(r["meets_floor"] for r in floors) and all(r["meets_seam_floor"] for r in seams),
            "rows": "every measured row but the torch rows (the naive tiler's pad 10 is its own choice)",
        }
    )
    return out


# --------------------------------------------------------------------------- report


HEADERS = [
    "config",
    "size",
    "thr",
    "row",
    "backend · tile/halo · windows",
    "median ms",
    "p90 ms",
    "in MP/s",
    "out MP/s",
    "vs torch",
    "vs ORT whole",
    "time vs whole",
    "halo arith.",
    "vs halo",
    "GFLOP/s img / comp.",
    "% peak",
    "dB vs torch",
    "max |Δ|",
    "dB vs whole",
    "peak RSS MiB (+row)",
]


def _windows(settings: dict[str, Any]) -> str:
    """'8 window(s) of 144x144' from a row's settings (width x height)."""
    window = settings.get("window")
    shape = f"{window[1]}x{window[0]}" if window else "?"
    return f"{settings.get('tiles', '?')} window(s) of {shape}"


def _how(r: dict[str, Any]) -> str:
    s = r.get("settings") or {}
    if r["kind"].startswith("torch"):
        return "torch eager" + (f" · {s['tile']}/pad {s['pad']} · {s['tiles']}" if s.get("tiler") else " · whole")
    b = s.get("backend") or {}
    window = s.get("window") or ["?", "?"]
    return f"{b.get('name')} · {s.get('tile')}/{s.get('halo')} · {s.get('tiles')}×{window[1]}x{window[0]}"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        if r.get("status") != "ok":
            out.append(
                [r["config"], size, str(r["threads"]), r["kind"], f"not measured: {r.get('reason')}"] + ["-"] * 15
            )
            continue
        acc = r.get("accuracy_vs_torch") or {}
        seam = r.get("accuracy_vs_whole") or {}
        grew = max(0.0, r["peak_rss_mib"] - r["rss_before_mib"]) if r.get("rss_before_mib") is not None else None
        out.append(
            [
                r["config"],
                size,
                str(r["threads"]),
                r["kind"],
                _how(r),
                fmt_float(r["median_s"] * 1e3, 1),
                fmt_float(r["p90_s"] * 1e3, 1),
                fmt_float(r["input_mp_per_s"], 4),
                fmt_float(r["output_mp_per_s"], 3),
                fmt_float(r.get("speedup_vs_torch"), 2),
                fmt_float(r.get("speedup_vs_ort_whole"), 2),
                fmt_float(r.get("time_vs_whole"), 3),
                fmt_float(r["halo_arithmetic"], 3),
                fmt_float(r.get("overhead_vs_halo"), 3),
                f"{fmt_float(r['gflops_image'], 1)} / {fmt_float(r['gflops_computed'], 1)}",
                fmt_float(100 * r["fraction_of_peak"], 1) if r.get("fraction_of_peak") is not None else "-",
                fmt_float(acc.get("psnr_db"), 1),
                fmt_float(acc.get("max_abs_diff"), 4),
                fmt_float(seam.get("psnr_db"), 1) if seam else "-",
                f"{r['peak_rss_mib']:.0f}" + (f" (+{grew:.0f})" if grew is not None else ""),
            ]
        )
    return out


def acceptance_rows(items: Sequence[dict[str, Any]]) -> list[list[str]]:
    def value(v: Any) -> str:
        return v if isinstance(v, str) else (f"{v}" if isinstance(v, int) else fmt_float(v, 3))

    verdict = {True: "yes", False: "NO", None: "not measured"}
    return [[i["claim"], value(i["value"]), i["target"], verdict[i["passed"]], i["rows"]] for i in items]


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    plt = import_pyplot()
    if plt is None:
        return None
    ok = [r for r in rows if r.get("status") == "ok"]
    configs = list(dict.fromkeys(r["config"] for r in ok))
    threads = sorted({r["threads"] for r in ok})
    if not ok:
        return None
    fig, axes = plt.subplots(
        len(configs), len(threads), figsize=(7.5 * len(threads), 4.2 * len(configs)), squeeze=False
    )
    kinds = [k for k in ROW_KINDS if any(r["kind"] == k for r in ok)]
    cmap = plt.get_cmap("tab10")
    for i, config in enumerate(configs):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            sizes = sorted({(r["width"], r["height"]) for r in ok if r["config"] == config and r["threads"] == t})
            width = 0.8 / max(len(kinds), 1)
            for k, kind in enumerate(kinds):
                xs, ys = [], []
                for x, size in enumerate(sizes):
                    r = next(
                        (
                            r
                            for r in ok
                            if (r["config"], r["threads"], r["kind"]) == (config, t, kind)
                            and (r["width"], r["height"]) == size
                        ),
                        None,
                    )
                    if r is not None:
                        xs.append(x - 0.4 + width * (k + 0.5))
                        ys.append(r["output_mp_per_s"])
                if xs:
                    ax.bar(xs, ys, width, label=kind, color=cmap(k % 10), hatch="//" if kind in INT8_KINDS else None)
            if not sizes:
                ax.text(0.5, 0.5, "not measured (--skip)", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks(range(len(sizes)), [f"{w}x{h}" for w, h in sizes])
            ax.set_ylabel("output MP/s (median)")
            ax.set_title(f"{config}, {t} thread{'s' if t > 1 else ''}", fontsize=10)
            ax.grid(True, axis="y", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _flags_shown(flags: Sequence[str]) -> str:
    keys = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return ", ".join(f for f in keys if f in flags) or "none of the AVX-512/VNNI/AMX flags"


def markdown(data: dict[str, Any], args: argparse.Namespace) -> str:
    env = data["environment"]
    peaks = data["machine"]["peaks"]
    versions = data["environment"]["versions"]
    lines = [
        f"# Peers: the default runtime path vs ONNX Runtime, OpenVINO and PyTorch eager, ×{SCALE}",
        f"{env['date']}, commit {commit_label(env)}, {env['host']['cpu']} ({env['host']['usable_cpus']} usable CPUs; "
        f"flags: {_flags_shown(data['machine']['cpu_flags'])}); onnxruntime {versions.get('onnxruntime')}, openvino "
        f"{versions.get('openvino')}, torch {versions.get('torch')}, numpy {versions.get('numpy')}. Seed {args.seed}; "
        f"image: {data['settings']['image']}. Warm-up {args.warmup}, {args.repeats} timed repeats per row in round robin "
        f"(median, p90); one process per (configuration, threads). Total {data['total_seconds'] / 60:.1f} min.",
    ]
    if args.repeats < MIN_REPEATS:
        lines.append(
            f"**{args.repeats} repeat(s): a smoke test, not a measurement** (the full run takes {MIN_REPEATS})."
        )
    if data["settings"]["skipped"]:
        lines.append(
            "Not measured, to keep the run near 25 minutes on 2 cores (`--skip`): "
            + ", ".join(data["settings"]["skipped"])
            + "."
        )
    for config, seen in (data.get("defaults") or {}).items():
        for key, d in seen.items():
            s, b = d["settings"], d["settings"]["backend"]
            lines.append(
                f"{config} `{key}` resolved at run time to {b.get('class')}("
                + ", ".join(f"{k}={v}" for k, v in b.items() if k not in ("class", "name"))
                + f"), tile {s['tile']}, halo {s['halo']}, batch {s['batch']} (largest size: {_windows(s)}); "
                f"Upscaler's defaults {d.get('signature_defaults')}"
                + (f", called with {d['kwargs']}" if d.get("kwargs") else "")
                + "."
            )
    lines += [
        "## Acceptance (issue 15), from this run",
        markdown_table(["claim", "measured", "target", "met", "from"], acceptance_rows(data["acceptance"])),
        "## Peaks",
        f"Nominal, per the row's thread count (one core each): fp32 {peaks['fp32_isa']} "
        f"{peaks['fp32_flops_per_cycle']} flop/cycle/core, INT8 {peaks['int8_isa']} "
        f"{peaks['int8_ops_per_cycle']} op/cycle/core"
        + (
            f", AMX-INT8 {peaks['amx_int8_ops_per_cycle']} op/cycle/core (not used as the peak)"
            if peaks.get("amx_int8_ops_per_cycle")
            else ""
        )
        + "; "
        + "; ".join(
            f"{c} core(s): fp32 {fmt_float(v['fp32_gflops'], 0)} GFLOP/s, INT8 {fmt_float(v['int8_gops'], 0)} GOP/s"
            for c, v in peaks["per_cores"].items()
        )
        + ". Assumptions: "
        + "; ".join(peaks["assumptions"])
        + ". Conv MACs per input pixel (counted from the ONNX graph): "
        + ", ".join(f"{c} {v['fp32']:,.0f}" for c, v in data["macs_per_input_pixel"].items())
        + ".",
        "## Rows",
        "vs torch / vs ORT whole = that row's median / this row's (same config, size, threads). Time vs whole = this "
        "median / the whole-image row of the same backend and model; halo arith. = window pixels computed / image "
        "pixels; vs halo = time vs whole / halo arith. (1.00: the tiles cost what their overlap costs). GFLOP/s = "
        "2 × Conv MACs / median, of the image / of the windows computed; % peak of the computed rate (fp32 or VNNI "
        "INT8 peak of the row's cores). dB vs torch: PSNR (peak 255) of the raw float32 output against PyTorch "
        "eager fp32 on the whole image with the row's mirrored border context (the runtime's halo; none for "
        "whole rows), max |Δ| of the same; dB vs whole: a tiled row against its own backend in one window with "
        "the same border (the naive tiler: against torch-whole). Peak RSS: the row's set-up and warm-up (kernel mark reset before it; +growth).",
        markdown_table(HEADERS, table_rows(data["rows"])),
    ]
    return "\n\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    _settle(args)
    for flag in ("warmup", "naive_pad"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0")
    for flag in ("repeats", "tile", "naive_tile"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if any(t < 1 for t in args.threads):
        parser.error("--threads must be >= 1")
    image = None if str(args.image) == "noise" else args.image
    if image is not None and not image.is_file():
        parser.error(f"--image {image}: no such file (pass a photo, or 'noise')")
    try:
        env = environment(git=require_clean_tree(args.allow_dirty))
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env["versions"]["openvino"] = package_version("openvino")
    env["threads"] = {"groups": args.threads, "note": "each group sets ORT, OpenVINO and torch to that many threads"}
    flags = cpu_flags()
    peaks = cpu_peaks(flags)
    openvino_missing = (
        None if package_version("openvino") else 'openvino is not installed (pip install "fourpp-eusr[openvino]")'
    )

    groups = [(c, t) for c in args.configs for t in args.threads]
    skipped_list = []
    for c, t in groups:
        for w, h in args.sizes:
            if skipped(args.skip, c, (w, h), t):
                skipped_list.append(f"{c} {w}x{h} {t} thread(s): every row")
            elif skipped_rows(args.skip, c, (w, h), t):
                skipped_list.append(f"{c} {w}x{h} {t} thread(s): {', '.join(skipped_rows(args.skip, c, (w, h), t))}")
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    macs: dict[str, dict[str, float]] = {}
    defaults: dict[str, Any] = {}
    gate = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp_name:
            tmp = Path(tmp_name)
            for config in args.configs:
                _log(f"[{time.perf_counter() - t_start:6.0f} s] {config}: preparing models")
                with _config_models(config, args.seed, tmp, args.int8_model) as info:
                    gate = gate or info.get("gate")
                    counts = {"fp32": conv_macs_per_pixel(info["onnx"])["macs_per_input_pixel"]}
                    if info.get("int8_onnx"):
                        counts["int8"] = conv_macs_per_pixel(info["int8_onnx"])["macs_per_input_pixel"]
                    macs[config] = counts
                    models[config] = {
                        **info["description"],
                        "gate": info.get("gate"),
                        "int8_missing": info.get("int8_missing"),
                    }
                    for threads in args.threads:
                        sizes = [s for s in args.sizes if not skipped(args.skip, config, s, threads)]
                        if not sizes:
                            continue
                        kinds = [k for k in args.rows if not (k == "default-int8" and config != "compact")]
                        spec = {
                            **{
                                k: info.get(k) for k in ("config", "onnx", "int8_onnx", "int8_missing", "default_model")
                            },
                            "threads": threads,
                            "sizes": sizes,
                            "kinds": kinds,
                            "skip_rows": {
                                f"{w}x{h}": skipped_rows(args.skip, config, (w, h), threads) for w, h in sizes
                            },
                            "order": args.order,
                            "warmup": args.warmup,
                            "repeats": args.repeats,
                            "tile": args.tile,
                            "naive_tile": args.naive_tile,
                            "naive_pad": args.naive_pad,
                            "scale": SCALE,
                            "seed": args.seed,
                            "image": str(image) if image else None,
                            "openvino_missing": openvino_missing,
                        }
                        _log(
                            f"[{time.perf_counter() - t_start:6.0f} s] {config}, {threads} thread(s): "
                            f"{', '.join(f'{w}x{h}' for w, h in sizes)} ({len(kinds)} rows each)"
                        )
                        result = _run_group(spec, tmp)
                        rows += result["rows"]
                        for k, v in result["defaults"].items():
                            defaults.setdefault(config, {})[f"{k} ({threads} thread{'s' if threads > 1 else ''})"] = v
                        models[config]["torch_module"] = result["torch_module"]
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total_s = time.perf_counter() - t_start
    rows.sort(
        key=lambda r: (
            args.configs.index(r["config"]),
            r["width"] * r["height"],
            r["threads"],
            ROW_KINDS.index(r["kind"]),
        )
    )
    derive(rows, macs, peaks, int8_floor_db=int8_floor(gate))
    data: dict[str, Any] = {
        "benchmark": "peers",
        "environment": env,
        "machine": {
            "cpu_flags": flags,
            "peaks": peaks.record(sorted(set(args.threads))),
        },
        "settings": {
            "configs": args.configs,
            "sizes": [f"{w}x{h}" for w, h in args.sizes],
            "threads": args.threads,
            "rows": args.rows,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "tile": args.tile,
            "naive_tile": args.naive_tile,
            "naive_pad": args.naive_pad,
            "seed": args.seed,
            "quick": args.quick,
            "image": _shown(image) if image else f"uniform noise, seed {args.seed}",
            "skip": [":".join(s) for s in args.skip],
            "order": args.order,
            "skipped": skipped_list,
            "scale": SCALE,
        },
        "models": models,
        "macs_per_input_pixel": macs,
        "defaults": defaults,
        "acceptance": acceptance(rows, gate),
        "rows": rows,
        "total_seconds": total_s,
    }
    text = markdown(data, args)
    paths = write_results(args.out, args.name, data, text)
    png = None
    if not args.no_plot:
        png = plot(
            rows,
            args.out / f"{args.name}.png",
            f"{env['host']['cpu']}, commit {commit_label(env)[:12]}, warm-up {args.warmup}, {args.repeats} repeats, "
            f"image {data['settings']['image']}",
        )
    print(f"wrote {paths['json']}, {paths['md']}" + (f", {png}" if png else ""))
    print()
    print(markdown_table(["claim", "measured", "target", "met", "from"], acceptance_rows(data["acceptance"])))
    print()
    print(markdown_table(HEADERS, table_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
