"""``import runtime`` (every module of it) must work with only numpy and Pillow.

Each check runs in a fresh interpreter whose import system refuses the heavy packages,
as if they were not installed, so a stray top-level ``import onnxruntime`` anywhere in
runtime/ fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ["torch", "onnxruntime", "onnx", "tqdm", "tensorrt", "cuda", "scipy", "skimage", "torchvision"]

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{name}}")
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_python(body: str) -> subprocess.CompletedProcess:
    code = BLOCKER + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_blocker_really_blocks() -> None:
    result = run_python("import onnxruntime")
    assert result.returncode != 0 and "blocked for this test" in result.stderr


def test_every_runtime_module_imports_without_heavy_packages() -> None:
    result = run_python(
        """
        import pkgutil, sys
        import runtime
        names = ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")
                               if m.name != "runtime.__main__"]
        for name in names:
            __import__(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not heavy, heavy
        print(len(names), "modules:", " ".join(names))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "runtime.backends.onnxruntime_backend" in result.stdout and "runtime.cli" in result.stdout


def test_missing_backend_and_tqdm_give_install_hints(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used: onnxruntime is missing first")
    result = run_python(
        f"""
        from runtime import Upscaler
        from runtime.errors import BackendUnavailableError, MissingDependencyError
        try:
            Upscaler({str(model)!r}, backend="onnxruntime")
        except BackendUnavailableError as exc:
            print("backend:", exc)
        try:
            Upscaler({str(model)!r}, progress=True)
        except MissingDependencyError as exc:
            print("tqdm:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "backend: Python package 'onnxruntime' is needed for the 'onnxruntime' backend" in result.stdout
    assert "pip install onnxruntime" in result.stdout
    assert "tqdm: Python package 'tqdm' is needed for progress=True" in result.stdout
    assert "pip install tqdm" in result.stdout


def test_cli_help_without_heavy_packages() -> None:
    result = run_python(
        """
        from runtime.cli import main
        raise SystemExit(main(["--help"]))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "upscale" in result.stdout
