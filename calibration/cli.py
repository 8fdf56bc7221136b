"""``python -m calibration {collect,quantize,gate,sensitivity,bundle}``. Exit status: 0 ok, 1 gate failed, 2 bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from runtime.model_info import ModelIO

from .collect import CalibrationError, collect, read_model_info, save_npz
from .gate import DEFAULT_MAX_LOSS, DEFAULT_MIN_PSNR, GATE_BACKENDS, format_table, run_gate
from .quantize import DEFAULT_AUTO_KEEP_DB, DEFAULT_MAX_KEEP

__all__ = ["main"]

DEFAULT_TEST_IMAGES = Path(__file__).resolve().parent.parent / "data" / "photos" / "test"
DEFAULT_TRAIN_IMAGES = DEFAULT_TEST_IMAGES.parent / "train"


def _add_gate_flags(p: argparse.ArgumentParser, *, json: bool = True) -> None:
    p.add_argument(
        "--test-images",
        type=Path,
        default=DEFAULT_TEST_IMAGES,
        help="held-out HR photos for the gate (default: %(default)s)",
    )
    p.add_argument(
        "--min-psnr",
        type=float,
        default=DEFAULT_MIN_PSNR,
        help="floor of INT8-vs-float32 PSNR, worst image, dB (default: %(default)s)",
    )
    p.add_argument(
        "--max-loss",
        type=float,
        default=DEFAULT_MAX_LOSS,
        help="allowed mean PSNR-Y loss vs ground truth, dB (default: %(default)s)",
    )
    if json:
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
    g.add_argument(
        "--io", choices=[m.value for m in ModelIO], default=None, help="input layout to write (default: float32-nchw)"
    )
    g.add_argument("--model", type=Path, default=None, help="ONNX model whose metadata gives io/scale/input name")

    q = sub.add_parser("quantize", help="ModelOpt INT8 Q/DQ model, then the accuracy gate")
    q.add_argument("model", type=Path, help="float32 ONNX from export/to_onnx.py")
    q.add_argument("--data", type=Path, required=True, help=".npz from `collect`")
    q.add_argument("-o", "--output", type=Path, required=True, help="Q/DQ ONNX to write")
    q.add_argument("--method", default="entropy", help="entropy or max (default: %(default)s)")
    q.add_argument(
        "--keep-fp",
        nargs="+",
        default=[],
        metavar="LAYER",
        help="left unquantized: node names (regex, e.g. 'node_conv2d_46$') or module "
        "names (e.g. model.first 'model.upscalers.4.0.stages.0.conv')",
    )
    q.add_argument(
        "--exclude-op",
        nargs="+",
        default=[],
        metavar="OP",
        help="op types left unquantized, e.g. Add (the residual adds)",
    )
    q.add_argument(
        "--auto-keep",
        type=float,
        default=DEFAULT_AUTO_KEEP_DB,
        metavar="DB",
        help="keep the most sensitive layers in high precision, one at a time, until PSNR vs "
        "float32 on the calibration windows reaches DB (default: %(default)s)",
    )
    q.add_argument(
        "--max-keep",
        type=int,
        default=DEFAULT_MAX_KEEP,
        metavar="N",
        help="at most N layers kept by --auto-keep (default: %(default)s)",
    )
    q.add_argument("--no-auto-keep", action="store_true", help="quantize every layer ModelOpt quantizes")
    q.add_argument(
        "--quantize-residuals",
        action="store_true",
        help="residual Adds read the conv's Q/DQ pair (ModelOpt's placement) instead of the float tensor",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument(
        "--high-precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="dtype of the unquantized parts (default: %(default)s)",
    )
    q.add_argument("--no-gate", action="store_true", help="skip the accuracy gate")
    _add_gate_flags(q)

    t = sub.add_parser("gate", help="accuracy gate of an INT8 model vs its float32 source")
    t.add_argument("reference", type=Path, help="float32 ONNX")
    t.add_argument("candidate", type=Path, help="INT8 Q/DQ ONNX")
    t.add_argument(
        "--backend",
        choices=GATE_BACKENDS,
        default="onnxruntime",
        help="CPU backend that runs both models (openvino runs the Q/DQ convolutions as INT8 kernels)",
    )
    _add_gate_flags(t)

    v = sub.add_parser(
        "sensitivity", help="PSNR vs float32 with only one layer quantized, per layer, on the calibration windows"
    )
    v.add_argument("model", type=Path, help="float32 ONNX")
    v.add_argument(
        "--data",
        type=Path,
        required=True,
        help=".npz from `collect`: the windows to score on (and to calibrate with, without --quantized)",
    )
    v.add_argument("--quantized", type=Path, default=None, help="an existing Q/DQ model to rank")
    v.add_argument("--method", default="entropy", help="entropy or max (default: %(default)s)")
    v.add_argument("--quantize-residuals", action="store_true", help="as for quantize")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--json", type=Path, default=None, help="where to write the rows as JSON")

    b = sub.add_parser(
        "bundle",
        help="remake the bundled INT8 model from the bundled float32 one (collect, quantize, gate, install)",
        description="Calibrate on --images with the settings that passed the gate, quantize, gate on "
        "--test-images, and replace the INT8 model and its .gate.json only if the gate passes.",
    )
    b.add_argument("--model", type=Path, default=None, help="float32 ONNX (default: the bundled one)")
    b.add_argument("-o", "--output", type=Path, default=None, help="INT8 ONNX to write (default: the bundled one)")
    b.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_TRAIN_IMAGES,
        help="calibration photos, never the gate's (default: %(default)s)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_gate_flags(b, json=False)  # the gate JSON lies beside the INT8 model
    return ap


def _gate(reference: Path, candidate: Path, args: argparse.Namespace) -> int:
    res = run_gate(
        reference,
        candidate,
        args.test_images,
        min_psnr=args.min_psnr,
        max_loss=args.max_loss,
        backend=getattr(args, "backend", "onnxruntime"),
    )
    print(format_table(res))
    out = args.json or candidate.with_suffix(".gate.json")
    out.write_text(res.to_json() + "\n")
    print(f"wrote {out}")
    return 0 if res.passed else 1


def _sensitivity(args: argparse.Namespace) -> int:
    import json
    import tempfile

    import onnx

    from .collect import load_npz
    from .quantize import _check_data, quantize_model
    from .sensitivity import WindowScorer, layer_labels, sensitivity

    with tempfile.TemporaryDirectory() as tmp:
        q = args.quantized
        if q is None:
            q = Path(tmp) / "q.onnx"
            quantize_model(
                args.model,
                args.data,
                q,
                method=args.method,
                auto_keep_db=None,
                float_residual=not args.quantize_residuals,
            )
        elif not q.is_file():
            raise CalibrationError(f"--quantized {q}: file not found")
        windows = _check_data(load_npz(args.data)[0], args.data, args.model)
        score = WindowScorer(args.model, windows, read_model_info(args.model).input_name)
        qm = onnx.load(str(q))
        rows = sensitivity(qm, score, progress=not args.no_progress)
    labels = layer_labels(qm)
    for r in rows:
        r["module"] = labels.get(r["layer"], "")
    print(f"{'layer':<22}{'module':<44}{'PSNR vs fp32 (dB), only it INT8':>33}")
    for r in rows:
        print(f"{r['layer']:<22}{r['module']:<44}{r['psnr_vs_fp32']:>33.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # ModelOpt's and the gate's sessions: warnings about unused scales
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
            c = collect(
                args.images,
                samples=args.samples,
                tile=args.tile,
                halo=args.halo,
                scale=scale,
                io=io,
                input_name=name,
                lr_given=args.lr_given,
                flips=args.flips,
                seed=args.seed,
            )
            save_npz(c, args.output)
            print(
                f"wrote {args.output}: {c.input_name} {c.array.dtype} {list(c.array.shape)} "
                f"from {len(c.meta['files'])} images"
            )
            return 0
        if args.cmd == "quantize":
            from .quantize import quantize_model

            prov = quantize_model(
                args.model,
                args.data,
                args.output,
                method=args.method,
                keep_fp=args.keep_fp,
                high_precision=args.high_precision,
                auto_keep_db=None if args.no_auto_keep else args.auto_keep,
                max_keep=args.max_keep,
                exclude_ops=args.exclude_op,
                float_residual=not args.quantize_residuals,
                progress=not args.no_progress,
            )
            print(f"wrote {args.output}: {prov['qdq_nodes']} Q/DQ nodes, {prov['method']}, {prov['samples']} windows")
            auto = prov["auto_keep"]
            if auto is not None:
                kept = ", ".join(f"{n} ({m})" for n, m in zip(auto["layers"], auto["modules"])) or "none"
                print(
                    f"auto-keep: {auto['psnr_all_int8_db']:.2f} dB all INT8 -> {auto['psnr_db']:.2f} dB vs float32 "
                    f"on the calibration windows (target {auto['target_psnr_db']}); kept in "
                    f"{prov['high_precision']}: {kept}"
                )
            return 0 if args.no_gate else _gate(args.model, args.output, args)
        if args.cmd == "gate":
            return _gate(args.reference, args.candidate, args)
        if args.cmd == "bundle":
            from .bundle import bundle_main

            return bundle_main(args)
        return _sensitivity(args)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
