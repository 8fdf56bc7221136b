"""Load test of the Triton ``upscale`` model: N concurrent clients, latency p50/p99, images/s, errors.

    python benchmarks/serve.py                                  # 16 clients x 8 requests, HTTP and gRPC
    python benchmarks/serve.py --clients 4 --requests 2 --protocol grpc
    python benchmarks/serve.py --out benchmarks/results         # the committed result (clean tree only)

Writes a repository (``export/to_triton.py``'s ``write_repository``: the bundled model,
``--instances`` instances of ``--threads`` ONNX Runtime threads each), starts a real
``tritonserver`` on loopback (``runtime.serve.TritonServer``; ``--triton-home``, else found as
``runtime/serve.py`` says, the kit of ``tests/triton_kit/install.py`` last), and sends crops of mixed sizes (``--sizes``) of the
bundled demo photo from ``--clients`` threads, each with its own connection, each sending
``--requests`` requests one after another. Every response is compared pixel for pixel with
the local ``runtime.Upscaler`` on the same model and options; a mismatch counts as an error.

Latency is per request (send to decoded response, wall clock); throughput is responses
per second of the whole run (first send to last response), and output megapixels per
second. The server's start-up and the references are outside the timing.

Outputs ``<out>/<name>.json`` and ``.md``; ``--out`` defaults to a new temporary folder.
Writing into ``benchmarks/results/`` needs a clean tree (``--allow-dirty`` to override).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.common import DEFAULT_OUT, BenchmarkError, HelpFormatter, parse_sizes
from benchmarks.timing import percentile
from runtime import OnnxRuntime, Upscaler
from runtime.demo import DEMO_PHOTO
from runtime.image_io import read_image
from runtime.results import add_allow_dirty, environment, git_state, markdown_table, require_clean_tree, write_results

DEFAULT_SIZES = "32x24,48x48,64x40,96x64"


def crops(sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """One RGB crop of the bundled demo photo per ``(width, height)``, from spread-out corners."""
    photo, _ = read_image(DEMO_PHOTO)
    photo = np.ascontiguousarray(photo[:, :, :3])
    out = []
    for i, (w, h) in enumerate(sizes):
        if h > photo.shape[0] or w > photo.shape[1]:
            raise BenchmarkError(f"--sizes {w}x{h} is larger than the demo photo ({photo.shape[1]}x{photo.shape[0]})")
        y = (i * 37) % (photo.shape[0] - h + 1)
        x = (i * 53) % (photo.shape[1] - w + 1)
        out.append(np.ascontiguousarray(photo[y : y + h, x : x + w]))
    return out


def run_load(
    url: str,
    *,
    protocol: str,
    images: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    clients: int,
    requests: int,
) -> dict[str, Any]:
    """``clients`` threads x ``requests`` requests; request j of client c sends image ``(c + j) % len(images)``."""
    from runtime.triton_client import TritonClientError, UpscaleClient

    latencies: list[float] = []
    errors: list[str] = []
    out_pixels = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        with UpscaleClient(url, protocol=protocol) as conn:
            start.wait(timeout=60)
            for j in range(requests):
                k = (c + j) % len(images)
                t0 = time.perf_counter()
                try:
                    out = conn.upscale(images[k])
                except TritonClientError as exc:
                    with lock:
                        errors.append(f"client {c} request {j}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                ok = out.shape == references[k].shape and bool(np.array_equal(out, references[k]))
                with lock:
                    latencies.append(dt)
                    out_pixels[0] += out.shape[0] * out.shape[1]
                    if not ok:
                        errors.append(
                            f"client {c} request {j}: response differs from the local Upscaler ({images[k].shape})"
                        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client, c) for c in range(clients)]:
            future.result()
    wall = time.perf_counter() - t0
    return {
        "protocol": protocol,
        "clients": clients,
        "requests_per_client": requests,
        "responses": len(latencies),
        "errors": len(errors),
        "error_messages": errors[:10],
        "wall_s": wall,
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p99_s": percentile(latencies, 99) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "images_per_s": len(latencies) / wall if wall > 0 else None,
        "output_mp_per_s": out_pixels[0] / 1e6 / wall if wall > 0 else None,
    }


def local_rate(up: Upscaler, images: Sequence[np.ndarray], *, clients: int, requests: int) -> dict[str, Any]:
    """The same request mix in this process, one Upscaler, one image after another: the server's baseline.

    Each image's time is the median of 3 runs; the mix's serial time weights them by how
    often :func:`run_load` sends each image. ``images_per_s`` x instances is what the server
    could reach with no overhead and perfect parallel scaling.
    """
    medians = []
    for image in images:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            up.upscale(image)
            times.append(time.perf_counter() - t0)
        medians.append(float(np.median(times)))
    counts = [0] * len(images)
    for c in range(clients):
        for j in range(requests):
            counts[(c + j) % len(images)] += 1
    serial = sum(n * t for n, t in zip(counts, medians))
    return {"image_seconds": medians, "images_per_s": sum(counts) / serial if serial > 0 else None}


def _markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    rows = [
        [
            r["protocol"],
            f"{r['clients']} x {r['requests_per_client']}",
            r["responses"],
            r["errors"],
            f"{r['latency_p50_s'] * 1000:.0f}" if r["latency_p50_s"] is not None else "-",
            f"{r['latency_p99_s'] * 1000:.0f}" if r["latency_p99_s"] is not None else "-",
            f"{r['images_per_s']:.2f}" if r["images_per_s"] is not None else "-",
            f"{r['output_mp_per_s']:.2f}" if r["output_mp_per_s"] is not None else "-",
        ]
        for r in data["runs"]
    ]
    env = data["environment"]
    git = env["git"]
    return "\n".join(
        [
            "# Triton `upscale` model under load",
            "",
            f"{env['date']}, commit {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}, {env['host']['cpu']} "
            f"({env['host']['usable_cpus']} usable CPUs). Command: `{env['command']}`",
            "",
            f"Server: tritonserver from {s['triton_home']}, `upscale` model on ONNX Runtime CPU, "
            f"{s['instances']} instance(s) x {s['threads']} thread(s), tile {s['tile']}; image sizes "
            f"{', '.join(s['sizes'])} (crops of the demo photo, RGB uint8), each response checked pixel for pixel "
            "against the local Upscaler (a mismatch is an error). Start-up: "
            f"{s['server_start_s']:.1f} s. In-process baseline (one Upscaler, {s['threads']} thread(s), the same "
            f"mix one image after another): {data['local']['images_per_s']:.2f} images/s. Load average (1 min) "
            f"{data['load_average_1min']['before']:.1f} before, {data['load_average_1min']['after']:.1f} after "
            "(other jobs share the cores).",
            "",
            markdown_table(
                ["protocol", "clients x requests", "responses", "errors", "p50 ms", "p99 ms", "images/s", "out MP/s"],
                rows,
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (threads, one connection each)")
    p.add_argument("--requests", type=int, default=8, help="requests per client, one after another")
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=DEFAULT_SIZES,
        help="input sizes WxH, comma-separated (mixed over requests)",
    )
    p.add_argument("--protocol", choices=("http", "grpc", "both"), default="both")
    p.add_argument("--instances", type=int, default=2, help="upscale model instances (stub processes)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    p.add_argument("--tile", default="auto", help="the upscale model's tile (auto or an int)")
    p.add_argument(
        "--triton-home",
        type=Path,
        help="folder with bin/tritonserver (default: the kit in .cache/triton, else searched as runtime/serve.py says)",
    )
    p.add_argument("--out", type=Path, help="result folder (default: a new temporary folder)")
    p.add_argument("--name", default="serve", help="stem of the result files")
    add_allow_dirty(p)
    args = p.parse_args(argv)

    from export.to_triton import UpscaleModel, write_repository
    from runtime.serve import TritonServer

    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="serve-bench-"))
    git = require_clean_tree(args.allow_dirty) if out.resolve() == DEFAULT_OUT.resolve() else git_state()
    tile: int | str = args.tile if args.tile == "auto" else int(args.tile)
    sizes = args.sizes
    images = crops(sizes)
    with Upscaler(backend=OnnxRuntime(threads=args.threads), tile=tile) as up:
        references = [up.upscale(im) for im in images]
        local = local_rate(up, images, clients=args.clients, requests=args.requests)
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
    with tempfile.TemporaryDirectory(prefix="serve-bench-repo-") as repo:
        write_repository(
            repo,
            upscale=UpscaleModel(instances=args.instances, threads=args.threads, tile=tile),
            onnx_model=None,
            tensorrt_model=None,
        )
        t0 = time.perf_counter()
        with TritonServer(
            repo,
            triton_home=args.triton_home,
            models=["upscale"],
            log=Path(repo) / "server.log",
        ) as server:
            server.start()
            started = time.perf_counter() - t0
            runs = []
            load_before = os.getloadavg()
            for protocol in protocols:
                url = server.http_url if protocol == "http" else server.grpc_url
                run = run_load(
                    url,
                    protocol=protocol,
                    images=images,
                    references=references,
                    clients=args.clients,
                    requests=args.requests,
                )
                runs.append(run)
                print(
                    f"{protocol}: {run['responses']} responses, {run['errors']} errors, p50 {run['latency_p50_s']:.3f} s, "
                    f"p99 {run['latency_p99_s']:.3f} s, {run['images_per_s']:.2f} images/s",
                    flush=True,
                )
            home = str(server.home)
            load_after = os.getloadavg()
    data = {
        "environment": environment(threads=args.threads, git=git),
        "settings": {
            "clients": args.clients,
            "requests": args.requests,
            "sizes": [f"{w}x{h}" for w, h in sizes],
            "instances": args.instances,
            "threads": args.threads,
            "tile": tile,
            "triton_home": home,
            "server_start_s": started,
        },
        # The machine's 1-minute load average around the runs: other jobs share these cores.
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "local": local,
        "runs": runs,
    }
    paths = write_results(out, args.name, data, _markdown(data))
    print(f"wrote {paths['json']} and {paths['md']}")
    return 1 if any(r["errors"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
