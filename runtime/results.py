"""Result files: the record of where a result was produced, and its JSON and Markdown.

Every benchmark (``benchmarks/``) and ``train.evaluate`` writes ``<out>/<name>.json`` and
``<out>/<name>.md`` with the same environment record at the top (date, command, CPU,
threads, library versions, git commit and whether the tree was dirty), so a number can be
traced to the code and the machine that produced it. It lives in ``runtime`` because
``train`` writes such files too and may not import ``benchmarks``.

numpy is the only import beyond the standard library; versions are read from package
metadata, never by importing torch or onnxruntime (the memory benchmark must not pay for
them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UpscaleError
from .utils import atomic_write_bytes

__all__ = [
    "GitState",
    "git_state",
    "package_version",
    "cpu_model",
    "environment",
    "commit_label",
    "fmt_float",
    "markdown_table",
    "json_safe",
    "write_results",
]

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The checkout ``runtime`` was imported from: the tree whose git state results record."""

_MAX_LISTED_CHANGES = 20


# --------------------------------------------------------------------------- git


@dataclass(frozen=True)
class GitState:
    """HEAD and the changes that make the working tree differ from it.

    ``commit`` is None outside a git checkout (or without git); then ``dirty`` is None
    too: unknown, not clean. ``changes`` are ``git status --porcelain`` lines that count:
    tracked files modified, added, deleted or renamed, and untracked files inside a
    tracked Python package (a folder whose ``__init__.py`` is tracked, or below one).
    Untracked files elsewhere (scratch files at the top, ignored run folders) do not
    change what the packages compute, so they do not count.
    """

    commit: str | None
    changes: tuple[str, ...] = ()

    @property
    def dirty(self) -> bool | None:
        return None if self.commit is None else bool(self.changes)

    def record(self) -> dict[str, Any]:
        """The ``"git"`` entry of a result's environment record."""
        listed = list(self.changes[:_MAX_LISTED_CHANGES])
        if len(self.changes) > _MAX_LISTED_CHANGES:
            listed.append(f"... and {len(self.changes) - _MAX_LISTED_CHANGES} more")
        return {"commit": self.commit, "dirty": self.dirty, "changes": listed}


def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _package_dirs(tracked_inits: str) -> set[str]:
    """'runtime/__init__.py\\nruntime/cuda/__init__.py' -> {'runtime', 'runtime/cuda'}."""
    return {line.rsplit("/", 1)[0] for line in tracked_inits.splitlines() if "/" in line}


def _in_package(path: str, packages: set[str]) -> bool:
    parts = path.rstrip("/").split("/")
    return any("/".join(parts[:i]) in packages for i in range(1, len(parts)))


def git_state(root: str | os.PathLike[str] | None = None) -> GitState:
    """The :class:`GitState` of the checkout at ``root`` (default: this one)."""
    root = Path(root) if root is not None else SOURCE_ROOT
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return GitState(None)
    status = _git(root, "status", "--porcelain", "--untracked-files=all")
    if status is None:
        return GitState(head.strip())
    packages = _package_dirs(_git(root, "ls-files", "--full-name", "--", ":(top,glob)**/__init__.py") or "")
    changes = []
    for line in status.splitlines():
        if not line.strip():
            continue
        if line.startswith("??") and not _in_package(line[3:].strip('"'), packages):
            continue
        changes.append(line)
    return GitState(head.strip(), tuple(changes))


# --------------------------------------------------------------------------- environment


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it (importing torch costs
    seconds and hundreds of MB, which the memory benchmark must not pay)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name)
        return getattr(module, "__version__", None) if module else None


def cpu_model() -> str:
    """The CPU's model name from lscpu (or /proc/cpuinfo), else platform.processor()."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"})
        for line in out.stdout.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def environment(*, threads: int | None = None, git: GitState | None = None) -> dict[str, Any]:
    """Where and how a result was produced: goes at the top of every JSON file.

    ``git``: a state already read (e.g. by the dirty-tree check), else read now.
    """
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]) if sys.argv and sys.argv[0] else None,
        "host": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": usable,
            "nice": os.nice(0) if hasattr(os, "nice") else None,
        },
        "threads": {"onnxruntime_intra_op": threads if threads is not None else "default"},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
            "torch": package_version("torch"),
            "pillow": package_version("Pillow"),
        },
        "git": (git if git is not None else git_state()).record(),
    }


def commit_label(env: Mapping[str, Any]) -> str:
    """ "<commit>" or "<commit> (dirty)" from an environment record, for a result's Markdown."""
    git = env.get("git") or {}
    return f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"


# --------------------------------------------------------------------------- files


def fmt_float(x: float | None, digits: int = 2) -> str:
    """A table cell: ``digits`` decimals; None as "-", infinities and NaN by name."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are str()-ed, numeric columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _looks_numeric(s: str) -> bool:
    try:
        float(s.replace("%", "").replace("×", "").replace("+", "").replace(" ✓", ""))
        return True
    except ValueError:
        return s in {"inf", "-inf", "nan", "-"}


def json_safe(obj: Any) -> Any:
    """Make ``obj`` strict JSON: inf/nan floats become the strings "inf"/"-inf"/"nan",
    numpy scalars plain numbers, Paths strings."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out: str | os.PathLike[str], name: str, data: Mapping[str, Any], markdown: str) -> dict[str, Path]:
    """Write ``<out>/<name>.json`` (strict JSON, indented) and ``<out>/<name>.md`` atomically;
    returns their paths."""
    out = Path(out)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    atomic_write_bytes(paths["json"], (json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n").encode())
    atomic_write_bytes(paths["md"], (markdown.rstrip() + "\n").encode())
    return paths


# --------------------------------------------------------------------------- clean trees


class DirtyTreeError(UpscaleError):
    """Results would be written from a tree that differs from the commit they record."""


def add_allow_dirty(parser: argparse.ArgumentParser) -> None:
    """``--allow-dirty``: the one override of :func:`require_clean_tree`."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write results even though the working tree has uncommitted changes (tracked files "
        "modified, or untracked files in a package); the results then record dirty: true",
    )


def require_clean_tree(allow_dirty: bool, *, root: str | os.PathLike[str] | None = None) -> GitState:
    """The git state results will record; :class:`DirtyTreeError` when the tree is dirty
    (see :class:`GitState`) and ``allow_dirty`` is false.

    A result names the commit it came from; from a dirty tree that commit would not
    reproduce it. Outside a git checkout the state is unknown (commit None) and nothing
    is refused: there is no commit to contradict. Call it before the work, not at the
    write, so a refused run costs nothing.
    """
    state = git_state(root)
    if state.dirty and not allow_dirty:
        shown = ", ".join(line.strip() for line in state.changes[:5])
        more = f", and {len(state.changes) - 5} more" if len(state.changes) > 5 else ""
        raise DirtyTreeError(
            f"the working tree differs from commit {str(state.commit)[:12]} ({shown}{more}): results written now "
            "could not be reproduced from the commit they record; commit the changes, or pass --allow-dirty to "
            "write them anyway (they are then recorded as dirty)"
        )
    return state
