"""GPU throughput: PyTorch eager / CUDA graphs / torch.compile against the pipelined runtime.

    python benchmarks/throughput_gpu.py --out results/gpu            # compact, 960x540 and 1920x1080
    python benchmarks/throughput_gpu.py --configs compact,paper --sizes 960x540 --repeats 50
    python benchmarks/throughput_gpu.py --quick                      # a minute: smoke run

On a random uint8 W×H×3 image per --sizes entry, for each configuration (compact = the
checkpoint --checkpoint; paper/tiny = random init, throughput does not depend on weights):

* torch-fp32 / torch-fp16: the ×4 path whole image in PyTorch eager, channels_last,
  cudnn.benchmark; float32 without TF32 unless ``--allow-tf32`` (as the torch-cuda
  stage, which gets the same setting; recorded as ``allow_tf32``). Timed two ways: "device" (input
  already on the GPU, output left there, CUDA events) and "e2e" (uint8 numpy in, H2D
  from pageable memory, cast, model, round/clamp, D2H, uint8 numpy out; wall clock).
* torch-fp16-graph: the fp16 forward captured once with torch.cuda.graphs and replayed
  (fixed shape); "device" and "e2e" as above.
* torch-fp16-compile: torch.compile of the fp16 module ("device" only; skipped with
  --no-compile; compile time recorded).
* pipeline-*: runtime.Upscaler(backend="torch-cuda"): tiles (--tile, halo 16), --slots
  slots, batch --batch, pinned buffers and async copies, fp32/fp16 × float32-nchw/uint8-nhwc
  I/O; "e2e" per image, and "stream" = upscale_many over --frames frames (images/s).

Per row: p50/p99 latency (ms), input and output megapixels per second and images/s (from
p50), the GPU memory high-water mark (torch allocator peak; for the pipeline plus its
cudaMalloc'd buffers), and the largest difference of the uint8 output from torch-fp32
e2e's. A mode that fails records its error and the run goes on. JSON has the GPU name,
driver, CUDA runtime, library versions, date and command; the table is printed last.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    HelpFormatter,
    add_allow_dirty,
    add_out_args,
    commit_label,
    environment,
    fmt_float,
    markdown_table,
    package_version,
    parse_sizes,
    require_clean_tree,
    results_dir,
    write_results,
)
from benchmarks.throughput_models import COMPACT_CHECKPOINT, CONFIGS, SCALE, build_config
from benchmarks.timing import percentile, rates, time_calls, time_cuda_events
from runtime.backends.torch_cuda import tf32_scope
from runtime.errors import UpscaleError

HALO = 16
DEFAULT_CHECKPOINT = COMPACT_CHECKPOINT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="throughput_gpu.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--configs", default="compact", help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="weights of the compact configuration")
    p.add_argument(
        "--sizes", type=parse_sizes, default=parse_sizes("960x540,1920x1080"), help="input WIDTHxHEIGHT list"
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--frames", type=int, default=16, help="frames per upscale_many stream")
    p.add_argument("--tile", type=int, default=256, help="pipeline tile (LR pixels)")
    p.add_argument("--batch", type=int, default=8, help="pipeline tiles per enqueue")
    p.add_argument("--slots", type=int, default=3, help="pipeline slots in flight")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help="let the float32 modes (eager and pipeline) use TF32 (10-bit mantissas; faster, not float32; recorded)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: one small size, few repeats")
    p.add_argument("--seed", type=int, default=0)
    add_out_args(p, what="folder for <name>.json and <name>.md")
    p.add_argument("--name", default="throughput_gpu", help="stem of the result files")
    add_allow_dirty(p)
    return p


def gpu_environment() -> dict[str, Any]:
    import torch

    from runtime.cuda.api import bindings_version
    from runtime.cuda.resources import CudaDevice

    device = CudaDevice(0).describe()
    return {
        **device,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cuda_bindings": bindings_version(),
        "cupy": package_version("cupy") or package_version("cupy-cuda13x") or package_version("cupy-cuda12x"),
    }


def stats(times_s: Sequence[float], width: int, height: int) -> dict[str, Any]:
    """p50 / p99 / min in ms, the repeat count, and the rates of the p50 (benchmarks.timing)."""
    p50 = percentile(times_s, 50)
    return {
        "p50_ms": p50 * 1e3,
        "p99_ms": percentile(times_s, 99) * 1e3,
        "min_ms": float(min(times_s)) * 1e3,
        "repeats": len(times_s),
        **rates(p50, width, height, SCALE),
    }


def time_wall(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[list[float], Any]:
    """Wall-clock times with the device synchronised after the warm-up and after each call."""
    import torch

    return time_calls(fn, warmup, repeats, sync=torch.cuda.synchronize)


class TorchModes:
    """The whole-image PyTorch runners of one configuration on one size (float32 with TF32
    only if ``allow_tf32``, as the pipeline's torch-cuda stage)."""

    def __init__(self, model: Any, width: int, height: int, *, allow_tf32: bool = False) -> None:
        import torch

        torch.backends.cudnn.benchmark = True
        self.torch = torch
        self.allow_tf32 = allow_tf32
        self.fp32 = model.path(SCALE).to("cuda").float().eval().to(memory_format=torch.channels_last)
        import copy

        self.fp16 = copy.deepcopy(self.fp32).half()
        self.shape = (1, 3, height, width)

    def device_fn(self, net: Any, dtype: Any) -> Callable[[], Any]:
        torch = self.torch
        x = (torch.rand(self.shape, device="cuda") * 255).to(dtype).contiguous(memory_format=torch.channels_last)

        def run() -> Any:
            with tf32_scope(torch, self.allow_tf32), torch.inference_mode():
                return net(x)

        return run

    def e2e_fn(self, net: Any, dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
        torch = self.torch

        def run(image: np.ndarray) -> np.ndarray:
            with tf32_scope(torch, self.allow_tf32), torch.inference_mode():
                x = (
                    torch.from_numpy(image)
                    .cuda()
                    .permute(2, 0, 1)[None]
                    .to(dtype=dtype, memory_format=torch.channels_last)
                )
                y = net(x).float().round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
                return y.cpu().numpy()

        return run

    def graph_fns(self) -> tuple[Callable[[], Any], Callable[[np.ndarray], np.ndarray]]:
        """fp16 forward captured in a CUDA graph (static input/output tensors)."""
        torch = self.torch
        static_in = (torch.rand(self.shape, device="cuda") * 255).half().contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm up cudnn.benchmark and the allocator off the capture
                self.fp16(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self.fp16(static_in)

        def device() -> Any:
            graph.replay()
            return static_out

        def e2e(image: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(image).cuda().permute(2, 0, 1)[None]
                static_in.copy_(x)
                graph.replay()
                y = static_out.float().round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
                return y.cpu().numpy()

        return device, e2e


def run_config(
    name: str,
    model: Any,
    size: tuple[int, int],
    args: argparse.Namespace,
    rng: np.random.Generator,
    echo: Callable[[str], None],
) -> list[dict[str, Any]]:
    import torch

    from runtime import Upscaler
    from runtime.backends.torch_cuda import TorchCudaStageFactory

    width, height = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None

    def record(
        mode: str, precision: str, io: str, timing: str, measure: Callable[[], tuple[list[float], Any]], **extra: Any
    ) -> None:
        nonlocal reference
        row: dict[str, Any] = {
            "config": name,
            "size": f"{width}x{height}",
            "mode": mode,
            "precision": precision,
            "allow_tf32": args.allow_tf32 if precision == "fp32" else None,
            "io": io,
            "timing": timing,
            **extra,
        }
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        try:
            times, out = measure()
            row.update(stats(times, width, height))
            row["gpu_mem_peak_mb"] = torch.cuda.max_memory_allocated() / 1e6 + row.pop("extra_device_mb", 0.0)
            if (
                isinstance(out, np.ndarray)
                and out.dtype == np.uint8
                and out.shape == (height * SCALE, width * SCALE, 3)
            ):
                if reference is None and mode == "torch-fp32" and timing == "e2e":
                    reference = out
                if reference is not None:
                    row["max_abs_diff_vs_torch_fp32"] = int(np.abs(out.astype(np.int16) - reference).max())
            echo(
                f"  {name} {width}x{height} {mode} {precision} {io} {timing}: p50 {row['p50_ms']:.2f} ms, "
                f"{row['output_mp_per_s']:.1f} MP/s out"
            )
        except Exception as exc:  # noqa: BLE001 - one failing mode must not end the run
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc(limit=6)
            echo(f"  {name} {width}x{height} {mode} {timing}: FAILED {row['error']}")
        rows.append(row)

    w, r = args.warmup, args.repeats
    modes = TorchModes(model, width, height, allow_tf32=args.allow_tf32)
    for mode, net, dtype, precision in [
        ("torch-fp32", modes.fp32, torch.float32, "fp32"),
        ("torch-fp16", modes.fp16, torch.float16, "fp16"),
    ]:
        e2e = modes.e2e_fn(net, dtype)
        record(mode, precision, "uint8 hwc (host)", "e2e", lambda e2e=e2e: time_wall(lambda: e2e(image), w, r))
        dev = modes.device_fn(net, dtype)
        record(
            mode, precision, f"{precision} nchw (device)", "device", lambda dev=dev: (time_cuda_events(dev, w, r), None)
        )

    def graph_e2e() -> tuple[list[float], Any]:
        device, e2e = modes.graph_fns()
        record(
            "torch-fp16-graph", "fp16", "fp16 nchw (device)", "device", lambda: (time_cuda_events(device, w, r), None)
        )
        return time_wall(lambda: e2e(image), w, r)

    record("torch-fp16-graph", "fp16", "uint8 hwc (host)", "e2e", graph_e2e)

    if not args.no_compile:

        def compiled() -> tuple[list[float], Any]:
            t0 = time.perf_counter()
            net = torch.compile(modes.fp16)
            dev = modes.device_fn(net, torch.float16)
            dev()
            torch.cuda.synchronize()
            rows_extra["compile_s"] = time.perf_counter() - t0
            return time_cuda_events(dev, w, r), None

        rows_extra: dict[str, Any] = {}
        record("torch-fp16-compile", "fp16", "fp16 nchw (device)", "device", compiled)
        rows[-1].update(rows_extra)
    modes = None  # free the whole-image models and graphs before the pipeline runs
    torch.cuda.empty_cache()

    for fp16 in (False, True):
        for io in ("float32-nchw", "uint8-nhwc"):
            precision = "fp16" if fp16 else "fp32"
            mode = f"pipeline-torch-{precision}"
            settings = {"tile": args.tile, "halo": HALO, "batch": args.batch, "slots": args.slots}
            try:
                factory = TorchCudaStageFactory(model, io=io, fp16=fp16, halo=HALO, allow_tf32=args.allow_tf32)
            except Exception as exc:  # noqa: BLE001
                rows.append({"config": name, "size": f"{width}x{height}", "mode": mode, "io": io, "error": str(exc)})
                continue
            with factory:
                from runtime.cuda.resources import CudaDevice

                device = CudaDevice(0)
                free_before = device.memory_info()[0]
                with Upscaler(
                    backend=factory, device=device, tile=args.tile, halo=HALO, batch=args.batch, slots=args.slots
                ) as up:
                    buffers_mb = (free_before - device.memory_info()[0]) / 1e6

                    def e2e(up: Any = up) -> tuple[list[float], Any]:
                        times, out = time_wall(lambda: up.upscale(image), w, r)
                        return times, out

                    record(mode, precision, f"{io} (pinned, async)", "e2e", e2e, extra_device_mb=buffers_mb, **settings)
                    rows[-1]["extra_device_mb"] = buffers_mb

                    def stream(up: Any = up) -> tuple[list[float], Any]:
                        frames = [image] * args.frames
                        for _ in up.upscale_many(frames[:2]):
                            pass
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        last = None
                        for last in up.upscale_many(frames):  # noqa: B007 - drains the iterator
                            pass
                        torch.cuda.synchronize()
                        per_frame = (time.perf_counter() - t0) / len(frames)
                        return [per_frame], last

                    record(
                        mode,
                        precision,
                        f"{io} (pinned, async)",
                        f"stream x{args.frames}",
                        stream,
                        extra_device_mb=buffers_mb,
                        **settings,
                    )
            torch.cuda.empty_cache()
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    headers = [
        "config",
        "size",
        "mode",
        "I/O",
        "timing",
        "p50 ms",
        "p99 ms",
        "MP/s in",
        "MP/s out",
        "img/s",
        "GPU MB",
        "max |diff|",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append(
                [
                    r.get("config", "-"),
                    r.get("size", "-"),
                    r.get("mode", "-"),
                    r.get("io", "-"),
                    r.get("timing", "-"),
                    "error",
                    r["error"][:60],
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                ]
            )
            continue
        body.append(
            [
                r["config"],
                r["size"],
                r["mode"],
                r["io"],
                r["timing"],
                fmt_float(r["p50_ms"]),
                fmt_float(r["p99_ms"]),
                fmt_float(r["input_mp_per_s"]),
                fmt_float(r["output_mp_per_s"]),
                fmt_float(r["images_per_s"]),
                fmt_float(r.get("gpu_mem_peak_mb"), 0),
                r.get("max_abs_diff_vs_torch_fp32", "-"),
            ]
        )
    return markdown_table(headers, body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    results_dir(args, parser)
    configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        print(f"error: --configs: unknown {bad or args.configs!r}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    if args.quick:
        args.sizes, args.warmup, args.repeats, args.frames, args.no_compile = [(480, 270)], 1, 5, 4, True
    try:
        import torch
    except ImportError:
        print("error: torch is not installed (a CUDA build is needed)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"error: torch {torch.__version__} sees no CUDA GPU", file=sys.stderr)
        return 2
    try:
        env = environment(git=require_clean_tree(args.allow_dirty))
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        env["gpu"] = gpu_environment()
    except Exception as exc:  # noqa: BLE001 - CudaUnavailableError, MissingDependencyError
        print(f"error: the CUDA runtime pipeline cannot run here: {exc}", file=sys.stderr)
        return 2
    print(
        f"throughput on {env['gpu']['name']} (driver {env['gpu']['cuda_driver_version']}, torch {torch.__version__} "
        f"CUDA {env['gpu']['torch_cuda']})",
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    for name in configs:
        try:
            model = build_config(name, args.seed, checkpoint=args.checkpoint, what="--checkpoint")[0]
        except UpscaleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for size in args.sizes:
            rows += run_config(name, model, size, args, rng, lambda s: print(s, flush=True))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    data = {
        "benchmark": "throughput_gpu",
        "environment": env,
        "allow_tf32": args.allow_tf32,
        "settings": settings,
        "rows": rows,
    }
    md_table = table(rows)
    gpu = env["gpu"]
    markdown = "\n\n".join(
        [
            f"# GPU throughput: PyTorch and the pipelined runtime on {gpu['name']}",
            f"{env['date']}, commit {commit_label(env)}; driver {gpu['cuda_driver_version']}, CUDA runtime "
            f"{gpu['cuda_runtime_version']}, torch {env['versions']['torch']} (CUDA {gpu['torch_cuda']}, cuDNN "
            f"{gpu['cudnn']}), cuda-bindings {gpu['cuda_bindings']}; float32 modes with TF32 "
            f"{'allowed' if args.allow_tf32 else 'off'}. Command: `{env['command']}`.",
            md_table,
        ]
    )
    paths = write_results(args.out, args.name, data, markdown)
    print(f"wrote {paths['json']}, {paths['md']}")
    errors = sum("error" in r for r in rows)
    print()
    print(md_table)
    return 1 if errors == len(rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
