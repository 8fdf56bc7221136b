"""Build a TensorRT engine (+ JSON sidecar) from an exported ONNX model; TensorRT 10.x and 11.x.

    python export/to_trt.py model.fp16.onnx -o model.plan                 # precision read off the graph
    python export/to_trt.py model.onnx -o model.plan --precision fp32 --tile 128 --halo 16 --batch 8
    python export/to_trt.py model.int8.onnx -o model.plan --precision int8 --opt-level 5 --workspace 8GiB

Precision is a property of the ONNX graph, not a builder flag: the network is created
STRONGLY_TYPED, so TensorRT keeps the graph's own types (an FP16 graph from
``export/to_onnx.py --precision fp16``, an INT8 graph with explicit Q/DQ nodes). TensorRT
11 has no ``BuilderFlag.FP16/INT8`` and no calibrators, and ignores STRONGLY_TYPED
(always strong), so one code path serves both majors. ``--precision`` (default: read off
the graph) is recorded in the sidecar and checked against the graph's dtypes.

What is built (see ``export/engine_cache.py`` for the options):
  * nothing, if the graph has a uint8 tensor anywhere but at its input and output
    (``export/uint8_boundary.py``: TensorRT takes UINT8 only as a network I/O type), refused
    with the tensors and nodes named before TensorRT is imported;
  * the ONNX parsed with ``trt.OnnxParser.parse_from_file`` (external weights found beside
    the file); on failure every parser error is listed with its node;
  * ``--profiles`` identical optimisation profiles (one per concurrent runtime slot: each
    TensorRT execution context in concurrent use needs its own), each admitting
    ``min-batch..batch`` windows of ``min-window..tile+2*halo`` pixels per side, tuned for
    a full batch of full windows, in the graph's layout (float32 NCHW or uint8 NHWC);
  * ``clear_flag(BuilderFlag.TF32)``: TensorRT enables TF32 by default ("Allow (but not
    require) computations on tensors of type DataType.FLOAT to use TF32 ... Enabled by
    default", the BuilderFlag docs of 10.x and 11.x), which rounds float32 convolution inputs
    to 10-bit mantissas; "fp32" means float32 here, for every precision (the float32 layers
    of an fp16 or int8 graph too). ``--allow-tf32`` keeps TensorRT's default; either way
    the choice is a build option (cache key) and recorded in the sidecar (``"tf32"``);
  * optional ``--opt-level`` (``builder_optimization_level``) and ``--workspace``
    (``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``);
  * a persistent timing cache (loaded if present, ``set_timing_cache(cache,
    ignore_mismatch=False)``, saved after the build) so rebuilds skip kernel timing;
  * a progress bar through ``trt.IProgressMonitor`` (tqdm), when the release has it.

Written atomically: ``model.plan`` and ``model.plan.json`` (TensorRT version, GPU name and
compute capability, profiles, the engine's I/O tensors, the ONNX metadata and hash, build
options, cache key). Engines are cached under ``--cache-dir`` by a key over the ONNX
bytes, every build option, the TensorRT version and the GPU; an existing output or cache
entry with the same key is reused only after it deserialises.

Exit status: 0 built or reused, 1 the build failed (parser errors, builder failure),
2 bad arguments or input (ONNX, precision mismatch, I/O contract, unwritable output),
3 TensorRT cannot run here (not installed, no usable GPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import datetime
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from export.engine_cache import BuildOptions, EngineCache, ProfileShapes, cache_key, default_cache_dir
from export.errors import (
    BuildInputError,
    BuildOptionsError,
    EngineBuildError,
    OnnxParseError,
    TrtBuildError,
    TrtUnavailableError,
)
from export.onnx_facts import OnnxFacts, check_precision, detect_precision, inspect_onnx
from export.uint8_boundary import boundary_message
from runtime.backends.tensorrt_backend import (
    TrtCapture,
    create_trt_object,
    describe_io_tensors,
    import_tensorrt,
    profile_shapes,
    trt_logger,
)
from runtime.errors import BackendUnavailableError, MissingDependencyError
from runtime.layout import ModelIO, Precision
from runtime.trt_sidecar import SIDECAR_FORMAT, GpuInfo, GpuQueryError, query_gpu, sidecar_path
from runtime.utils import DefaultsHelpFormatter, atomic_write_bytes, atomic_write_json

__all__ = [
    "TrtBuildError",
    "BuildInputError",
    "TrtUnavailableError",
    "OnnxParseError",
    "EngineBuildError",
    "OnnxFacts",
    "BuildResult",
    "inspect_onnx",
    "detect_precision",
    "check_precision",
    "check_uint8_edges",
    "check_profile_fits",
    "make_progress_monitor",
    "build_engine",
    "parse_size",
    "main",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- profiles


def check_profile_fits(name: str, network_shape: Sequence[int], shapes: ProfileShapes, *, source: str) -> None:
    """The rules of ``IOptimizationProfile.set_shape``: same rank, and every static
    dimension of the network input equal in min, opt and max. Raises :class:`BuildInputError`."""
    lo, opt, hi = shapes
    if len(network_shape) != len(lo):
        raise BuildInputError(f"{source}: input {name!r} has rank {len(network_shape)}, the profile {len(lo)}: {lo}")
    for axis, dim in enumerate(network_shape):
        if dim >= 0 and not lo[axis] == opt[axis] == hi[axis] == dim:
            raise BuildInputError(
                f"{source}: input {name!r} has static size {dim} on axis {axis} (shape {list(network_shape)}) "
                f"but the profile asks for {lo[axis]}..{hi[axis]}; export the ONNX with dynamic batch/height/"
                "width (export/to_onnx.py does) or choose --tile/--halo/--batch/--min-* to match"
            )


def check_uint8_edges(facts: OnnxFacts) -> None:
    """Refuse, before TensorRT is imported, a graph with a uint8 tensor anywhere but at its
    edges (:mod:`export.uint8_boundary`): TensorRT takes UINT8 only as a network input or
    output type, and its parser's own error would name one node at best."""
    if facts.uint8_findings:
        raise BuildInputError(boundary_message(facts.path, facts.uint8_findings))


# --------------------------------------------------------------------------- TensorRT side


def make_progress_monitor(trt) -> Any | None:
    """A ``trt.IProgressMonitor`` drawing one tqdm bar per build phase, or None when the
    release lacks the class or tqdm is missing.

    TensorRT calls it from its own threads (the docs require it to be thread-safe, hence
    the lock); ``step_complete`` returns True (False would cancel the build). Exceptions
    never propagate into TensorRT.
    """
    if not hasattr(trt, "IProgressMonitor"):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)  # pybind11 trampoline: the base must be initialised
            self._bars: dict[str, Any] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                with self._lock:
                    parent = self._bars.get(parent_phase) if parent_phase else None
                    depth = parent.pos + 1 if parent is not None else 0
                    self._bars[phase_name] = tqdm(
                        total=num_steps,
                        desc=phase_name,
                        position=depth,
                        leave=False,
                        file=sys.stderr,
                        disable=None,
                    )
            except Exception:  # a progress bar must never break the build
                log.debug("progress monitor: phase_start failed", exc_info=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                with self._lock:
                    bar = self._bars.get(phase_name)
                    if bar is not None:
                        bar.update(max(0, step + 1 - bar.n))
            except Exception:
                log.debug("progress monitor: step_complete failed", exc_info=True)
            return True

        def phase_finish(self, phase_name: str) -> None:
            try:
                with self._lock:
                    bar = self._bars.pop(phase_name, None)
                    if bar is not None:
                        bar.close()
            except Exception:
                log.debug("progress monitor: phase_finish failed", exc_info=True)

    return _Monitor()


def _bytes(buffer: Any) -> bytes:
    """Bytes of an ``IHostMemory`` (it implements the buffer protocol)."""
    return bytes(memoryview(buffer))


def _parser_errors(parser) -> list[str]:
    """Every error of ``trt.OnnxParser`` (``num_errors``/``get_error``), with its node."""
    lines = []
    for index in range(parser.num_errors):
        err = parser.get_error(index)
        node, name, op = err.node(), err.node_name(), err.node_operator()
        where = f"node #{node}" if node >= 0 else "graph"
        if name:
            where += f" {name!r}"
        if op:
            where += f" ({op})"
        code = getattr(err.code(), "name", err.code())
        lines.append(f"{where}: {err.desc()} [{code}]")
    return lines


def _strongly_typed_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED (a bit index in both majors: 1 in 10.x, 0
    in 11.x, where it is deprecated, ignored and always on)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _check_network(trt, network, facts: OnnxFacts, options: BuildOptions) -> ProfileShapes:
    info, source = facts.info, str(facts.path)
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise BuildInputError(
            f"{source}: TensorRT sees {network.num_inputs} inputs and {network.num_outputs} outputs; "
            "a super-resolution model has one of each"
        )
    want = getattr(trt.DataType, ModelIO(info.io).trt_dtype)
    for kind, tensor, name in (
        ("input", network.get_input(0), info.input_name),
        ("output", network.get_output(0), info.output_name),
    ):
        if tensor.name != name:
            raise BuildInputError(f"{source}: TensorRT's {kind} is {tensor.name!r}, the metadata says {name!r}")
        if tensor.dtype != want:
            raise BuildInputError(
                f"{source}: {kind} {tensor.name!r} is {tensor.dtype}, a {info.io.value} model needs {want}"
            )
    shapes = options.profile_shapes(info.io)
    check_profile_fits(info.input_name, [int(d) for d in network.get_input(0).shape], shapes, source=source)
    return shapes


def _load_timing_cache(config, path: Path | None):
    """``create_timing_cache`` from the file (or empty) and ``set_timing_cache(cache,
    ignore_mismatch=False)``: a cache from another GPU/TensorRT is refused (it returns
    False) and replaced by an empty one rather than trusted."""
    blob = b""
    if path is not None and path.is_file():
        try:
            blob = path.read_bytes()
        except OSError as exc:
            log.warning("timing cache %s is unreadable (%s); starting an empty one", path, exc)
    cache = config.create_timing_cache(blob)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        if blob:
            log.info("timing cache: loaded %s (%d bytes)", path, len(blob))
        return cache
    if not blob:
        raise EngineBuildError("TensorRT refused an empty timing cache")
    log.warning("timing cache %s was made by another GPU or TensorRT; starting an empty one", path)
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError("TensorRT refused an empty timing cache")
    return cache


def _build_plan(
    trt, logger, cap: TrtCapture, facts: OnnxFacts, options: BuildOptions, *, timing_cache: Path | None, progress: bool
) -> bytes:
    builder = _create(trt.Builder, logger, "builder")
    network = builder.create_network(_strongly_typed_flags(trt))
    # The parser holds weights the network refers to: it stays alive until the build returns.
    parser = _create(lambda lg: trt.OnnxParser(network, lg), logger, "ONNX parser")
    if not parser.parse_from_file(str(facts.path)):
        errors = _parser_errors(parser) or [f"(no parser error recorded){_said(cap)}"]
        listing = "\n".join(f"  [{i}] {e}" for i, e in enumerate(errors))
        raise OnnxParseError(
            f"{facts.path}: TensorRT's ONNX parser failed with {len(errors)} error(s):\n{listing}", errors
        )
    shapes = _check_network(trt, network, facts, options)

    config = builder.create_builder_config()
    if not options.allow_tf32:  # TensorRT's default is on: float32 must mean float32
        config.clear_flag(trt.BuilderFlag.TF32)
    for _ in range(options.profiles):
        profile = builder.create_optimization_profile()
        profile.set_shape(facts.info.input_name, *shapes)
        if config.add_optimization_profile(profile) < 0:
            raise BuildInputError(f"{facts.path}: TensorRT rejected optimisation profile {shapes}{_said(cap)}")
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
    cache = _load_timing_cache(config, timing_cache)  # noqa: F841 - kept alive while the builder uses it
    monitor = make_progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{facts.path}: TensorRT could not build the engine{_said(cap)}")
    if timing_cache is not None:
        try:
            atomic_write_bytes(timing_cache, _bytes(config.get_timing_cache().serialize()))
        except OSError as exc:
            log.warning("could not save the timing cache to %s: %s", timing_cache, exc)
    return _bytes(plan)  # cache and monitor stay referenced until here: TensorRT uses both while building


def _create(factory, logger, what: str):
    try:
        return create_trt_object(factory, logger, what)
    except BackendUnavailableError as exc:
        raise TrtUnavailableError(str(exc)) from exc


def _said(cap: TrtCapture) -> str:
    """'; TensorRT said: ...' with the errors TensorRT logged during this build, or ''."""
    return cap.said()


def _deserialise(trt, logger, plan: bytes):
    """``(runtime, engine)`` for ``plan`` via ``trt.Runtime.deserialize_cuda_engine`` (engine
    None if it does not deserialise); drop the engine before the runtime."""
    runtime = _create(trt.Runtime, logger, "runtime")
    return runtime, runtime.deserialize_cuda_engine(plan)


# --------------------------------------------------------------------------- build + cache


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]
    reused: str | None
    """None (built now), "output" (the output was up to date) or "cache" (copied from the cache)."""
    seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def default_timing_cache(trt_version: str, gpu: GpuInfo | None, root: str | os.PathLike | None = None) -> Path:
    """``<root>/timing/trt<version>-sm<cc>-<gpu>.cache`` (root: the engine cache folder, else
    :func:`~export.engine_cache.default_cache_dir`): one per TensorRT version and GPU, as a
    timing cache is only valid for the device and TensorRT that made it."""
    tag = f"sm{gpu.compute_capability}-{_slug(gpu.name)}" if gpu else "unknown-gpu"
    return Path(root if root is not None else default_cache_dir()) / "timing" / f"trt{trt_version}-{tag}.cache"


def _make_sidecar(
    *,
    trt,
    engine,
    plan: bytes,
    facts: OnnxFacts,
    options: BuildOptions,
    gpu: GpuInfo | None,
    key: str | None,
    output: Path,
    seconds: float,
) -> dict[str, Any]:
    info = facts.info
    return {
        "format": SIDECAR_FORMAT,
        "kind": "fourpp-eusr TensorRT engine",
        "engine": output.name,
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "engine_bytes": len(plan),
        "tensorrt_version": trt.__version__,
        "gpu": gpu.to_dict() if gpu else None,
        "precision": options.precision.value,
        "strongly_typed": True,
        "tf32": options.allow_tf32,
        "model": {
            "io": info.io.value,
            "scale": info.scale,
            "input": info.input_name,
            "output": info.output_name,
            "layout": "NCHW" if ModelIO(info.io).channel_axis == 1 else "NHWC",
            "value_range": list(facts.value_range),
            "recommended_halo": info.recommended_halo,
            "config_name": info.config_name,
        },
        "onnx": {
            "path": str(facts.path),
            "sha256": facts.sha256,
            "metadata": facts.metadata,
            "precision_evidence": facts.precision_evidence,
        },
        # How the Q/DQ scales were made (calibration/quantize.py writes it into the ONNX):
        # data, method, layers kept in high precision, tool versions. None for other graphs.
        "calibration": (facts.metadata or {}).get("calibration") if options.precision is Precision.INT8 else None,
        "build_options": options.to_dict(),
        "window": options.window,
        "profiles": [{"input": info.input_name, **p} for p in profile_shapes(engine, info.input_name)],
        "io_tensors": describe_io_tensors(engine),
        "cache_key": key,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
        "builder": "export/to_trt.py",
    }


def _write_outputs(output: Path, plan: bytes, sidecar: dict[str, Any]) -> None:
    """Plan first, then sidecar, each atomic: a crash in between leaves a sidecar whose
    ``engine_sha256`` no longer matches, which the runtime reports."""
    try:
        atomic_write_bytes(output, plan)
        atomic_write_json(sidecar_path(output), {**sidecar, "engine": output.name})
    except OSError as exc:
        raise BuildInputError(
            f"{output}: cannot write the engine there ({exc.strerror or exc}); choose another -o"
        ) from None


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise BuildInputError(f"{output}: is a folder; -o needs a file name such as {output / 'model.plan'}")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise BuildInputError(f"{output}: folder {parent} is not writable; choose another -o")


def build_engine(
    onnx: str | os.PathLike | OnnxFacts,
    output: str | os.PathLike,
    options: BuildOptions,
    *,
    cache_dir: str | os.PathLike | None = None,
    timing_cache: str | os.PathLike | None | bool = True,
    force: bool = False,
    progress: bool = True,
    verbose: bool = False,
    echo: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build (or reuse) the engine for ``onnx`` at ``output`` with its sidecar.

    ``cache_dir``: engine cache folder (None: no engine cache). ``timing_cache``: a file,
    True for :func:`default_timing_cache` (under ``cache_dir``), or None/False for none. ``force`` rebuilds even
    when the output or the cache holds a matching engine. Raises a :class:`TrtBuildError`
    subclass (its ``exit_code`` is the CLI's status).
    """
    echo = echo or (lambda line: None)
    t0 = time.perf_counter()
    output = Path(output)
    facts = onnx if isinstance(onnx, OnnxFacts) else inspect_onnx(onnx)
    check_precision(options.precision, facts)
    check_uint8_edges(facts)
    _check_output(output)
    try:
        trt = import_tensorrt("export/to_trt.py")
    except MissingDependencyError as exc:
        raise TrtUnavailableError(str(exc)) from exc
    logger = trt_logger(trt)  # the process's one logger; this build's messages go to its capture
    with logger.capture("INFO" if verbose else "WARNING") as cap:
        return _build_or_reuse(
            trt, logger, cap, facts, output, options, cache_dir, timing_cache, force, progress, echo, t0
        )


def _build_or_reuse(
    trt,
    logger,
    cap: TrtCapture,
    facts: OnnxFacts,
    output: Path,
    options: BuildOptions,
    cache_dir: str | os.PathLike | None,
    timing_cache: str | os.PathLike | None | bool,
    force: bool,
    progress: bool,
    echo: Callable[[str], None],
    t0: float,
) -> BuildResult:
    try:
        gpu: GpuInfo | None = query_gpu(0)
    except GpuQueryError as exc:
        log.warning("%s; the engine cache is off and the sidecar records no GPU", exc)
        gpu = None
    key = None
    if gpu is not None:
        key = cache_key(
            onnx_sha256=facts.sha256,
            options=options,
            trt_version=trt.__version__,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
        )

    def deserialises(plan: bytes) -> bool:
        runtime, engine = _deserialise(trt, logger, plan)
        ok = engine is not None
        del engine, runtime  # the engine goes before its runtime
        return ok

    if key is not None and not force:
        reused = _reuse_output(output, key, deserialises)
        if reused is not None:
            echo(f"{output} is up to date (cache key {key[:12]}); --force rebuilds it")
            return BuildResult(
                engine_path=output,
                sidecar_path=sidecar_path(output),
                sidecar=reused,
                reused="output",
                seconds=time.perf_counter() - t0,
            )
        if cache_dir is not None:
            hit = EngineCache(cache_dir).lookup(key, deserialises)
            if hit is not None:
                plan, sidecar = hit
                sidecar = {**sidecar, "engine": output.name}
                _write_outputs(output, plan, sidecar)
                echo(f"reused the cached engine {EngineCache(cache_dir).plan_path(key)}")
                return BuildResult(
                    engine_path=output,
                    sidecar_path=sidecar_path(output),
                    sidecar=sidecar,
                    reused="cache",
                    seconds=time.perf_counter() - t0,
                )

    if timing_cache is True:
        timing_path: Path | None = default_timing_cache(trt.__version__, gpu, cache_dir)
    elif timing_cache in (None, False):
        timing_path = None
    else:
        timing_path = Path(timing_cache)  # type: ignore[arg-type]
    echo(
        f"building {facts.precision.value} engine from {facts.path} with TensorRT {trt.__version__} for "
        f"{gpu.name if gpu else 'an unidentified GPU'}: windows up to {options.window}px, batch "
        f"{options.min_batch}..{options.batch}, {options.profiles} profile(s), "
        f"TF32 {'allowed' if options.allow_tf32 else 'off'}"
    )
    plan = _build_plan(trt, logger, cap, facts, options, timing_cache=timing_path, progress=progress)
    runtime, engine = _deserialise(trt, logger, plan)
    if engine is None:
        raise EngineBuildError(f"{facts.path}: the engine TensorRT just built does not deserialise{_said(cap)}")
    seconds = time.perf_counter() - t0
    sidecar = _make_sidecar(
        trt=trt,
        engine=engine,
        plan=plan,
        facts=facts,
        options=options,
        gpu=gpu,
        key=key,
        output=output,
        seconds=seconds,
    )
    del engine, runtime
    _write_outputs(output, plan, sidecar)
    if cache_dir is not None and key is not None:
        try:
            EngineCache(cache_dir).store(key, plan, sidecar)
        except OSError as exc:
            log.warning("could not store the engine in the cache %s: %s", cache_dir, exc)
    echo(f"wrote {output} ({len(plan) / 1e6:.1f} MB) and {sidecar_path(output).name} in {seconds:.1f} s")
    return BuildResult(
        engine_path=output, sidecar_path=sidecar_path(output), sidecar=sidecar, reused=None, seconds=seconds
    )


def _reuse_output(output: Path, key: str, deserialises: Callable[[bytes], bool]) -> dict[str, Any] | None:
    try:
        sidecar = json.loads(sidecar_path(output).read_text())
        if not isinstance(sidecar, dict) or sidecar.get("cache_key") != key:
            return None
        plan = output.read_bytes()
    except (OSError, ValueError):
        return None
    if sidecar.get("engine_sha256") != hashlib.sha256(plan).hexdigest() or not deserialises(plan):
        return None
    return sidecar


# --------------------------------------------------------------------------- CLI

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(text: str) -> int:
    """``"4GiB"``, ``"512MiB"``, ``"2G"``, ``"1073741824"`` → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 4GiB, 512MiB or 1073741824, got {text!r}")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_trt.py",
        description="Build a TensorRT engine and its JSON sidecar from an ONNX model exported by export/to_onnx.py.",
        epilog="Exit status: 0 built or reused, 1 build failed, 2 bad arguments or input, 3 TensorRT or GPU unavailable.",
        formatter_class=DefaultsHelpFormatter,
    )
    d = BuildOptions(precision=Precision.FP32)
    p.add_argument("onnx", type=Path, help="ONNX model (float32, FP16 or Q/DQ INT8 graph)")
    p.add_argument("-o", "--output", type=Path, required=True, help="engine file to write (sidecar: <output>.json)")
    p.add_argument(
        "--precision",
        choices=["auto"] + [x.value for x in Precision],
        default="auto",
        help="the graph's precision, checked against its dtypes (auto: read off the graph)",
    )
    p.add_argument("--tile", type=int, default=d.tile, help="tile core edge (input pixels) the runtime will use")
    p.add_argument(
        "--halo",
        type=int,
        default=None,
        help=f"context around each tile (default: the model's recommended_halo, else {d.halo})",
    )
    p.add_argument("--batch", type=int, default=d.batch, help="most windows per run (profile max and opt)")
    p.add_argument("--min-batch", type=int, default=d.min_batch, help="fewest windows per run (profile min)")
    p.add_argument(
        "--min-window",
        type=int,
        default=None,
        help=f"smallest window edge (profile min; default {d.min_window} or the window if smaller)",
    )
    p.add_argument(
        "--profiles",
        type=int,
        default=d.profiles,
        help="identical optimisation profiles = most runtime slots in flight",
    )
    p.add_argument(
        "--opt-level",
        type=int,
        choices=range(6),
        default=None,
        metavar="0..5",
        help="builder_optimization_level (TensorRT default 3)",
    )
    p.add_argument(
        "--workspace",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="workspace memory pool limit, e.g. 4GiB (TensorRT default: the GPU's memory)",
    )
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help="keep TensorRT's default TF32 for float32 layers (10-bit mantissas; faster on Ampere and newer); "
        "without it the builder clears BuilderFlag.TF32 so float32 means float32",
    )
    p.add_argument("--scale", type=int, default=None, help="upscale factor, for an ONNX without fourpp_eusr metadata")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="engine cache folder (<key>.plan + sidecar; timing caches in its timing/)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the engine cache")
    p.add_argument(
        "--timing-cache",
        type=Path,
        default=None,
        help="timing cache file (default: one per TensorRT version and GPU in <cache-dir>/timing/)",
    )
    p.add_argument("--no-timing-cache", action="store_true", help="time every kernel afresh, save nothing")
    p.add_argument("--force", action="store_true", help="rebuild even if the output or cache holds a matching engine")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorRT's INFO messages")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        facts = inspect_onnx(args.onnx, scale=args.scale)
        precision = facts.precision if args.precision == "auto" else Precision(args.precision)
        halo = args.halo if args.halo is not None else facts.info.recommended_halo
        if halo is None:
            halo = BuildOptions(precision=precision).halo
        window = args.tile + 2 * halo
        min_window = (
            args.min_window
            if args.min_window is not None
            else min(BuildOptions(precision=precision).min_window, window)
        )
        options = BuildOptions(
            precision=precision,
            tile=args.tile,
            halo=halo,
            batch=args.batch,
            min_batch=args.min_batch,
            min_window=min_window,
            profiles=args.profiles,
            opt_level=args.opt_level,
            workspace=args.workspace,
            allow_tf32=args.allow_tf32,
        )
    except BuildOptionsError as exc:
        parser.error(str(exc))
    except TrtBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    timing: Path | bool | None = None if args.no_timing_cache else (args.timing_cache or True)
    try:
        result = build_engine(
            facts,
            args.output,
            options,
            cache_dir=None if args.no_cache else args.cache_dir,
            timing_cache=timing,
            force=args.force,
            progress=not args.no_progress,
            verbose=args.verbose,
            echo=print,
        )
    except TrtBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result.reused is None:
        print(f"done: {result.engine_path} ({options.precision.value}, TensorRT {result.sidecar['tensorrt_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
