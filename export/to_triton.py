"""Write a Triton Inference Server model repository from what the project builds.

    python export/to_triton.py -o triton_repo                       # upscale + ONNX models, bundled model
    python export/to_triton.py -o repo --engine model.plan          # + the TensorRT model (needs its sidecar)
    python export/to_triton.py -o repo --onnx m.onnx --upscale-backend tensorrt --engine m.plan
    fourpp-eusr-to-triton -o repo ...                               # the same, as a console script

Every ``config.pbtxt`` is generated from what the model says about itself (the ONNX graph's
I/O and ``fourpp_eusr`` metadata, the TensorRT engine's JSON sidecar written by
``export/to_trt.py``: tensor names, dtypes, dims, the profile's batch), never from typed
shapes. One version folder (``1/``) per model. The models:

* ``upscale`` (Python backend, :mod:`export.triton_model`): one whole image of any size per
  request (uint8 H×W×C or encoded PNG/JPEG bytes) → the ×scale image, tiled server-side by
  ``runtime.Upscaler`` on the backend its parameters name (ONNX Runtime CPU/CUDA, OpenVINO,
  TensorRT). What clients want: send an image, get an image.
* ``eusr_onnx`` (``onnxruntime_onnx``): the raw network on batches of windows, CPU or GPU
  instances, optionally with ONNX Runtime's TensorRT execution accelerator.
* ``eusr_tensorrt`` (``tensorrt_plan``): the engine, ``max_batch_size`` from its
  optimisation profile, KIND_GPU instances and dynamic batching.

The text is validated with Triton's own ``ModelConfig`` protobuf schema when
``tritonclient`` is installed (``pip install ".[serve]"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.bundled import bundled_model
from runtime.errors import UpscaleError
from runtime.model_info import METADATA_KEY, ModelInfo, infer_model_info, parse_metadata
from runtime.trt_sidecar import read_sidecar, sidecar_path

__all__ = [
    "TritonRepositoryError",
    "UpscaleModel",
    "OnnxModel",
    "TensorRTModel",
    "to_pbtxt",
    "validate_config",
    "upscale_config",
    "onnx_config",
    "tensorrt_config",
    "write_repository",
    "main",
]

log = logging.getLogger(__name__)

UPSCALE_BACKENDS = ("onnxruntime", "openvino", "onnxruntime-cuda", "tensorrt", "auto")
GPU_BACKENDS = ("onnxruntime-cuda", "tensorrt")
DEFAULT_MAX_PIXELS = 2048 * 2048
"""Largest input image (pixels) the ``upscale`` model accepts: 4.2 MP in, 67 MP out at ×4."""

_ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16"}
_TRT_TYPES = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
}


class TritonRepositoryError(UpscaleError):
    """The repository cannot be written: a bad option, an unreadable model or sidecar, an existing folder."""


class Enum(str):
    """A protobuf enum value: written bare in the text format (``TYPE_UINT8``, ``KIND_GPU``)."""


# --------------------------------------------------------------------------- text format


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} in protobuf text format")


def _lines(message: Mapping[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out += [f"{pad}{key} {{", *_lines(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, (list, tuple)):
            if all(isinstance(v, Mapping) for v in value):
                for item in value:  # repeated messages (and map entries) as repeated blocks
                    out += [f"{pad}{key} {{", *_lines(item, indent + 1), f"{pad}}}"]
            else:
                out.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def to_pbtxt(config: Mapping[str, Any]) -> str:
    """``config`` (nested dicts/lists, enums as :class:`Enum`) in protobuf text format."""
    return "\n".join(_lines(config, 0)) + "\n"


def _parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items() if v is not None]


def validate_config(text: str, *, name: str = "config.pbtxt") -> Any:
    """Parse ``text`` with Triton's ``ModelConfig`` schema (from tritonclient); returns the message.

    Raises :class:`TritonRepositoryError` naming the file on an unknown field, wrong type or
    bad enum. Needs ``tritonclient`` (``pip install ".[serve]"``).
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TritonRepositoryError(
            f"validating {name} needs Triton's client (pip install 'tritonclient[grpc]'): {exc}"
        ) from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TritonRepositoryError(f"{name}: not a valid Triton ModelConfig ({exc})") from None


# --------------------------------------------------------------------------- model facts


def _onnx_tensors(path: Path) -> tuple[ModelInfo, list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's facts and its graph inputs/outputs as ``{"name", "data_type", "dims"}`` (batch included)."""
    try:
        import onnx
    except ImportError:
        raise TritonRepositoryError(f"{path}: reading an ONNX model needs onnx (pip install onnx)") from None
    if not path.is_file():
        raise TritonRepositoryError(f"--onnx {path}: no such file; export one with export/to_onnx.py")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise TritonRepositoryError(f"--onnx {path}: not a readable ONNX model ({exc})") from None

    def tensors(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            elem = v.type.tensor_type.elem_type
            if elem not in _ONNX_TYPES:
                raise TritonRepositoryError(
                    f"{path}: tensor {v.name!r} has ONNX element type {elem}, not one Triton maps"
                )
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            out.append({"name": v.name, "data_type": _ONNX_TYPES[elem], "dims": dims})
        return out

    inputs, outputs = tensors(model.graph.input), tensors(model.graph.output)
    if not inputs or not outputs:
        raise TritonRepositoryError(f"{path}: the graph has {len(inputs)} inputs and {len(outputs)} outputs")
    props = {p.key: p.value for p in model.metadata_props}
    try:
        if METADATA_KEY in props:
            info = parse_metadata(props[METADATA_KEY], model=str(path))
        else:
            elem = {1: "tensor(float)", 2: "tensor(uint8)"}.get(model.graph.input[0].type.tensor_type.elem_type, "")
            info = infer_model_info(
                model=str(path),
                input_name=inputs[0]["name"],
                input_type=elem,
                input_shape=inputs[0]["dims"],
                output_name=outputs[0]["name"],
                output_shape=outputs[0]["dims"],
            )
    except UpscaleError as exc:
        raise TritonRepositoryError(str(exc)) from None
    return info, inputs, outputs


def _tensor_entry(tensor: Mapping[str, Any], *, batched: bool) -> dict[str, Any]:
    dims = list(tensor["dims"])
    return {"name": tensor["name"], "data_type": Enum(tensor["data_type"]), "dims": dims[1:] if batched else dims}


def _check_count(what: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TritonRepositoryError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------- the three configs


@dataclass(frozen=True, kw_only=True)
class UpscaleModel:
    """The ``upscale`` Python-backend model: whole images in, whole images out."""

    name: str = "upscale"
    backend: str = "onnxruntime"
    """The runtime backend inside the model (one of :data:`UPSCALE_BACKENDS`)."""
    instances: int = 1
    threads: int | None = None
    tile: int | str = "auto"
    halo: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.backend not in UPSCALE_BACKENDS:
            raise TritonRepositoryError(f"--upscale-backend {self.backend!r} is not one of {list(UPSCALE_BACKENDS)}")
        _check_count("--instances", self.instances)
        _check_count("--max-pixels", self.max_pixels)
        if self.threads is not None:
            _check_count("--threads", self.threads)
        if self.tile != "auto":
            _check_count("--tile", self.tile)  # type: ignore[arg-type]
        if self.halo is not None:
            _check_count("--halo", self.halo, 0)


@dataclass(frozen=True, kw_only=True)
class OnnxModel:
    """The raw network under ONNX Runtime's Triton backend, on batches of windows."""

    name: str = "eusr_onnx"
    kind: str = "cpu"
    instances: int = 1
    max_batch_size: int = 8
    tensorrt_accelerator: bool = False
    """GPU instances only: let ONNX Runtime hand the graph to TensorRT (FP16)."""
    max_queue_delay_us: int = 100

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise TritonRepositoryError(f"--onnx-kind must be cpu or gpu, got {self.kind!r}")
        if self.tensorrt_accelerator and self.kind != "gpu":
            raise TritonRepositoryError("--onnx-tensorrt-accelerator needs --onnx-kind gpu (TensorRT runs on GPUs)")
        _check_count("--instances", self.instances)
        _check_count("--onnx-max-batch", self.max_batch_size)
        _check_count("--max-queue-delay-us", self.max_queue_delay_us, 0)


@dataclass(frozen=True, kw_only=True)
class TensorRTModel:
    """The TensorRT engine under Triton's TensorRT backend."""

    name: str = "eusr_tensorrt"
    instances: int = 1
    max_queue_delay_us: int = 100

    def __post_init__(self) -> None:
        _check_count("--instances", self.instances)
        _check_count("--max-queue-delay-us", self.max_queue_delay_us, 0)


def upscale_config(options: UpscaleModel, *, model_file: str, info: ModelInfo) -> dict[str, Any]:
    """``config.pbtxt`` of the ``upscale`` model as a dict (see :func:`to_pbtxt`)."""
    gpu = options.backend in GPU_BACKENDS
    return {
        "name": options.name,
        "backend": "python",
        "max_batch_size": 0,  # one whole image of its own size per request
        "input": [
            {"name": "IMAGE", "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, -1], "optional": True},
            {"name": "IMAGE_BYTES", "data_type": Enum("TYPE_STRING"), "dims": [1], "optional": True},
        ],
        "output": [{"name": "UPSCALED", "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, -1]}],
        "instance_group": [{"kind": Enum("KIND_GPU" if gpu else "KIND_CPU"), "count": options.instances}],
        "parameters": _parameters(
            {
                "model_file": model_file,
                "backend": options.backend,
                "threads": options.threads,
                "tile": options.tile,
                "halo": options.halo,
                "max_pixels": options.max_pixels,
                "scale": info.scale,
                "model_io": info.io.value,
            }
        ),
    }


def onnx_config(
    options: OnnxModel, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``config.pbtxt`` of the ONNX model from the graph's I/O (batch axis first and dynamic)."""
    for t in (*inputs, *outputs):
        if not t["dims"] or t["dims"][0] != -1:
            raise TritonRepositoryError(
                f"ONNX tensor {t['name']!r} has dims {t['dims']}: Triton batching needs a dynamic first (batch) axis; "
                "export it with export/to_onnx.py (dynamic batch, height, width)"
            )
    config: dict[str, Any] = {
        "name": options.name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": options.max_batch_size,
        "input": [_tensor_entry(t, batched=True) for t in inputs],
        "output": [_tensor_entry(t, batched=True) for t in outputs],
        "instance_group": [{"kind": Enum(f"KIND_{options.kind.upper()}"), "count": options.instances}],
        "dynamic_batching": {
            "preferred_batch_size": [options.max_batch_size],
            "max_queue_delay_microseconds": options.max_queue_delay_us,
        },
    }
    if options.tensorrt_accelerator:
        config["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    # map<string, string> here, unlike the model's ModelParameter map
                    {"name": "tensorrt", "parameters": [{"key": "precision_mode", "value": "FP16"}]}
                ]
            }
        }
    return config


def tensorrt_config(
    options: TensorRTModel, sidecar: Mapping[str, Any], *, engine: str = "model.plan"
) -> dict[str, Any]:
    """``config.pbtxt`` of the TensorRT model from the engine's sidecar (``io_tensors``, ``profiles``)."""
    tensors = sidecar.get("io_tensors") or []
    profiles = sidecar.get("profiles") or []
    if not tensors or not profiles:
        raise TritonRepositoryError(
            f"{engine}: the sidecar lists {len(tensors)} I/O tensors and {len(profiles)} profiles; "
            "rebuild the engine with export/to_trt.py"
        )
    entries: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
    for t in tensors:
        dtype = _TRT_TYPES.get(str(t.get("dtype")))
        mode = str(t.get("mode"))
        if dtype is None or mode not in entries:
            raise TritonRepositoryError(
                f"{engine}: sidecar tensor {t.get('name')!r} has dtype {t.get('dtype')!r} / mode {mode!r}"
            )
        shape = [int(d) for d in t.get("shape", [])]
        if not shape or shape[0] != -1:
            raise TritonRepositoryError(
                f"{engine}: tensor {t.get('name')!r} has shape {shape}; expected a dynamic batch axis first"
            )
        entries[mode].append(_tensor_entry({"name": t["name"], "data_type": dtype, "dims": shape}, batched=True))
    max_batch = min(int(p["max"][0]) for p in profiles)
    opt = sorted({min(int(p["opt"][0]), max_batch) for p in profiles} | {max_batch})
    return {
        "name": options.name,
        "platform": "tensorrt_plan",
        "max_batch_size": max_batch,
        "input": entries["input"],
        "output": entries["output"],
        "instance_group": [{"kind": Enum("KIND_GPU"), "count": options.instances}],
        "dynamic_batching": {"preferred_batch_size": opt, "max_queue_delay_microseconds": options.max_queue_delay_us},
        "default_model_filename": "model.plan",
    }


# --------------------------------------------------------------------------- the repository


def _write_model(root: Path, name: str, config: Mapping[str, Any], files: Mapping[str, Path | str]) -> Path:
    """``root/name/config.pbtxt`` and ``root/name/1/<file>`` (a Path is copied, a str written)."""
    folder = root / name
    version = folder / "1"
    version.mkdir(parents=True)
    text = to_pbtxt(config)
    try:
        validate_config(text, name=f"{name}/config.pbtxt")
    except TritonRepositoryError as exc:
        if "needs Triton's client" not in str(exc):
            raise
        log.info("%s: not validated against Triton's schema (%s)", name, exc)
    (folder / "config.pbtxt").write_text(text)
    for target, source in files.items():
        if isinstance(source, Path):
            shutil.copyfile(source, version / target)
        else:
            (version / target).write_text(source)
    return folder


def write_repository(
    output: str | os.PathLike[str],
    *,
    onnx: str | os.PathLike[str] | None = None,
    engine: str | os.PathLike[str] | None = None,
    upscale: UpscaleModel | None = UpscaleModel(),
    onnx_model: OnnxModel | None = OnnxModel(),
    tensorrt_model: TensorRTModel | None = TensorRTModel(),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the models into ``output`` (created; other models already there are kept).

    ``onnx`` defaults to the bundled model; the TensorRT model is written only with
    ``engine`` (its sidecar must lie beside it). Each model is built in a temporary folder
    and renamed into place; an existing model folder is an error unless ``overwrite``.
    Returns ``{model name: folder}``.
    """
    out = Path(output)
    onnx_path = Path(onnx) if onnx is not None else bundled_model()
    engine_path = Path(engine) if engine is not None else None
    sidecar = None
    if engine_path is not None:
        if not engine_path.is_file():
            raise TritonRepositoryError(f"--engine {engine_path}: no such file; build one with export/to_trt.py")
        try:
            sidecar = read_sidecar(sidecar_path(engine_path))
        except UpscaleError as exc:
            raise TritonRepositoryError(str(exc)) from None
    elif upscale is not None and upscale.backend == "tensorrt":
        raise TritonRepositoryError("--upscale-backend tensorrt needs --engine MODEL.plan (with its sidecar)")
    info, inputs, outputs = _onnx_tensors(onnx_path)

    models: dict[str, tuple[dict[str, Any], dict[str, Path | str]]] = {}
    if upscale is not None:
        code = (Path(__file__).resolve().parent / "triton_model.py").read_text()
        if upscale.backend == "tensorrt":
            assert engine_path is not None  # checked above
            files: dict[str, Path | str] = {"model.plan": engine_path, "model.plan.json": sidecar_path(engine_path)}
            model_file = "model.plan"
        else:
            files, model_file = {"model.onnx": onnx_path}, "model.onnx"
        models[upscale.name] = (upscale_config(upscale, model_file=model_file, info=info), {**files, "model.py": code})
    if onnx_model is not None:
        models[onnx_model.name] = (onnx_config(onnx_model, inputs, outputs), {"model.onnx": onnx_path})
    if tensorrt_model is not None and engine_path is not None and sidecar is not None:
        models[tensorrt_model.name] = (
            tensorrt_config(tensorrt_model, sidecar, engine=str(engine_path)),
            {"model.plan": engine_path},
        )
    if not models:
        raise TritonRepositoryError("nothing to write: every model was left out")

    existing = [name for name in models if (out / name).exists()]
    if existing and not overwrite:
        raise TritonRepositoryError(f"{out}: model folders {existing} exist already; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".to_triton.", dir=out))
    written: dict[str, Path] = {}
    try:
        for name, (config, files) in models.items():
            _write_model(tmp, name, config, files)
        for name in models:
            if (out / name).exists():
                shutil.rmtree(out / name)
            os.replace(tmp / name, out / name)
            written[name] = out / name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


# --------------------------------------------------------------------------- CLI


def _tile(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_triton",
        description="Write a Triton model repository (upscale, ONNX and TensorRT models) from the project's models.",
    )
    p.add_argument("-o", "--output", required=True, help="the model repository folder (created)")
    p.add_argument("--onnx", help="the ONNX model (default: the bundled ×4 model)")
    p.add_argument("--engine", help="a TensorRT engine from export/to_trt.py (its .json sidecar beside it)")
    p.add_argument(
        "--upscale-backend",
        default="onnxruntime",
        choices=UPSCALE_BACKENDS,
        help="the runtime backend inside the upscale model",
    )
    p.add_argument("--threads", type=int, help="CPU threads per upscale instance (default: ONNX Runtime's)")
    p.add_argument("--tile", type=_tile, default="auto", help="the upscale model's tile: auto or a core edge in pixels")
    p.add_argument("--halo", type=int, help="the upscale model's halo (default: the model's recommendation)")
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest input image (H*W) the upscale model accepts"
    )
    p.add_argument("--instances", type=int, default=1, help="instances of each model (instance_group count)")
    p.add_argument("--onnx-kind", default="cpu", choices=("cpu", "gpu"), help="where the ONNX model's instances run")
    p.add_argument("--onnx-max-batch", type=int, default=8, help="max_batch_size of the ONNX model")
    p.add_argument(
        "--onnx-tensorrt-accelerator",
        action="store_true",
        help="ONNX model on GPUs: TensorRT execution accelerator (FP16)",
    )
    p.add_argument(
        "--max-queue-delay-us", type=int, default=100, help="dynamic batching's queue delay (ONNX, TensorRT models)"
    )
    p.add_argument("--no-upscale", action="store_true", help="leave out the upscale model")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX model")
    p.add_argument("--overwrite", action="store_true", help="replace model folders that exist")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        upscale = None
        if not args.no_upscale:
            upscale = UpscaleModel(
                backend=args.upscale_backend,
                instances=args.instances,
                threads=args.threads,
                tile=args.tile,
                halo=args.halo,
                max_pixels=args.max_pixels,
            )
        onnx_model = None
        if not args.no_onnx:
            onnx_model = OnnxModel(
                kind=args.onnx_kind,
                instances=args.instances,
                max_batch_size=args.onnx_max_batch,
                tensorrt_accelerator=args.onnx_tensorrt_accelerator,
                max_queue_delay_us=args.max_queue_delay_us,
            )
        trt_model = TensorRTModel(instances=args.instances, max_queue_delay_us=args.max_queue_delay_us)
        written = write_repository(
            args.output,
            onnx=args.onnx,
            engine=args.engine,
            upscale=upscale,
            onnx_model=onnx_model,
            tensorrt_model=trt_model,
            overwrite=args.overwrite,
        )
    except TritonRepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, folder in written.items():
        print(f"{name}: {folder}")
    print(f"serve it: python -m runtime serve --model-repository {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
