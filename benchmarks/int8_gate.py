"""INT8 accuracy and ONNX Runtime CPU speed, per calibration method and Q/DQ placement.

Every variant is gated against the float32 model on the held-out photos (the same gate as
``python -m calibration quantize``) and timed on ONNX Runtime CPU beside float32 in the
same run. Two placements:

- TensorRT's (NVIDIA ModelOpt): Q/DQ on conv inputs and weights only. Variants: ModelOpt's
  output as it is; residual Adds reading float tensors; and the default, plus the
  high-precision layers chosen automatically (kept in fp32, and in fp16 as TensorRT runs them).
- ONNX Runtime's (``onnxruntime.quantization`` QDQ): Q/DQ on conv outputs too, which ORT
  fuses into integer QLinearConv kernels. All convs INT8; and with the layers the default
  kept, plus float residuals.

    python export/to_onnx.py models/eusr-compact.safetensors -o /tmp/m.onnx --halo 8
    python -m calibration collect --images data/photos/train -o /tmp/calib.npz \\
        --model /tmp/m.onnx --samples 48 --tile 56 --halo 8 --flips
    python -m benchmarks.int8_gate /tmp/m.onnx --data /tmp/calib.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import (
    DEFAULT_OUT,
    add_allow_dirty,
    add_out_args,
    environment,
    markdown_table,
    package_version,
    require_clean_tree,
    results_dir,
)
from calibration.cli import DEFAULT_TEST_IMAGES
from calibration.collect import load_npz
from calibration.gate import run_gate
from runtime.errors import UpscaleError

WINDOW = 144
"""The runtime's default window: tile 128 + 2 × halo 8."""


def _variants() -> list[tuple[str, str, dict]]:
    """(name, placement, kwargs) in table order."""
    rows = []
    for m in ("entropy", "max"):
        rows += [
            (
                f"{m}, ModelOpt placement as is",
                "tensorrt",
                {"method": m, "float_residual": False, "auto_keep_db": None},
            ),
            (f"{m}, float residuals", "tensorrt", {"method": m, "auto_keep_db": None}),
            (
                f"{m}, float residuals + auto-kept layers fp32" + (" (default)" if m == "entropy" else ""),
                "tensorrt",
                {"method": m},
            ),
            (f"{m}, float residuals + auto-kept layers fp16", "tensorrt", {"method": m, "high_precision": "fp16"}),
        ]
    rows += [
        ("entropy, ORT integer placement, all convs", "onnxruntime", {"method": "entropy"}),
        (
            "entropy, ORT integer placement, float residuals + the default's kept layers",
            "onnxruntime",
            {"method": "entropy", "float_residual": True, "keep_fp": "default"},
        ),
    ]
    return rows


def _session(path: Path, threads: int):
    """An ORT CPU session and the op counts of the graph ORT actually runs (after its fusions:
    they say why a variant is fast or slow)."""
    import onnx
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.log_severity_level = threads, 3
    # Idle pool threads must not spin: the sessions take turns, and a spinning pool would
    # steal the cores of the next one (one run with spinning on: INT8 rows 15-43 % slower, float32 7 %).
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        o.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(o.optimized_model_filepath).graph.node)
    keep = ("QLinearConv", "Conv", "FusedConv", "QLinearAdd", "Add", "DequantizeLinear", "QuantizeLinear")
    return s, {k: ops.get(k, 0) for k in keep}


def time_round_robin(paths: list[Path], threads: int, rounds: int = 5, runs: int = 5) -> list[float]:
    """Median ms of one float32 1×3×WINDOW² inference per model, the models taking turns
    (``rounds`` × ``runs`` each), so drift in the machine's speed hits them all alike."""
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 255, (1, 3, WINDOW, WINDOW)).astype(np.float32)
    sessions = [_session(p, threads)[0] for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for s in sessions:  # warm-up
        for _ in range(2):
            s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            feed = {s.get_inputs()[0].name: x}
            for _ in range(runs):
                t = time.perf_counter()
                s.run(None, feed)
                times[k].append(time.perf_counter() - t)
    return [float(np.median(t) * 1e3) for t in times]


def _ops_cell(ops: dict) -> str:
    int_convs = ops["QLinearConv"]
    float_convs = ops["Conv"] + ops["FusedConv"]
    return f"{int_convs} int / {float_convs} float convs, {ops['DequantizeLinear']} DQ"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="float32 ONNX (export/to_onnx.py)")
    ap.add_argument("--data", type=Path, required=True, help="calibration windows (python -m calibration collect)")
    ap.add_argument("--test-images", type=Path, default=DEFAULT_TEST_IMAGES)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads for the timings")
    add_out_args(ap, what="stem of the result files: <out>.json and <out>.md")
    add_allow_dirty(ap)
    args = ap.parse_args(argv)
    results_dir(args, ap, committed=DEFAULT_OUT / "int8_gate", stem=True)
    try:
        git = require_clean_tree(args.allow_dirty)
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import onnxruntime as ort

    from calibration.ort_placement import quantize_for_onnxruntime
    from calibration.quantize import quantize_model

    ort.set_default_logger_severity(3)
    _, data_meta = load_npz(args.data)
    results, default_kept, paths = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, placement, kw) in enumerate(_variants()):
            q = Path(tmp) / f"q{k}.onnx"
            t = time.perf_counter()
            if placement == "tensorrt":
                prov = quantize_model(args.model, args.data, q, progress=True, **kw)
                if "(default)" in name:
                    default_kept = prov["auto_keep"]["layers"]
            else:
                kw = dict(kw)
                if kw.pop("keep_fp", None) == "default":
                    kw["keep_fp"] = default_kept
                prov = quantize_for_onnxruntime(args.model, args.data, q, **kw)
            secs = time.perf_counter() - t
            res = run_gate(args.model, q, args.test_images)
            results.append(
                {
                    "variant": name,
                    "placement": placement,
                    "quantize_s": round(secs, 1),
                    "ort_ops": _session(q, args.threads)[1],
                    "calibration": prov,
                    **json.loads(res.to_json()),
                }
            )
            paths.append(q)
            print(
                f"== {name}: worst {res.min_psnr_vs_fp32:.2f} dB vs fp32, PSNR-Y loss {res.psnr_y_loss:.3f} dB, "
                f"{'pass' if res.passed else 'FAIL'}; quantized in {secs:.0f} s",
                flush=True,
            )
        print("timing every model in turn ...", flush=True)
        fp32_ops = _session(args.model, args.threads)[1]
        ms = time_round_robin([args.model, *paths], args.threads)
    fp32_ms = ms[0]
    for r, m in zip(results, ms[1:]):
        r["ort_cpu_ms"], r["speed_vs_fp32"] = round(m, 1), round(fp32_ms / m, 3)
    import hashlib

    from calibration.collect import read_model_info

    info = read_model_info(args.model)
    model_desc = (
        f"{info.config_name or 'unnamed'} x{info.scale}, {info.io.value}, "
        f"sha256 {hashlib.sha256(args.model.read_bytes()).hexdigest()[:12]}"
    )
    env = environment(threads=args.threads, git=git)
    env["versions"]["nvidia-modelopt"] = package_version("nvidia-modelopt")
    env["host"]["avx512_vnni"] = (
        "avx512_vnni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None
    )
    doc = {
        "environment": env,
        "model": str(args.model),
        "calibration_data": data_meta,
        "test_images": str(args.test_images),
        "window": WINDOW,
        "timing": "round robin, 5 rounds x 5 runs, median",
        "ort_cpu_ms_float32": round(fp32_ms, 1),
        "ort_ops_float32": fp32_ops,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")

    table = []
    for r in results:
        losses = sorted(((x["psnr_y_fp32"] - x["psnr_y_int8"], x["image"]) for x in r["rows"]), reverse=True)
        auto = r["calibration"].get("auto_keep") or {}
        kept = len(auto.get("layers", [])) or len(r["calibration"].get("keep_fp") or [])
        table.append(
            [
                r["variant"],
                f"{r['min_psnr_vs_fp32']:.2f}",
                f"{r['psnr_y_loss']:.3f}",
                f"{losses[0][0]:.3f} ({losses[0][1]})",
                f"{r['max_abs_error']:.2f}",
                r["nan_count"],
                "pass" if r["passed"] else "FAIL",
                kept,
                f"{r['ort_cpu_ms']:.1f}",
                f"{r['speed_vs_fp32']:.2f}×",
                _ops_cell(r["ort_ops"]),
            ]
        )
    default = next((r for r in results if "(default)" in r["variant"]), None)
    kept_lines = []
    if default:
        auto = default["calibration"]["auto_keep"]
        kept_lines = [
            f"- `{n}` ({m}): {t['psnr_vs_fp32']:.2f} dB after keeping it"
            for n, m, t in zip(auto["layers"], auto["modules"], auto["trace"])
        ]
        kept_lines.insert(
            0,
            f"Layers the default kept (ranked on {auto['ranking_windows']} calibration windows, "
            f"target {auto['target_psnr_db']} dB on all {data_meta.get('samples')}; "
            f"all-INT8 {auto['psnr_all_int8_db']:.2f} dB):",
        )
    md = [
        "# INT8 Q/DQ vs float32: accuracy gate and ONNX Runtime CPU speed",
        "",
        f"Model `{args.model}` ({model_desc}); calibration: "
        f"{data_meta.get('samples')} windows of {data_meta.get('window')}² LR px from {data_meta.get('images')} "
        f"(seed {data_meta.get('seed')}, flips {data_meta.get('flips')}); gate on {args.test_images}: worst-image "
        "PSNR vs float32 >= 40 dB and mean PSNR-Y loss <= 0.3 dB. Speed: ONNX Runtime CPU, one "
        f"1×3×{WINDOW}×{WINDOW} float32 window, {args.threads} threads, median of 25 runs per model taken in turns "
        f"with the others (5 rounds × 5; idle pool threads do not spin), float32 {fp32_ms:.1f} ms ({_ops_cell(fp32_ops)}). "
        f"{env['host']['cpu']} (AVX-512 VNNI: "
        f"{env['host']['avx512_vnni']}), onnxruntime {env['versions']['onnxruntime']}, "
        f"nvidia-modelopt {env['versions']['nvidia-modelopt']}, commit {str(env['git']['commit'])[:10]}{' (dirty)' if env['git']['dirty'] else ''}.",
        "",
        markdown_table(
            [
                "variant",
                "PSNR vs fp32, worst (dB)",
                "PSNR-Y loss (dB)",
                "worst image loss (dB)",
                "max abs err",
                "NaN",
                "gate",
                "layers kept",
                "ORT CPU ms",
                "speed vs fp32",
                "what ORT runs",
            ],
            table,
        ),
        "",
        *kept_lines,
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
