"""``runtime batch`` in this process vs ``--ray`` with 1 and 2 CPU actors, in one run.

    python benchmarks/batch_ray.py                 # 8 crops of 128x128 from data/photos
    python benchmarks/batch_ray.py --size 96 --images 8 --repeats 2

Every configuration upscales the same crops with ``--overwrite`` into its own folder (the
outputs are checked byte-identical across configurations). Ray's start-up (``ray.init`` of a
local cluster on loopback with ``--ray-cpus`` logical CPUs) is timed once and reported apart;
each ``--ray`` row's time includes its actors' start and model load, which a real job pays
once per actor. On a 2-core machine expect no gain: the point is that the same command spreads
over a cluster's nodes. It prints its table (Markdown) and writes no result files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from runtime.batch import UpscalerSettings, run_batch
from runtime.results import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def make_crops(folder: Path, size: int, count: int) -> list[Path]:
    photos = sorted((ROOT / "data" / "photos").glob("*/*.png"))
    paths: list[Path] = []
    i = 0
    while len(paths) < count:
        photo = Image.open(photos[i % len(photos)])
        step = i // len(photos)
        x = min(step * size, max(photo.width - size, 0))
        path = folder / f"crop{len(paths):02d}_{photos[i % len(photos)].stem}.png"
        photo.crop((x, 0, x + size, size)).save(path)
        paths.append(path)
        i += 1
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="crop edge in pixels (default 128)")
    parser.add_argument("--images", type=int, default=8, help="crops (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration, median reported (default 1)")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2, help="logical CPUs of the local cluster")
    args = parser.parse_args(argv)
    load = os.getloadavg()

    import ray

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="batch-ray-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        make_crops(src, args.size, args.images)
        settings = UpscalerSettings()
        half = (args.ray_cpus - 0.25) / 2
        configs: list[tuple[str, dict[str, Any] | None]] = [
            ("in-process", None),
            ("--ray --workers 1 --cpus-per-worker 1", {"workers": 1, "cpus_per_worker": 1.0}),
            (f"--ray --workers 2 --cpus-per-worker {half:g}", {"workers": 2, "cpus_per_worker": half}),
        ]
        started = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        ray_start_s = time.perf_counter() - started
        outputs: dict[str, bytes] = {}
        try:
            for label, ray_options in configs:
                times, mps = [], []
                for r in range(args.repeats):
                    dst = Path(tmp) / f"out{len(rows)}_{r}"
                    s = run_batch(
                        str(src),
                        str(dst),
                        settings,
                        overwrite=True,
                        use_ray=ray_options is not None,
                        ray_options=ray_options,
                        quiet=True,
                    )
                    assert s["done"] == args.images and s["failed"] == 0, s
                    times.append(s["work_s"])
                    mps.append(s["megapixels"])
                    for p in sorted(dst.glob("*_x4.png")):
                        assert outputs.setdefault(p.name, p.read_bytes()) == p.read_bytes(), p.name
                rows.append(
                    {
                        "config": label,
                        "seconds": statistics.median(times),
                        "all_seconds": times,
                        "megapixels": mps[0],
                        "mp_per_s": mps[0] / statistics.median(times),
                    }
                )
        finally:
            ray.shutdown()
    base = rows[0]["seconds"]
    for row in rows:
        row["vs_in_process"] = base / row["seconds"]
    table = markdown_table(
        ["config", "s (median)", "runs", "MP/s (input)", "speed vs in-process"],
        [
            [
                r["config"],
                f"{r['seconds']:.2f}",
                " ".join(f"{t:.2f}" for t in r["all_seconds"]),
                f"{r['mp_per_s']:.4f}",
                f"{r['vs_in_process']:.2f}x",
            ]
            for r in rows
        ],
    )
    text = (
        f"# batch: in-process vs --ray\n\n{args.images} crops of {args.size}x{args.size}, bundled model, backend auto; "
        f"Ray local cluster start-up (ray.init, {args.ray_cpus} logical CPUs): {ray_start_s:.2f} s, not in the rows; "
        f"load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores.\n\n{table}\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
