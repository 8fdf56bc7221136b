"""The ``upscale`` model of a Triton repository: Triton's Python backend around ``runtime.Upscaler``.

``export/to_triton.py`` copies this file to ``<repository>/upscale/1/model.py``. A request
carries one whole image of any size, either ``IMAGE`` (uint8 H×W×C, C = 1 gray, 2 gray+alpha,
3 RGB, 4 RGBA) or ``IMAGE_BYTES`` (one encoded PNG/JPEG/WebP/TIFF file); the response is
``UPSCALED``, the uint8 H·s×W·s×C image (a 16-bit file's result is rounded to 8 bits). Tiling happens here, server-side, with the
backend, tile and halo that the model's ``config.pbtxt`` parameters name.

Each bad request gets its own ``TritonError`` naming what was wrong (Triton itself refuses
a wrong dtype or rank before ``execute``); the other requests of the same call are served,
and so is the next call. This file runs inside Triton's Python-backend stub: it needs
numpy, Pillow and ``runtime`` importable there (``runtime/serve.py`` arranges it), and
imports nothing from ``export``.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
from PIL import Image, UnidentifiedImageError

from runtime import OnnxRuntime, OnnxRuntimeCuda, OpenVino, TensorRT, UpscaleError, Upscaler

log = logging.getLogger("fourpp_eusr.triton")

INPUT_ARRAY = "IMAGE"
INPUT_BYTES = "IMAGE_BYTES"
OUTPUT = "UPSCALED"


class BadRequest(Exception):
    """One request is malformed; its message goes back to that client."""


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


def _backend(name: str, threads: int | None, device: int) -> Any:
    if name == "onnxruntime":
        return OnnxRuntime(threads=threads)
    if name == "openvino":
        return OpenVino(threads=threads)
    if name == "onnxruntime-cuda":
        return OnnxRuntimeCuda(device=device)
    if name == "tensorrt":
        return TensorRT(device=device)
    if name == "auto":
        return "auto"
    raise ValueError(
        f"parameter backend={name!r} is not one of onnxruntime, openvino, onnxruntime-cuda, tensorrt, auto"
    )


def _error(message: str) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    """Triton's Python-backend model: ``initialize`` once per instance, ``execute`` per batch of requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = version_dir / params.get("model_file", "model.onnx")
        threads = int(params["threads"]) if params.get("threads") else None
        tile: int | str = params.get("tile") or "auto"
        if tile != "auto":
            tile = int(tile)
        halo = int(params["halo"]) if params.get("halo") else None
        self.max_pixels = int(params.get("max_pixels") or 0)
        device = int(args.get("model_instance_device_id") or 0)
        backend = _backend(params.get("backend", "onnxruntime"), threads, device)
        self.upscaler = Upscaler(model_file, backend=backend, tile=tile, halo=halo)
        self.scale = self.upscaler.scale
        log.info("%s instance %s: %r", args["model_name"], args.get("model_instance_name"), self.upscaler)

    # ----------------------------------------------------------------------- one request

    def _check_size(self, height: int, width: int, what: str) -> None:
        if height < 1 or width < 1:
            raise BadRequest(f"{what} is {height}x{width} pixels; expected at least 1x1")
        if self.max_pixels and height * width > self.max_pixels:
            raise BadRequest(
                f"{what} is {height}x{width} = {height * width} pixels, over this model's limit of "
                f"{self.max_pixels} (parameter max_pixels in config.pbtxt); send a smaller image or tiles"
            )

    def _image(self, request: Any) -> np.ndarray | Image.Image:
        array_tensor = pb_utils.get_input_tensor_by_name(request, INPUT_ARRAY)
        bytes_tensor = pb_utils.get_input_tensor_by_name(request, INPUT_BYTES)
        if (array_tensor is None) == (bytes_tensor is None):
            raise BadRequest(
                f"send exactly one of {INPUT_ARRAY} (uint8 HxWxC) or {INPUT_BYTES} (one encoded image file), "
                f"got {'both' if array_tensor is not None else 'neither'}"
            )
        if array_tensor is not None:
            array = array_tensor.as_numpy()
            height, width, channels = array.shape
            if not 1 <= channels <= 4:
                raise BadRequest(
                    f"{INPUT_ARRAY} has shape {list(array.shape)}: {channels} channels; expected HxWxC with C in "
                    "1..4 (gray, gray+alpha, RGB, RGBA)"
                )
            self._check_size(height, width, INPUT_ARRAY)
            return array
        items = bytes_tensor.as_numpy().reshape(-1)
        if items.size != 1:
            raise BadRequest(f"{INPUT_BYTES} holds {items.size} elements; expected exactly one encoded image file")
        data = items[0]
        data = data if isinstance(data, bytes) else bytes(data)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise BadRequest(
                f"{INPUT_BYTES}: {len(data)} bytes starting {data[:8]!r} are no image format Pillow knows; "
                "send a PNG, JPEG, WebP or TIFF file"
            ) from None
        except OSError as exc:
            raise BadRequest(f"{INPUT_BYTES}: cannot read the image header ({exc})") from None
        width, height = image.size
        self._check_size(height, width, INPUT_BYTES)  # before decoding the pixels
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadRequest(f"{INPUT_BYTES}: the {image.format} data is corrupt ({exc})") from None
        return image

    def _upscale(self, request: Any) -> Any:
        try:
            image = self._image(request)
            result = self.upscaler.upscale(image)
        except (BadRequest, UpscaleError) as exc:
            return pb_utils.InferenceResponse(error=_error(str(exc)))
        if result.dtype == np.uint16:  # a 16-bit file: the output tensor is uint8
            result = np.round(result.astype(np.float32) / 257.0).astype(np.uint8)
        if result.ndim == 2:
            result = result[:, :, None]
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, np.ascontiguousarray(result))])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._upscale(request))
            except Exception as exc:
                log.exception("upscale request failed")
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"upscale failed: {exc}")))
        return responses

    def finalize(self) -> None:
        self.upscaler.close()
