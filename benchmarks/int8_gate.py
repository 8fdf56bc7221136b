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
VARIANTS: dict[str, dict] = {
    "entropy": {"method": "entropy"},
    "max": {"method": "max"},
    "entropy, first+last conv fp32": {"method": "entropy", "keep_fp": FIRST_LAST},
    "max, first+last conv fp32": {"method": "max", "keep_fp": FIRST_LAST},
    "entropy, float residuals": {"method": "entropy", "float_residual": True},
    "max, float residuals": {"method": "max", "float_residual": True},
    "entropy, float residuals, first+last conv fp32": {"method": "entropy", "float_residual": True, "keep_fp": FIRST_LAST},
    "max, float residuals, first+last conv fp32": {"method": "max", "float_residual": True, "keep_fp": FIRST_LAST},
}


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
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in VARIANTS.items():
            q = Path(tmp) / "q.onnx"
            t = time.perf_counter()
            quantize_model(args.model, args.data, q, **kw)
            secs = time.perf_counter() - t
            res = run_gate(args.model, q, args.test_images)
            print(f"== {name} (quantized in {secs:.1f} s)\n{format_table(res)}\n")
            results.append({"variant": name, **kw, "quantize_s": round(secs, 1), **json.loads(res.to_json())})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sens = json.loads(args.sensitivity.read_text()) if args.sensitivity else []
    doc = {"model": str(args.model), "calibration_data": data_meta, "test_images": str(args.test_images),
           "results": results, "sensitivity_entropy": sens}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# INT8 (ModelOpt 0.47 Q/DQ, ONNX Runtime CPU) vs float32 on data/photos/test",
        "",
        f"Calibration: {data_meta.get('samples')} windows of {data_meta.get('window')}² LR px from "
        f"{data_meta.get('images')} (seed {data_meta.get('seed')}, flips {data_meta.get('flips')}). "
        "Gate floors: worst-image PSNR vs float32 >= 40 dB, mean PSNR-Y loss <= 0.3 dB.",
        "",
        "| variant | PSNR vs fp32, worst (dB) | PSNR-Y fp32 | PSNR-Y int8 | PSNR-Y loss (dB) "
        "| worst image loss (dB) | other images' max loss (dB) | max abs err | NaN | gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        losses = sorted(((x["psnr_y_fp32"] - x["psnr_y_int8"], x["image"]) for x in r["rows"]), reverse=True)
        lines.append(f"| {r['variant']} | {r['min_psnr_vs_fp32']:.2f} | {r['mean_psnr_y_fp32']:.3f} | "
                     f"{r['mean_psnr_y_int8']:.3f} | {r['psnr_y_loss']:.3f} | {losses[0][0]:.3f} ({losses[0][1]}) | "
                     f"{losses[1][0]:.3f} | {r['max_abs_error']:.2f} | "
                     f"{r['nan_count']} | {'pass' if r['passed'] else 'FAIL'} |")
    if sens:
        lines += ["", "Sensitivity (entropy scales; mean PSNR vs float32 with only that node's Q/DQ "
                  "inputs kept, worst 10 of " + str(len(sens)) + "):", "",
                  "| node | PSNR vs fp32 (dB) |", "|---|---|"]
        lines += [f"| {x['layer']} | {x['psnr_vs_fp32']:.2f} |" for x in sens[:10]]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
