"""Frames that already live on a GPU: what ``Upscaler.upscale`` accepts and can hand back.

An application that decodes or renders on the GPU (NVDEC, a CuPy or torch pipeline, a
frame from a C++ engine) should not round-trip each frame through host memory. Anything
exposing ``__cuda_array_interface__`` (CuPy, torch, Numba, ``runtime.cuda.DeviceArray``)
or ``__dlpack__`` with a CUDA device is read in place: its windows are gathered by
device-to-device copies straight into the model's input buffers, and the result can stay on
the device as a :class:`DeviceFrame`.

The contract (also in docs/usage.md):

* a device frame is H×W×3 uint8 RGB, pixels packed (a pixel is 3 bytes, a channel 1), rows
  at any pitch (pitched allocations from decoders are fine), on the GPU the Upscaler runs
  on; the model must have ``uint8-nhwc`` I/O, so a window is a plain 2-D byte copy and no
  layout or dtype conversion runs on the device;
* ordering: a ``__cuda_array_interface__`` ``stream`` (version 3) is synchronised before the
  frame is read; ``__dlpack__`` is called with the Upscaler's own stream, which is then
  synchronised. Either way the producer's pending work on the frame finishes first, and the
  frame must stay unchanged until ``upscale`` returns;
* a :class:`DeviceFrame` result is complete when returned (its interface names no stream).

A DLPack capsule from the CPU (``__dlpack_device__`` says kDLCPU, as numpy's does) is just a
host array: :func:`host_array_from_dlpack` views it with ``np.from_dlpack``, no copy.
Parsing needs no CUDA library, so this module imports anywhere.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = [
    "DeviceImage",
    "DeviceFrame",
    "is_device_source",
    "is_host_dlpack",
    "host_array_from_dlpack",
    "device_image",
    "packed_cuda_array_interface",
]

KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3
KDL_CUDA_MANAGED = 13
_HOST_DLPACK = (KDL_CPU, KDL_CUDA_HOST)
_DEVICE_DLPACK = (KDL_CUDA, KDL_CUDA_MANAGED)
_DLPACK_DTYPES = {(0, 8): "i1", (1, 8): "u1", (1, 16): "u2", (2, 16): "f2", (2, 32): "f4", (2, 64): "f8"}


def packed_cuda_array_interface(ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    """``__cuda_array_interface__`` v3 of a C-contiguous device array whose work is complete
    (no stream to wait for): what DeviceFrame and runtime.cuda.DeviceArray hand out."""
    return {"shape": shape, "typestr": dtype.str, "data": (ptr, False), "strides": None, "version": 3, "stream": None}


@dataclass(frozen=True)
class DeviceImage:
    """A frame on the GPU as the executor reads it: where its pixels are and how they lie.

    ``row_pitch`` is the byte distance between rows (at least ``width * channels *
    itemsize``); pixels within a row are packed. ``owner`` keeps the producer's memory alive
    for as long as this object lives.
    """

    ptr: int
    height: int
    width: int
    channels: int
    dtype: np.dtype
    row_pitch: int
    ndim: int
    device: int | None = None
    owner: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.ndim == 2 else (self.height, self.width, self.channels)

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.dtype.itemsize

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.shape))} {self.dtype} device frame"


class DeviceFrame:
    """An upscaled frame left on the GPU; hand it to CuPy/torch/Numba without a copy.

    ``torch.as_tensor(frame, device="cuda")`` or ``cupy.asarray(frame)`` read it through
    ``__cuda_array_interface__``. It owns its device memory: keep it (or what you made from
    it without copying) alive while in use; :meth:`close` frees it early.
    """

    def __init__(self, buffer: Any, shape: tuple[int, ...], dtype: Any, device: Any = None) -> None:
        self.buffer = buffer
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._device = device
        if self.nbytes > buffer.nbytes:
            raise InvalidArgumentError(f"a {self.dtype} frame of shape {self.shape} does not fit {buffer.nbytes} bytes")

    @property
    def ptr(self) -> int:
        return int(self.buffer.ptr)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # complete when returned: upscale() waited for every copy into it
        return packed_cuda_array_interface(self.ptr, self.shape, self.dtype)

    def close(self) -> None:
        """Free the device memory now instead of when this object is collected."""
        self.buffer.close()

    def __enter__(self) -> DeviceFrame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeviceFrame({'x'.join(map(str, self.shape))} {self.dtype} at 0x{self.ptr:x})"


# -- recognising sources -------------------------------------------------------------------


def _dlpack_device(obj: Any) -> tuple[int, int] | None:
    fn = getattr(obj, "__dlpack_device__", None)
    if fn is None or isinstance(obj, np.ndarray):
        return None
    try:
        kind, index = fn()
    except Exception as exc:
        raise InvalidArgumentError(f"{type(obj).__name__}.__dlpack_device__() failed: {exc}") from exc
    return int(kind), int(index)


def is_device_source(obj: Any) -> bool:
    """Whether ``obj`` is a frame on a CUDA device (``__cuda_array_interface__`` or CUDA DLPack)."""
    if isinstance(obj, np.ndarray):
        return False
    if hasattr(type(obj), "__cuda_array_interface__") or hasattr(obj, "__cuda_array_interface__"):
        return True
    device = _dlpack_device(obj)
    return device is not None and device[0] in _DEVICE_DLPACK


def is_host_dlpack(obj: Any) -> bool:
    """Whether ``obj`` is a non-numpy DLPack producer whose memory is on the host."""
    device = _dlpack_device(obj)
    return device is not None and device[0] in _HOST_DLPACK and hasattr(obj, "__dlpack__")


def host_array_from_dlpack(obj: Any) -> np.ndarray:
    """A numpy view of a host DLPack producer (``np.from_dlpack``: no copy)."""
    try:
        return np.from_dlpack(obj)
    except Exception as exc:
        raise InvalidArgumentError(f"cannot read {type(obj).__name__} through DLPack: {exc}") from exc


def device_image(obj: Any, *, stream: int | None = None) -> tuple[DeviceImage, int | None]:
    """Parse a device frame; returns it and the stream handle to synchronise before reading.

    ``stream`` is the consumer stream passed to ``__dlpack__`` (the producer orders its work
    before it). ``__cuda_array_interface__`` is preferred when both protocols exist: it
    needs no capsule bookkeeping.
    """
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_cuda_array_interface(obj)
    if hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj, stream), stream
    raise InvalidArgumentError(
        f"{type(obj).__name__} is not a device frame: expected __cuda_array_interface__ or __dlpack__"
    )


def _layout(
    what: str, shape: tuple[int, ...], dtype: np.dtype, strides: tuple[int, ...] | None
) -> tuple[int, int, int, int]:
    """``(height, width, channels, row_pitch)``, checking that pixels within a row are packed."""
    if len(shape) not in (2, 3) or any(s < 0 for s in shape):
        raise InvalidArgumentError(f"{what}: expected an H×W or H×W×C frame, got shape {shape}")
    height, width = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    if height == 0 or width == 0 or channels == 0:
        raise InvalidArgumentError(f"{what}: the frame is empty (shape {shape})")
    item = dtype.itemsize
    packed = (width * channels * item, channels * item, item)[: len(shape)]
    if strides is None:
        return height, width, channels, packed[0]
    strides = tuple(int(s) for s in strides)
    inner_ok = strides[1:] == packed[1:] or (width == 1 and strides[2:] == packed[2:])
    if len(strides) != len(shape) or not inner_ok or strides[0] < packed[0]:
        raise InvalidArgumentError(
            f"{what}: pixels must be packed within rows (strides {packed[1:]} bytes after the row "
            f"pitch, pitch >= {packed[0]}), got strides {strides}; make it contiguous first "
            "(cupy.ascontiguousarray / tensor.contiguous())"
        )
    return height, width, channels, strides[0]


def _from_cuda_array_interface(obj: Any) -> tuple[DeviceImage, int | None]:
    what = f"{type(obj).__name__}.__cuda_array_interface__"
    try:
        cai = obj.__cuda_array_interface__
        shape = tuple(int(s) for s in cai["shape"])
        dtype = np.dtype(cai["typestr"])
        ptr = int(cai["data"][0])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidArgumentError(f"{what} is malformed ({exc!r}); expected shape, typestr and data") from exc
    if cai.get("mask") is not None:
        raise InvalidArgumentError(f"{what}: masked arrays are not supported")
    height, width, channels, pitch = _layout(what, shape, dtype, cai.get("strides"))
    if ptr == 0:
        raise InvalidArgumentError(f"{what}: data pointer is NULL")
    stream = cai.get("stream")
    if stream == 0:
        raise InvalidArgumentError(f"{what}: stream 0 is disallowed by the interface (use 1 for the legacy stream)")
    image = DeviceImage(ptr, height, width, channels, dtype, pitch, len(shape), None, obj)
    return image, None if stream is None else int(stream)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_rename = ctypes.pythonapi.PyCapsule_SetName
_capsule_rename.restype = ctypes.c_int
_capsule_rename.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _DLPackOwner:
    """Holds a consumed DLPack tensor; calls the producer's deleter once, when released."""

    def __init__(self, managed: Any, producer: Any) -> None:
        self._managed = managed
        self.producer = producer

    def release(self) -> None:
        managed, self._managed = self._managed, None
        if managed is not None and managed.contents.deleter:
            managed.contents.deleter(managed)

    def __del__(self) -> None:
        self.release()


def _from_dlpack(obj: Any, stream: int | None) -> DeviceImage:
    what = f"{type(obj).__name__}.__dlpack__"
    try:
        capsule = obj.__dlpack__(stream=stream)
    except Exception as exc:
        raise InvalidArgumentError(f"{what}(stream={stream}) failed: {exc}") from exc
    try:
        address = _capsule_pointer(capsule, b"dltensor")
    except ValueError as exc:  # a versioned or used capsule: not what we asked for
        raise InvalidArgumentError(f"{what} returned a capsule that is not an unused 'dltensor' ({exc})") from exc
    managed = ctypes.cast(address, ctypes.POINTER(_DLManagedTensor))
    _capsule_rename(capsule, b"used_dltensor")  # consumed: the capsule's destructor won't free it
    owner = _DLPackOwner(managed, obj)
    tensor = managed.contents.dl_tensor
    kind, index = tensor.device.device_type, tensor.device.device_id
    if kind not in _DEVICE_DLPACK:
        owner.release()
        raise InvalidArgumentError(f"{what}: the tensor is on DLPack device type {kind}, not CUDA")
    code = (tensor.dtype.code, tensor.dtype.bits)
    if code not in _DLPACK_DTYPES or tensor.dtype.lanes != 1:
        owner.release()
        raise InvalidArgumentError(f"{what}: unsupported DLPack dtype code {code[0]} bits {code[1]}")
    dtype = np.dtype(_DLPACK_DTYPES[code])
    shape = tuple(int(tensor.shape[i]) for i in range(tensor.ndim))
    strides = None if not tensor.strides else tuple(int(tensor.strides[i]) * dtype.itemsize for i in range(tensor.ndim))
    try:
        height, width, channels, pitch = _layout(what, shape, dtype, strides)
    except InvalidArgumentError:
        owner.release()
        raise
    ptr = int(tensor.data or 0) + int(tensor.byte_offset)
    return DeviceImage(ptr, height, width, channels, dtype, pitch, len(shape), int(index), owner)
