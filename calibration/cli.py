"""``python -m calibration {collect,quantize,gate,sensitivity}``. Exit status: 0 ok, 1 gate failed, 2 bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from runtime.model_info import ModelIO

from .collect import CalibrationError, collect, read_model_info, save_npz
from .gate import DEFAULT_MAX_LOSS, DEFAULT_MIN_PSNR, format_table, run_gate

__all__ = ["main"]

DEFAULT_TEST_IMAGES = Path(__file__).resolve().parent.parent / "data" / "photos" / "test"


def _add_gate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-images", type=Path, default=DEFAULT_TEST_IMAGES,
                   help="held-out HR photos for the gate (default: %(default)s)")
    p.add_argument("--min-psnr", type=float, default=DEFAULT_MIN_PSNR,
                   help="floor of INT8-vs-float32 PSNR, worst image, dB (default: %(default)s)")
    p.add_argument("--max-loss", type=float, default=DEFAULT_MAX_LOSS,
                   help="allowed mean PSNR-Y loss vs ground truth, dB (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="where to write the gate's JSON")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m calibration", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("collect", help="sample LR calibration windows from real images")
    c.add_argument("--images", type=Path, required=True, help="folder of HR images (or LR with --lr-given)")
    c.add_argument("-o", "--output", type=Path, required=True, help=".npz to write")
    c.add_argument("--samples", type=int, default=64, help="windows in all (default: %(default)s)")
    c.add_argument("--tile", type=int, default=128, help="engine tile, LR pixels (default: %(default)s)")
    c.add_argument("--halo", type=int, default=8, help="engine halo, LR pixels (default: %(default)s)")
    c.add_argument("--scale", type=int, default=None, help="downscale factor (default: the model's, else 4)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--lr-given", action="store_true", help="the images are LR already: no downscaling")
    c.add_argument("--flips", action="store_true", help="random horizontal/vertical flips")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--io", choices=[m.value for m in ModelIO], default=None,
                   help="input layout to write (default: float32-nchw)")
    g.add_argument("--model", type=Path, default=None, help="ONNX model whose metadata gives io/scale/input name")

    q = sub.add_parser("quantize", help="ModelOpt INT8 Q/DQ model, then the accuracy gate")
    q.add_argument("model", type=Path, help="float32 ONNX from export/to_onnx.py")
    q.add_argument("--data", type=Path, required=True, help=".npz from `collect`")
    q.add_argument("-o", "--output", type=Path, required=True, help="Q/DQ ONNX to write")
    q.add_argument("--method", default="entropy", help="entropy or max (default: %(default)s)")
    q.add_argument("--keep-fp", nargs="+", default=[], metavar="LAYER",
                   help="node names (regex) left unquantized")
    q.add_argument("--exclude-op", nargs="+", default=[], metavar="OP",
                   help="op types left unquantized, e.g. Add (the residual adds)")
    q.add_argument("--float-residual", action="store_true",
                   help="residual Adds read the float tensor, not the conv's Q/DQ pair")
    q.add_argument("--high-precision", choices=["fp32", "fp16"], default="fp32",
                   help="dtype of the unquantized parts (default: %(default)s)")
    q.add_argument("--no-gate", action="store_true", help="skip the accuracy gate")
    _add_gate_flags(q)

    t = sub.add_parser("gate", help="accuracy gate of an INT8 model vs its float32 source")
    t.add_argument("reference", type=Path, help="float32 ONNX")
    t.add_argument("candidate", type=Path, help="INT8 Q/DQ ONNX")
    _add_gate_flags(t)

    v = sub.add_parser("sensitivity", help="PSNR vs float32 with only one layer quantized, per layer")
    v.add_argument("model", type=Path, help="float32 ONNX")
    v.add_argument("--data", type=Path, default=None, help=".npz from `collect` (to quantize first)")
    v.add_argument("--quantized", type=Path, default=None, help="an existing Q/DQ model instead of --data")
    v.add_argument("--method", default="entropy", help="entropy or max (default: %(default)s)")
    v.add_argument("--test-images", type=Path, default=DEFAULT_TEST_IMAGES)
    v.add_argument("--json", type=Path, default=None, help="where to write the rows as JSON")
    return ap


def _gate(reference: Path, candidate: Path, args: argparse.Namespace) -> int:
    res = run_gate(reference, candidate, args.test_images, min_psnr=args.min_psnr, max_loss=args.max_loss)
    print(format_table(res))
    out = args.json or candidate.with_suffix(".gate.json")
    out.write_text(res.to_json() + "\n")
    print(f"wrote {out}")
    return 0 if res.passed else 1


def _sensitivity(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from .quantize import quantize_model
    from .sensitivity import sensitivity

    if (args.data is None) == (args.quantized is None):
        raise CalibrationError("sensitivity: give exactly one of --data (quantize first) or --quantized")
    with tempfile.TemporaryDirectory() as tmp:
        q = args.quantized
        if q is None:
            q = Path(tmp) / "q.onnx"
            quantize_model(args.model, args.data, q, method=args.method)
        rows = sensitivity(args.model, q, args.test_images)
    print(f"{'layer':<28}{'PSNR vs fp32 (dB), only this layer INT8':>42}")
    for r in rows:
        print(f"{r['layer']:<28}{r['psnr_vs_fp32']:>42.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.cmd == "collect":
            if args.model is not None:
                info = read_model_info(args.model)
                if args.scale is not None and args.scale != info.scale:
                    raise CalibrationError(
                        f"--scale {args.scale}: {args.model} is x{info.scale} (expected {info.scale} or no --scale)"
                    )
                io, scale, name = info.io, info.scale, info.input_name
            else:
                io, scale, name = ModelIO(args.io or ModelIO.FLOAT32_NCHW.value), args.scale or 4, "lr"
            c = collect(args.images, samples=args.samples, tile=args.tile, halo=args.halo, scale=scale,
                        io=io, input_name=name, lr_given=args.lr_given, flips=args.flips, seed=args.seed)
            save_npz(c, args.output)
            print(f"wrote {args.output}: {c.input_name} {c.array.dtype} {list(c.array.shape)} "
                  f"from {len(c.meta['files'])} images")
            return 0
        if args.cmd == "quantize":
            from .quantize import quantize_model

            prov = quantize_model(args.model, args.data, args.output, method=args.method,
                                  keep_fp=args.keep_fp, high_precision=args.high_precision,
                                  exclude_ops=args.exclude_op, float_residual=args.float_residual)
            print(f"wrote {args.output}: {prov['qdq_nodes']} Q/DQ nodes, {prov['method']}, "
                  f"{prov['samples']} windows")
            return 0 if args.no_gate else _gate(args.model, args.output, args)
        if args.cmd == "gate":
            return _gate(args.reference, args.candidate, args)
        return _sensitivity(args)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
