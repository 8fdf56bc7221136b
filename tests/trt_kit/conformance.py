"""Conformance scenarios: export/to_trt.py and the TensorRT runtime stage against REAL bindings.

Run by ``tests/test_trt_conformance.py`` in a subprocess per TensorRT release (both are the
module ``tensorrt``), with ``.cache/trt/<version>`` first on ``PYTHONPATH``::

    python -m tests.trt_kit.conformance --expect-version 11.4.0.106 --out report.json

Only ``trt.Builder``, ``trt.Runtime`` and ``trt.OnnxParser`` (the entry points into the
stub native libraries) are replaced, by checked autospec fakes of the real classes
(``tests/trt_kit/fakes.py``); everything the code reaches through them is a checked fake
too, and enums, ``Dims``, ``ILogger`` and ``IProgressMonitor`` are the real ones. The GPU
query is replaced by a fixed H100.

Each scenario reports ``{"ok": bool, "error": "Type: message"}``. Positive scenarios must
pass on every release. Negative controls re-run a scenario on a copy of the real source
with one deliberate mistake (a misspelt method, an argument the real signature lacks, a
member TensorRT 11 removed, ...) and must fail in the way the test expects: that proves
the harness would catch the same mistake in the real code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io as _io
import json
import os
import sys
import tempfile
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import tensorrt as trt

from tests.trt_kit.fakes import Fakes
from tests.trt_kit.onnx_models import write_onnx

PLAN = b"fourpp-eusr fake serialized engine"
TIMING = b"fake timing cache"
H100 = ("NVIDIA H100 80GB HBM3", "9.0")


# --------------------------------------------------------------------------- the fake world


@dataclass
class World:
    fk: Fakes
    builder: Any
    network: Any
    parser: Any
    config: Any
    timing: Any
    runtime: Any
    engine: Any
    contexts: list
    profiles: list


def _shape_nchw(io: str, n: int, e: int) -> tuple[int, int, int, int]:
    return (n, 3, e, e) if io == "float32-nchw" else (n, e, e, 3)


def make_world(
    fk: Fakes,
    *,
    io: str = "float32-nchw",
    profiles: int = 3,
    tile: int = 128,
    halo: int = 12,
    batch: int = 8,
    min_window: int = 32,
    scale: int = 4,
    progress_phases: bool = True,
    execute: Callable[[Any, dict, dict], bool] | None = None,
) -> World:
    """The fake TensorRT objects of one build/runtime. ``execute(ctx, state, args)`` stands in
    for ``execute_async_v3`` (``state``: the context's input shape and tensor addresses)."""
    dtype = trt.DataType.FLOAT if io == "float32-nchw" else trt.DataType.UINT8
    dyn = (-1, 3, -1, -1) if io == "float32-nchw" else (-1, -1, -1, 3)
    inp = fk.make(trt.ITensor, name="lr", dtype=dtype, shape=trt.Dims(dyn))
    out = fk.make(trt.ITensor, name="sr", dtype=dtype, shape=trt.Dims(dyn))
    network = fk.make(trt.INetworkDefinition, num_inputs=1, num_outputs=1, get_input=inp, get_output=out)
    parser = fk.make(trt.OnnxParser, parse_from_file=True, num_errors=0)
    timing = fk.make(trt.ITimingCache, serialize=lambda a: fk.host_memory(TIMING))
    config = fk.make(trt.IBuilderConfig, set_timing_cache=True, create_timing_cache=timing, get_timing_cache=timing)
    added: list[Any] = []
    fk.wire(config, add_optimization_profile=lambda a: added.append(a["profile"]) or len(added) - 1)

    def build(a: dict) -> Any:
        monitor = fk.value_of(config, "progress_monitor")
        if progress_phases and monitor is not None:  # what TensorRT does while building
            monitor.phase_start("Building engine", None, 3)
            monitor.phase_start("Tactic timing", "Building engine", 2)
            steps = [monitor.step_complete("Tactic timing", s) for s in range(2)]
            monitor.phase_finish("Tactic timing")
            steps += [monitor.step_complete("Building engine", s) for s in range(3)]
            monitor.phase_finish("Building engine")
            if steps != [True] * 5:
                raise AssertionError(f"step_complete must return True to continue the build, got {steps}")
        return fk.host_memory(PLAN)

    builder = fk.make(
        trt.Builder,
        create_network=network,
        create_builder_config=config,
        create_optimization_profile=lambda a: fk.make(trt.IOptimizationProfile),
        build_serialized_network=build,
    )
    window = tile + 2 * halo
    shapes = [
        trt.Dims(_shape_nchw(io, 1, min_window)),
        trt.Dims(_shape_nchw(io, batch, window)),
        trt.Dims(_shape_nchw(io, batch, window)),
    ]
    contexts: list[Any] = []

    def new_context(a: dict) -> Any:
        state: dict[str, Any] = {}

        def set_shape(b: dict) -> bool:
            state["shape"] = tuple(b["shape"])
            return True

        def out_shape(b: dict) -> Any:
            s = state["shape"]
            if b["name"] == "lr":
                return trt.Dims(s)
            return trt.Dims(
                (s[0], s[1], s[2] * scale, s[3] * scale)
                if io == "float32-nchw"
                else (s[0], s[1] * scale, s[2] * scale, s[3])
            )

        def set_address(b: dict) -> bool:
            state.setdefault("addresses", {})[b["name"]] = b["memory"]
            return True

        ctx = fk.make(
            trt.IExecutionContext,
            set_input_shape=set_shape,
            get_tensor_shape=out_shape,
            set_tensor_address=set_address,
            execute_async_v3=True if execute is None else (lambda b: execute(ctx, state, b)),
            set_optimization_profile_async=True,
        )
        contexts.append(ctx)
        return ctx

    names = ["lr", "sr"]
    engine = fk.make(
        trt.ICudaEngine,
        num_io_tensors=2,
        num_optimization_profiles=profiles,
        get_tensor_name=lambda a: names[a["index"]],
        get_tensor_mode=lambda a: trt.TensorIOMode.INPUT if a["name"] == "lr" else trt.TensorIOMode.OUTPUT,
        get_tensor_dtype=dtype,
        get_tensor_shape=trt.Dims(dyn),
        get_tensor_format=trt.TensorFormat.LINEAR,
        get_tensor_format_desc="Row major linear format",
        get_tensor_profile_shape=lambda a: list(shapes),
        create_execution_context=new_context,
    )
    runtime = fk.make(
        trt.Runtime, deserialize_cuda_engine=lambda a: engine if bytes(a["serialized_engine"]) == PLAN else None
    )
    return World(fk, builder, network, parser, config, timing, runtime, engine, contexts, added)


@dataclass
class Mods:
    to_trt: types.ModuleType
    backend: types.ModuleType


@contextlib.contextmanager
def patched(
    world: World,
    mods: Mods,
    *,
    gpu: tuple[str, str] = H100,
    real: tuple[str, ...] = (),
    gpus: dict[int, tuple[str, str]] | None = None,
) -> Iterator[None]:
    """Swap the native entry points for the world's fakes (except those named in ``real``)
    and the GPU query for a fixed answer (``gpus``: per device index, else ``gpu`` for all),
    recorded in ``fk.calls`` (owner "cuda"; ``_run`` records ``cudaSetDevice`` there too)."""
    from runtime.trt_sidecar import GpuInfo
    from tests.trt_kit.fakes import Call

    fk = world.fk
    stack = contextlib.ExitStack()
    with stack:
        for name, cls, instance in (
            ("Builder", trt.Builder, world.builder),
            ("Runtime", trt.Runtime, world.runtime),
            ("OnnxParser", trt.OnnxParser, world.parser),
        ):
            if name not in real:
                stack.enter_context(mock.patch.object(trt, name, fk.constructor(cls, instance)))

        def query(device: int = 0) -> GpuInfo:
            fk.calls.append(Call("cuda", "query_gpu", {"device": device}))
            return GpuInfo(*(gpus or {}).get(device, gpu))

        stack.enter_context(mock.patch.object(mods.to_trt, "query_gpu", query))
        stack.enter_context(mock.patch.object(mods.backend, "query_gpu", query))
        yield


def load_mutated(modname: str, edits: list[tuple[str, str]]) -> types.ModuleType:
    """A fresh copy of module ``modname`` with each ``old`` → ``new`` applied (all must occur)."""
    spec = importlib.util.find_spec(modname)
    src = Path(spec.origin).read_text()
    for old, new in edits:
        if old not in src:
            raise RuntimeError(f"mutation anchor {old!r} not found in {spec.origin}: update the negative control")
        src = src.replace(old, new)
    mod = types.ModuleType(f"{modname}_mutated")
    mod.__file__ = spec.origin
    mod.__package__ = modname.rpartition(".")[0]
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{spec.origin} (mutated)", "exec"), mod.__dict__)
    return mod


def real_mods() -> Mods:
    return Mods(importlib.import_module("export.to_trt"), importlib.import_module("runtime.backends.tensorrt_backend"))


# --------------------------------------------------------------------------- scenarios


def _options(mods: Mods, **kw: Any) -> Any:
    from export.engine_cache import BuildOptions

    base = dict(precision="fp32", tile=128, halo=12, batch=8, min_window=32, profiles=3, opt_level=4, workspace=1 << 30)
    base.update(kw)
    return BuildOptions(**base)


def _build(tmp: Path, mods: Mods, world: World, *, io: str = "float32-nchw", precision: str = "fp32", **kw: Any) -> Any:
    onnx_path = tmp / f"model-{io}-{precision}.onnx"
    if not onnx_path.exists():
        write_onnx(onnx_path, io=io, precision=precision)
    with patched(world, mods):
        return mods.to_trt.build_engine(
            onnx_path,
            tmp / "model.plan",
            _options(mods, precision=precision, **kw),
            cache_dir=tmp / "cache",
            timing_cache=tmp / "timing.cache",
            progress=True,
        )


def scenario_build_fp32(
    tmp: Path, mods: Mods, fk: Fakes, *, lenient: bool = False, io: str = "float32-nchw", precision: str = "fp32"
) -> dict:
    world = make_world(fk, io=io)
    result = _build(tmp, mods, world, io=io, precision=precision)
    flags = fk.calls_to("Builder", "create_network")
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert flags == [{"flags": strongly}], flags
    logger = fk.calls_to("Builder", "__init__")[0]["logger"]
    assert isinstance(logger, trt.ILogger), logger
    assert fk.calls_to("OnnxParser", "__init__") == [{"network": world.network, "logger": logger}]
    assert fk.calls_to("OnnxParser", "parse_from_file") == [{"model": str(tmp / f"model-{io}-{precision}.onnx")}]
    if not lenient:
        assert fk.calls_to("IBuilderConfig", "set_flag") == [], "no BuilderFlag: precision lives in the graph"
    cleared = [a["flag"] for a in fk.calls_to("IBuilderConfig", "clear_flag")]
    assert cleared == [trt.BuilderFlag.TF32], (
        f"a {precision} build must clear BuilderFlag.TF32 (TensorRT's default is on, and float32 layers would "
        f"round to 10-bit mantissas); clear_flag calls: {cleared}"
    )
    win = 128 + 2 * 12
    want = (_shape_nchw(io, 1, 32), _shape_nchw(io, 8, win), _shape_nchw(io, 8, win))
    shapes = fk.calls_to("IOptimizationProfile", "set_shape")
    assert [(s["input"], tuple(s["min"]), tuple(s["opt"]), tuple(s["max"])) for s in shapes] == [("lr", *want)] * 3, (
        shapes
    )
    assert len(world.profiles) == 3
    assert fk.value_of(world.config, "builder_optimization_level") == 4
    assert fk.calls_to("IBuilderConfig", "set_memory_pool_limit") == [
        {"pool": trt.MemoryPoolType.WORKSPACE, "pool_size": 1 << 30}
    ]
    assert fk.calls_to("IBuilderConfig", "set_timing_cache") == [{"cache": world.timing, "ignore_mismatch": False}]
    monitor = fk.value_of(world.config, "progress_monitor")
    assert isinstance(monitor, trt.IProgressMonitor), monitor
    assert (tmp / "timing.cache").read_bytes() == TIMING
    assert (tmp / "model.plan").read_bytes() == PLAN
    side = json.loads((tmp / "model.plan.json").read_text())
    assert side["tensorrt_version"] == trt.__version__
    assert side["gpu"] == {"name": H100[0], "compute_capability": H100[1]}
    assert side["precision"] == precision and side["model"]["io"] == io and side["model"]["scale"] == 4
    assert side["tf32"] is False and side["build_options"]["allow_tf32"] is False
    assert [p["max"] for p in side["profiles"]] == [list(want[2])] * 3
    assert [(t["name"], t["mode"], t["dtype"], t["format"]) for t in side["io_tensors"]] == [
        ("lr", "input", "FLOAT" if io == "float32-nchw" else "UINT8", "LINEAR"),
        ("sr", "output", "FLOAT" if io == "float32-nchw" else "UINT8", "LINEAR"),
    ]
    assert side["onnx"]["metadata"]["recommended_halo"] == 12
    assert side["calibration"] == (side["onnx"]["metadata"].get("calibration") if precision == "int8" else None)
    assert len(side["cache_key"]) == 64 and (tmp / "cache" / f"{side['cache_key']}.plan").read_bytes() == PLAN
    assert result.reused is None
    return {"create_network_flags": strongly, "unknown_types": sorted(fk.unknown_types)}


def scenario_build_uint8_fp16(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    return scenario_build_fp32(tmp, mods, fk, io="uint8-nhwc", precision="fp16")


CALIBRATION = {
    "method": "entropy",
    "samples": 48,
    "data_sha256": "ab" * 32,
    "tool": "nvidia-modelopt 0.47.0",
    "auto_keep": {"layers": ["node_conv2d_46"], "target_psnr_db": 48.0},
}


def scenario_build_int8(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """The Q/DQ graph goes through the same strongly typed build, and its calibration record into the sidecar."""
    write_onnx(tmp / "model-float32-nchw-int8.onnx", precision="int8", extra_metadata={"calibration": CALIBRATION})
    out = scenario_build_fp32(tmp, mods, fk, precision="int8")
    side = json.loads((tmp / "model.plan.json").read_text())
    assert side["calibration"] == CALIBRATION and side["onnx"]["metadata"]["calibration"] == CALIBRATION
    assert side["onnx"]["precision_evidence"] == "QuantizeLinear node 'q_in'", side["onnx"]["precision_evidence"]
    return out


def scenario_cache_reuse(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)
    first = _build(tmp, mods, world)
    fk.calls.clear()
    again = _build(tmp, mods, world)
    assert again.reused == "output" and not fk.calls_to("Builder", "__init__"), again.reused
    assert fk.calls_to("Runtime", "deserialize_cuda_engine"), "reuse only after deserialising"
    (tmp / "model.plan").unlink()
    fk.calls.clear()
    cached = _build(tmp, mods, world)
    assert cached.reused == "cache" and not fk.calls_to("Builder", "__init__")
    assert (tmp / "model.plan").read_bytes() == PLAN
    fk.calls.clear()
    other = _build(tmp, mods, world, batch=4)
    assert other.reused is None and fk.calls_to("Builder", "__init__"), "another option must rebuild"
    assert other.sidecar["cache_key"] != first.sidecar["cache_key"]
    return {}


def scenario_cli_int8(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)
    onnx_path = write_onnx(tmp / "q.onnx", precision="int8")
    out = _io.StringIO()
    with patched(world, mods), contextlib.redirect_stdout(out):
        code = mods.to_trt.main(
            [
                str(onnx_path),
                "-o",
                str(tmp / "q.plan"),
                "--precision",
                "int8",
                "--halo",
                "12",
                "--cache-dir",
                str(tmp / "c"),
                "--timing-cache",
                str(tmp / "t.cache"),
                "--no-progress",
                "--workspace",
                "1GiB",
                "--opt-level",
                "5",
            ]
        )
    assert code == 0, out.getvalue()
    side = json.loads((tmp / "q.plan.json").read_text())
    assert side["precision"] == "int8" and side["build_options"]["workspace"] == 1 << 30
    assert fk.value_of(world.config, "builder_optimization_level") == 5
    assert fk.value_of(world.config, "progress_monitor") is None
    return {}


def scenario_allow_tf32(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """``--allow-tf32`` keeps TensorRT's default (no clear_flag), is recorded, and keys another engine."""
    from runtime.trt_sidecar import tf32_allowed

    world = make_world(fk)
    onnx_path = write_onnx(tmp / "m.onnx")
    keys = {}
    for flags in ([], ["--allow-tf32"]):
        fk.calls.clear()
        with patched(world, mods), contextlib.redirect_stdout(_io.StringIO()):
            code = mods.to_trt.main(
                [str(onnx_path), "-o", str(tmp / "m.plan"), "--cache-dir", str(tmp / "c"), "--no-progress", *flags]
            )
        assert code == 0, code
        side = json.loads((tmp / "m.plan.json").read_text())
        allowed = bool(flags)
        cleared = [a["flag"] for a in fk.calls_to("IBuilderConfig", "clear_flag")]
        assert cleared == ([] if allowed else [trt.BuilderFlag.TF32]), (flags, cleared)
        assert (
            side["tf32"] is allowed and side["build_options"]["allow_tf32"] is allowed and tf32_allowed(side) is allowed
        )
        keys[allowed] = side["cache_key"]
    assert keys[True] != keys[False], "TF32 changes the engine: it must change the cache key"
    return {}


def scenario_uint8_inner_refused(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """A graph with a uint8 tensor inside (the old exporter's Cast(UINT8) -> Transpose) is
    refused, naming the tensor and nodes, before TensorRT's builder or parser is created."""
    from export.errors import BuildInputError

    world = make_world(fk, io="uint8-nhwc")
    bad = write_onnx(tmp / "model-uint8-nhwc-fp32.onnx", io="uint8-nhwc", inner_uint8=True)
    try:
        _build(tmp, mods, world, io="uint8-nhwc")
    except BuildInputError as exc:
        text = str(exc)
        assert str(bad) in text and "'up8'" in text and "Transpose node 'to_nhwc'" in text, text
        assert not fk.calls_to("Builder", "__init__") and not fk.calls_to("OnnxParser", "__init__"), fk.calls
        return {"message": text}
    raise AssertionError("a graph with an inner uint8 tensor reached TensorRT's builder")


def scenario_precision_mismatch(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)
    onnx_path = write_onnx(tmp / "h.onnx", precision="fp16")
    err = _io.StringIO()
    with patched(world, mods), contextlib.redirect_stderr(err):
        code = mods.to_trt.main([str(onnx_path), "-o", str(tmp / "h.plan"), "--precision", "fp32", "--no-cache"])
    assert code == 2, code
    assert "--precision fp32" in err.getvalue() and "fp16" in err.getvalue(), err.getvalue()
    assert not fk.calls_to("Builder", "__init__"), "refused before TensorRT is touched"
    return {"message": err.getvalue().strip()}


def scenario_parser_errors(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)
    errors = [
        fk.make(
            trt.ParserError,
            desc="Unsupported operator FancyOp",
            node=3,
            node_name="conv_3",
            node_operator="FancyOp",
            code=trt.ErrorCode.UNSUPPORTED_NODE,
        ),
        fk.make(
            trt.ParserError,
            desc="Invalid weights",
            node=-1,
            node_name="",
            node_operator="",
            code=trt.ErrorCode.INVALID_GRAPH,
        ),
    ]
    fk.wire(world.parser, parse_from_file=False, num_errors=2, get_error=lambda a: errors[a["index"]])
    try:
        _build(tmp, mods, world)
    except mods.to_trt.OnnxParseError as exc:
        text = str(exc)
        assert "2 error(s)" in text and "node #3 'conv_3' (FancyOp): Unsupported operator FancyOp" in text, text
        assert "graph: Invalid weights [INVALID_GRAPH]" in text, text
        assert exc.exit_code == 1
        return {"message": text}
    raise AssertionError("parser errors were not reported")


def scenario_builder_nullptr(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """The REAL trt.Builder on stub libraries returns NULL, like TensorRT without a GPU."""
    world = make_world(fk)
    onnx_path = write_onnx(tmp / "m.onnx")
    err = _io.StringIO()
    with (
        patched(world, mods, real=("Builder",)),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(_io.StringIO()),
    ):
        code = mods.to_trt.main([str(onnx_path), "-o", str(tmp / "m.plan"), "--no-cache", "--no-timing-cache"])
    assert code == 3, (code, err.getvalue())
    assert "could not create its builder" in err.getvalue() and "CUDA GPU" in err.getvalue(), err.getvalue()
    return {"message": err.getvalue().strip()}


def scenario_build_returns_none(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)

    def fail(a: dict) -> None:
        logger = fk.calls_to("Builder", "__init__")[0]["logger"]
        logger.log(trt.ILogger.Severity.ERROR, "out of GPU memory while timing")
        return None

    fk.wire(world.builder, build_serialized_network=fail)
    try:
        _build(tmp, mods, world)
    except mods.to_trt.EngineBuildError as exc:
        assert "could not build the engine" in str(exc) and "out of GPU memory while timing" in str(exc), str(exc)
        assert not (tmp / "model.plan").exists()
        return {"message": str(exc)}
    raise AssertionError("a failed build was not reported")


def scenario_timing_cache_mismatch(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = make_world(fk)
    (tmp / "timing.cache").write_bytes(b"from another GPU")
    answers = iter([False, True])
    fk.wire(world.config, set_timing_cache=lambda a: next(answers))
    _build(tmp, mods, world)
    blobs = [bytes(a["serialized_timing_cache"]) for a in fk.calls_to("IBuilderConfig", "create_timing_cache")]
    assert blobs == [b"from another GPU", b""], blobs
    assert (tmp / "timing.cache").read_bytes() == TIMING
    return {}


def _built_engine(tmp: Path, mods: Mods, fk: Fakes, **kw: Any) -> World:
    world = make_world(fk, **kw)
    _build(tmp, mods, world, io=kw.get("io", "float32-nchw"))
    fk.calls.clear()
    return world


def scenario_runtime_stage(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    from runtime.backends.contract import Stage, StageFactory

    world = _built_engine(tmp, mods, fk)
    with patched(world, mods):
        factory = mods.backend.TensorRTStageFactory(tmp / "model.plan")
    assert isinstance(factory, StageFactory)
    assert (factory.info.scale, factory.info.io.value, factory.info.recommended_halo) == (4, "float32-nchw", 12)
    assert (factory.max_batch, factory.window_limits(), factory.num_profiles) == (8, (32, 152), 3)
    assert fk.calls_to("Runtime", "deserialize_cuda_engine")[0]["serialized_engine"] == PLAN
    s0, s1 = factory.create_stage(0), factory.create_stage(1)
    assert isinstance(s0, Stage) and isinstance(s1, Stage)
    c0, c1 = world.contexts
    for shape in [(8, 3, 152, 152), (8, 3, 152, 152), (3, 3, 100, 120)]:
        s0.bind(0x1000, 0x2000, shape)
        s0.enqueue(0x51)
    s1.bind(0x3000, 0x4000, (8, 3, 152, 152))
    s1.enqueue(0x52)

    def on(ctx: Any, member: str) -> list:
        return [c.args for c in fk.calls if c.target is ctx and c.member == member]

    assert on(c0, "set_optimization_profile_async") == [{"profile_index": 0, "stream_handle": 0x51}]
    assert on(c1, "set_optimization_profile_async") == [{"profile_index": 1, "stream_handle": 0x52}]
    assert [tuple(a["shape"]) for a in on(c0, "set_input_shape")] == [(8, 3, 152, 152), (3, 3, 100, 120)]
    assert on(c0, "set_tensor_address") == [{"name": "lr", "memory": 0x1000}, {"name": "sr", "memory": 0x2000}]
    assert on(c0, "execute_async_v3") == [{"stream_handle": 0x51}] * 3
    s0.close()
    s0.close()
    try:
        s0.enqueue(0x51)
    except mods.backend.UpscaleError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("enqueue after close must raise")
    factory.close()
    assert s1.closed and factory._engine is None
    return {}


def scenario_runtime_uint8(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    world = _built_engine(tmp, mods, fk, io="uint8-nhwc")
    with patched(world, mods):
        factory = mods.backend.TensorRTStageFactory(tmp / "model.plan")
    stage = factory.create_stage(2)
    stage.bind(0x10, 0x20, (2, 40, 33, 3))
    stage.enqueue(7)
    ctx = world.contexts[0]
    assert [c.args for c in fk.calls if c.target is ctx and c.member == "set_optimization_profile_async"] == [
        {"profile_index": 2, "stream_handle": 7}
    ]
    factory.close()
    return {}


def _raises(exc_type: type, fragments: list[str], fn: Callable[[], Any]) -> str:
    try:
        fn()
    except exc_type as exc:
        missing = [f for f in fragments if f not in str(exc)]
        assert not missing, f"{type(exc).__name__} lacks {missing}: {exc}"
        return str(exc)
    raise AssertionError(f"expected {exc_type.__name__} containing {fragments}")


def scenario_runtime_contract(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """The TensorRT stage passes the same conformance checks as every other backend."""
    from runtime.testing.contract import check_contract

    world = _built_engine(tmp, mods, fk)
    with patched(world, mods):
        factory = mods.backend.TensorRTStageFactory(tmp / "model.plan")
    msgs = check_contract(factory, (2, 3, 64, 64))
    return {"messages": sorted(msgs)}


def scenario_runtime_errors(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    from runtime.errors import InvalidArgumentError, ModelError, UpscaleError
    from runtime.trt_sidecar import EngineMismatchError

    B = mods.backend
    world = _built_engine(tmp, mods, fk)
    plan = tmp / "model.plan"
    msgs = {}
    with patched(world, mods):
        f = B.TensorRTStageFactory(plan)
        msgs["slot"] = _raises(
            InvalidArgumentError, ["slot 3", "3 optimisation profiles", "--profiles"], lambda: f.create_stage(3)
        )
        s = f.create_stage(0)
        msgs["dup"] = _raises(InvalidArgumentError, ["slot 0 already"], lambda: f.create_stage(0))
        msgs["batch"] = _raises(InvalidArgumentError, ["batch of 9", "1..8"], lambda: s.bind(1, 2, (9, 3, 64, 64)))
        msgs["edge"] = _raises(InvalidArgumentError, ["200", "32..152"], lambda: s.bind(1, 2, (1, 3, 200, 64)))
        msgs["unbound"] = _raises(UpscaleError, ["bind() before enqueue()"], lambda: s.enqueue(5))
        ctx = world.contexts[0]
        logger = f._logger

        def refuse(a: dict) -> bool:
            logger.log(trt.ILogger.Severity.ERROR, "illegal memory access")
            return False

        fk.wire(ctx, execute_async_v3=refuse)
        s.bind(1, 2, (1, 3, 64, 64))
        msgs["execute"] = _raises(
            UpscaleError, ["execute_async_v3 returned False", "illegal memory access"], lambda: s.enqueue(5)
        )
        fk.wire(ctx, set_input_shape=False)
        s.bind(1, 2, (2, 3, 64, 64))
        msgs["shape"] = _raises(InvalidArgumentError, ["rejected input shape (2, 3, 64, 64)"], lambda: s.enqueue(5))
        f.close()

        side_path = tmp / "model.plan.json"
        good = json.loads(side_path.read_text())
        side_path.write_text(json.dumps({**good, "tensorrt_version": "10.0.1.6"}))
        msgs["trt"] = _raises(
            EngineMismatchError,
            ["TensorRT 10.0.1.6", f"TensorRT {trt.__version__}", "to_trt.py"],
            lambda: B.TensorRTStageFactory(plan),
        )
        side_path.write_text(
            json.dumps({**good, "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}})
        )
        msgs["gpu"] = _raises(
            EngineMismatchError, ["NVIDIA A100-SXM4-80GB", "8.0", H100[0], "9.0"], lambda: B.TensorRTStageFactory(plan)
        )
        side_path.write_text(json.dumps({**good, "engine_sha256": "0" * 64}))
        msgs["sha"] = _raises(EngineMismatchError, ["does not match its sidecar"], lambda: B.TensorRTStageFactory(plan))
        side_path.write_text(json.dumps(good))
        fk.wire(world.runtime, deserialize_cuda_engine=lambda a: None)
        msgs["deserialise"] = _raises(ModelError, ["could not deserialise"], lambda: B.TensorRTStageFactory(plan))
    return msgs


def scenario_runtime_nullptr(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """The REAL trt.Runtime on stub libraries returns NULL, like TensorRT without a GPU."""
    from runtime.errors import BackendUnavailableError

    world = _built_engine(tmp, mods, fk)
    with patched(world, mods, real=("Runtime",)):
        msg = _raises(
            BackendUnavailableError,
            ["could not create its runtime", "CUDA GPU"],
            lambda: mods.backend.TensorRTStageFactory(tmp / "model.plan"),
        )
    return {"message": msg}


def scenario_runtime_device_index(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """``device=N`` reaches the GPU check (GPU N's name and compute capability, not GPU 0's)
    and is made current before the runtime deserialises and before each context is created."""
    from runtime.trt_sidecar import EngineMismatchError

    world = _built_engine(tmp, mods, fk)  # built for the H100
    a100 = ("NVIDIA A100-SXM4-80GB", "8.0")
    gpus = {0: a100, 1: H100, 2: a100}
    with patched(world, mods, gpus=gpus):
        factory = mods.backend.TensorRTStageFactory(tmp / "model.plan", device=1)
        factory.create_stage(0)
        order = [(c.owner, c.member, c.args.get("device")) for c in fk.calls if c.owner in ("cuda", "Runtime")]
        assert order[:4] == [
            ("cuda", "query_gpu", 1),
            ("cuda", "cudaSetDevice", 1),
            ("Runtime", "__init__", None),
            ("Runtime", "deserialize_cuda_engine", None),
        ], order
        contexts = [i for i, c in enumerate(fk.calls) if c.member == "create_execution_context"]
        assert contexts and fk.calls[contexts[0] - 1].args == {"device": 1}, "cudaSetDevice(1) right before"
        factory.close()
        fk.calls.clear()
        msg = _raises(
            EngineMismatchError,
            ["NVIDIA A100-SXM4-80GB", "8.0", H100[0]],
            lambda: mods.backend.TensorRTStageFactory(tmp / "model.plan", device=2),
        )
        assert fk.calls_to("cuda", "query_gpu") == [{"device": 2}], fk.calls_to("cuda", "query_gpu")
    return {"message": msg}


def scenario_logger_one_per_process(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """One trt.ILogger for every builder and runtime (NVIDIA/TensorRT#1475), and each call's
    exception quotes its own errors, also when two slots fail at once on two threads."""
    import logging
    import threading

    from runtime.errors import UpscaleError

    barrier = threading.Barrier(2, timeout=10)

    def execute(ctx: Any, state: dict, a: dict) -> bool:
        logger = fk.calls_to("Runtime", "__init__")[0]["logger"]
        logger.log(trt.ILogger.Severity.ERROR, f"error of stream {a['stream_handle']:#x}")
        barrier.wait()  # both enqueues have logged before either returns
        return False

    world = make_world(fk, execute=execute)
    _build(tmp, mods, world)
    _build(tmp, mods, world, batch=4)  # a second build in the same process
    builders = [a["logger"] for a in fk.calls_to("Builder", "__init__")]
    parsers = [a["logger"] for a in fk.calls_to("OnnxParser", "__init__")]
    with patched(world, mods):
        fa = mods.backend.TensorRTStageFactory(tmp / "model.plan")
        fb = mods.backend.TensorRTStageFactory(tmp / "model.plan", log_severity="INFO")
    runtimes = [a["logger"] for a in fk.calls_to("Runtime", "__init__")]
    loggers = {id(x) for x in builders + parsers + runtimes}
    assert len(builders) == 2 and len(runtimes) >= 3, (builders, runtimes)
    assert len(loggers) == 1, f"{len(loggers)} distinct loggers for the builders, parsers and runtimes of one process"
    assert fa._logger is fb._logger is builders[0] and isinstance(builders[0], trt.ILogger)
    assert mods.backend.trt_logger(trt) is builders[0]

    stages = {0x51: fa.create_stage(0), 0x52: fb.create_stage(1)}
    errors: dict[int, str] = {}

    def run(stream: int) -> None:
        stage = stages[stream]
        stage.bind(0x1000 + stream, 0x2000 + stream, (1, 3, 64, 64))
        try:
            stage.enqueue(stream)
        except UpscaleError as exc:
            errors[stream] = str(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in stages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for stream, other in ((0x51, 0x52), (0x52, 0x51)):
        text = errors.get(stream, "")
        assert f"error of stream {stream:#x}" in text and f"{other:#x}" not in text.partition("said")[2], errors

    # log_severity: INFO reaches logging during fb's calls, not during fa's (threshold WARNING)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    pylog = logging.getLogger(mods.backend.__name__)
    pylog.addHandler(handler)
    old = pylog.level
    pylog.setLevel(logging.DEBUG)
    try:
        for factory, tag in ((fa, "fa"), (fb, "fb")):
            with factory._logger.capture(factory.log_severity):
                factory._logger.log(trt.ILogger.Severity.INFO, f"info during {tag}")
        factory._logger.log(trt.ILogger.Severity.INFO, "info outside any call")
    finally:
        pylog.removeHandler(handler)
        pylog.setLevel(old)
    seen = [r.getMessage() for r in records]
    assert seen == ["TensorRT: info during fb"], seen
    fa.close()
    fb.close()
    return {"errors": errors}


def scenario_runtime_cuda_graphs(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """cuda_graphs=True is honoured for TensorRT on the emulated device: every captured
    execute_async_v3 comes after an uncaptured one of the same shape on that context (NVIDIA's
    "CUDA Graphs": enqueue once without capture after a shape change), replays enqueue nothing,
    and the pixels are right (the fake engine is a nearest x4 kernel on emulated memory)."""
    import numpy as np

    from runtime.pipeline import ImageJob, Pass, PipelineExecutor
    from runtime.testing import EmulatedDevice
    from runtime.tiling import plan_tiles

    device = EmulatedDevice("random", seed=3)
    calls: list[tuple[int, bool, tuple[int, ...]]] = []

    def execute(ctx: Any, state: dict, a: dict) -> bool:
        stream, shape = a["stream_handle"], state["shape"]
        calls.append((id(ctx), device.stream(stream)._capture is not None, shape))
        src, dst = state["addresses"]["lr"], state["addresses"]["sr"]
        out = (shape[0], shape[1], shape[2] * 4, shape[3] * 4)

        def kernel() -> None:
            x = device.array_at(src, np.float32, shape)
            device.array_at(dst, np.float32, out)[:] = x.repeat(4, axis=2).repeat(4, axis=3)

        device.launch(stream, kernel, "trt")
        return True

    world = make_world(fk, execute=execute)
    _build(tmp, mods, world)
    with patched(world, mods):
        factory = mods.backend.TensorRTStageFactory(tmp / "model.plan")
    assert factory.supports_cuda_graphs, "cuda_graphs=True was ignored: the factory does not declare graph support"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (64, 64), (40, 40), (64, 64)]]
    jobs = [
        ImageJob(
            plan_tiles(*im.shape[:2], 32, 12), [Pass(im, np.zeros((im.shape[0] * 4, im.shape[1] * 4, 3), np.uint8))], im
        )
        for im in images
    ]
    with PipelineExecutor(factory, device, window=(56, 56), batch=2, slots=2, cuda_graphs=True) as executor:
        assert executor.cuda_graphs, "cuda_graphs=True was ignored for the TensorRT factory"
        results = list(executor.run(jobs))
    for im, job in zip(images, jobs):
        np.testing.assert_array_equal(job.passes[0].target, im.repeat(4, axis=0).repeat(4, axis=1))
    assert len(results) == len(images)
    captured = [c for c in calls if c[1]]
    assert captured, f"nothing was captured: {calls}"
    for k, (ctx, capturing, shape) in enumerate(calls):
        if capturing:
            before = [c for c in calls[:k] if c[0] == ctx]
            assert before and before[-1] == (ctx, False, shape), (
                f"captured execute_async_v3 of {shape} without an uncaptured one of that shape right before it "
                f"on the same context: {calls}"
            )
    batches = sum(job.batch_count(2) for job in jobs)
    assert len(calls) < batches, f"graphs were captured but never replayed: {len(calls)} enqueues for {batches}"
    factory.close()
    return {"calls": [(capturing, list(shape)) for _, capturing, shape in calls], "batches": batches}


def scenario_autospec_limits(tmp: Path, mods: Mods, fk: Fakes) -> dict:
    """Why the signature layer exists: plain autospec accepts calls the real method rejects."""
    from tests.trt_kit.fakes import SignatureError

    plain = mock.create_autospec(trt.IBuilderConfig, spec_set=True, instance=True)
    plain.set_timing_cache(object(), ignore_mismatches=False)  # accepted: autospec cannot see pybind11 signatures
    plain.set_memory_pool_limit(1 << 30, trt.MemoryPoolType.WORKSPACE, "extra")
    lax = Fakes(trt, check_signatures=False).make(trt.IBuilderConfig)
    lax.set_timing_cache(object(), ignore_mismatches=False)
    checked = fk.make(trt.IBuilderConfig)
    _raises(
        SignatureError,
        ["unexpected keyword argument 'ignore_mismatches'"],
        lambda: checked.set_timing_cache(fk.make(trt.ITimingCache), ignore_mismatches=False),
    )
    _raises(
        SignatureError,
        ["is not tensorrt_bindings.tensorrt.ITimingCache"],
        lambda: checked.set_timing_cache(object(), ignore_mismatch=False),
    )
    _raises(AttributeError, ["set_memroy_pool_limit"], lambda: plain.set_memroy_pool_limit)
    return {}


POSITIVE: dict[str, Callable[..., dict]] = {
    "autospec_limits": scenario_autospec_limits,
    "build_fp32": scenario_build_fp32,
    "build_uint8_fp16": scenario_build_uint8_fp16,
    "build_int8": scenario_build_int8,
    "cache_reuse": scenario_cache_reuse,
    "cli_int8": scenario_cli_int8,
    "allow_tf32": scenario_allow_tf32,
    "uint8_inner_refused": scenario_uint8_inner_refused,
    "precision_mismatch": scenario_precision_mismatch,
    "parser_errors": scenario_parser_errors,
    "builder_nullptr": scenario_builder_nullptr,
    "build_returns_none": scenario_build_returns_none,
    "timing_cache_mismatch": scenario_timing_cache_mismatch,
    "runtime_stage": scenario_runtime_stage,
    "runtime_uint8": scenario_runtime_uint8,
    "runtime_contract": scenario_runtime_contract,
    "runtime_errors": scenario_runtime_errors,
    "runtime_nullptr": scenario_runtime_nullptr,
    "runtime_device_index": scenario_runtime_device_index,
    "logger_one_per_process": scenario_logger_one_per_process,
    "runtime_cuda_graphs": scenario_runtime_cuda_graphs,
}


@dataclass(frozen=True)
class Negative:
    module: str
    edits: list[tuple[str, str]]
    scenario: Callable[..., dict]
    check_signatures: bool = True


NEGATIVE: dict[str, Negative] = {
    # a misspelt method name in the builder
    "misspelt_builder_method": Negative(
        "export.to_trt", [("config.set_memory_pool_limit(", "config.set_memroy_pool_limit(")], scenario_build_fp32
    ),
    # a BuilderFlag that TensorRT 11 removed (fine on 10.x)
    "removed_builder_flag_fp16": Negative(
        "export.to_trt",
        [
            (
                "    config = builder.create_builder_config()\n",
                "    config = builder.create_builder_config()\n    config.set_flag(trt.BuilderFlag.FP16)\n",
            )
        ],
        lambda tmp, mods, fk: scenario_build_fp32(tmp, mods, fk, lenient=True),
    ),
    # a keyword the real signature lacks: caught by the __doc__ signature check (not by
    # plain autospec: see scenario_autospec_limits)
    "wrong_keyword": Negative(
        "export.to_trt", [("ignore_mismatch=False", "ignore_mismatches=False")], scenario_build_fp32
    ),
    # arguments in the wrong order (types checked against the signature)
    "swapped_arguments": Negative(
        "export.to_trt",
        [
            (
                "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)",
                "config.set_memory_pool_limit(options.workspace, trt.MemoryPoolType.WORKSPACE)",
            )
        ],
        scenario_build_fp32,
    ),
    # an fp32 build that leaves TensorRT's default TF32 on
    "tf32_not_cleared": Negative(
        "export.to_trt", [("config.clear_flag(trt.BuilderFlag.TF32)", "pass")], scenario_build_fp32
    ),
    # a builder that hands a graph with an inner uint8 tensor to TensorRT
    "uint8_check_skipped": Negative(
        "export.to_trt", [("    check_uint8_edges(facts)\n", "")], scenario_uint8_inner_refused
    ),
    # a logger per factory, as before issue 14 (TensorRT would ignore the second one)
    "logger_per_factory": Negative(
        "runtime.backends.tensorrt_backend",
        [("        self._logger = trt_logger(trt)\n", "        self._logger = type(trt_logger(trt))()\n")],
        scenario_logger_one_per_process,
    ),
    # the GPU check against GPU 0 whatever device= says, as before issue 14
    "gpu_zero_checked": Negative(
        "runtime.backends.tensorrt_backend",
        [("query_gpu(self.device)", "query_gpu(0)")],
        scenario_runtime_device_index,
    ),
    # the engine made on whatever device is current
    "device_not_selected": Negative(
        "runtime.backends.tensorrt_backend",
        [("        select_device(self.device)  # the engine lives on the current device\n", "")],
        scenario_runtime_device_index,
    ),
    # graph capture not declared, as before issue 14 (cuda_graphs=True silently ignored)
    "cuda_graphs_undeclared": Negative(
        "runtime.backends.tensorrt_backend",
        [("    supports_cuda_graphs = True\n", "    supports_cuda_graphs = False\n")],
        scenario_runtime_cuda_graphs,
    ),
    # a misspelt method in the runtime stage
    "misspelt_runtime_method": Negative(
        "runtime.backends.tensorrt_backend",
        [("ctx.set_tensor_address(", "ctx.set_tensor_adress(")],
        scenario_runtime_stage,
    ),
    # one argument too many
    "extra_argument": Negative(
        "runtime.backends.tensorrt_backend",
        [("ctx.execute_async_v3(stream)", "ctx.execute_async_v3(stream, 0)")],
        scenario_runtime_stage,
    ),
    # a property TensorRT 11 removed (device_memory_size; fine on 10.x)
    "removed_engine_property": Negative(
        "runtime.backends.tensorrt_backend",
        [
            (
                "        context = self._engine.create_execution_context()\n",
                "        context = self._engine.create_execution_context()\n        _ = self._engine.device_memory_size\n",
            )
        ],
        scenario_runtime_stage,
    ),
    # assigning a read-only property (TensorRT 8 style profile selection)
    "readonly_property": Negative(
        "runtime.backends.tensorrt_backend",
        [
            (
                "        context = self._engine.create_execution_context()\n",
                "        context = self._engine.create_execution_context()\n        context.active_optimization_profile = slot\n",
            )
        ],
        scenario_runtime_stage,
    ),
}


def _run(fn: Callable[..., dict], mods: Mods, *, check_signatures: bool = True) -> dict:
    from tests.trt_kit.fakes import Call

    fk = Fakes(trt, check_signatures=check_signatures)

    def select(device: int) -> None:  # cudaSetDevice: there is no GPU here
        fk.calls.append(Call("cuda", "cudaSetDevice", {"device": device}))

    with (
        tempfile.TemporaryDirectory(prefix="trt-conformance-") as tmp,
        mock.patch.object(mods.backend, "select_device", select),
    ):
        try:
            details = fn(Path(tmp), mods, fk)
        except Exception as exc:  # reported, judged by the test  # noqa: BLE001 - the library raises its own exception types
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return {"ok": True, "details": details}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--expect-version", required=True)
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    p.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    args = p.parse_args(argv)
    import tensorrt_libs

    report: dict[str, Any] = {
        "tensorrt_version": trt.__version__,
        "tensorrt_file": trt.__file__,
        "bindings_file": sys.modules["tensorrt_bindings"].__file__,
        "stub_libs": bool(getattr(tensorrt_libs, "TRT_STUB", False)),
        "python": sys.version.split()[0],
        "results": {},
    }
    if trt.__version__ != args.expect_version:
        report["fatal"] = f"imported TensorRT {trt.__version__}, expected {args.expect_version}"
        args.out.write_text(json.dumps(report))
        return 1
    mods = real_mods()
    for name, fn in POSITIVE.items():
        if args.only is None or name in args.only:
            report["results"][name] = _run(fn, mods)
    for name, neg in NEGATIVE.items():
        if args.only is not None and f"neg:{name}" not in args.only:
            continue
        try:
            mutated = load_mutated(neg.module, neg.edits)
        except RuntimeError as exc:
            report["results"][f"neg:{name}"] = {"ok": False, "error": f"HarnessError: {exc}"}
            continue
        m = Mods(
            mutated if neg.module == "export.to_trt" else mods.to_trt,
            mutated if neg.module != "export.to_trt" else mods.backend,
        )
        report["results"][f"neg:{name}"] = _run(neg.scenario, m, check_signatures=neg.check_signatures)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRT_STUB_QUIET", "1")
    sys.exit(main())
