"""INT8 accuracy table: each ModelOpt calibration method (and first/last conv kept in fp32)
against the float32 model on the held-out photos, through ONNX Runtime CPU.

    python export/to_onnx.py models/eusr-compact.safetensors -o /tmp/m.onnx --halo 8
    python -m calibration collect --images data/photos/train -o /tmp/calib.npz \
        --model /tmp/m.onnx --samples 48 --tile 56 --halo 8 --flips
    python -m benchmarks.int8_gate /tmp/m.onnx --data /tmp/calib.npz
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from calibration.cli import DEFAULT_TEST_IMAGES
from calibration.collect import load_npz
from calibration.gate import format_table, run_gate
from calibration.quantize import quantize_model

FIRST_LAST = ["node_conv2d$", "node_conv2d_46$"]
SENSITIVE = [f"node_conv2d{s}$" for s in ("_46", "_21", "_24", "", "_27", "_42", "_39")]
VARIANTS: dict[str, dict] = {
    "entropy": {"method": "entropy"},
    "max": {"method": "max"},
    "entropy, first+last conv fp32": {"method": "entropy", "keep_fp": FIRST_LAST},
    "max, first+last conv fp32": {"method": "max", "keep_fp": FIRST_LAST},
    "entropy, float residuals": {"method": "entropy", "float_residual": True},
    "max, float residuals": {"method": "max", "float_residual": True},
    "entropy, float residuals, first+last conv fp32": {"method": "entropy", "float_residual": True, "keep_fp": FIRST_LAST},
    "max, float residuals, first+last conv fp32": {"method": "max", "float_residual": True, "keep_fp": FIRST_LAST},
    # The 7 convs ranked worst by `python -m calibration sensitivity` (entropy scales): first,
    # shared, outputs and four upsampler stages.
    "entropy, float residuals, 7 sensitive convs fp32": {"method": "entropy", "float_residual": True, "keep_fp": SENSITIVE},
}


def ort_ms(path: Path, window: int = 144, runs: int = 15) -> float:
    """Median ms of one float32 1×3×window² inference on ONNX Runtime CPU, 2 threads."""
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).uniform(0, 255, (1, 3, window, window)).astype(np.float32)
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.log_severity_level = 2, 3
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(3):
        s.run(None, {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--test-images", type=Path, default=DEFAULT_TEST_IMAGES)
    ap.add_argument("--sensitivity", type=Path, default=None,
                    help="JSON of `python -m calibration sensitivity --json` to quote (top 10)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_gate")
    args = ap.parse_args()
    _, data_meta = load_npz(args.data)
    results = []
    fp32_ms = ort_ms(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in VARIANTS.items():
            q = Path(tmp) / "q.onnx"
            t = time.perf_counter()
            quantize_model(args.model, args.data, q, **kw)
            secs = time.perf_counter() - t
            res = run_gate(args.model, q, args.test_images)
            ms = ort_ms(q)
            print(f"== {name} (quantized in {secs:.1f} s, {ms:.1f} ms vs {fp32_ms:.1f} ms float32)\n{format_table(res)}\n")
            results.append({"variant": name, **kw, "quantize_s": round(secs, 1), "ort_cpu_ms": round(ms, 1),
                            **json.loads(res.to_json())})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sens = json.loads(args.sensitivity.read_text()) if args.sensitivity else []
    doc = {"model": str(args.model), "calibration_data": data_meta, "test_images": str(args.test_images),
           "ort_cpu_ms_float32": round(fp32_ms, 1), "results": results, "sensitivity_entropy": sens}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# INT8 (ModelOpt 0.47 Q/DQ, ONNX Runtime CPU) vs float32 on data/photos/test",
        "",
        f"Calibration: {data_meta.get('samples')} windows of {data_meta.get('window')}² LR px from "
        f"{data_meta.get('images')} (seed {data_meta.get('seed')}, flips {data_meta.get('flips')}). "
        "Gate floors: worst-image PSNR vs float32 >= 40 dB, mean PSNR-Y loss <= 0.3 dB. ORT CPU ms: "
        f"median of 15 runs of one 1x3x144x144 float32 window, 2 threads (float32 model: {fp32_ms:.1f} ms); "
        "ONNX Runtime runs the Q/DQ placement meant for TensorRT, no integer-kernel variant.",
        "",
        "| variant | PSNR vs fp32, worst (dB) | PSNR-Y fp32 | PSNR-Y int8 | PSNR-Y loss (dB) "
        "| worst image loss (dB) | other images' max loss (dB) | max abs err | NaN | gate | ORT CPU ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        losses = sorted(((x["psnr_y_fp32"] - x["psnr_y_int8"], x["image"]) for x in r["rows"]), reverse=True)
        lines.append(f"| {r['variant']} | {r['min_psnr_vs_fp32']:.2f} | {r['mean_psnr_y_fp32']:.3f} | "
                     f"{r['mean_psnr_y_int8']:.3f} | {r['psnr_y_loss']:.3f} | {losses[0][0]:.3f} ({losses[0][1]}) | "
                     f"{losses[1][0]:.3f} | {r['max_abs_error']:.2f} | "
                     f"{r['nan_count']} | {'pass' if r['passed'] else 'FAIL'} | {r['ort_cpu_ms']:.1f} |")
    if sens:
        lines += ["", "Sensitivity (entropy scales; mean PSNR vs float32 with only that node's Q/DQ "
                  "inputs kept, worst 10 of " + str(len(sens)) + "):", "",
                  "| node | PSNR vs fp32 (dB) |", "|---|---|"]
        lines += [f"| {x['layer']} | {x['psnr_vs_fp32']:.2f} |" for x in sens[:10]]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
