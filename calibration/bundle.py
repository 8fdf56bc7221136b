"""The bundled INT8 model, remade from the bundled float32 one in one command.

``python -m calibration bundle`` runs the settings that passed the gate in
benchmarks/results/int8_gate.md (entropy calibration on 48 windows of 72² LR px from
data/photos/train, float residuals, the most sensitive layers kept fp32 until 48 dB on the
windows), gates the result against its source on data/photos/test (worst image ≥ 40 dB vs
float32, mean PSNR-Y loss ≤ 0.3 dB) and only then replaces
runtime/models/eusr-compact-x4-int8.onnx and its ``.gate.json``. A failed gate leaves the
shipped files as they were and exits 1.

Provenance travels in both files: the INT8 model's ``fourpp_eusr`` metadata gains
``calibration.bundle`` (source file and sha256, the collect settings, the command, the
gate's verdict and numbers), and the gate JSON carries the same record plus the sha256 of
the INT8 file it judged. tests/test_bundled_int8.py fails when the shipped INT8 no longer
names the shipped float32 file's sha256, so replacing the float32 model means running
this command again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from runtime.bundled import BUNDLED_FILES, GATE_SUFFIX, models_dir
from runtime.layout import Precision
from runtime.model_info import METADATA_KEY
from runtime.utils import file_sha256

from .collect import CalibrationError, collect, list_images, read_model_info, save_npz
from .gate import DEFAULT_MAX_LOSS, DEFAULT_MIN_PSNR, GateResult, format_table, run_gate

__all__ = ["BUNDLE_COLLECT", "COMMAND", "ROOT", "make_bundled_int8"]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: paths in the records are relative to it, so they say the same on every clone."""

BUNDLE_COLLECT = {"samples": 48, "tile": 56, "halo": 8, "seed": 0, "flips": True}
"""The calibration windows of the passing row in benchmarks/results/int8_gate.md."""

COMMAND = "python -m calibration bundle"


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when inside it (records must not name this machine's folders)."""
    p = path.resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def _check_disjoint(images: Path, test_images: Path) -> None:
    """The gate judges a model calibrated without its photos: refuse any shared image (by content)."""
    test = {file_sha256(p): p for p in list_images(test_images, flag="--test-images")}
    shared = [f"{p.name} = {test[h].name}" for p in list_images(images) if (h := file_sha256(p)) in test]
    if shared:
        raise CalibrationError(
            f"--images {images} and --test-images {test_images} share {len(shared)} image(s) "
            f"({', '.join(shared[:3])}); calibrate on photos the gate does not hold out (expected none shared)"
        )


def _gate_summary(res: GateResult, test_images: Path) -> dict:
    return {
        "passed": res.passed,
        "test_images": _rel(test_images),
        "images": [r["image"] for r in res.rows],
        "floors": res.floors,
        "min_psnr_vs_fp32": round(res.min_psnr_vs_fp32, 3),
        "psnr_y_loss": round(res.psnr_y_loss, 4),
        "mean_psnr_y_fp32": round(res.mean_psnr_y_fp32, 4),
        "mean_psnr_y_int8": round(res.mean_psnr_y_int8, 4),
        "nan_count": res.nan_count,
        "engine": "onnxruntime CPUExecutionProvider",
    }


def _stamp_bundle(path: Path, record: dict) -> None:
    """Add ``calibration.bundle`` to the ``fourpp_eusr`` JSON of ``path`` (the graph is untouched)."""
    import onnx

    m = onnx.load(str(path))
    props = {p.key: p.value for p in m.metadata_props}
    doc = json.loads(props[METADATA_KEY])
    doc["calibration"]["bundle"] = record
    for p in m.metadata_props:
        if p.key == METADATA_KEY:
            p.value = json.dumps(doc, sort_keys=True)
    onnx.save(m, str(path))


def make_bundled_int8(
    *,
    model: Path | None = None,
    output: Path | None = None,
    images: Path = ROOT / "data" / "photos" / "train",
    test_images: Path = ROOT / "data" / "photos" / "test",
    min_psnr: float = DEFAULT_MIN_PSNR,
    max_loss: float = DEFAULT_MAX_LOSS,
    progress: bool = False,
) -> tuple[GateResult, dict]:
    """Calibrate, quantize and gate; install ``output`` and its gate JSON only if the gate passes.

    ``model``/``output`` default to the bundled float32 and INT8 files. Returns the gate
    result and the provenance record (``calibration.bundle`` of the metadata).
    """
    from .quantize import quantize_model

    model = model or models_dir() / BUNDLED_FILES[Precision.FP32]
    output = output or models_dir() / BUNDLED_FILES[Precision.INT8]
    if not model.is_file():
        raise CalibrationError(f"--model {model}: file not found (expected the float32 ONNX to quantize)")
    info = read_model_info(model)
    if info.metadata.get("precision", "fp32") != "fp32":
        raise CalibrationError(
            f"--model {model}: records precision {info.metadata['precision']!r} (expected a float32 model)"
        )
    _check_disjoint(images, test_images)
    gate_json = output.with_suffix(GATE_SUFFIX)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        data, cand = Path(tmp) / "calib.npz", Path(tmp) / output.name
        c = collect(images, scale=info.scale, io=info.io, input_name=info.input_name, **BUNDLE_COLLECT)
        c.meta["images"] = _rel(images)
        save_npz(c, data)
        quantize_model(model, data, cand, progress=progress)
        res = run_gate(model, cand, test_images, min_psnr=min_psnr, max_loss=max_loss)
        record = {
            "command": COMMAND,
            "source_model": _rel(model),
            "source_model_sha256": file_sha256(model),
            "collect": {"images": _rel(images), **BUNDLE_COLLECT},
            "quantize": "calibration.quantize.quantize_model defaults (entropy, float residuals, auto-keep fp32)",
            "gate": _gate_summary(res, test_images),
        }
        if not res.passed:
            return res, record
        _stamp_bundle(cand, record)
        report = json.loads(res.to_json())
        report.update(
            reference=_rel(model), candidate=_rel(output), candidate_sha256=file_sha256(cand), provenance=record
        )
        os.replace(cand, output)
    gate_json.write_text(json.dumps(report, indent=2) + "\n")
    return res, record


def bundle_main(args) -> int:
    """The ``bundle`` subcommand: exit 0 installed, 1 gate failed (nothing replaced)."""
    res, record = make_bundled_int8(
        model=args.model,
        output=args.output,
        images=args.images,
        test_images=args.test_images,
        min_psnr=args.min_psnr,
        max_loss=args.max_loss,
        progress=not args.no_progress,
    )
    print(format_table(res))
    out = args.output or models_dir() / BUNDLED_FILES[Precision.INT8]
    if not res.passed:
        print(f"gate failed: {out} and {out.with_suffix(GATE_SUFFIX)} left as they were")
        return 1
    print(
        f"wrote {out} (from {record['source_model']}, sha256 {record['source_model_sha256'][:12]}) and {out.with_suffix(GATE_SUFFIX)}"
    )
    return 0
