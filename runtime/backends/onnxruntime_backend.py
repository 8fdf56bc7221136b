"""ONNX Runtime backend: CPU by default, CUDA when onnxruntime-gpu provides it.

onnxruntime is imported when a backend is created, never when this module is imported,
so ``import runtime`` stays light.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import BackendUnavailableError, ModelError
from ..model_info import METADATA_KEY, ModelInfo, infer_model_info, parse_metadata
from ..utils import check_int
from .contract import Backend

__all__ = ["OnnxRuntimeBackend", "import_onnxruntime", "DEFAULT_PROVIDERS"]

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def import_onnxruntime():
    """Import onnxruntime, or raise :class:`BackendUnavailableError` with an install hint."""
    return require(
        "onnxruntime",
        pip="onnxruntime  (or onnxruntime-gpu for CUDA)",
        purpose="the 'onnxruntime' backend",
        error=BackendUnavailableError,
    )


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with ONNX Runtime.

    ``providers`` are ONNX Runtime execution providers in priority order (default: CPU
    only); ``intra_op_threads`` caps the threads one inference uses (default: ONNX
    Runtime's choice, all physical cores); ``scale`` is needed only for models without
    the exporter's metadata.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        scale: int | None = None,
    ) -> None:
        ort = import_onnxruntime()
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found (expected an .onnx file)")
        providers = tuple(providers or DEFAULT_PROVIDERS)
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime execution provider(s) {missing} are not available here (available: "
                f"{available}); for CUDA install onnxruntime-gpu, or use the default CPU provider"
            )
        options = ort.SessionOptions()
        # The CPU arena grows in power-of-two chunks and keeps them: peak memory then tracks
        # the arena, not the tile. Plain allocation keeps the peak at what a batch needs.
        options.enable_cpu_mem_arena = False
        if intra_op_threads is not None:
            options.intra_op_num_threads = check_int("intra_op_threads", intra_op_threads, 0)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as exc:
            raise ModelError(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc
        self.model_path = path
        self.providers = tuple(self._session.get_providers())
        super().__init__(self._read_info(str(path), scale))
        names = {i.name for i in self._session.get_inputs()}
        if self.input_name not in names:
            raise ModelError(
                f"{path}: metadata names input {self.input_name!r} but the graph's inputs are {sorted(names)}"
            )
        log.info("onnxruntime backend: %s on %s (%s, x%d)", path.name, self.providers, self.io.value, self.scale)

    def _read_info(self, model: str, scale: int | None) -> ModelInfo:
        custom = self._session.get_modelmeta().custom_metadata_map or {}
        if METADATA_KEY in custom:
            return parse_metadata(custom[METADATA_KEY], model=model, scale=scale)
        first_in = self._session.get_inputs()[0]
        first_out = self._session.get_outputs()[0]
        return infer_model_info(
            model=model,
            input_name=first_in.name,
            input_type=first_in.type,
            input_shape=first_in.shape,
            output_name=first_out.name,
            output_shape=first_out.shape,
            scale=scale,
        )

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (result,) = self._session.run([self.output_name], {self.input_name: batch})
        return result

    def _close(self) -> None:
        del self._session
