"""Install the REAL TensorRT Python bindings of each tested release, on stub native libraries.

    python tests/trt_kit/install.py            # install what is missing (seconds when cached)
    python tests/trt_kit/install.py --check    # exit 1 if any release is missing; no network

Why: TensorRT's native libraries cannot be installed on the CPU machines (the
``tensorrt-cuXX-libs`` packages on PyPI only redirect to NVIDIA's own index), but the
bindings wheels ``tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings`` are real wheels on
PyPI. Their ``tensorrt.so`` needs nine plain C functions from libnvinfer, libnvonnxparser
and libnvinfer_plugin; ``trt_stub.c`` provides them as no-ops (every factory returns NULL),
so ``import tensorrt`` works for real and every class, method, property and enum of the
release can be inspected and autospec'd (see ``tests/trt_kit/harness.py``).

Each release goes into its own folder ``.cache/trt/<version>/`` of the repository (both
are the module ``tensorrt``, so each test runs in a subprocess with that folder first on
``PYTHONPATH``)::

    tensorrt_bindings/   the real wheel's package (pip install --no-deps --target)
    tensorrt/            NVIDIA's ``tensorrt`` package is exactly ``from tensorrt_bindings
                         import *`` plus ``__version__`` (its sdist only adds dependencies
                         on the -libs/-bindings wheels); written here, no build needed
    tensorrt_libs/       the stub libraries with the real SONAMEs + a loader that dlopen()s
                         them, as NVIDIA's ``tensorrt_libs`` package does
    INSTALLED            written last: the version, the wheel, the stub source's hash

A folder whose INSTALLED does not match (other stub source, interrupted install) is
rebuilt. Installs go to a temporary folder first and are renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("FOURPP_TRT_KIT_CACHE", REPO / ".cache" / "trt"))

RELEASES: dict[str, str] = {
    "10.16.1.11": "tensorrt-cu12-bindings",  # newest 10.x
    "11.4.0.106": "tensorrt-cu13-bindings",  # 11.x
}
"""Tested TensorRT releases → the PyPI distribution of their real bindings wheel."""

_LIBS = (("1", "nvinfer"), ("2", "nvonnxparser"), ("3", "nvinfer_plugin"))
_SHIM = '''"""Written by tests/trt_kit/install.py: the same two lines as NVIDIA's ``tensorrt`` package."""
from tensorrt_bindings import *  # noqa: F401,F403
from tensorrt_bindings import __version__  # noqa: F401
'''


def _stamp(version: str) -> dict[str, str]:
    digest = hashlib.sha256()
    for name in ("trt_stub.c", "tensorrt_libs_init.py"):
        digest.update((HERE / name).read_bytes())
    digest.update(_SHIM.encode())
    return {
        "version": version,
        "distribution": f"{RELEASES[version]}=={version}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "stub_sha256": digest.hexdigest(),
    }


def site_dir(version: str) -> Path:
    """The folder to put first on ``PYTHONPATH`` to import that release as ``tensorrt``."""
    return CACHE / version


def is_installed(version: str) -> bool:
    marker = site_dir(version) / "INSTALLED"
    try:
        return json.loads(marker.read_text()) == _stamp(version)
    except (OSError, ValueError):
        return False


def _build_stubs(major: str, dest: Path) -> None:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH: install gcc (apt-get install gcc) or set CC")
    dest.mkdir(parents=True)
    for lib_id, name in _LIBS:
        soname = f"lib{name}.so.{major}"
        subprocess.run(
            [
                cc,
                "-O2",
                "-fPIC",
                "-shared",
                "-fvisibility=hidden",
                f"-DTRT_STUB_LIB={lib_id}",
                f"-DTRT_STUB_VERSION={int(major) * 10000}",
                f"-Wl,-soname,{soname}",
                "-o",
                str(dest / soname),
                str(HERE / "trt_stub.c"),
            ],
            check=True,
        )
    shutil.copy(HERE / "tensorrt_libs_init.py", dest / "__init__.py")


def install(version: str, *, quiet: bool = True) -> Path:
    """Install ``version`` (a key of :data:`RELEASES`) unless it is already; returns its folder."""
    if version not in RELEASES:
        raise ValueError(f"unknown TensorRT release {version!r}; known: {sorted(RELEASES)}")
    final = site_dir(version)
    if is_installed(version):
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=CACHE))
    try:
        pip = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--only-binary=:all:",
            "--root-user-action=ignore",
            "--disable-pip-version-check",
            "--target",
            str(tmp),
            f"{RELEASES[version]}=={version}",
        ]
        if quiet:
            pip.insert(4, "-q")
        subprocess.run(pip, check=True)
        (tmp / "tensorrt").mkdir()
        (tmp / "tensorrt" / "__init__.py").write_text(_SHIM)
        _build_stubs(version.split(".")[0], tmp / "tensorrt_libs")
        got = subprocess.run(
            [
                sys.executable,
                "-c",
                "import tensorrt, tensorrt_libs; assert tensorrt_libs.TRT_STUB; print(tensorrt.__version__)",
            ],
            env={**os.environ, "PYTHONPATH": str(tmp), "TRT_STUB_QUIET": "1"},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if got != version:
            raise RuntimeError(f"installed bindings report version {got!r}, expected {version!r}")
        (tmp / "INSTALLED").write_text(json.dumps(_stamp(version), indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report; exit 1 if a release is missing")
    p.add_argument("versions", nargs="*", default=list(RELEASES), help=f"default: {' '.join(RELEASES)}")
    args = p.parse_args(argv)
    status = 0
    for version in args.versions:
        if args.check:
            ok = is_installed(version)
            print(f"TensorRT {version} bindings: {'installed' if ok else 'MISSING'} ({site_dir(version)})")
            status |= not ok
            continue
        try:
            path = install(version)
        except (subprocess.CalledProcessError, OSError, RuntimeError, ValueError) as exc:
            print(f"error: TensorRT {version} bindings could not be installed: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"TensorRT {version} bindings on stub libraries: {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
