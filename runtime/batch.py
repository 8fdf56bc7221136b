"""``fourpp-eusr batch SRC DST``: upscale a folder, glob, list or bucket of images, resumably.

SRC is a folder (the image files directly inside it, as ``upscale`` takes a folder), a glob
(``photos/*.jpg``, ``photos/**/*.png``), a list file (one path or URI a line; relative paths
are relative to the list's folder; blank lines and ``#`` comments are skipped), one image, or
any of these as a URI that :func:`pyarrow.fs.FileSystem.from_uri` opens (``s3://``, ``gs://``,
``hdfs://``, ``file://``). DST is a folder or a folder URI. Every output is named as
``upscale`` names it (:func:`output_name`: ``<stem>_x4.png``) and written atomically: on the
local disk by :meth:`runtime.Upscaler.upscale_file` itself, elsewhere into a hidden temporary
object that is then moved onto the final name, so the final name only ever holds a whole file.

A run is resumable: an output that exists is skipped (``--overwrite`` redoes it) before any of
its bytes are read. An image that fails (corrupt, too large, unreadable) is recorded and the
run goes on; at the end ``DST/failures.jsonl`` (one ``{"source", "error"}`` object a line, this
run's failures only) and ``DST/batch_summary.json`` (done / skipped / failed, megapixels, MP/s,
wall time, Ray start-up) are written and the summary line is printed.

Without ``--ray`` the images go through one :class:`~runtime.Upscaler` in this process, one
``upscale_file(src, dst)`` call each, the call ``upscale`` makes. With ``--ray``
(:mod:`runtime.batch_ray`, imported only then) the same per-image function runs inside the
actors of a Ray Data pipeline, one Upscaler per actor. Ray is the optional ``[cluster]`` extra;
this module needs only the standard library until a URI or ``--ray`` asks for more.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import glob
import json
import os
import posixpath
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._deps import require
from .batch_items import CLUSTER_PIP, URI, Item, Location, UpscalerSettings, output_name, process_item, resolve_location
from .errors import InvalidArgumentError, UpscaleError
from .image_io import WRITE_FORMATS, is_image_path

__all__ = [
    "Location",
    "Item",
    "Plan",
    "UpscalerSettings",
    "output_name",
    "resolve_location",
    "list_sources",
    "plan_batch",
    "process_item",
    "run_batch",
    "add_batch_command",
    "FAILURES_NAME",
    "SUMMARY_NAME",
]

FAILURES_NAME = "failures.jsonl"
SUMMARY_NAME = "batch_summary.json"
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list", ".csv"})
_MAGIC = re.compile(r"[*?[]")

# --------------------------------------------------------------------------- sources


def _images_in(folder: Location) -> list[Location]:
    if folder.fs is None:
        found = sorted(p for p in Path(folder.path).iterdir() if p.is_file() and is_image_path(p))
        return [Location(str(p), str(p)) for p in found]
    from pyarrow.fs import FileSelector, FileType

    infos = folder.fs.get_file_info(FileSelector(folder.path, recursive=False))
    names = sorted(posixpath.basename(i.path) for i in infos if i.type == FileType.File and is_image_path(i.path))
    return [folder.child(n) for n in names]


def _glob(pattern: Location) -> list[Location]:
    if pattern.fs is None:
        found = sorted(p for p in glob.glob(pattern.path, recursive=True) if os.path.isfile(p) and is_image_path(p))
        return [Location(p, p) for p in found]
    from pyarrow.fs import FileSelector, FileType

    parts = pattern.path.split("/")
    first = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    base = "/".join(parts[:first])
    infos = pattern.fs.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
    prefix = pattern.text[: len(pattern.text) - len(pattern.path)]  # "s3://" and so on
    out = []
    for info in infos:
        candidate = info.path.split("/")
        if info.type == FileType.File and is_image_path(info.path) and _match_parts(candidate, parts):
            out.append(Location(prefix + info.path, info.path, pattern.fs))
    return sorted(out, key=lambda loc: loc.path)


def _match_parts(candidate: list[str], parts: list[str]) -> bool:
    """Segment-wise glob match with ``**`` for any number of segments."""
    if not parts:
        return not candidate
    if parts[0] == "**":
        return any(_match_parts(candidate[i:], parts[1:]) for i in range(len(candidate) + 1))
    return bool(candidate) and fnmatch.fnmatchcase(candidate[0], parts[0]) and _match_parts(candidate[1:], parts[1:])


def _read_list(listing: Location) -> list[Location]:
    try:
        text = listing.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"SRC {listing.text}: cannot read the list file ({exc})") from exc
    out = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if URI.match(entry) or (listing.fs is None and os.path.isabs(entry)):
            out.append(resolve_location(entry))
        elif listing.fs is None:
            path = str(Path(listing.path).parent / entry)
            out.append(Location(path, path))
        else:
            folder = Location(listing.text.rsplit("/", 1)[0], posixpath.dirname(listing.path), listing.fs)
            out.append(folder.child(entry))
    return out


def list_sources(spec: str) -> list[Location]:
    """The images SRC names (see the module docstring), in a stable order."""
    loc = resolve_location(spec)
    if _MAGIC.search(loc.path) and not loc.exists():
        return _glob(loc)
    kind = loc.kind()
    if kind == "dir":
        return _images_in(loc)
    if kind == "missing":
        raise InvalidArgumentError(f"SRC {spec}: no such file, folder or glob match; expected one of those or a URI")
    if Path(loc.path).suffix.lower() in LIST_SUFFIXES or not is_image_path(loc.path):
        return _read_list(loc)
    return [loc]


# --------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """What a run will do: ``todo`` items, ``skipped`` ones (output exists), ``failed`` ones
    refused before any compute (two sources with one output name), as (item, error)."""

    todo: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)
    failed: list[tuple[Item, str]] = field(default_factory=list)


def plan_batch(sources: Sequence[Location], dst: Location, scale: int, fmt: str, *, overwrite: bool) -> Plan:
    """Name every output as ``upscale`` does, and sort the items into todo / skipped / failed."""
    plan = Plan()
    claimed: dict[str, Location] = {}
    for src in sources:
        out = dst.child(output_name(src.name, scale, fmt))
        item = Item(src, out)
        if out.text in claimed:
            plan.failed.append(
                (
                    item,
                    f"{src.text}: its output {out.text} is also the output of {claimed[out.text].text}; rename one input",
                )
            )
            continue
        claimed[out.text] = src
        if not overwrite and out.exists():
            plan.skipped.append(item)
        else:
            plan.todo.append(item)
    return plan


# --------------------------------------------------------------------------- a run


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    wall_s: float = 0.0
    ray_start_s: float | None = None
    failures: list[dict[str, str]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if row["status"] == "done":
            self.done += 1
            self.megapixels += float(row["megapixels"])
        else:
            self.failed += 1
            self.failures.append({"source": row["source"], "error": row["error"]})

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        work_s = self.wall_s - (self.ray_start_s or 0.0)
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "total": self.done + self.skipped + self.failed,
            "megapixels": round(self.megapixels, 6),
            "wall_s": round(self.wall_s, 3),
            "ray_start_s": None if self.ray_start_s is None else round(self.ray_start_s, 3),
            "work_s": round(work_s, 3),
            "mp_per_s": round(self.megapixels / work_s, 6) if work_s > 0 else None,
            **extra,
        }

    def line(self) -> str:
        d = self.as_dict()
        rate = f"{d['mp_per_s']:.3f} MP/s" if d["mp_per_s"] is not None else "- MP/s"
        ray = "" if self.ray_start_s is None else f"; Ray start-up {self.ray_start_s:.1f} s"
        return (
            f"batch: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
            f"{self.megapixels:.3f} MP in {d['work_s']:.1f} s ({rate}){ray}; wall {self.wall_s:.1f} s"
        )


def _in_process(
    items: Sequence[Item], settings: UpscalerSettings, *, overwrite: bool, quiet: bool
) -> Iterator[dict[str, Any]]:
    upscaler = settings.create()
    with upscaler, tempfile.TemporaryDirectory(prefix="fourpp-batch-") as scratch:
        bar = None
        if not quiet and len(items) > 1:
            with contextlib.suppress(UpscaleError):
                bar = require("tqdm", pip="tqdm", purpose="the progress bar").tqdm(
                    total=len(items), unit="image", file=sys.stderr
                )
        try:
            for item in items:
                yield process_item(upscaler, item, overwrite=overwrite, scratch=Path(scratch))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()


def _say(line: str) -> None:
    """Print on stderr above the progress bar (tqdm's write), or plainly without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, file=sys.stderr)
    else:
        tqdm.write(line, file=sys.stderr)


def run_batch(
    src: str,
    dst: str,
    settings: UpscalerSettings,
    *,
    fmt: str = "png",
    overwrite: bool = False,
    use_ray: bool = False,
    ray_options: dict[str, Any] | None = None,
    quiet: bool = False,
    say: Any = None,
) -> dict[str, Any]:
    """Run a batch and return its summary (also written to ``DST/batch_summary.json``).

    ``ray_options`` go to :func:`runtime.batch_ray.run_ray` (address, workers, cpus/gpus per
    worker). Raises :class:`~runtime.errors.InvalidArgumentError` for a bad SRC/DST or set-up.
    """
    say = say or _say
    started = time.perf_counter()
    if use_ray:
        from . import batch_ray  # fails here, before any work, when ray is missing

        batch_ray.require_ray()
    sources = list_sources(src)
    if not sources:
        raise InvalidArgumentError(f"SRC {src}: holds no image files")
    dst_loc = resolve_location(dst, what="DST")
    if dst_loc.kind() == "file":
        raise InvalidArgumentError(f"DST {dst}: is a file; expected a folder (created if missing)")
    if dst_loc.fs is None and Path(dst_loc.path).suffix.lower() in WRITE_FORMATS:
        raise InvalidArgumentError(f"DST {dst}: looks like an image file name; batch writes into a folder")
    try:
        dst_loc.make_dir()
    except OSError as exc:
        raise InvalidArgumentError(f"DST {dst}: cannot create the output folder ({exc})") from exc
    plan = plan_batch(sources, dst_loc, settings.scale(), fmt, overwrite=overwrite)
    summary = Summary(skipped=len(plan.skipped))
    for item, error in plan.failed:
        summary.add({"status": "failed", "source": item.source.text, "error": error})
    rows: Iterable[dict[str, Any]] = ()
    if plan.todo and use_ray:
        from . import batch_ray

        rows, summary.ray_start_s = batch_ray.run_ray(
            plan.todo, settings, overwrite=overwrite, quiet=quiet, **(ray_options or {})
        )
    elif plan.todo:
        rows = _in_process(plan.todo, settings, overwrite=overwrite, quiet=quiet)
    for row in rows:
        summary.add(row)
        for warning in row.get("warnings") or ():
            say(f"warning: {warning}")
        if row["status"] == "failed":
            say(f"error: {row['error']}")
        elif not quiet:
            print(f"{row['source']} -> {row['output']}", file=sys.stdout)
    summary.wall_s = time.perf_counter() - started
    result = summary.as_dict(
        src=src,
        dst=dst,
        ray=use_ray,
        failures=dst_loc.child(FAILURES_NAME).text,
        **({k: v for k, v in (ray_options or {}).items() if k != "address"} if use_ray else {}),
    )
    failures = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in summary.failures)
    dst_loc.child(FAILURES_NAME).write_bytes(failures.encode("utf-8"))
    dst_loc.child(SUMMARY_NAME).write_bytes((json.dumps(result, indent=1) + "\n").encode("utf-8"))
    print(summary.line(), file=sys.stdout)
    return result


# --------------------------------------------------------------------------- command line

SHARED_OPTIONS = ("model", "precision", "backend", "threads", "tile", "halo", "batch", "slots", "overwrite", "format")
"""``upscale`` options that ``batch`` takes as they are (the same argparse actions)."""


def add_batch_command(commands: Any, upscale: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register ``batch`` on the CLI's subparsers, sharing ``upscale``'s model and tiling options."""
    parser = commands.add_parser(
        "batch",
        help="upscale a folder, glob, list file or bucket into a folder, resumably; --ray runs it on Ray Data",
        description="Upscale every image of SRC (a folder, a glob, a list file with one path or URI a line, one "
        "image, or a URI pyarrow opens: s3://, gs://, file://) into the folder DST, named and written as upscale "
        "writes them. Existing outputs are skipped (--overwrite redoes them); failures go to DST/failures.jsonl "
        "and the run goes on; the summary is printed and written to DST/batch_summary.json. --ray runs the images "
        "on a Ray Data actor pool, one Upscaler per actor.",
        epilog="exit status: 0 all written or skipped, 1 some images failed (see DST/failures.jsonl), 2 usage error",
    )
    parser.add_argument("src", metavar="SRC", help="folder, glob, list file, image, or a URI of one (s3://, gs://...)")
    parser.add_argument("dst", metavar="DST", help="output folder or folder URI (created if missing)")
    for action in upscale._actions:  # the same Action objects, as argparse's parents= shares them
        if action.dest in SHARED_OPTIONS:
            parser._add_action(action)
    cluster = parser.add_argument_group("Ray (pip install " + CLUSTER_PIP + ")")
    cluster.add_argument("--ray", action="store_true", help="run on a Ray Data pipeline, one Upscaler per actor")
    cluster.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto': the one `ray start` runs here; default: start a local one)",
    )
    cluster.add_argument("--workers", type=_positive(int), default=1, help="actors, each with one Upscaler (default 1)")
    cluster.add_argument(
        "--cpus-per-worker",
        type=_positive(float),
        default=1.0,
        help="CPUs Ray reserves per actor (default 1); CPU backends get this many threads unless --threads is given",
    )
    cluster.add_argument(
        "--gpus-per-worker",
        type=_positive(float, zero=True),
        default=0.0,
        help="GPUs per actor (default 0; 1 for a GPU backend, 0.5 puts two actors on one GPU)",
    )
    cluster.add_argument(
        "--memory-per-worker",
        type=_positive(float),
        default=None,
        help="GB of memory Ray reserves per actor (default: none reserved); see docs/usage.md for an estimate",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no per-file lines")
    return parser


def _positive(kind: type, zero: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"expected a number {'>= 0' if zero else '> 0'}, got {text}")
        return value

    return parse


def run_command(args: argparse.Namespace) -> int:
    """``batch``'s body for :func:`runtime.cli.main`: 0 all done, 1 some failed, 2 usage or set-up error."""
    try:
        settings = UpscalerSettings.from_args(args)
        ray_options = None
        if args.ray:
            ray_options = {
                "address": args.address,
                "workers": args.workers,
                "cpus_per_worker": args.cpus_per_worker,
                "gpus_per_worker": args.gpus_per_worker,
                "memory_per_worker_gb": args.memory_per_worker,
            }
        summary = run_batch(
            args.src,
            args.dst,
            settings,
            fmt=args.format,
            overwrite=args.overwrite,
            use_ray=args.ray,
            ray_options=ray_options,
            quiet=args.quiet,
        )
    except UpscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if summary["failed"] else 0
