"""The generated TensorRT model on a real Triton: loads, answers, and matches ONNX Runtime.

    python benchmarks/triton_check.py --probe                 # can it run here? exit 0, else the reason, exit 1
    python benchmarks/triton_check.py --out DIR               # build an FP16 engine of the bundled model, serve, compare
    python benchmarks/triton_check.py --out DIR --engine m.plan --onnx m.onnx

For ``benchmarks/gpu_check.sh`` on a GPU machine with Triton (NVIDIA's container: the
TensorRT backend in ``<triton home>/backends/tensorrt``) and TensorRT's Python package (to
build the engine unless ``--engine`` is given). Writes a repository with
``export/to_triton.py`` (``eusr_tensorrt`` from the engine's sidecar), starts
``tritonserver`` with only that model (``runtime.serve.TritonServer``), checks it is READY
(else fails with Triton's reason), sends one batch of windows of the profile's opt shape cut
from the demo photo, and compares the response with ONNX Runtime CPU on the ONNX the engine
was built from: PSNR (peak 255) and max abs error, exit 1 below ``--min-psnr``.

Outputs ``<out>/<name>.json`` and ``.md``; refuses a dirty tree unless ``--allow-dirty``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import importlib.util
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.common import BenchmarkError, HelpFormatter
from runtime.bundled import bundled_model
from runtime.demo import DEMO_PHOTO
from runtime.errors import UpscaleError
from runtime.image_io import read_image
from runtime.layout import ModelIO
from runtime.results import add_allow_dirty, environment, markdown_table, require_clean_tree, write_results

MODEL = "eusr_tensorrt"


def probe(triton_home: str | None = None, *, need_tensorrt: bool = True) -> str | None:
    """Why the check cannot run here (None: it can): Triton, its TensorRT backend, tritonclient, TensorRT."""
    from runtime.serve import TritonServerError, find_triton_home

    try:
        home = find_triton_home(triton_home)
    except TritonServerError as exc:
        return str(exc)
    if not (home / "backends" / "tensorrt").is_dir():
        return f"the Triton at {home} has no TensorRT backend (no backends/tensorrt; NVIDIA's Triton container has it)"
    if importlib.util.find_spec("tritonclient") is None:
        return "tritonclient is not installed (pip install '.[serve]')"
    if need_tensorrt and importlib.util.find_spec("tensorrt") is None:
        return "TensorRT's Python package is not installed, so no engine can be built (or pass --engine)"
    return None


def window_batch(sidecar: Mapping[str, Any]) -> tuple[np.ndarray, ModelIO]:
    """A batch of the first profile's opt shape in the engine's layout, cut from the demo photo."""
    io = ModelIO(sidecar["model"]["io"])
    opt = [int(d) for d in sidecar["profiles"][0]["opt"]]
    batch, height, width = io.spatial(tuple(opt))
    photo, _ = read_image(DEMO_PHOTO)
    photo = photo[:, :, :3]
    if photo.shape[0] < height or photo.shape[1] < width:
        raise BenchmarkError(f"the demo photo is smaller than the engine's opt window {height}x{width}")
    windows = []
    for i in range(batch):
        y = (i * 61) % (photo.shape[0] - height + 1)
        x = (i * 89) % (photo.shape[1] - width + 1)
        windows.append(photo[y : y + height, x : x + width])
    hwc = np.stack(windows)  # N,H,W,3 uint8
    if io.channel_axis == 1:
        return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2).astype(np.float32)), io
    return np.ascontiguousarray(hwc), io


def infer_raw(url: str, model: str, name: str, batch: np.ndarray, output: str) -> np.ndarray:
    """One request of ``batch`` as input ``name`` to ``model`` over HTTP; the ``output`` array."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    client = http.InferenceServerClient(url, network_timeout=300.0)
    try:
        tensor = http.InferInput(name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], outputs=[http.InferRequestedOutput(output)])
    except InferenceServerException as exc:
        raise BenchmarkError(f"Triton model {model!r}: {exc.message()}") from None
    finally:
        client.close()
    out = result.as_numpy(output)
    if out is None:
        raise BenchmarkError(f"Triton model {model!r}: no output {output!r} in the response")
    return np.asarray(out)


def require_ready(states: Sequence[Mapping[str, Any]], model: str) -> None:
    """:class:`BenchmarkError` with Triton's reason unless ``model`` is READY."""
    found = {m["name"]: m for m in states}
    if model not in found:
        raise BenchmarkError(f"Triton did not list model {model!r} (models: {sorted(found)})")
    if found[model].get("state") != "READY":
        raise BenchmarkError(
            f"Triton could not load {model!r}: {found[model].get('state')}: {found[model].get('reason', '')}"
        )


def _onnx_reference(onnx: Path, batch: np.ndarray) -> np.ndarray:
    from runtime import OnnxRuntime

    backend = OnnxRuntime().create(onnx)
    try:
        return np.asarray(backend.infer(batch))
    finally:
        backend.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument(
        "--probe", action="store_true", help="only say whether the check can run here (exit 0) or why not (exit 1)"
    )
    p.add_argument("--engine", type=Path, help="a TensorRT engine with its sidecar (default: build an FP16 one)")
    p.add_argument(
        "--onnx", type=Path, help="the ONNX the engine came from (default: the sidecar's, else the bundled model)"
    )
    p.add_argument("--triton-home", help="folder with bin/tritonserver and backends/ (default: searched)")
    p.add_argument(
        "--min-psnr", type=float, default=40.0, help="PSNR floor of Triton's output against ONNX Runtime CPU"
    )
    p.add_argument("--allow-tf32", action="store_true", help="build the engine with TF32 allowed (only when building)")
    p.add_argument("--out", type=Path, default=Path("."), help="result folder")
    p.add_argument("--name", default="triton_tensorrt", help="stem of the result files")
    add_allow_dirty(p)
    args = p.parse_args(argv)
    why = probe(args.triton_home, need_tensorrt=args.engine is None)
    if args.probe:
        print(why or "ready: Triton with the TensorRT backend, tritonclient and TensorRT are here")
        return 1 if why else 0
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    git = require_clean_tree(args.allow_dirty)

    from export.to_triton import TensorRTModel, write_repository
    from runtime.serve import TritonServer
    from runtime.trt_sidecar import read_sidecar, sidecar_path

    with tempfile.TemporaryDirectory(prefix="triton-check-") as tmp:
        engine = args.engine
        onnx = args.onnx
        if engine is None:
            from export.engine_cache import BuildOptions
            from runtime.layout import Precision

            engine = Path(tmp) / "model.plan"
            onnx = onnx or bundled_model()
            from export.to_trt import build_engine

            build_engine(onnx, engine, BuildOptions(precision=Precision.FP16, profiles=1, allow_tf32=args.allow_tf32))
        sidecar = read_sidecar(sidecar_path(engine))
        if onnx is None:
            recorded = Path(str((sidecar.get("onnx") or {}).get("path") or ""))
            onnx = recorded if recorded.is_file() else bundled_model()
        repo = Path(tmp) / "repo"
        write_repository(repo, engine=engine, upscale=None, onnx_model=None, tensorrt_model=TensorRTModel())
        batch, io = window_batch(sidecar)
        with TritonServer(repo, triton_home=args.triton_home, models=[MODEL], log=Path(tmp) / "server.log") as server:
            server.start()
            require_ready(server.model_states(), MODEL)
            got = infer_raw(server.http_url, MODEL, sidecar["model"]["input"], batch, sidecar["model"]["output"])
        want = _onnx_reference(onnx, batch)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    mse = float(np.mean(err**2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    passed = psnr >= args.min_psnr and got.shape == want.shape
    data = {
        "environment": environment(git=git),
        "engine": {"path": str(args.engine or "built"), "precision": sidecar.get("precision"), "io": io.value},
        "batch_shape": list(batch.shape),
        "psnr_db": psnr,
        "max_abs_error": float(err.max()),
        "min_psnr": args.min_psnr,
        "passed": passed,
    }
    md = "\n".join(
        [
            "# The generated TensorRT model on Triton vs ONNX Runtime CPU",
            "",
            markdown_table(
                ["engine", "io", "batch", "PSNR dB", "max abs err", "floor", "result"],
                [
                    [
                        sidecar.get("precision"),
                        io.value,
                        "x".join(map(str, batch.shape)),
                        f"{psnr:.2f}",
                        f"{err.max():.3f}",
                        args.min_psnr,
                        "PASS" if passed else "FAIL",
                    ]
                ],
            ),
        ]
    )
    write_results(args.out, args.name, data, md)
    print(md)
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
