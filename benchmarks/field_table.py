"""The field's table: the bundled model on Set5, Set14 and BSD100 beside the paper's Table 2.

    python benchmarks/field_table.py SRBENCH                   # x2, x4, x8; results in a temporary folder
    python benchmarks/field_table.py SRBENCH --update-results  # benchmarks/results/field_table*.{md,json}
    python benchmarks/field_table.py SRBENCH --scales 4 --x4-model eusr-x4.onnx

SRBENCH is a folder holding ``Set5/``, ``Set14/`` and ``BSD100/`` with their HR images, e.g.
the ``image_SRF_4/*_HR.png`` files of Huang et al.'s SelfExSR release (GitHub
jbhuang0604/SelfExSR, ``data/<set>/image_SRF_4/``; BasicSR's ``GTmod12``/``original``
layouts work too, see ``benchmarks/quality.py``). They are research benchmark data with no
licence of their own: evaluate on them and report, never train on them, never copy them into
the repository (so no comparison strips are written).

Protocol: ``benchmarks/quality.py`` (EUSR_SPEC.md, "Evaluation convention": MATLAB-bicubic LR
of the mod-cropped HR, uint8, PSNR/SSIM on Y with ``scale`` pixels of border cropped, NIQE of
the MATLAB release on the same Y). x4 runs the shipped ONNX model through ``runtime.Upscaler``
(what users run); x2 and x8 run the checkpoint's other paths in PyTorch on the whole image (no
ONNX of them ships). One ``quality.py`` run per scale writes ``<name>_x<scale>.{json,md}``;
the summary with the paper's rows is ``<name>.{json,md}``.

Differences to the paper's bicubic row are measured, not guessed: Set14's ``img_003`` is a
grey image, which this protocol scores as it is (its Y is the image); replicating it to RGB
first, as an RGB-only pipeline does, squeezes its range to 219/255 in Y and raises its PSNR.
The summary reports the set's bicubic mean both ways.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks import quality
from benchmarks.common import (
    REPO_ROOT,
    BenchmarkError,
    HelpFormatter,
    add_allow_dirty,
    add_out_args,
    environment,
    markdown_table,
    require_clean_tree,
    results_dir,
    write_results,
)
from runtime.errors import UpscaleError
from runtime.evaluation import EvaluationOptions, evaluate

SETS = ("Set5", "Set14", "BSD100")
X4_MODEL = REPO_ROOT / "runtime" / "models" / "eusr-compact-x4.onnx"
CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
WHERE_TO_GET = (
    "a folder with Set5/, Set14/ and BSD100/ of HR images, e.g. the data/<set>/image_SRF_4/ folders of "
    "Huang et al.'s SelfExSR release (github.com/jbhuang0604/SelfExSR)"
)

PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    # Choi et al., Neurocomputing 2019, Table 2: x4, PSNR (dB) / SSIM on Y, 4-pixel border
    "Set5": {"bicubic": (28.418, 0.810), "EUSR": (32.352, 0.896), "4PP-EUSR": (31.369, 0.870)},
    "Set14": {"bicubic": (26.091, 0.705), "EUSR": (28.750, 0.786), "4PP-EUSR": (27.969, 0.751)},
    "BSD100": {"bicubic": (25.957, 0.669), "EUSR": (27.674, 0.740), "4PP-EUSR": (26.904, 0.701)},
}
PAPER_NIQE = {"BSD100": {"4PP-EUSR": 3.820}}


def find_sets(root: Path) -> list[Path]:
    """The three set folders under ``root``, or a clear error saying what is missing and where to get it."""
    if not root.is_dir():
        raise BenchmarkError(f"SRBENCH {root}: no such folder; expected {WHERE_TO_GET}")
    missing = [name for name in SETS if not (root / name).is_dir()]
    if missing:
        raise BenchmarkError(f"SRBENCH {root}: no {', '.join(missing)} folder(s) in it; expected {WHERE_TO_GET}")
    return [root / name for name in SETS]


def grey_as_rgb_bicubic(rows: Sequence[Mapping[str, Any]], scale: int) -> tuple[float, float, int]:
    """Bicubic mean PSNR-Y / SSIM-Y of a set with its grey images replicated to RGB before Y is
    taken (the paper's convention), and how many grey images that touched."""
    from runtime.evaluation import load_image_uint8
    from runtime.imresize import imresize
    from runtime.metrics import psnr_y, ssim_y

    psnrs, ssims, grey = [], [], 0
    for row in rows:
        p, s = row["psnr_y_bicubic"], row["ssim_y_bicubic"]
        if row["channels"] == 1:
            grey += 1
            hr = load_image_uint8(row["path"])
            hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
            hr = np.repeat(hr[:, :, None], 3, axis=2)
            bicubic = imresize(imresize(hr, 1.0 / scale), float(scale))
            p, s = psnr_y(bicubic, hr, border=scale), ssim_y(bicubic, hr, border=scale)
        psnrs.append(p)
        ssims.append(s)
    return float(np.mean(psnrs)), float(np.mean(ssims)), grey


def summarise(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per scale and set: the means of the quality runs, the paper's rows and the grey-image check."""
    out: dict[str, Any] = {}
    for scale, data in sorted(runs.items()):
        sets: dict[str, Any] = {}
        for ds in data["datasets"]:
            mean = ds["mean"]
            entry = {
                key: mean.get(key)
                for key in (
                    "images",
                    "psnr_y_bicubic",
                    "psnr_y_model",
                    "psnr_y_gain",
                    "ssim_y_bicubic",
                    "ssim_y_model",
                    "ssim_y_gain",
                    "niqe_bicubic",
                    "niqe_model",
                    "niqe_hr",
                    "niqe_images",
                )
            }
            if scale == 4:
                entry["paper"] = PAPER_TABLE2.get(ds["name"])
                entry["paper_niqe"] = PAPER_NIQE.get(ds["name"])
                p, s, grey = grey_as_rgb_bicubic(ds["images"], scale)
                entry["grey_images"] = grey
                if grey:
                    entry["psnr_y_bicubic_grey_as_rgb"], entry["ssim_y_bicubic_grey_as_rgb"] = p, s
            sets[ds["name"]] = entry
        out[f"x{scale}"] = {"model": data["model"], "sets": sets}
    return out


def _f(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def markdown(data: Mapping[str, Any]) -> str:
    env = data["environment"]
    parts = [
        "# The field's table: Set5, Set14, BSD100",
        f"{env['date']}, commit {env['git']['commit'][:7]}{' (dirty)' if env['git']['dirty'] else ''}, "
        f"{env['host'].get('cpu', '')}. Protocol of benchmarks/quality.py: MATLAB-bicubic LR of the mod-cropped HR, "
        "uint8; PSNR/SSIM on Y with `scale` pixels of border cropped; NIQE (lower is better) on the same Y. Per-image "
        f"tables: {', '.join(f'[{n}.md]({n}.md)' for n in data['runs'])}.",
    ]
    summary = data["summary"]
    if "x4" in summary:
        x4 = summary["x4"]
        rows = []
        for name, e in x4["sets"].items():
            paper = e.get("paper") or {}
            bic = paper.get("bicubic")
            rows.append(
                [
                    name,
                    f"{_f(e['psnr_y_bicubic'], 2)} / {_f(e['ssim_y_bicubic'], 4)}",
                    f"{bic[0]:.3f} / {bic[1]:.3f}" if bic else "-",
                    f"{_f(e['psnr_y_model'], 2)} ({_f(e['psnr_y_gain'], 2, True)}) / {_f(e['ssim_y_model'], 4)}",
                    *(f"{paper[k][0]:.3f} / {paper[k][1]:.3f}" if k in paper else "-" for k in ("EUSR", "4PP-EUSR")),
                    f"{_f(e['niqe_bicubic'], 3)} / {_f(e['niqe_model'], 3)} / {_f(e['niqe_hr'], 3)}",
                ]
            )
        parts += [
            "## ×4, beside the paper's Table 2",
            f"Model: `{x4['model'].get('path')}` ({x4['model'].get('runner')}, {x4['model'].get('backend', 'torch')}, "
            f"halo {x4['model'].get('halo', '-')}). PSNR-Y dB / SSIM-Y; the paper's rows are copied from its Table 2.",
            markdown_table(
                [
                    "set",
                    "bicubic, ours",
                    "bicubic, paper",
                    "bundled model (gain)",
                    "paper EUSR",
                    "paper 4PP-EUSR",
                    "NIQE bicubic / model / HR",
                ],
                rows,
            ),
        ]
        notes = []
        for name, e in x4["sets"].items():
            if e.get("grey_images"):
                paper_bic = (e.get("paper") or {}).get("bicubic")
                notes.append(
                    f"- {name} holds {e['grey_images']} grey image(s), scored as they are (their Y is the image). "
                    f"Replicated to RGB before Y (as an RGB-only pipeline does; it compresses the grey range to "
                    f"219/255), bicubic gives "
                    f"{e['psnr_y_bicubic_grey_as_rgb']:.2f} / {e['ssim_y_bicubic_grey_as_rgb']:.4f} instead of "
                    f"{e['psnr_y_bicubic']:.2f} / {e['ssim_y_bicubic']:.4f}"
                    + (f" (paper {paper_bic[0]:.3f} / {paper_bic[1]:.3f})." if paper_bic else ".")
                )
        if "BSD100" in x4["sets"] and x4["sets"]["BSD100"].get("paper_niqe"):
            notes.append(
                f"- The paper's NIQE (4PP-EUSR, BSD100: {x4['sets']['BSD100']['paper_niqe']['4PP-EUSR']:.3f}) does not "
                "say which channel or crop it used; ours is on Y with the 4-pixel border cropped, so compare NIQE "
                "within this table only."
            )
        parts += notes and ["\n".join(notes)]
    for key in ("x2", "x8"):
        if key not in summary:
            continue
        block = summary[key]
        parts += [
            f"## {key.replace('x', '×')} (the checkpoint's other path)",
            f"Model: `{block['model'].get('path')}` ({block['model'].get('runner')}, whole image). The paper reports "
            "×4 only.",
            markdown_table(
                [
                    "set",
                    "PSNR-Y bicubic",
                    "PSNR-Y model",
                    "gain",
                    "SSIM-Y bicubic",
                    "SSIM-Y model",
                    "NIQE bicubic / model",
                ],
                [
                    [
                        name,
                        _f(e["psnr_y_bicubic"], 2),
                        _f(e["psnr_y_model"], 2),
                        _f(e["psnr_y_gain"], 2, True),
                        _f(e["ssim_y_bicubic"], 4),
                        _f(e["ssim_y_model"], 4),
                        f"{_f(e['niqe_bicubic'], 3)} / {_f(e['niqe_model'], 3)}",
                    ]
                    for name, e in block["sets"].items()
                ],
            ),
        ]
    return "\n\n".join(parts) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="field_table.py", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    p.add_argument("srbench", type=Path, help=f"SRBENCH: {WHERE_TO_GET}")
    p.add_argument("--scales", default="2,4,8", help="scales to measure (comma-separated, of 2, 4, 8)")
    p.add_argument("--x4-model", type=Path, default=X4_MODEL, help="the ×4 ONNX model (runtime.Upscaler)")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="checkpoint whose ×2/×8 paths are measured")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--name", default="field_table", help="stem of the result files")
    add_out_args(p, what="folder for <name>.md, .json and the per-scale <name>_x<scale> files")
    add_allow_dirty(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--scales expects integers such as 2,4,8, got {args.scales!r}")
    if not scales or any(s not in (2, 4, 8) for s in scales):
        parser.error(f"--scales takes 2, 4 and/or 8, got {args.scales!r}")
    out = results_dir(args, parser)
    try:
        env = environment(threads=args.threads, git=require_clean_tree(args.allow_dirty))
        sets = find_sets(args.srbench)
        out.mkdir(parents=True, exist_ok=True)
        runs: dict[int, dict[str, Any]] = {}
        names = []
        for scale in scales:
            name = f"{args.name}_x{scale}"
            model = args.x4_model if scale == 4 else args.checkpoint
            model = model.resolve().relative_to(REPO_ROOT) if model.resolve().is_relative_to(REPO_ROOT) else model
            # quality.py's own options and defaults; the environment (clean tree) was read once, above,
            # so the files written by one scale do not mark the next as dirty
            cmd = ["--model", str(model), "--scale", str(scale), "--data", *map(str, sets), "--strips", "0"]
            cmd += ["--runner", "upscaler" if scale == 4 else "torch"]
            if args.threads is not None:
                cmd += ["--threads", str(args.threads)]
            q = quality._parser().parse_args(cmd)
            print(f"[x{scale}] {model} on {', '.join(s.name for s in sets)}", flush=True)
            options = EvaluationOptions(data=sets, out=out, name=name, scale=scale, strips=0)
            runs[scale] = dict(evaluate(options, lambda q=q: quality.make_runner(q), environment=env).data)
            names.append(name)
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = {
        "benchmark": "field_table",
        "environment": env,
        "settings": {"srbench": str(args.srbench), "scales": scales, "sets": list(SETS)},
        "runs": names,
        "summary": summarise(runs),
    }
    paths = write_results(out, args.name, data, markdown(data))
    print(f"wrote {paths['json']}, {paths['md']}")
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
