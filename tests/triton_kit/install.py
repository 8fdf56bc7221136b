"""Install a REAL Triton Inference Server (CPU, Python backend only) and Triton's client.

    python tests/triton_kit/install.py            # install what is missing (seconds when cached)
    python tests/triton_kit/install.py --check    # exit 1 if something is missing; no network
    python tests/triton_kit/install.py --print-home   # the folder to give --triton-home

Why: NVIDIA's ``nvidia-pytriton`` wheel (Apache-2.0) bundles a real ``tritonserver`` binary,
``libtritonserver.so`` and the Python backend, CPU-only, no Docker. Its Python package pins
``numpy<2``, which conflicts with this project's numpy 2, so it is never installed: only the
server is unpacked from the wheel into ``.cache/triton/<version>/`` of the repository::

    pytriton/tritonserver/        the Triton home: bin/tritonserver, backends/python/, caches/
    pytriton/tritonserver/python-site/   numpy 1.26 for the Python-backend stub (see below)
    nvidia_pytriton.libs/         the server's bundled libraries (found through its RPATH)
    INSTALLED                     written last: version, wheel, Python the stub was chosen for

The Python backend runs each model's ``model.py`` in a stub process that embeds
libpython; the wheel has one stub per Python version, and the one matching this interpreter
is copied to ``backends/python/`` (where the backend looks for it). The stub then imports
numpy, Pillow, onnxruntime and ``runtime`` from this interpreter's own environment
(``runtime/serve.py`` points ``LD_LIBRARY_PATH`` at its libpython). One exception: the
stub's pybind11 reads numpy arrays with numpy 1.x's dtype layout, so with numpy 2 every
output tensor reaches the client empty (shape right, 0 bytes). ``python-site/`` holds
numpy 1.26.4, which ``runtime/serve.py`` puts first on the stub's ``PYTHONPATH``; the
runtime and onnxruntime give the same pixels with it (checked by the tests).

The client (``tritonclient[http,grpc]``) goes into this environment with ``--no-deps`` and
its new dependencies pinned: tritonclient 2.73 declares ``protobuf<7`` and
``ml-dtypes<=0.5.4``, which would downgrade the versions onnx and ModelOpt use here, while
the client works with them (checked by ``tests/test_triton_serve.py``). A user's own
environment gets the same through ``pip install ".[serve]"``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("FOURPP_TRITON_KIT_CACHE", REPO / ".cache" / "triton"))

STUB_NUMPY = "numpy==1.26.4"
"""numpy for the stub: the last 1.x (the stub's pybind11 misreads numpy 2 arrays)."""

PYTRITON = "0.7.0"
"""nvidia-pytriton release whose wheel carries the server (Triton 2.59, r25.06 era)."""

CLIENT: dict[str, str] = {
    "tritonclient": "2.73.0",
    "grpcio": "1.85.3",
    "geventhttpclient": "2.6.1",
    "gevent": "26.9.0",
    "greenlet": "3.3.2",
    "zope.event": "6.2",
    "zope.interface": "8.7",
    "python-rapidjson": "1.25",
    "brotli": "1.2.1",
}
"""tritonclient and the dependencies its http and grpc clients need that this environment lacks."""

_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _stamp() -> dict[str, str]:
    return {
        "nvidia-pytriton": PYTRITON,
        "stub_numpy": STUB_NUMPY,
        "python": _python_tag(),
        "installer_sha256": _installer_hash(),
    }


def _installer_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def server_dir() -> Path:
    return CACHE / PYTRITON


def triton_home() -> Path:
    """The folder with ``bin/tritonserver`` and ``backends/`` (``--triton-home``)."""
    return server_dir() / "pytriton" / "tritonserver"


def server_installed() -> bool:
    try:
        recorded = json.loads((server_dir() / "INSTALLED").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in _stamp().items())


def client_missing() -> list[str]:
    """``name==version`` of each client package not installed at its pinned version."""
    missing = []
    for name, version in CLIENT.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            missing.append(f"{name}=={version}")
    return missing


def _wheel(quiet: bool) -> Path:
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"nvidia_pytriton-{PYTRITON}-*.whl"))
    if not found:
        cmd = [*_PIP, "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), f"nvidia-pytriton=={PYTRITON}"]
        if quiet:
            cmd.insert(4, "-q")
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob(f"nvidia_pytriton-{PYTRITON}-*.whl"))
    if not found:
        raise RuntimeError(f"pip download left no nvidia_pytriton-{PYTRITON} wheel in {wheels}")
    return found[-1]


def install_server(*, quiet: bool = True) -> Path:
    """Unpack the server from the wheel unless it is already; returns the Triton home."""
    if server_installed():
        return triton_home()
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = _wheel(quiet)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PYTRITON}.", dir=CACHE))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.infolist():
                name = member.filename
                if not (name.startswith("pytriton/tritonserver/") or name.startswith("nvidia_pytriton.libs/")):
                    continue
                zf.extract(member, tmp)
                mode = member.external_attr >> 16
                if mode:
                    os.chmod(tmp / name, mode | 0o444)
        home = tmp / "pytriton" / "tritonserver"
        stub = home / "python_backend_stubs" / _python_tag() / "triton_python_backend_stub"
        if not stub.is_file():
            raise RuntimeError(f"{wheel.name} has no Python backend stub for Python {_python_tag()}")
        # Same depth below the home as python_backend_stubs/X.Y/, so the stub's RPATH still
        # finds nvidia_pytriton.libs.
        shutil.copy2(stub, home / "backends" / "python" / "triton_python_backend_stub")
        site = [*_PIP, "install", "--no-deps", "--only-binary=:all:", "--root-user-action=ignore"]
        site += ["--target", str(home / "python-site"), STUB_NUMPY]
        if quiet:
            site.insert(4, "-q")
        subprocess.run(site, check=True)
        for binary in (home / "bin" / "tritonserver", home / "backends" / "python" / "triton_python_backend_stub"):
            binary.chmod(0o755)
        # --help exits 1 by design; the check is that the binary loads its libraries and runs.
        usage = subprocess.run(
            [str(home / "bin" / "tritonserver"), "--help"], capture_output=True, text=True, timeout=60
        )
        if "Usage: tritonserver" not in usage.stdout + usage.stderr:
            raise RuntimeError(f"the unpacked tritonserver does not run: {(usage.stdout + usage.stderr)[-500:]}")
        (tmp / "INSTALLED").write_text(json.dumps({**_stamp(), "wheel": wheel.name}, indent=1, sort_keys=True))
        tmp.chmod(0o755)  # mkdtemp made it private
        final = server_dir()
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return triton_home()


def install_client(*, quiet: bool = True) -> None:
    missing = client_missing()
    if not missing:
        return
    cmd = [*_PIP, "install", "--no-deps", "--only-binary=:all:", "--root-user-action=ignore", *missing]
    if quiet:
        cmd.insert(4, "-q")
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report; exit 1 if something is missing")
    p.add_argument("--print-home", action="store_true", help="print the Triton home folder and exit")
    args = p.parse_args(argv)
    if args.print_home:
        print(triton_home())
        return 0
    if args.check:
        ok_server, missing = server_installed(), client_missing()
        print(
            f"Triton server (nvidia-pytriton {PYTRITON}): {'installed' if ok_server else 'MISSING'} ({triton_home()})"
        )
        print(f"Triton client: {'installed' if not missing else 'MISSING ' + ' '.join(missing)}")
        return 0 if ok_server and not missing else 1
    try:
        home = install_server()
        install_client()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, RuntimeError) as exc:
        print(f"error: the Triton kit could not be installed: {exc}", file=sys.stderr)
        return 1
    print(f"Triton server (Python backend, CPU) from nvidia-pytriton {PYTRITON}: {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
