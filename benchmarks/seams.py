"""Seam error of tiled upscaling against the halo size, to pick ``DEFAULT_HALO`` from a curve.

    python benchmarks/seams.py                                   # bundled model, data/photos/test
    python benchmarks/seams.py --model runs/compact/last.safetensors --tiles 64,128
    python benchmarks/seams.py --model m.onnx --downscale --target-db 60

For every image and halo h, the whole-image output (one window covering the image plus the
same h pixels of mirrored border context the tiles get) is the reference; the tiled output at tile T and halo h is compared against it: PSNR (peak 255)
and max abs error on the raw float32 outputs (float32 in, float32 out: nothing is rounded),
plus the share of pixels whose uint8 value (what a written file holds) differs.

Which input: by default each photo *is* the low-resolution input (``--as-lr``). Seam
error is a property of the model's receptive field and the tiling, not of ground truth,
so no HR image is needed, and a photo used directly is what the runtime upscales in real
use; it is also 4× larger per side than its bicubic ×1/4 version, so a 512×512 photo
yields 16 tiles of 128 (24 seams), where its ×1/4 LR (128×128) would fit in one tile and
show no seam at all. ``--downscale`` uses the MATLAB-bicubic ×1/4 image instead (inputs
with the blur statistics the model was trained on; needs photos ≥ 2·T·4 per side to have
seams).

The chosen halo for a tile size is the smallest halo h of the list such that every image
reaches ``--target-db`` at h *and at every larger halo of the list* (a curve that dips
back below the target does not count as reached). A whole-image PSNR dilutes errors that
sit on a few seam lines, so a second choice is printed too: the smallest halo from which
on no pixel is off by more than ``--max-err`` grey levels (0.5: a written uint8 image
differs by at most 1 level anywhere). Its compute overhead is reported as
the nominal (T+2h)²/T² and as measured on these images: the sum of the window areas of
each image's tile plan over its area (windows keep one shape, so the partial tiles of the
last row/column make this higher; windows capped at a small image's size make it lower).

Outputs: ``<out>/<name>.json`` (environment, settings, every measurement), ``.md``
(tables), ``.png`` (PSNR and max abs error against halo; needs matplotlib).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import math
import time
from collections.abc import Sequence
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
    import_pyplot,
    load_image_uint8,
    markdown_table,
    parse_int_list,
    prepared_model,
    require_clean_tree,
    results_dir,
    write_results,
)
from runtime.errors import UpscaleError
from runtime.utils import list_images

DEFAULT_DATA = REPO_ROOT / "data" / "photos" / "test"
DEFAULT_TILES = (128,)
DEFAULT_HALOS = (0, 1, 2, 4, 6, 8, 12, 16, 24, 32)
DEFAULT_TARGET_DB = 50.0
DEFAULT_MAX_ERR = 0.5
IDENTICAL_MARGIN_DB = 10.0  # "identical" (infinite PSNR) is drawn this far above the best finite value


def nominal_overhead(tile: int, halo: int) -> float:
    """Compute per tile relative to halo 0, for a tile away from the image borders."""
    return (tile + 2 * halo) ** 2 / tile**2


def actual_overhead(height: int, width: int, tile: int, halo: int) -> tuple[float, int]:
    """(sum of window areas / image area, number of tiles) for this image's tile plan."""
    from runtime.tiling import plan_tiles

    plan = plan_tiles(height, width, tile, halo)
    area = sum(t.window.height * t.window.width for t in plan)
    return area / (height * width), len(plan)


def smallest_from(halos: Sequence[int], ok: Sequence[bool]) -> int | None:
    """Smallest halo from which on (for it and every larger halo) ``ok`` holds."""
    chosen = None
    for halo, good in sorted(zip(halos, ok), reverse=True):
        if not good:
            break
        chosen = halo
    return chosen


def choose_halo(halos: Sequence[int], min_psnr: Sequence[float], target_db: float) -> int | None:
    """Smallest halo from which on the minimum PSNR over images stays >= ``target_db``."""
    return smallest_from(halos, [v >= target_db for v in min_psnr])


def choose_halo_by_error(halos: Sequence[int], max_err: Sequence[float], limit: float) -> int | None:
    """Smallest halo from which on the maximum abs error over images stays <= ``limit``."""
    return smallest_from(halos, [e <= limit for e in max_err])


def first_reaching(halos: Sequence[int], values: Sequence[float], target_db: float) -> int | None:
    """Smallest halo at which one image's PSNR first reaches the target."""
    return next((h for h, v in sorted(zip(halos, values)) if v >= target_db), None)


def _load_inputs(folders: Sequence[Path], *, downscale: bool, max_size: int | None, scale: int) -> list[dict[str, Any]]:
    from runtime.imresize import imresize

    images = []
    for folder in folders:
        if folder.is_file():
            files = [folder]
        elif folder.is_dir():
            files = list_images(folder, what="--data", error=BenchmarkError)
        else:
            raise BenchmarkError(f"--data {folder}: no such file or folder")
        for path in files:
            photo = load_image_uint8(path)
            if downscale:
                h, w = photo.shape[:2]
                photo = imresize(photo[: h - h % scale, : w - w % scale], 1.0 / scale)
            if max_size is not None:  # centre crop, for quick runs
                h, w = photo.shape[:2]
                y0, x0 = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
                photo = photo[y0 : y0 + max_size, x0 : x0 + max_size]
            images.append({"name": path.stem, "path": str(path), "lr": np.ascontiguousarray(photo, np.float32)})
    return images


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runtime_log = logging.getLogger("runtime")
    level = runtime_log.level
    runtime_log.setLevel(logging.ERROR)  # "halo below the recommended halo" is the point here
    try:
        return _measure(args)
    finally:
        runtime_log.setLevel(level)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from runtime import Upscaler
    from runtime.backends import create_backend
    from runtime.metrics import psnr, quantize

    with prepared_model(args.model, exporter=args.exporter) as prepared:
        backend = create_backend(backend_for(args.backend, args.threads, prepared.onnx_path), prepared.onnx_path)
        try:
            scale = backend.scale
            images = _load_inputs(args.data, downscale=args.downscale, max_size=args.max_size, scale=scale)
            model = {
                **prepared.description,
                "config_name": backend.info.config_name,
                "recommended_halo": backend.info.recommended_halo,
                "scale": scale,
                "io": backend.io.value,
                "backend": backend.name,
                "providers": list(getattr(backend, "providers", ())),
            }
            results = []
            for image in images:
                lr = image["lr"]
                h, w = lr.shape[:2]
                # The reference for halo h: the whole image as one window with the same h pixels
                # of mirrored border context the tiles get (runtime.tiling.BORDER_MODE), so only
                # seams differ, not borders.
                t0 = time.perf_counter()
                references = {
                    halo: Upscaler(backend=backend, tile=max(h, w), halo=halo, batch=1).upscale(lr)
                    for halo in args.halos
                }
                image["whole_seconds"] = (time.perf_counter() - t0) / len(references)
                print(f"{image['name']}: {w}x{h} LR, whole image in {image['whole_seconds']:.1f} s", flush=True)
                for tile in args.tiles:
                    for halo in args.halos:
                        overhead, n_tiles = actual_overhead(h, w, tile, halo)
                        t0 = time.perf_counter()
                        out = Upscaler(backend=backend, tile=tile, halo=halo, batch=args.batch).upscale(lr)
                        seconds = time.perf_counter() - t0
                        reference = references[halo]
                        ref_u8 = quantize(reference)
                        diff = np.abs(out.astype(np.float64) - reference)
                        results.append(
                            {
                                "image": image["name"],
                                "tile": tile,
                                "halo": halo,
                                "psnr_db": psnr(out, reference, peak=255.0),
                                "max_abs_err": float(diff.max()),
                                "uint8_mismatch": float(np.mean(quantize(out) != ref_u8)),
                                "tiles": n_tiles,
                                "overhead_actual": overhead,
                                "seconds": seconds,
                            }
                        )
                        r = results[-1]
                        print(
                            f"  T={tile:<4} halo={halo:<3} PSNR {fmt_float(r['psnr_db']):>7} dB  "
                            f"max|err| {r['max_abs_err']:.3g}  {n_tiles} tiles  {seconds:.1f} s",
                            flush=True,
                        )
        finally:
            backend.close()
    return {
        "model": model,
        "images": [
            {
                "name": im["name"],
                "path": im["path"],
                "lr_shape": list(im["lr"].shape),
                "whole_seconds": im["whole_seconds"],
            }
            for im in images
        ],
        "results": results,
    }


def summarise(
    results: list[dict[str, Any]], tiles: Sequence[int], halos: Sequence[int], target_db: float, max_err: float
) -> list[dict[str, Any]]:
    """Per tile size: the curve (min PSNR / max error over images per halo) and the choice."""
    summary = []
    names = list(dict.fromkeys(r["image"] for r in results))
    for tile in tiles:
        rows = [r for r in results if r["tile"] == tile]
        curve = []
        for halo in halos:
            at = [r for r in rows if r["halo"] == halo]
            curve.append(
                {
                    "halo": halo,
                    "min_psnr_db": min(r["psnr_db"] for r in at),
                    "max_abs_err": max(r["max_abs_err"] for r in at),
                    "max_uint8_mismatch": max(r["uint8_mismatch"] for r in at),
                    "overhead_nominal": nominal_overhead(tile, halo),
                    "overhead_actual": sum(r["overhead_actual"] for r in at) / len(at),
                }
            )
        chosen = choose_halo(halos, [c["min_psnr_db"] for c in curve], target_db)
        by_error = choose_halo_by_error(halos, [c["max_abs_err"] for c in curve], max_err)
        per_image = {
            name: first_reaching(halos, [r["psnr_db"] for r in rows if r["image"] == name], target_db) for name in names
        }
        single_tile = sorted({r["image"] for r in rows if r["tiles"] == 1})
        summary.append(
            {
                "tile": tile,
                "target_db": target_db,
                "chosen_halo": chosen,
                "chosen_overhead_nominal": nominal_overhead(tile, chosen) if chosen is not None else None,
                "max_err": max_err,
                "halo_by_error": by_error,
                "halo_by_error_overhead_nominal": nominal_overhead(tile, by_error) if by_error is not None else None,
                "per_image_first_halo": per_image,
                "images_without_seams": single_tile,
                "curve": curve,
            }
        )
    return summary


def tables(data: dict[str, Any]) -> tuple[str, str]:
    """(per-image Markdown table, summary Markdown table)."""
    halos = data["settings"]["halos"]
    per_image_rows = []
    for r in data["results"]:
        per_image_rows.append(
            [
                r["image"],
                r["tile"],
                r["halo"],
                fmt_float(r["psnr_db"]),
                f"{r['max_abs_err']:.3g}",
                f"{100 * r['uint8_mismatch']:.3g}%",
                r["tiles"],
                f"{r['overhead_actual']:.3f}",
                f"{r['seconds']:.2f}",
            ]
        )
    per_image = markdown_table(
        ["image", "tile", "halo", "PSNR dB", "max abs err", "uint8 differ", "tiles", "overhead", "s"], per_image_rows
    )
    headers = ["halo"]
    for s in data["summary"]:
        t = s["tile"]
        headers += [
            f"T={t} min PSNR dB",
            f"T={t} max abs err",
            f"T={t} uint8 differ",
            f"T={t} overhead (nominal / actual)",
        ]
    rows = []
    for i, halo in enumerate(halos):
        row: list[Any] = [halo]
        for s in data["summary"]:
            c = s["curve"][i]
            mark = " ✓" if s["chosen_halo"] == halo else ""
            err_mark = " ✓" if s["halo_by_error"] == halo else ""
            row += [
                fmt_float(c["min_psnr_db"]) + mark,
                f"{c['max_abs_err']:.3g}" + err_mark,
                f"{100 * c['max_uint8_mismatch']:.3g}%",
                f"{c['overhead_nominal']:.3f} / {c['overhead_actual']:.3f}",
            ]
        rows.append(row)
    return per_image, markdown_table(headers, rows)


def choice_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for s in data["summary"]:
        t, target = s["tile"], s["target_db"]
        per = ", ".join(f"{k}: {v if v is not None else 'never'}" for k, v in s["per_image_first_halo"].items())
        if s["chosen_halo"] is None:
            lines.append(
                f"T={t}: no halo up to {max(data['settings']['halos'])} keeps every image >= {target:g} dB "
                f"(first halo per image: {per})"
            )
        else:
            h = s["chosen_halo"]
            lines.append(
                f"T={t}: smallest halo keeping every image >= {target:g} dB: {h} "
                f"(compute overhead (T+2h)^2/T^2 = {s['chosen_overhead_nominal']:.3f}, "
                f"+{100 * (s['chosen_overhead_nominal'] - 1):.1f}%; first halo per image: {per})"
            )
        e = s["halo_by_error"]
        if e is None:
            lines.append(
                f"T={t}: no halo up to {max(data['settings']['halos'])} keeps the max abs error <= {s['max_err']:g}"
            )
        else:
            lines.append(
                f"T={t}: smallest halo keeping the max abs error <= {s['max_err']:g} grey levels: {e} "
                f"(overhead {s['halo_by_error_overhead_nominal']:.3f}, "
                f"+{100 * (s['halo_by_error_overhead_nominal'] - 1):.1f}%)"
            )
        if s["images_without_seams"]:
            lines.append(f"  note: {', '.join(s['images_without_seams'])} fit in one tile at T={t}: no seams measured")
    return lines


def plot(data: dict[str, Any], path: Path) -> Path | None:
    plt = import_pyplot()
    if plt is None:
        return None
    halos = data["settings"]["halos"]
    target = data["settings"]["target_db"]
    finite = [float(r["psnr_db"]) for r in data["results"] if math.isfinite(float(r["psnr_db"]))]
    ceiling = max(finite + [target]) + IDENTICAL_MARGIN_DB
    fig, (ax_p, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, s in enumerate(data["summary"]):
        colour = colours[k % len(colours)]
        rows = [r for r in data["results"] if r["tile"] == s["tile"]]
        for name in dict.fromkeys(r["image"] for r in rows):
            mine = sorted((r for r in rows if r["image"] == name), key=lambda r: r["halo"])
            ax_p.plot(
                [r["halo"] for r in mine],
                [min(float(r["psnr_db"]), ceiling) for r in mine],
                color=colour,
                alpha=0.3,
                lw=1,
            )
            ax_e.plot(
                [r["halo"] for r in mine], [max(r["max_abs_err"], 1e-7) for r in mine], color=colour, alpha=0.3, lw=1
            )
        curve = s["curve"]
        ax_p.plot(
            halos,
            [min(float(c["min_psnr_db"]), ceiling) for c in curve],
            "o-",
            color=colour,
            lw=2,
            label=f"T={s['tile']} (min over images)",
        )
        ax_e.plot(
            halos,
            [max(c["max_abs_err"], 1e-7) for c in curve],
            "o-",
            color=colour,
            lw=2,
            label=f"T={s['tile']} (max over images)",
        )
        if s["chosen_halo"] is not None:
            ax_p.axvline(s["chosen_halo"], color=colour, ls=":", lw=1)
        if s["halo_by_error"] is not None:
            ax_e.axvline(s["halo_by_error"], color=colour, ls=":", lw=1)
    ax_p.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g} dB")
    ax_p.set(
        xlabel="halo (LR pixels)",
        ylabel="PSNR tiled vs whole image (dB)",
        title=f"PSNR vs halo (top, {ceiling:.0f} dB: identical)",
    )
    ax_e.set(
        xlabel="halo (LR pixels)",
        ylabel="max abs error (grey levels)",
        title="max abs error vs halo (0 drawn at 1e-7)",
        yscale="log",
    )
    max_err = data["settings"]["max_err"]
    ax_e.axhline(max_err, color="k", ls="--", lw=1, label=f"--max-err {max_err:g}")
    for ax in (ax_p, ax_e):
        ax.set_xscale("function", functions=(lambda x: np.log2(np.maximum(x, 0) + 1), lambda y: 2.0**y - 1))
        ax.set_xlim(0, max(halos) * 1.05 if max(halos) > 0 else 1)
        ax.set_xticks(halos)
        ax.set_xticklabels([str(h) for h in halos])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    model = data["model"]
    fig.suptitle(
        f"Tile seams: {Path(model['path']).name} ({model.get('config_name')}), "
        f"{'bicubic ×1/4 LR' if data['settings']['downscale'] else 'photos as LR'}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seams.py",
        description=__doc__.split("\n\n")[0]
        + "\n\nSee the module docstring (top of benchmarks/seams.py) for the method.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model",
        default=None,
        help="an .onnx model or a .safetensors checkpoint (exported to a "
        "temporary ONNX first); default: the bundled runtime/models/eusr-compact-x4.onnx",
    )
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[DEFAULT_DATA],
        help="image folders (not searched recursively) or files (default: data/photos/test)",
    )
    p.add_argument(
        "--tiles", type=parse_int_list, default=",".join(map(str, DEFAULT_TILES)), help="tile sizes, e.g. 64,128"
    )
    p.add_argument("--halos", type=parse_int_list, default=",".join(map(str, DEFAULT_HALOS)), help="halos to measure")
    p.add_argument("--target-db", type=float, default=DEFAULT_TARGET_DB, help="PSNR every image must reach")
    p.add_argument(
        "--max-err",
        type=float,
        default=DEFAULT_MAX_ERR,
        help="second criterion: max abs error (grey levels) no pixel may exceed; 0.5 keeps every uint8 "
        "value within 1 of the whole-image result",
    )
    lr = p.add_mutually_exclusive_group()
    lr.add_argument("--as-lr", dest="downscale", action="store_false", help="use each photo as the LR input (default)")
    lr.add_argument(
        "--downscale",
        dest="downscale",
        action="store_true",
        help="use the MATLAB-bicubic x1/scale image of each photo as the LR input",
    )
    p.set_defaults(downscale=False)
    p.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="centre-crop each LR input to at most this many pixels per side (quick runs)",
    )
    p.add_argument("--batch", type=int, default=4, help="tiles per backend call")
    p.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.onnx exporter for a .safetensors --model",
    )
    add_common_args(p, name="seams")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    if min(args.tiles) < 1:
        parser.error("--tiles must be >= 1")
    if min(args.halos) < 0:
        parser.error("--halos must be >= 0")
    if args.max_size is not None and args.max_size < 1:
        parser.error("--max-size must be >= 1")
    args.halos = sorted(set(args.halos))
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        measured = measure(args)
    except UpscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = {
        "benchmark": "seams",
        "environment": env,
        "settings": {
            "data": [str(d) for d in args.data],
            "downscale": args.downscale,
            "lr_source": "bicubic x1/scale of each photo" if args.downscale else "each photo as the LR input",
            "max_size": args.max_size,
            "tiles": args.tiles,
            "halos": args.halos,
            "target_db": args.target_db,
            "max_err": args.max_err,
            "batch": args.batch,
            "psnr_peak": 255,
            "reference": "whole image as one window with the same halo of mirrored border context (tile >= image size), float32 output",
        },
        **measured,
    }
    data["summary"] = summarise(data["results"], args.tiles, args.halos, args.target_db, args.max_err)
    per_image, summary_table = tables(data)
    lines = choice_lines(data)
    png = plot(data, args.out / f"{args.name}.png")
    markdown = "\n\n".join(
        [
            f"# Tile seams: {Path(data['model']['path']).name}",
            f"{data['environment']['date']}, commit {commit_label(data['environment'])}, "
            f"{data['environment']['host']['cpu']}; LR: {data['settings']['lr_source']}; "
            f"reference: {data['settings']['reference']}.",
            "\n".join(f"- {line}" for line in lines),
            "## Curve (min PSNR / max error over images per halo; ✓ = smallest halo meeting the criterion)",
            summary_table,
            "## Per image",
            per_image,
            *([f"![PSNR vs halo]({png.name})"] if png else []),
        ]
    )
    paths = write_results(args.out, args.name, data, markdown)
    print()
    print("\n".join(lines))
    print(f"wrote {paths['json']}, {paths['md']}" + (f", {png}" if png else ""))
    print()
    print(summary_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
