"""Papercuts of issue 16, each as a new user meets it: a checkpoint given as the model, Ctrl-C
and SIGTERM, ``-o`` names that cannot be what they look like, options a backend ignores,
``info`` without a model, ``demo`` with a bad photo, benchmarks that overwrite the committed
results."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from runtime import Upscaler
from runtime.cli import main
from runtime.demo import run_demo
from runtime.errors import ImageReadError, ModelError
from runtime.image_io import write_image

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO_ROOT / "models" / "eusr-compact.safetensors"


# ------------------------------------------------------------------ a checkpoint as the runtime model


def test_a_checkpoint_given_as_the_model_says_what_it_is_and_how_to_export_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"PyTorch training checkpoint.*export/to_onnx\.py .*torch-cuda") as caught:
        Upscaler(CHECKPOINT, backend="onnxruntime")
    assert "INVALID_PROTOBUF" not in str(caught.value)
    with pytest.raises(ModelError, match=r"pickled PyTorch checkpoint"):
        Upscaler(tmp_path / "weights.pth")


def test_cli_checkpoint_as_the_model_in_upscale_and_info(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(CHECKPOINT)]) == 2
    assert main(["info", str(CHECKPOINT)]) == 1
    err = capsys.readouterr().err
    assert err.count("python export/to_onnx.py") == 2 and "INVALID_PROTOBUF" not in err


# ------------------------------------------------------------------ Ctrl-C and SIGTERM


@pytest.fixture(scope="module")
def large_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noise whose x4 PNG takes seconds to encode: time to catch the writer at work."""
    path = tmp_path_factory.mktemp("large") / "noise.png"
    write_image(path, np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8))
    return path


def _default_sigint() -> None:
    """The child's SIGINT back to default: a test run started in the background (`cmd &`, nohup)
    has SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,status,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_while_writing_prints_one_line_and_leaves_no_temporary_file(
    large_png: Path, nearest_model: Path, tmp_path: Path, sig: signal.Signals, status: int, word: str
) -> None:
    out = tmp_path / "out.png"
    argv = ["upscale", str(large_png), "-o", str(out), "--model", str(nearest_model), "--backend", "onnxruntime"]
    for _attempt in range(3):  # on a loaded machine the write may finish before the signal lands
        child = subprocess.Popen(
            [sys.executable, "-m", "runtime", *argv, "-q"],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.png.*.tmp")):  # the atomic writer's temporary file: encoding now
            assert child.poll() is None and time.monotonic() < deadline, "the writer's temporary file never appeared"
            time.sleep(0.005)
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
        if child.returncode == 0:  # too late: the output is complete, which is right too; try again
            assert out.is_file() and not list(tmp_path.glob(".*.tmp"))
            out.unlink()
            continue
        break
    assert child.returncode == status, err
    assert err.strip().splitlines() == [err.strip()] and word in err, err  # one line, no traceback
    assert list(tmp_path.iterdir()) == []  # neither a temporary file nor a half-written output


# ------------------------------------------------------------------ -o names


def test_o_with_an_image_extension_this_cannot_write_is_explained_not_made_a_folder(
    tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    for name in ("out.avif", "out.ppm"):  # looks like a file; .ppm is read, not written
        argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / name), "--model", str(nearest_model)]
        assert main(argv) == 2
        assert f"{name}: looks like an image file name" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    (tmp_path / "shots.tif").mkdir()  # an existing folder is a folder, whatever its name
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "shots.tif"), "--model", str(nearest_model)]
    assert main([*argv, "-q"]) == 0 and (tmp_path / "shots.tif" / "a_x4.png").is_file()
    argv = [*argv[:3], str(tmp_path / "out.v2"), *argv[4:]]  # a dotted folder name that is not an image's
    assert main([*argv, "-q"]) == 0 and (tmp_path / "out.v2" / "a_x4.png").is_file()


def test_o_naming_a_file_with_several_inputs_is_explained(
    tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes").write_text("a file, not a folder")
    for out, words in (("out.gif", "OUT must be a folder"), ("notes", "exists and is not a folder")):
        argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / out)]
        assert main([*argv, "--model", str(nearest_model)]) == 2
        assert words in capsys.readouterr().err


# ------------------------------------------------------------------ options a backend ignores


def test_gpu_options_on_a_cpu_backend_are_warned_about(
    tmp_path: Path, nearest_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CLI prints it as ``WARNING: slots=3 ignored: ...`` (logging, which pytest captures here)."""
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--model", str(nearest_model)]
    assert main([*argv, "--backend", "onnxruntime", "--slots", "3", "-q"]) == 0
    assert "slots=3 ignored: the onnxruntime backend runs on the CPU" in caplog.text


def test_format_with_a_file_output_is_warned_about(
    tmp_path: Path, nearest_model: Path, capsys: pytest.CaptureFixture
) -> None:
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.webp"), "--model", str(nearest_model)]
    assert main([*argv, "--format", "same", "-q"]) == 0
    assert "--format same ignored: -o" in capsys.readouterr().err and (tmp_path / "b.webp").is_file()


# ------------------------------------------------------------------ info


def test_info_defaults_to_the_bundled_model_like_upscale(capsys: pytest.CaptureFixture) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "eusr-compact-x4.onnx" in out and "scale:" in out


# ------------------------------------------------------------------ demo with a bad photo


def test_demo_with_a_broken_photo_names_it_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "demo" / "nested"
    assert main(["demo", "--photo", str(broken), "-o", str(out)]) == 1
    assert f"error: {broken}: not a recognised image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png"]


def test_demo_with_a_photo_too_small_names_it_and_its_size(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.png"
    write_image(tiny, np.zeros((3, 5, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r"tiny\.png: 5x3 pixels is too small for the demo.*at least 16x16"):
        run_demo(tmp_path / "out", photo=tiny)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ benchmarks keep the committed results


def test_a_benchmark_run_writes_a_fresh_folder_not_the_committed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks import compare_quality
    from benchmarks.common import DEFAULT_OUT

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the fresh folder lands here
    base, run = tmp_path / "base.json", tmp_path / "run" / "q.json"
    for path, psnr in ((base, 30.0), (run, 31.0)):
        path.parent.mkdir(exist_ok=True)
        images = [{"image": "a", "psnr_y_model": psnr, "niqe_model": 6.0, "ssim_y_model": 0.5}]
        path.write_text(json.dumps({"datasets": [{"name": "test", "images": images}]}))
    committed = DEFAULT_OUT / "compare_quality.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    assert compare_quality.main([str(base), str(run)]) == 0
    err = capsys.readouterr().err
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("compare_quality-")]
    assert f"results go to {folder}" in err and (folder / "compare_quality.json").is_file()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    with pytest.raises(SystemExit) as exit_:  # both: which one was meant?
        compare_quality.main([str(base), str(run), "--update-results", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script",
    ["seams", "quality", "memory", "parity", "throughput", "throughput_gpu", "fp16_onnx", "compare_quality", "peers"],
)
def test_every_result_script_takes_update_results(script: str, capsys: pytest.CaptureFixture) -> None:
    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0 and "--update-results" in capsys.readouterr().out


def test_int8_gate_keeps_its_stem_in_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.common import DEFAULT_OUT, add_out_args, results_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parser = argparse.ArgumentParser(prog="int8_gate.py")
    add_out_args(parser)
    out = results_dir(parser.parse_args([]), parser, committed=DEFAULT_OUT / "int8_gate", stem=True)
    assert out.name == "int8_gate" and out.parent.parent == tmp_path
    updated = results_dir(parser.parse_args(["--update-results"]), parser, committed=DEFAULT_OUT / "int8_gate")
    assert updated == DEFAULT_OUT / "int8_gate"
