"""``python -m runtime serve``: a real Triton Inference Server on a model repository.

    python export/to_triton.py -o triton_repo
    python -m runtime serve --model-repository triton_repo [--http-port 8000] [--grpc-port 8001]

Starts ``tritonserver`` on the repository, waits (bounded) until it answers and its models
have loaded, prints the endpoints and each model's state, and stops it cleanly on Ctrl-C
(SIGINT to the server, which finishes in-flight requests; SIGKILL to its process group
after ``--stop-timeout`` s).

Which ``tritonserver``: ``--triton-home DIR`` (a folder with ``bin/tritonserver`` and
``backends/``), else ``$FOURPP_TRITON_HOME``, else ``tritonserver`` on ``PATH`` (as in NVIDIA's
containers, ``/opt/tritonserver``), else the server bundled in an installed
``nvidia-pytriton`` (CPU, Python backend only), else the one ``python
tests/triton_kit/install.py`` unpacks from that wheel into a checkout's ``.cache/triton/``
(without installing pytriton's numpy<2 package).

The Python backend runs each ``model.py`` in a stub process that embeds libpython. The
server's environment gets this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else
the stub may bind the system's libpython of the same version, whose stdlib does not match:
``'_thread.RLock' object has no attribute '_recursion_count'``). The stub ignores
``PYTHONPATH`` but puts its working directory first on ``sys.path``, so the server runs in a
temporary folder of links: ``runtime`` (this project's, so the ``upscale`` model imports it)
and the entries of ``python-site/`` in the Triton home, where the kit puts numpy 1.26: the
bundled stub's pybind11 reads numpy 2 arrays with numpy 1's layout, and every output
tensor would reach the client empty (right shape, 0 bytes).

Needs only the standard library (health checks are plain HTTP): ``import runtime`` stays
numpy + Pillow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .closing import Closing
from .errors import UpscaleError

__all__ = [
    "TritonServerError",
    "TritonServer",
    "find_triton_home",
    "server_environment",
    "stub_folder",
    "free_port",
    "add_serve_command",
    "run_serve_command",
    "main",
]

HOST = "127.0.0.1"
DEFAULT_READY_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 30.0


class TritonServerError(UpscaleError):
    """Triton cannot be found, does not start, or does not become ready in time."""


# --------------------------------------------------------------------------- finding Triton


def _home_ok(home: Path) -> bool:
    return (home / "bin" / "tritonserver").is_file() and (home / "backends").is_dir()


def find_triton_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Triton folder (``bin/tritonserver``, ``backends/``) to run; see the module doc for the order."""
    if explicit is not None or os.environ.get("FOURPP_TRITON_HOME"):
        source = "--triton-home" if explicit is not None else "FOURPP_TRITON_HOME"
        home = Path(explicit if explicit is not None else os.environ["FOURPP_TRITON_HOME"]).expanduser()
        if not _home_ok(home):
            raise TritonServerError(f"{source} {home}: expected a folder with bin/tritonserver and backends/")
        return home.resolve()
    candidates: list[Path] = []
    on_path = shutil.which("tritonserver")
    if on_path:
        candidates.append(Path(on_path).resolve().parents[1])
    candidates.append(Path("/opt/tritonserver"))
    spec = importlib.util.find_spec("pytriton")  # finds the package without importing it (numpy<2)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "tritonserver" for p in spec.submodule_search_locations]
    # A development checkout's kit (python tests/triton_kit/install.py), e.g. .cache/triton/0.7.0/...
    kit = Path(__file__).resolve().parents[1] / ".cache" / "triton"
    candidates += sorted((p.parents[1] for p in kit.glob("*/pytriton/tritonserver/bin/tritonserver")), reverse=True)
    for home in candidates:
        if _home_ok(home):
            return home.resolve()
    raise TritonServerError(
        "no Triton Inference Server found (tried --triton-home, $FOURPP_TRITON_HOME, tritonserver on PATH, "
        f"/opt/tritonserver, the nvidia-pytriton package, {kit}); use NVIDIA's Triton container, or unpack "
        "the CPU server from nvidia-pytriton with `python tests/triton_kit/install.py` in a checkout"
    )


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``tritonserver``: this interpreter's libpython found first by the stub."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libdir), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def stub_folder(home: Path) -> Path:
    """A new temporary folder of links for the stub's ``sys.path[0]``: ``runtime`` and ``home/python-site/*``."""
    folder = Path(tempfile.mkdtemp(prefix="fourpp-triton-"))
    site = home / "python-site"
    if site.is_dir():
        for entry in site.iterdir():
            (folder / entry.name).symlink_to(entry.resolve())
    if not (folder / "runtime").exists():
        (folder / "runtime").symlink_to(Path(__file__).resolve().parent)
    return folder


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the server


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM, Triton's graceful stop, when the parent dies.

    The server runs in its own session (a terminal's Ctrl-C reaches only the parent, which
    stops it), so without this a parent killed by SIGKILL would leave it running.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _request(url: str, *, data: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class TritonServer(Closing):
    """A ``tritonserver`` child process on loopback; ``with TritonServer(repo) as s: s.http_url``.

    Ports default to free ones. ``models`` (names) starts Triton in explicit model-control
    mode with only those loaded; otherwise every model of the repository is loaded and one
    that fails (e.g. an ONNX model on a server without the ONNX Runtime backend) is reported
    UNAVAILABLE while the others serve. :meth:`start` returns once the server is live and no
    model is still loading, or raises :class:`TritonServerError` with the log's tail.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        triton_home: str | os.PathLike[str] | None = None,
        host: str = HOST,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        models: Sequence[str] | None = None,
        log: str | os.PathLike[str] | None = None,
        verbose: int = 0,
    ) -> None:
        self.repository = Path(model_repository)
        if not self.repository.is_dir():
            raise TritonServerError(
                f"--model-repository {self.repository}: no such folder; write one with python export/to_triton.py -o DIR"
            )
        self.home = find_triton_home(triton_home)
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.models = list(models) if models else None
        self.log_path = Path(log) if log is not None else None
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: TextIO | None = None
        self._stub_dir: Path | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = [
            str(self.home / "bin" / "tritonserver"),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={self.home / 'backends'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--exit-on-error=false",
            "--strict-readiness=false",
            # in-flight requests get 10 s on shutdown: Triton's default 30 s equals serve's own
            # stop timeout, after which the process group is killed anyway
            "--exit-timeout-secs=10",
            f"--log-verbose={self.verbose}",
        ]
        if (self.home / "caches").is_dir():
            cmd.append(f"--cache-directory={self.home / 'caches'}")
        if self.models:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={name}" for name in self.models]
        return cmd

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(log not captured)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT) -> TritonServer:
        """Start the process and wait, at most ``timeout`` s, until it is live and done loading."""
        if self.process is not None:
            raise TritonServerError("this server is already started")
        self._stub_dir = stub_folder(self.home)
        out: Any = None
        if self.log_path is not None:
            self._log_file = out = open(self.log_path, "w")
        self.process = subprocess.Popen(
            self.command(),
            env=server_environment(),
            cwd=self._stub_dir,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server; killpg reaches the stubs
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_live(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_live(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise TritonServerError(f"tritonserver exited with status {code} while starting:\n{self.log_tail()}")
            try:
                status, _ = _request(f"http://{self.http_url}/v2/health/live", timeout=1.0)
                if status == 200 and not any(m["state"] == "LOADING" for m in self.model_states()):
                    return
            except (OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TritonServerError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def model_states(self) -> list[dict[str, Any]]:
        """The repository index: ``[{"name", "version", "state", "reason"}]``."""
        status, body = _request(f"http://{self.http_url}/v2/repository/index", data=b"{}", timeout=5.0)
        if status != 200:
            raise TritonServerError(f"repository index: HTTP {status}: {body[:300]!r}")
        return list(json.loads(body or b"[]"))

    def close(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the server: SIGINT (graceful), then SIGKILL to its process group after ``timeout`` s."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if process.poll() is None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    process.wait(timeout=10)
        if process is not None:
            try:  # the Python-backend stubs share the group; none must outlive the server
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._stub_dir is not None:
            shutil.rmtree(self._stub_dir, ignore_errors=True)
            self._stub_dir = None

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        if self.process is None:
            raise TritonServerError("the server is not running")
        return self.process.wait()


# --------------------------------------------------------------------------- the command


def add_serve_command(commands: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the CLI's subcommands (``argparse`` subparsers)."""
    serve = commands.add_parser(
        "serve",
        help="serve a Triton model repository with a real Triton Inference Server",
        description="Start tritonserver on a model repository (python export/to_triton.py -o DIR writes one), "
        "wait until its models have loaded, print the endpoints; Ctrl-C stops it.",
    )
    _add_arguments(serve)
    return serve


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-repository", required=True, type=Path, metavar="DIR", help="the model repository")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000; 0: a free one)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0: a free one)")
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002; 0: a free one)"
    )
    p.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST}: this machine only)")
    p.add_argument(
        "--model", action="append", dest="models", metavar="NAME", help="load only these models (repeatable)"
    )
    p.add_argument("--triton-home", type=Path, help="folder with bin/tritonserver and backends/ (default: searched)")
    p.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT, help="seconds to wait for the models")
    p.add_argument(
        "--stop-timeout", type=float, default=DEFAULT_STOP_TIMEOUT, help="seconds to wait on Ctrl-C before killing"
    )
    p.add_argument("--log", type=Path, help="write the server's log here instead of the terminal")
    p.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level")


def run_serve_command(args: argparse.Namespace) -> int:
    """Run ``serve`` with parsed ``args``: 0 after Ctrl-C, 2 when the server cannot start."""
    try:
        server = TritonServer(
            args.model_repository,
            triton_home=args.triton_home,
            host=args.host,
            http_port=args.http_port or None,
            grpc_port=args.grpc_port or None,
            metrics_port=args.metrics_port or None,
            models=args.models,
            log=args.log,
            verbose=args.log_verbose,
        )
        server.start(timeout=args.ready_timeout)
    except TritonServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop, systemd, timeout) stops as cleanly as Ctrl-C

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        print(f"Triton {server.home / 'bin' / 'tritonserver'} serving {server.repository}")
        print(f"  HTTP     {server.http_url}")
        print(f"  gRPC     {server.grpc_url}")
        print(f"  metrics  {server.metrics_url}")
        for m in server.model_states():
            reason = f": {m['reason']}" if m.get("reason") else ""
            print(f"  model {m['name']} v{m.get('version', '?')}: {m.get('state', 'UNKNOWN')}{reason}")
        print(f"client: runtime.triton_client.upscale({server.http_url!r}, image)")
        print("Ctrl-C stops the server.", flush=True)
        status = server.wait()
        print(f"error: tritonserver exited with status {status}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopping Triton ...", file=sys.stderr, flush=True)
        return 0
    finally:
        server.close(timeout=args.stop_timeout)
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.serve`` (the same as ``python -m runtime serve``)."""
    parser = argparse.ArgumentParser(prog="python -m runtime serve", description=(__doc__ or "").split("\n\n")[0])
    _add_arguments(parser)
    return run_serve_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
