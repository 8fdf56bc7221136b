"""Largest activation magnitudes of a float32 EUSR path on real photos: the FP16 overflow margin.

    python export/activation_range.py                       # bundled model, data/photos/test, ×4
    python export/activation_range.py CKPT --data DIR --scale 2 --out /tmp/results

An fp16 graph (``--precision fp16`` of ``export/to_onnx.py``) stores every tensor between
its float32 edges in float16, whose largest finite value is 65504; beyond that a value
becomes inf and the output NaN. This runs the float32 PyTorch model on whole images (no
tiling, no crop) with a forward hook on every module of the path, and records the largest
|output| of each (convolutions before their ReLU, residual sums, whole blocks), plus the
centred input (``x - mean``, the first fp16 tensor). The margin is 65504 / max: how many
times larger an activation could get before fp16 overflows. Results go to
``<out>/<name>.json`` and ``.md`` with the environment (versions, CPU, commit) as every
benchmark records it.

Exit status: 0 success, 2 bad arguments or input (missing checkpoint, image folder
without images, scale not in the model).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from export.fp16 import FP16_MAX
from export.load import load_source
from runtime.errors import InvalidArgumentError
from runtime.results import (
    DirtyTreeError,
    add_allow_dirty,
    environment,
    fmt_float,
    markdown_table,
    require_clean_tree,
    write_results,
)
from runtime.utils import DefaultsHelpFormatter, file_sha256, list_images
from train.checkpoint import CheckpointError
from train.models.eusr import EUSR

__all__ = ["LayerRange", "ActivationRange", "path_modules", "measure", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"
DEFAULT_DATA = REPO_ROOT / "data" / "photos" / "test"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
INPUT_LAYER = "input - mean"


@dataclass
class LayerRange:
    """Largest |value| one layer produced, and on which image."""

    name: str
    kind: str
    max_abs: float = 0.0
    image: str | None = None
    nonfinite: int = 0


@dataclass
class ActivationRange:
    """Per-layer maxima (in execution order) and per-image summaries of one model path."""

    scale: int
    layers: list[LayerRange] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overall(self) -> LayerRange:
        return max(self.layers, key=lambda layer: layer.max_abs)

    @property
    def margin(self) -> float:
        """65504 / largest |activation| (inf when every activation is 0)."""
        top = self.overall.max_abs
        return math.inf if top == 0 else FP16_MAX / top


def path_modules(model: EUSR, scale: int) -> list[tuple[str, nn.Module]]:
    """Every module the ``scale`` path runs, with its name in the model (containers too,
    since their outputs are the residual sums)."""
    key = model._check_scale(scale)
    roots = ("first", f"scale_features.{key}", "shared", f"upscalers.{key}", f"outputs.{key}")
    return [(name, m) for name, m in model.named_modules() if any(name == r or name.startswith(r + ".") for r in roots)]


def _extremes(t: torch.Tensor) -> tuple[float, int]:
    """max |t| without a full-size temporary (aminmax), and how many values are not finite."""
    lo, hi = torch.aminmax(t.detach())
    top = max(abs(float(lo)), abs(float(hi)))
    bad = 0 if math.isfinite(top) else int((~torch.isfinite(t)).sum())
    return top, bad


def _load_rgb(path: Path) -> np.ndarray:
    """Whole image as uint8 RGB (gray replicated), as the exporter's validation reads photos."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def measure(
    model: EUSR, images: Sequence[Path], *, scale: int = 4, echo: Callable[[str], None] = lambda line: None
) -> ActivationRange:
    """Run the float32 ``scale`` path on each whole image and collect the maxima."""
    named = path_modules(model, scale)
    layers = {INPUT_LAYER: LayerRange(INPUT_LAYER, "Sub")}
    layers.update({name: LayerRange(name, type(m).__name__) for name, m in named})
    this_image: dict[str, float] = {}
    first_order: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            top, bad = _extremes(output)
            this_image[name] = max(this_image.get(name, 0.0), top)
            layers[name].nonfinite += bad

        return record

    result = ActivationRange(scale=scale)
    handles = [m.register_forward_hook(hook(name)) for name, m in named]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        net = model.path(scale)
        for path in images:
            rgb = _load_rgb(path)
            t0 = time.perf_counter()
            x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()
            this_image.clear()
            this_image[INPUT_LAYER], _ = _extremes(x - model.rgb_mean)
            with torch.inference_mode():
                y = net(x)
            lo, hi = torch.aminmax(y)
            if not first_order:
                first_order.extend(this_image)
            for name, top in this_image.items():
                entry = layers[name]
                if entry.image is None or top > entry.max_abs:
                    entry.max_abs, entry.image = top, path.name
            top_name = max(this_image, key=this_image.__getitem__)
            top = this_image[top_name]
            result.images.append(
                {
                    "image": path.name,
                    "size": [int(rgb.shape[1]), int(rgb.shape[0])],
                    "max_abs": top,
                    "layer": top_name,
                    "fp16_margin": math.inf if top == 0 else FP16_MAX / top,
                    "output_min": float(lo),
                    "output_max": float(hi),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            echo(
                f"{path.name}: {rgb.shape[1]}x{rgb.shape[0]} in {time.perf_counter() - t0:.1f} s, "
                f"max |activation| {top:.1f} at {top_name}, output {float(lo):.1f}..{float(hi):.1f}"
            )
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.train(training)
    # Execution (completion) order: a block's output comes after its layers', and among
    # equal maxima the first producer is the one named.
    order = list(dict.fromkeys([INPUT_LAYER, *first_order, *layers]))
    result.layers = [layers[name] for name in order]
    return result


def to_json(result: ActivationRange) -> dict[str, Any]:
    top = result.overall
    return {
        "scale": result.scale,
        "overall": {
            "max_abs": top.max_abs,
            "layer": top.name,
            "image": top.image,
            "fp16_max": FP16_MAX,
            "fp16_margin": result.margin,
            "fp16_margin_bits": math.log2(result.margin) if result.margin > 0 else None,
        },
        "nonfinite_values": sum(layer.nonfinite for layer in result.layers),
        "images": result.images,
        "layers": [
            {
                "name": layer.name,
                "type": layer.kind,
                "max_abs": layer.max_abs,
                "image": layer.image,
                "fp16_margin": math.inf if layer.max_abs == 0 else FP16_MAX / layer.max_abs,
            }
            for layer in result.layers
        ],
    }


def _shown(path: str) -> str:
    """A path as the Markdown shows it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def to_markdown(result: ActivationRange, meta: dict[str, Any], env: dict[str, Any]) -> str:
    top = result.overall
    lines = [
        f"# Activation range, x{result.scale} path, float32 (FP16 overflow margin)",
        "",
        f"Model `{_shown(meta['checkpoint'])}` (config {meta['config_name']!r}, sha256 {meta['sha256'][:12]}…), "
        f"whole images from `{_shown(meta['data'])}`, PyTorch {env['versions']['torch']} on {env['host']['cpu']}, "
        f"commit {str(env['git']['commit'])[:10]}{' (dirty)' if env['git']['dirty'] else ''}.",
        "",
        f"**Largest |activation|: {top.max_abs:.1f}** ({top.name}, {top.image}); fp16 max {FP16_MAX:g}: "
        f"**margin {result.margin:.0f}×** ({math.log2(result.margin):.1f} binades). "
        "Every tensor between the fp16 graph's float32 edges is one of the layers below "
        "(the EUM's stack/depth-to-space only moves values).",
        "",
        "## Per image",
        "",
        markdown_table(
            ["image", "size", "max abs", "layer", "fp16 margin", "output min", "output max", "s"],
            [
                [
                    r["image"],
                    f"{r['size'][0]}x{r['size'][1]}",
                    fmt_float(r["max_abs"], 1),
                    r["layer"],
                    f"{r['fp16_margin']:.0f}×",
                    fmt_float(r["output_min"], 1),
                    fmt_float(r["output_max"], 1),
                    fmt_float(r["seconds"], 1),
                ]
                for r in result.images
            ],
        ),
        "",
        "## Per layer (execution order; containers give the residual sums)",
        "",
        markdown_table(
            ["layer", "type", "max abs", "image", "fp16 margin"],
            [
                [
                    layer.name,
                    layer.kind,
                    fmt_float(layer.max_abs, 2),
                    layer.image or "-",
                    "inf" if layer.max_abs == 0 else f"{FP16_MAX / layer.max_abs:.0f}×",
                ]
                for layer in result.layers
            ],
        ),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="activation_range.py",
        description="Largest |activation| per layer of a float32 EUSR path on whole photos, and the "
        "fp16 overflow margin (65504 / max). Writes <out>/<name>.json and .md.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "checkpoint", type=Path, nargs="?", default=DEFAULT_CHECKPOINT, help="EUSR checkpoint (.safetensors)"
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of photos (whole images are used)")
    p.add_argument("--scale", type=int, default=4, help="which path of the model")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON and Markdown results")
    p.add_argument("--name", default="activation_range", help="stem of the result files")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    add_allow_dirty(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        images = list_images(args.data, what="--data")
    except InvalidArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.checkpoint.is_file():
        print(f"error: {args.checkpoint}: no such checkpoint file (expected an EUSR .safetensors)", file=sys.stderr)
        return 2
    try:
        source = load_source(args.checkpoint)
        model = source.model
        model._check_scale(args.scale)
    except (CheckpointError, ValueError) as e:
        print(
            f"error: {args.checkpoint}: {e} (--scale {args.scale})" if isinstance(e, ValueError) else f"error: {e}",
            file=sys.stderr,
        )
        return 2
    try:
        git = require_clean_tree(args.allow_dirty, root=Path(__file__).resolve().parents[1])
    except DirtyTreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = environment(git=git)
    env["threads"] = {"torch_intra_op": torch.get_num_threads()}
    result = measure(model, images, scale=args.scale, echo=print)
    meta = {
        "checkpoint": str(args.checkpoint),
        "sha256": file_sha256(args.checkpoint),
        "config_name": source.config_name,
        "config": model.config.to_dict(),
        "data": str(args.data),
        "precision": "float32 (PyTorch)",
    }
    data = {"environment": env, "model": meta, **to_json(result)}
    paths = write_results(args.out, args.name, data, to_markdown(result, meta, env))
    top = result.overall
    print(f"largest |activation| {top.max_abs:.1f} ({top.name}, {top.image}); fp16 margin {result.margin:.0f}x")
    print(f"wrote {paths['json']} and {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
