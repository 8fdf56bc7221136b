"""Send an image to the ``upscale`` model of a Triton server, get the upscaled image back.

    from runtime.triton_client import upscale
    big = upscale("127.0.0.1:8000", image)                 # HTTP; numpy uint8 H×W or H×W×C
    big = upscale("grpc://127.0.0.1:8001", "photo.jpg")    # gRPC; a file or bytes go encoded

    with UpscaleClient("127.0.0.1:8000") as client:       # one connection for many requests
        for image in images:
            out = client.upscale(image)

The server side is ``export/triton_model.py`` (``python export/to_triton.py`` writes it,
``python -m runtime serve`` runs it): arrays travel as the ``IMAGE`` tensor, files and
bytes as ``IMAGE_BYTES`` and are decoded on the server. A refused request raises
:class:`TritonClientError` with the server's message (what was wrong). Needs
``tritonclient[http,grpc]`` (``pip install ".[serve]"``), imported when a client is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .closing import Closing
from .errors import InvalidArgumentError, UpscaleError

__all__ = ["TritonClientError", "UpscaleClient", "upscale"]

MODEL = "upscale"


class TritonClientError(UpscaleError):
    """The server refused or failed the request (its message says why), or is unreachable."""


def _split(url: str, protocol: str | None) -> tuple[str, str]:
    for scheme in ("http", "grpc"):
        if url.startswith(f"{scheme}://"):
            if protocol not in (None, scheme):
                raise InvalidArgumentError(f"url {url!r} says {scheme} but protocol={protocol!r}")
            return scheme, url[len(scheme) + 3 :]
    if "://" in url:
        raise InvalidArgumentError(f"url {url!r}: expected host:port, http://host:port or grpc://host:port")
    protocol = protocol or "http"
    if protocol not in ("http", "grpc"):
        raise InvalidArgumentError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    return protocol, url


def _modules(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise TritonClientError(
            f"the Triton {protocol} client is not installed ({exc}); pip install 'tritonclient[http,grpc]' "
            "or pip install '.[serve]'"
        ) from None
    return client


class UpscaleClient(Closing):
    """A connection to one Triton server's ``upscale`` model (``protocol`` http or grpc)."""

    def __init__(
        self, url: str, *, protocol: str | None = None, model: str = MODEL, timeout: float | None = 300.0
    ) -> None:
        self.protocol, self.address = _split(url, protocol)
        self.model = model
        self.timeout = timeout
        self._tc = _modules(self.protocol)
        try:
            if self.protocol == "http":
                t = timeout or 300.0
                self._client = self._tc.InferenceServerClient(self.address, connection_timeout=t, network_timeout=t)
            else:
                self._client = self._tc.InferenceServerClient(self.address)
        except Exception as exc:  # noqa: BLE001 - tritonclient raises several types for a bad address
            raise TritonClientError(f"cannot connect to Triton at {url!r}: {exc}") from None

    def _inputs(self, image: Any) -> tuple[list[Any], bool]:
        """The request's input tensor and whether the result should lose its channel axis."""
        squeeze = False
        if isinstance(image, (str, os.PathLike)):
            try:
                image = Path(image).read_bytes()
            except OSError as exc:
                raise InvalidArgumentError(f"image {os.fspath(image)!r}: cannot read the file ({exc})") from None
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = np.array([bytes(image)], dtype=np.object_)
            tensor = self._tc.InferInput("IMAGE_BYTES", [1], "BYTES")
            tensor.set_data_from_numpy(data)
            return [tensor], False
        if isinstance(image, Image.Image):
            image = np.asarray(image)
        if not isinstance(image, np.ndarray):
            raise InvalidArgumentError(
                f"image must be a numpy array, a PIL image, a file path or encoded bytes, got {type(image).__name__}"
            )
        if image.ndim == 2:
            image, squeeze = image[:, :, None], True
        if image.dtype != np.uint8:
            raise InvalidArgumentError(
                f"image array dtype must be uint8 for the upscale model, got {image.dtype}; send the file's bytes "
                "for 16-bit images"
            )
        array = np.ascontiguousarray(image)
        tensor = self._tc.InferInput("IMAGE", list(array.shape), "UINT8")
        tensor.set_data_from_numpy(array)
        return [tensor], squeeze

    def infer(self, inputs: list[Any]) -> np.ndarray:
        """Send ready ``tritonclient`` inputs as they are (no client-side checks); the ``UPSCALED`` array."""
        outputs = [self._tc.InferRequestedOutput("UPSCALED")]
        kwargs: dict[str, Any] = {}
        if self.protocol == "grpc" and self.timeout:
            kwargs["client_timeout"] = self.timeout
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs, **kwargs)
        except self._tc_exception() as exc:
            raise TritonClientError(
                f"Triton at {self.address} ({self.protocol}), model {self.model!r}: {exc.message()}"
            ) from None
        try:
            out = result.as_numpy("UPSCALED")
        except ValueError as exc:  # the data does not fill the shape the response states
            raise TritonClientError(
                f"Triton at {self.address}: the UPSCALED data does not match its shape ({exc}); a Python-backend "
                "stub that reads numpy 2 arrays with numpy 1's layout sends empty tensors (docs/serving.md)"
            ) from None
        if out is None:
            raise TritonClientError(f"Triton at {self.address}: the response has no UPSCALED output")
        return np.asarray(out)

    def _tc_exception(self) -> Any:  # tritonclient.utils.InferenceServerException
        from tritonclient.utils import InferenceServerException

        return InferenceServerException

    def upscale(self, image: Any) -> np.ndarray:
        """``image`` (uint8 H×W / H×W×C array, PIL image, file path or encoded bytes) → the upscaled uint8 array."""
        inputs, squeeze = self._inputs(image)
        out = self.infer(inputs)
        return out[:, :, 0] if squeeze and out.ndim == 3 else out

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()


def upscale(
    url: str, image: Any, *, protocol: str | None = None, model: str = MODEL, timeout: float | None = 300.0
) -> np.ndarray:
    """Upscale one image on the Triton server at ``url`` (``host:port``, ``http://…`` or ``grpc://…``)."""
    with UpscaleClient(url, protocol=protocol, model=model, timeout=timeout) as client:
        return client.upscale(image)
