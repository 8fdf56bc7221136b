"""The backend conformance checks: what every :class:`~runtime.backends.StageFactory` must do.

One function, run on every backend that can be made here (ONNX Runtime CPU, its IOBinding
stage, PyTorch on the CPU, the emulated stages, the TensorRT stage on the real bindings with
fake engines): the public methods refuse the same bad input with the same kind of error
before the backend sees it, a stage is usable only between ``bind`` and ``close``, and a
closed factory makes no stages. :func:`run_on_host` then checks the numbers for backends
that compute on host memory here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ..backends.contract import Stage, StageFactory, host_array
from ..errors import InvalidArgumentError, UpscaleError

__all__ = ["check_contract", "run_on_host"]


def _raises(kind: type[BaseException], words: tuple[str, ...], fn: Callable[[], Any]) -> str:
    try:
        fn()
    except kind as exc:
        text = str(exc)
        missing = [w for w in words if w not in text]
        if missing:
            raise AssertionError(f"{kind.__name__} message {text!r} lacks {missing}") from exc
        return text
    except Exception as exc:
        raise AssertionError(f"expected {kind.__name__} containing {words}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {kind.__name__} containing {words}, nothing was raised")


def check_contract(
    factory: StageFactory, good_shape: tuple[int, int, int, int], *, pointers: tuple[int, int] = (0x1000, 0x2000)
) -> dict[str, str]:
    """Run the contract's refusals on ``factory`` (closed at the end); returns the messages.

    ``good_shape`` is a batch shape the backend runs; ``pointers`` are buffers big enough for
    it (any positive ints for backends that only record them at ``bind``). Nothing is
    enqueued on the good shape here, so device backends need no device.
    """
    io = factory.io
    msgs: dict[str, str] = {}
    if not isinstance(factory, StageFactory):
        raise AssertionError(f"{type(factory).__name__} is not a StageFactory")
    msgs["slot"] = _raises(InvalidArgumentError, ("slot",), lambda: factory.create_stage(-1))
    stage = factory.create_stage(0)
    if not isinstance(stage, Stage):
        raise AssertionError(f"{type(stage).__name__} is not a Stage")
    msgs["unbound"] = _raises(UpscaleError, ("bind() before enqueue()",), lambda: stage.enqueue(0))
    inp, out = pointers
    for name, bad in (("zero", 0), ("negative", -8), ("bool", True), ("text", "0x10")):
        bind_bad = partial(stage.bind, bad, out, good_shape)  # type: ignore[arg-type]  # wrong on purpose
        msgs[f"ptr_{name}"] = _raises(InvalidArgumentError, ("input_ptr", "pointer"), bind_bad)
    msgs["out_ptr"] = _raises(InvalidArgumentError, ("output_ptr",), lambda: stage.bind(inp, None, good_shape))  # type: ignore[arg-type]
    n, h, w = io.spatial(good_shape)
    channels = list(good_shape)
    channels[io.channel_axis] = 2
    for name, shape in (
        ("rank", good_shape[1:]),
        ("channels", tuple(channels)),
        ("empty", io.batch_shape(0, h, w)),
        ("floats", tuple(float(d) for d in good_shape)),
    ):
        words = () if name == "empty" else ("input_shape",)  # an engine names its batch range instead
        msgs[f"shape_{name}"] = _raises(InvalidArgumentError, words, partial(stage.bind, inp, out, shape))  # type: ignore[arg-type]  # wrong on purpose
    if factory.max_batch < 1 << 20:
        msgs["batch"] = _raises(
            InvalidArgumentError,
            (str(factory.max_batch + 1),),
            lambda: stage.bind(inp, out, io.batch_shape(factory.max_batch + 1, h, w)),
        )
    limits = factory.window_limits()
    if limits is not None and limits[1] < 1 << 20:
        msgs["window"] = _raises(
            InvalidArgumentError,
            (str(limits[1] + 1),),
            lambda: stage.bind(inp, out, io.batch_shape(n, limits[1] + 1, w)),
        )
    stage.bind(inp, out, good_shape)
    if stage.bound_shape != tuple(good_shape):
        raise AssertionError(f"bound_shape {stage.bound_shape} != {good_shape}")
    for name, bad in (("negative", -1), ("bool", True), ("text", "s")):
        msgs[f"stream_{name}"] = _raises(InvalidArgumentError, ("stream",), partial(stage.enqueue, bad))  # type: ignore[arg-type]  # wrong on purpose
    stage.close()
    stage.close()  # idempotent
    msgs["closed_stage"] = _raises(UpscaleError, ("closed",), lambda: stage.bind(inp, out, good_shape))
    msgs["closed_enqueue"] = _raises(UpscaleError, ("closed",), lambda: stage.enqueue(0))
    factory.close()
    factory.close()  # idempotent
    if not factory.closed:
        raise AssertionError("factory.closed is False after close()")
    msgs["closed_factory"] = _raises(UpscaleError, ("closed",), lambda: factory.create_stage(0))
    return msgs


def run_on_host(factory: StageFactory, batch: np.ndarray) -> np.ndarray:
    """One ``bind`` + ``enqueue(0)`` of ``batch`` on host buffers; returns the output.

    For backends whose ``memory`` is ``"host"``: the result must be what the backend's model
    gives for ``batch``, written into the executor's buffer, not a copy somewhere else.
    """
    if factory.memory != "host":
        raise AssertionError(f"{factory.name} computes on device memory; run it through an executor")
    io = factory.io
    x = np.ascontiguousarray(batch, dtype=io.dtype)
    out_shape = factory.output_shape(x.shape)
    y = np.full(out_shape, 255 if io.is_integer else np.nan, dtype=io.dtype)
    stage = factory.create_stage(0)
    try:
        stage.bind(x.ctypes.data, y.ctypes.data, x.shape)
        stage.enqueue(0)
    finally:
        stage.close()
    return host_array(y.ctypes.data, io.dtype, out_shape).copy()
