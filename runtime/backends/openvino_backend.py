"""OpenVINO backend: the same ONNX files as ONNX Runtime, compiled per window shape on the CPU.

Why a second CPU backend: on Intel CPUs OpenVINO's convolutions are faster than ONNX
Runtime's for this model, and it reads the TensorRT-placement Q/DQ graph of
:mod:`calibration` as INT8 kernels (ONNX Runtime runs it as float convs around
quantize/dequantize pairs, slower than float32).

* **Static shapes.** The model is read once; each batch shape the executor binds gets a
  clone reshaped to that static shape and compiled (static shapes let the CPU plugin pick
  its kernels and lay out memory once). The compiled models live in a small LRU keyed by
  shape: the tile loop binds one or two shapes (full batches, the last partial one).
* **fp32 means fp32.** On CPUs with AMX or AVX512-BF16 the plugin's default inference
  precision is bf16 (about 54 dB vs float32 on this model); this backend asks for ``f32``
  unless told otherwise. Q/DQ graphs still run as INT8 under ``f32``: the precision hint
  governs the float parts only.
* **Zero copy.** A stage wraps the executor's host buffers in ``ov.Tensor`` objects that
  share their memory and makes them the request's input and output, so OpenVINO reads the
  gathered batch in place and writes the result where the executor stitches from.
* **Blob cache.** ``ov.Core``'s ``CACHE_DIR`` stores compiled blobs. OpenVINO keys each blob
  by the model, its compile options and the device; the folder adds what the engine cache
  key (``export/engine_cache.py``) also holds and OpenVINO's blob check may not: the
  OpenVINO version and the CPU (name, architecture, capabilities), so an upgrade or a
  different machine sharing a home directory never meets an old blob.

openvino is imported when a backend is created, never when this module is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import BackendUnavailableError, InvalidArgumentError, ModelError, UpscaleError
from ..model_info import METADATA_KEY, ModelInfo, infer_model_info, parse_metadata
from ..utils import check_int
from .contract import Backend, Stage, host_array

__all__ = [
    "OpenVinoBackend",
    "import_openvino",
    "default_cache_dir",
    "cache_folder",
    "HINTS",
    "PRECISIONS",
    "INSTALL_HINT",
]

log = logging.getLogger(__name__)

INSTALL_HINT = '"fourpp-eusr[openvino]"  (or: pip install openvino==2026.4.0)'
HINTS = ("latency", "throughput")
"""``PERFORMANCE_HINT`` values (lower case here, upper case for OpenVINO)."""
PRECISIONS = ("f32", "bf16", "f16")
"""``INFERENCE_PRECISION_HINT`` values: f32 is exact float32; bf16/f16 trade accuracy for speed."""
KEY_FORMAT = 1
"""Bumped when the cache folder's key changes meaning."""
DEFAULT_MAX_SHAPES = 4
MAX_CACHED_BLOBS = 32
"""Blobs kept per cache folder (about 2 MB each for the compact model), newest first: images
smaller than a window compile a shape each, and the folder must not grow without bound."""

_ONNX_TYPES = {"f32": "tensor(float)", "u8": "tensor(uint8)", "f16": "tensor(float16)"}


def import_openvino() -> Any:
    """Import openvino, or raise :class:`BackendUnavailableError` with an install hint."""
    return require("openvino", pip=INSTALL_HINT, purpose="the 'openvino' backend", error=BackendUnavailableError)


def default_cache_dir() -> Path:
    """``$FOURPP_EUSR_CACHE/openvino`` or ``$XDG_CACHE_HOME/fourpp-eusr/openvino`` (``~/.cache/...``).

    The same root as the TensorRT engine cache (``export/engine_cache.py``), which the
    runtime cannot import.
    """
    env = os.environ.get("FOURPP_EUSR_CACHE")
    if env:
        return Path(env) / "openvino"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fourpp-eusr" / "openvino"


def cache_folder(root: str | os.PathLike[str], core: Any, version: str) -> Path:
    """``root/<key>``: one folder per OpenVINO version and CPU (see the module docstring)."""
    facts = {"key_format": KEY_FORMAT, "openvino": version}
    for prop in ("FULL_DEVICE_NAME", "DEVICE_ARCHITECTURE", "OPTIMIZATION_CAPABILITIES"):
        try:
            value = core.get_property("CPU", prop)
        except RuntimeError:  # an older plugin without the property: the key omits it
            continue
        facts[prop] = list(value) if isinstance(value, (list, tuple)) else str(value)
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]


def _dims(partial_shape: Any) -> list[object]:
    """A partial shape as ints (static) and None (dynamic), as :func:`infer_model_info` takes."""
    return [d.get_length() if d.is_static else None for d in partial_shape]


class OpenVinoBackend(Backend):
    """Runs an ONNX model with OpenVINO on the CPU.

    ``threads``: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's choice, all cores);
    ``streams``: ``NUM_STREAMS`` (None: the hint's choice); ``hint``: ``"latency"`` (one
    request at a time, as the executor runs) or ``"throughput"``; ``precision``:
    ``INFERENCE_PRECISION_HINT`` (``"f32"``: float32 is float32); ``cache``/``cache_dir``:
    compiled-blob cache (default folder :func:`default_cache_dir`); ``max_shapes``: compiled
    batch shapes kept; ``scale`` only for models without the exporter's metadata.
    """

    name = "openvino"
    activation_tensors = 2.0
    """OpenVINO reuses its buffers more tightly than ONNX Runtime: whole-image peaks of 4.6-5.0 KB
    per input pixel for the compact model (1.3-1.4 tensors beyond the I/O copies) and 8.8-9.1 KB
    for the paper configuration (1.7), measured in fresh processes at 240×135 to 480×270."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        streams: int | None = None,
        hint: str = "latency",
        precision: str = "f32",
        cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        max_shapes: int = DEFAULT_MAX_SHAPES,
        scale: int | None = None,
    ) -> None:
        if isinstance(model_path, (str, os.PathLike)):
            path = Path(model_path)
        else:
            raise InvalidArgumentError(f"the openvino backend takes an ONNX file path, got {type(model_path).__name__}")
        if hint not in HINTS:
            raise InvalidArgumentError(f"hint must be one of {list(HINTS)}, got {hint!r}")
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self._max_shapes = check_int("max_shapes", max_shapes, 1)
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_PRECISION_HINT": precision}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = check_int("threads", threads, 0)
        if streams is not None:
            config["NUM_STREAMS"] = check_int("streams", streams, 1)
        ov = import_openvino()
        if not path.is_file():
            raise ModelError(f"{path}: model file not found (expected an .onnx file)")
        self._ov = ov
        self._core = ov.Core()
        self.cache_dir: Path | None = None
        if cache:
            self.cache_dir = cache_folder(cache_dir or default_cache_dir(), self._core, ov.get_version())
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("openvino blob cache %s is not writable (%s); compiling without it", self.cache_dir, exc)
                self.cache_dir = None
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError or its own classes
            raise ModelError(f"{path}: OpenVINO cannot read the model ({_first_line(exc)})") from exc
        self.model_path = path
        self.config = config
        super().__init__(self._read_info(str(path), scale))
        names = {n for port in self._model.inputs for n in port.get_names()}
        if self.input_name not in names:
            raise ModelError(
                f"{path}: metadata names input {self.input_name!r} but the graph's inputs are {sorted(names)}"
            )
        outputs = {n for port in self._model.outputs for n in port.get_names()}
        if self.output_name not in outputs:
            raise ModelError(
                f"{path}: metadata names output {self.output_name!r} but the graph's outputs are {sorted(outputs)}"
            )
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._request: tuple[tuple[int, ...], Any] | None = None
        log.info(
            "openvino backend: %s (%s, x%d) with %s",
            path.name,
            self.io.value,
            self.scale,
            ", ".join(f"{k}={v}" for k, v in config.items()),
        )

    def _read_info(self, model: str, scale: int | None) -> ModelInfo:
        key = ["framework", METADATA_KEY]
        if self._model.has_rt_info(key):
            return parse_metadata(self._model.get_rt_info(key).astype(str), model=model, scale=scale)
        first_in, first_out = self._model.inputs[0], self._model.outputs[0]
        element = first_in.get_element_type().get_type_name()
        return infer_model_info(
            model=model,
            input_name=first_in.get_any_name(),
            input_type=_ONNX_TYPES.get(element, element),
            input_shape=_dims(first_in.get_partial_shape()),
            output_name=first_out.get_any_name(),
            output_shape=_dims(first_out.get_partial_shape()),
            scale=scale,
        )

    # -- compiled models -----------------------------------------------------------------
    def compiled(self, shape: tuple[int, ...]) -> Any:
        """The model compiled for the static input ``shape`` (compiled on first use, LRU)."""
        if self._closed:
            raise UpscaleError(f"backend {self.name!r} is closed; create a new one")
        with self._lock:
            hit = self._compiled.get(shape)
            if hit is not None:
                self._compiled.move_to_end(shape)
                return hit
            model = self._model.clone()
            try:
                model.reshape({self.input_name: list(shape)})
                compiled = self._core.compile_model(model, "CPU", self.config)
            except Exception as exc:  # OpenVINO raises RuntimeError or its own classes
                raise ModelError(
                    f"{self.model_path}: OpenVINO cannot compile the model for input shape {list(shape)} "
                    f"({_first_line(exc)})"
                ) from exc
            self._compiled[shape] = compiled
            while len(self._compiled) > self._max_shapes:
                self._compiled.popitem(last=False)
            try:
                cached = bool(compiled.get_property("LOADED_FROM_CACHE"))
            except RuntimeError:
                cached = False
            log.info(
                "openvino: %s for %s%s", self.model_path.name, list(shape), " (from the blob cache)" if cached else ""
            )
            if self.cache_dir is not None and not cached:
                _prune(self.cache_dir, MAX_CACHED_BLOBS)
            return compiled

    @property
    def max_shapes(self) -> int:
        """How many compiled batch shapes are kept (per factory and per stage)."""
        return self._max_shapes

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """Shapes compiled and kept, least recently used first."""
        return list(self._compiled)

    def kernel_precisions(self, shape: tuple[int, ...]) -> dict[tuple[str, str], int]:
        """``{(layer type, precision it runs in): count}`` of the model compiled for ``shape``.

        What the CPU plugin really executes, e.g. ``("Convolution", "i8")`` for the convs of a
        Q/DQ graph it turned into INT8 kernels (``"u8"`` on some CPUs: the activation type it
        picked, u8 on an AMD EPYC), ``("Convolution", "f32")`` for float ones.
        """
        counts: dict[tuple[str, str], int] = {}
        for op in self.compiled(shape).get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            counts[(kind, precision)] = counts.get((kind, precision), 0) + 1
        return counts

    def tensor(self, array: np.ndarray) -> Any:
        """An ``ov.Tensor`` sharing ``array``'s memory (no copy)."""
        return self._ov.Tensor(array, shared_memory=True)

    # -- Backend ---------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if self._request is None or self._request[0] != shape:
            self._request = (shape, self.compiled(shape).create_infer_request())
        request = self._request[1]
        out = np.empty(self.output_shape(shape), self.io.dtype)
        request.set_input_tensor(self.tensor(np.ascontiguousarray(batch)))
        request.set_output_tensor(self.tensor(out))
        _run(request, self.model_path)
        return out

    def _new_stage(self, slot: int) -> Stage:
        return _OpenVinoStage(self, slot)

    def _close(self) -> None:
        self._request = None
        self._compiled.clear()
        del self._model


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``*.blob`` files of ``folder`` (best effort)."""
    try:
        blobs = sorted(folder.glob("*.blob"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in blobs[keep:]:
            old.unlink(missing_ok=True)
    except OSError as exc:  # another process pruning at the same time, a read-only folder
        log.debug("openvino blob cache %s: pruning skipped (%s)", folder, exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run(request: Any, model: Path) -> None:
    try:
        request.infer()
    except Exception as exc:  # OpenVINO raises RuntimeError or its own classes
        raise UpscaleError(f"{model}: OpenVINO inference failed ({_first_line(exc)})") from exc


class _OpenVinoStage(Stage):
    """Runs the compiled model in place on the executor's host buffers (shared ``ov.Tensor``).

    ``bind`` only records the buffers (the contract checks bind fake pointers); the first
    ``enqueue`` after a change wraps them and sets them on the shape's request, later ones
    just run it: the executor rebinds the same buffers every batch.
    """

    factory: OpenVinoBackend

    def __init__(self, factory: OpenVinoBackend, slot: int) -> None:
        super().__init__(factory, slot)
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._request: Any = None
        self._want: tuple[int, int, tuple[int, ...], tuple[int, ...]] | None = None
        self._applied: tuple[int, int, tuple[int, ...], tuple[int, ...]] | None = None

    def _bind(
        self,
        input_ptr: int,
        output_ptr: int,
        input_shape: tuple[int, int, int, int],
        output_shape: tuple[int, int, int, int],
    ) -> None:
        self._want = (input_ptr, output_ptr, input_shape, output_shape)

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        request = self._requests.get(shape)
        if request is None:
            request = self.factory.compiled(shape).create_infer_request()
            self._requests[shape] = request
            while len(self._requests) > self.factory.max_shapes:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(shape)
        return request

    def _enqueue(self, stream: int) -> None:
        if self.factory.closed:
            raise UpscaleError(f"backend {self.factory.name!r} is closed; create a new one")
        if self._want is None:  # unreachable through enqueue(), which checks bind() ran
            raise UpscaleError(f"{self.factory.name} stage for slot {self.slot}: call bind() before enqueue()")
        if self._want != self._applied:
            input_ptr, output_ptr, input_shape, output_shape = self._want
            request = self._request_for(input_shape)
            dtype = self.factory.io.dtype
            request.set_input_tensor(self.factory.tensor(host_array(input_ptr, dtype, input_shape)))
            request.set_output_tensor(self.factory.tensor(host_array(output_ptr, dtype, output_shape)))
            self._request, self._applied = request, self._want
        _run(self._request, self.factory.model_path)

    def _close(self) -> None:
        self._requests.clear()
        self._request = self._want = self._applied = None
