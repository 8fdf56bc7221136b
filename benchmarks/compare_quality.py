"""Compare quality results of several models against one baseline, image by image.

    python -m benchmarks.compare_quality runs/eval/phase1/evaluate.json \\
        runs/eval/seed0/evaluate.json runs/eval/seed1/evaluate.json --labels "seed 0" "seed 1" \\
        --out benchmarks/results --name perceptual_seeds

Takes the JSON files written by ``train.evaluate`` or ``benchmarks/quality.py`` (the first
is the baseline, e.g. the phase-1 model; the others, e.g. phase-3 runs of several seeds)
and writes ``<name>.md`` (per image: each model's value and its change from the baseline;
means; on how many images each model moved the right way), ``<name>.json`` and
``<name>.png`` (the changes as grouped bars, one panel per metric). A mean alone hides what
one image can do to it: the per-image view is the point.

Every file must score the same images (matched by dataset and image name); otherwise the
comparison is refused, naming the file and the images it lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BenchmarkError,
    HelpFormatter,
    add_allow_dirty,
    add_out_args,
    environment,
    fmt_float,
    import_pyplot,
    markdown_table,
    require_clean_tree,
    results_dir,
    write_results,
)

__all__ = ["METRICS", "load_scores", "compare", "main"]

# key in the quality JSON -> (label, digits, lower is better)
METRICS: dict[str, tuple[str, int, bool]] = {
    "psnr_y": ("PSNR-Y (dB)", 2, False),
    "ssim_y": ("SSIM-Y", 4, False),
    "niqe": ("NIQE", 3, True),
}


def load_scores(path: Path, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """{"dataset/image": {metric: model value}} of one quality JSON."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"{path}: not a readable JSON file ({exc})") from None
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, list) or not datasets:
        raise BenchmarkError(
            f"{path}: expected the JSON of train.evaluate or benchmarks/quality.py (a 'datasets' list)"
        )
    out: dict[str, dict[str, float]] = {}
    for ds in datasets:
        for row in ds.get("images", []):
            key = f"{ds.get('name', '?')}/{row.get('image', '?')}"
            missing = [m for m in metrics if not isinstance(row.get(f"{m}_model"), (int, float))]
            if missing:
                raise BenchmarkError(f"{path}: image {key} has no model value for {', '.join(missing)}")
            out[key] = {m: float(row[f"{m}_model"]) for m in metrics}
    if not out:
        raise BenchmarkError(f"{path}: no scored images")
    return out


def compare(
    base: dict[str, dict[str, float]], runs: dict[str, dict[str, dict[str, float]]], metrics: Sequence[str]
) -> dict[str, Any]:
    """Per-image values and changes from ``base``, means, and how many images improved."""
    images = list(base)
    result: dict[str, Any] = {"images": images, "metrics": list(metrics), "baseline": {}, "runs": {}}
    for m in metrics:
        result["baseline"][m] = {
            "values": [base[i][m] for i in images],
            "mean": sum(base[i][m] for i in images) / len(images),
        }
    for label, scores in runs.items():
        entry: dict[str, Any] = {}
        for m in metrics:
            lower = METRICS[m][2]
            values = [scores[i][m] for i in images]
            deltas = [v - base[i][m] for v, i in zip(values, images)]
            mean = sum(values) / len(values)
            entry[m] = {
                "values": values,
                "deltas": deltas,
                "mean": mean,
                "mean_delta": mean - result["baseline"][m]["mean"],
                "improved": sum(1 for d in deltas if (d < 0 if lower else d > 0)),
            }
        result["runs"][label] = entry
    return result


def _markdown(result: dict[str, Any], labels: Sequence[str], base_label: str, sources: dict[str, str]) -> str:
    lines = [f"# Per-image comparison against {base_label}", ""]
    lines += [f"- {label}: `{src}`" for label, src in sources.items()]
    for m in result["metrics"]:
        name, digits, lower = METRICS[m]
        headers = ["image", base_label] + [h for label in labels for h in (label, f"Δ {label}")]
        rows = []
        for k, image in enumerate(result["images"]):
            row = [image, fmt_float(result["baseline"][m]["values"][k], digits)]
            for label in labels:
                r = result["runs"][label][m]
                row += [fmt_float(r["values"][k], digits), f"{r['deltas'][k]:+.{digits}f}"]
            rows.append(row)
        mean = ["**mean**", fmt_float(result["baseline"][m]["mean"], digits)]
        for label in labels:
            r = result["runs"][label][m]
            mean += [fmt_float(r["mean"], digits), f"{r['mean_delta']:+.{digits}f}"]
        rows.append(mean)
        better = "lower" if lower else "higher"
        lines += ["", f"## {name} ({better} is better)", "", markdown_table(headers, rows), ""]
        n = len(result["images"])
        lines.append(
            "Improved on: "
            + ", ".join(f"{label} {result['runs'][label][m]['improved']} of {n}" for label in labels)
            + "."
        )
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], labels: Sequence[str], base_label: str, path: Path) -> Path | None:
    plt = import_pyplot()
    if plt is None:
        return None
    metrics = result["metrics"]
    images = result["images"]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(6.0, 1.3 * len(images) * len(metrics) + 2), 4.2), squeeze=False
    )
    width = 0.8 / max(1, len(labels))
    for ax, m in zip(axes[0], metrics):
        name, _, lower = METRICS[m]
        for j, label in enumerate(labels):
            xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(images))]
            ax.bar(xs, result["runs"][label][m]["deltas"], width, label=label)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(images)))
        ax.set_xticklabels([i.split("/", 1)[-1] for i in images], rotation=30, ha="right")
        ax.set_title(f"Δ {name} vs {base_label} ({'down' if lower else 'up'} is better)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_quality", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    p.add_argument("baseline", type=Path, help="quality JSON of the reference model (train.evaluate / quality.py)")
    p.add_argument("runs", type=Path, nargs="+", help="quality JSONs of the models compared with it")
    p.add_argument("--labels", nargs="+", default=None, help="one name per run (default: each file's folder name)")
    p.add_argument("--baseline-label", default="baseline", help="name of the baseline in tables and plot")
    p.add_argument("--metrics", nargs="+", choices=list(METRICS), default=["niqe", "psnr_y"], help="metrics compared")
    add_out_args(p, what="folder for <name>.md, .json, .png")
    p.add_argument("--name", default="compare_quality", help="stem of the result files")
    add_allow_dirty(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    try:
        git = require_clean_tree(args.allow_dirty)
        labels = args.labels or [p.parent.name for p in args.runs]
        if len(labels) != len(args.runs):
            raise BenchmarkError(f"--labels: {len(labels)} names for {len(args.runs)} runs; give one per run")
        if len(set(labels)) != len(labels):
            raise BenchmarkError(f"--labels: names must differ, got {labels}")
        base = load_scores(args.baseline, args.metrics)
        runs = {}
        for label, path in zip(labels, args.runs):
            scores = load_scores(path, args.metrics)
            lacking = sorted(set(base) - set(scores))
            if lacking:
                raise BenchmarkError(f"{path}: lacks images the baseline {args.baseline} scores: {', '.join(lacking)}")
            runs[label] = scores
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = compare(base, runs, args.metrics)
    sources = {args.baseline_label: str(args.baseline), **{label: str(p) for label, p in zip(labels, args.runs)}}
    result["sources"] = sources
    result["environment"] = environment(git=git)
    paths = write_results(args.out, args.name, result, _markdown(result, labels, args.baseline_label, sources))
    png = _plot(result, labels, args.baseline_label, args.out / f"{args.name}.png")
    print(f"wrote {paths['md']}, {paths['json']}" + (f", {png}" if png else ""))
    for m in args.metrics:
        name = METRICS[m][0]
        print(
            f"  {name}: "
            + "; ".join(
                f"{label} {result['runs'][label][m]['mean_delta']:+.3f} "
                f"({result['runs'][label][m]['improved']}/{len(result['images'])} improved)"
                for label in labels
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
