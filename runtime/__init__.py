"""4PP-EUSR runtime: tiled ×4 super-resolution of images of any size.

    from runtime import Upscaler
    with Upscaler("eusr-x4.onnx") as up:
        big = up.upscale("photo.png")          # numpy array, same dtype/layout as the input
        up.upscale_file("photo.png", "photo_x4.png")

    Upscaler("eusr-x4.plan", backend=TensorRT(device=1, slots=3), tile=128)   # typed options

Importing this package needs only numpy and Pillow; inference backends (onnxruntime,
TensorRT, cuda-python, torch) and tqdm are imported when first used.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from . import errors
from .backends import (
    Backend,
    BackendOptions,
    OnnxRuntime,
    OnnxRuntimeCuda,
    OpenVino,
    Stage,
    StageFactory,
    TensorRT,
    TorchCuda,
)
from .errors import (
    BackendUnavailableError,
    ImageReadError,
    ImageWriteError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelError,
    OutOfMemoryError,
    OutputExistsError,
    UpscaleError,
)
from .image_io import ChannelLayout, ImageInfo, read_image, write_image
from .layout import ModelIO, Precision
from .model_info import ModelInfo
from .tiling import TilePlan, plan_tiles
from .upscaler import DEFAULT_BATCH, DEFAULT_HALO, DEFAULT_TILE, Upscaler

try:
    __version__ = _metadata.version("fourpp-eusr")
except _metadata.PackageNotFoundError:  # running from a source checkout, not installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "Upscaler",
    "BackendOptions",
    "OnnxRuntime",
    "OnnxRuntimeCuda",
    "OpenVino",
    "TensorRT",
    "TorchCuda",
    "StageFactory",
    "Stage",
    "Backend",
    "Precision",
    "DEFAULT_TILE",
    "DEFAULT_HALO",
    "DEFAULT_BATCH",
    "read_image",
    "write_image",
    "ImageInfo",
    "ChannelLayout",
    "ModelInfo",
    "ModelIO",
    "TilePlan",
    "plan_tiles",
    "errors",
    "UpscaleError",
    "InvalidArgumentError",
    "ImageReadError",
    "ImageWriteError",
    "OutputExistsError",
    "ModelError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "OutOfMemoryError",
]
