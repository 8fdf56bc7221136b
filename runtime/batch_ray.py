"""``batch --ray``: the batch's images through a Ray Data pipeline, one Upscaler per actor.

The pipeline (imported only when ``--ray`` is given; Ray is the ``[cluster]`` extra):

1. ``ray.data.from_items`` holds the plan's to-do items (source and output, already named and
   filtered for resume by :func:`runtime.batch.plan_batch`);
2. read tasks fetch each source's bytes through its filesystem (local or pyarrow's: S3, GCS,
   HDFS). They reserve ``READ_CPUS`` of a CPU each: a reservation of 0 would let Ray run
   unboundedly many, and an actor pool that takes every CPU would leave them none (a first try
   on 2 CPUs hung that way), so :func:`run_ray` checks the cluster has room for both first;
3. an actor pool of ``workers`` actors, each reserving ``cpus_per_worker`` CPUs and
   ``gpus_per_worker`` GPUs, builds one :class:`~runtime.Upscaler` in its constructor and runs
   :func:`runtime.batch.process_item` on every image it gets (decoding there, with the
   project's reader), writing each output atomically. Ray Data restarts an actor that dies and
   retries its tasks (its defaults: ``max_restarts=-1``, ``max_task_retries=-1``).

Failures of single images come back as result rows, never as task errors, so one bad image
costs no retries and ends nothing.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._deps import require
from .batch_items import Item, Location, UpscalerSettings, process_item
from .errors import InvalidArgumentError, MissingDependencyError, UpscaleError

__all__ = ["READ_CPUS", "require_ray", "run_ray"]

READ_CPUS = 0.25
"""CPUs one read task reserves: fetching bytes is I/O, and four of them fit beside the actors' whole CPUs."""

_RESULT_COLUMNS = ("source", "output", "status", "error", "megapixels", "seconds", "warnings")


def require_ray() -> Any:
    """``ray`` with Ray Data, or a :class:`MissingDependencyError` saying how to install it."""
    try:
        ray = require("ray", pip='"fourpp-eusr[cluster]"', purpose="batch --ray")
        require("ray.data", pip='"fourpp-eusr[cluster]"', purpose="batch --ray (Ray Data)")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"{exc} (it brings ray[data] at the tested version; or run without --ray, in this process)"
        ) from exc
    return ray


def _row_of(item: Item) -> dict[str, Any]:
    return {
        "source": item.source.text,
        "source_path": item.source.path,
        "output": item.output.text,
        "output_path": item.output.path,
    }


def _read_bytes(batch: dict[str, Any], *, source_fs: Any) -> dict[str, Any]:
    """Read task: each source's bytes (b"" and the error when it cannot be read)."""
    data, errors = [], []
    for text, path in zip(batch["source"], batch["source_path"]):
        try:
            data.append(Location(str(text), str(path), source_fs).read_bytes())
            errors.append("")
        except Exception as exc:  # noqa: BLE001 - recorded as this image's failure; the run goes on
            data.append(b"")
            errors.append(f"{text}: cannot read the file ({type(exc).__name__}: {exc})")
    return {**batch, "data": data, "read_error": errors}


class UpscaleActor:
    """One Upscaler per actor, built once and reused for every image the actor gets."""

    def __init__(self, settings: UpscalerSettings, output_fs: Any, overwrite: bool) -> None:
        self.upscaler = settings.create()
        self.output_fs = output_fs
        self.overwrite = overwrite
        self.scratch = Path(tempfile.mkdtemp(prefix="fourpp-batch-ray-"))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in _RESULT_COLUMNS}
        for i in range(len(batch["source"])):
            source = Location(str(batch["source"][i]), str(batch["source_path"][i]))  # its bytes are in the row
            output = Location(str(batch["output"][i]), str(batch["output_path"][i]), self.output_fs)
            read_error = str(batch["read_error"][i])
            if read_error:
                row: dict[str, Any] = {"source": source.text, "output": output.text, "status": "failed"}
                row.update(error=read_error, megapixels=0.0, seconds=0.0, warnings=[])
            else:
                row = process_item(
                    self.upscaler,
                    Item(source, output),
                    overwrite=self.overwrite,
                    scratch=self.scratch,
                    data=batch["data"][i],
                )
            for key in _RESULT_COLUMNS:
                out[key].append("\n".join(row[key]) if key == "warnings" else row[key])
        return out


def _cpu_threads(settings: UpscalerSettings, cpus_per_worker: float) -> UpscalerSettings:
    """A CPU backend's threads set to the actor's CPUs, so actors do not oversubscribe a node."""
    if settings.threads is not None:
        return settings
    candidate = dataclasses.replace(settings, threads=max(1, math.floor(cpus_per_worker)))
    try:
        candidate.backend_options()
    except InvalidArgumentError:  # a GPU backend: no threads option
        return settings
    return candidate


def _init(ray: Any, address: str | None, quiet: bool) -> float:
    """Join or start a cluster; returns the seconds it took (0 when this process already had one)."""
    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
    if address:
        kwargs["address"] = address
    ray.init(**kwargs)
    return time.perf_counter() - started


def _check_room(ray: Any, workers: int, cpus: float, gpus: float) -> None:
    """Refuse, instead of hanging, when the actors and one read task cannot all be placed."""
    total = ray.cluster_resources()
    have_cpu, have_gpu = float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))
    need_cpu = workers * cpus + READ_CPUS
    if need_cpu > have_cpu + 1e-9:
        raise InvalidArgumentError(
            f"--workers {workers} x --cpus-per-worker {cpus:g} + {READ_CPUS:g} CPU for the read tasks needs "
            f"{need_cpu:g} CPUs but the Ray cluster has {have_cpu:g}; use fewer workers or a smaller "
            f"--cpus-per-worker (e.g. {max((have_cpu - READ_CPUS) / workers, 0.05):.2f})"
        )
    if workers * gpus > have_gpu + 1e-9:
        raise InvalidArgumentError(
            f"--workers {workers} x --gpus-per-worker {gpus:g} needs {workers * gpus:g} GPUs but the Ray cluster has "
            f"{have_gpu:g}; use fewer workers, a fraction such as --gpus-per-worker 0.5, or add GPU nodes"
        )


def run_ray(
    items: Sequence[Item],
    settings: UpscalerSettings,
    *,
    overwrite: bool,
    quiet: bool = False,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    memory_per_worker_gb: float | None = None,
) -> tuple[Iterator[dict[str, Any]], float]:
    """Start the pipeline over ``items``; returns its result rows (streamed) and Ray's start-up seconds.

    Joins the cluster at ``address`` (``"auto"``: the one ``ray start`` runs on this node),
    reuses the one this process already joined, or starts a local one.
    """
    ray = require_ray()
    source_fss = {id(item.source.fs): item.source.fs for item in items}
    output_fss = {id(item.output.fs): item.output.fs for item in items}
    if len(source_fss) > 1 or len(output_fss) > 1:
        raise InvalidArgumentError(
            "batch --ray reads from one filesystem and writes to one; split the list by URI scheme"
        )
    (source_fs,), (output_fs,) = source_fss.values(), output_fss.values()
    try:
        start_s = _init(ray, address, quiet)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError...: name the address
        raise UpscaleError(f"--address {address or '(local)'}: cannot start or join a Ray cluster ({exc})") from exc
    _check_room(ray, workers, cpus_per_worker, gpus_per_worker)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet
    settings = _cpu_threads(settings, cpus_per_worker)

    dataset = ray.data.from_items([_row_of(item) for item in items], override_num_blocks=max(1, min(len(items), 200)))
    dataset = dataset.map_batches(_read_bytes, fn_kwargs={"source_fs": source_fs}, batch_size=1, num_cpus=READ_CPUS)
    remote: dict[str, Any] = {"num_cpus": cpus_per_worker}
    if gpus_per_worker:
        remote["num_gpus"] = gpus_per_worker
    if memory_per_worker_gb:
        remote["memory"] = int(memory_per_worker_gb * 1e9)
    dataset = dataset.map_batches(
        UpscaleActor,
        fn_constructor_kwargs={"settings": settings, "output_fs": output_fs, "overwrite": overwrite},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        **remote,
    )
    return _rows(dataset), start_s


def _rows(dataset: Any) -> Iterator[dict[str, Any]]:
    for row in dataset.iter_rows():
        warnings = str(row.get("warnings") or "")
        yield {
            "source": str(row["source"]),
            "output": str(row["output"]),
            "status": str(row["status"]),
            "error": str(row["error"]),
            "megapixels": float(row["megapixels"]),
            "seconds": float(row["seconds"]),
            "warnings": warnings.split("\n") if warnings else [],
        }
