"""benchmarks/*.py: the scripts run, write what they promise, and their logic holds.

Fast on purpose (a tiny random-init EUSR exported once, images of tens of pixels): these
tests catch a broken script, not a slow model. The memory benchmark runs for real, in its
own subprocess, at a small size, together with a negative control (a 0 MB budget fails).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import memory, quality, seams
from runtime.evaluation import load_image_uint8
from runtime.image_io import write_image
from runtime.imresize import imresize

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = REPO_ROOT / "data" / "photos" / "test"
ENV_KEYS = {"date", "command", "host", "threads", "versions", "git"}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """build_eusr("tiny"), seeded random weights, ×4 float32-nchw ONNX (TorchScript exporter: fastest)."""
    torch = pytest.importorskip("torch")
    from export.to_onnx import export_onnx
    from train.models.eusr import build_eusr

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench-model") / "tiny.onnx"
    return export_onnx(build_eusr("tiny"), path, validate=False, exporter="torchscript")


def crop(name: str, size: int) -> np.ndarray:
    """A centred size×size crop of a test photo (gray or RGB uint8)."""
    photo = load_image_uint8(PHOTOS / name)
    h, w = photo.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(photo[y0 : y0 + size, x0 : x0 + size])


def last_table(text: str) -> list[str]:
    """The Markdown table the script printed last."""
    lines = text.rstrip().splitlines()
    table = []
    for line in reversed(lines):
        if not line.startswith("|"):
            break
        table.append(line)
    return table[::-1]


def check_environment(env: dict) -> None:
    assert ENV_KEYS <= set(env)
    assert env["host"]["cpu"] and env["host"]["logical_cpus"] >= 1
    assert {"python", "numpy", "onnxruntime", "torch"} <= set(env["versions"])
    assert env["versions"]["numpy"] == np.__version__
    assert "commit" in env["git"]


@pytest.mark.parametrize("script", ["seams.py", "quality.py", "memory.py"])
def test_script_runs_from_the_repo_root_with_help(script: str) -> None:
    res = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage:") and "--out" in res.stdout


# --------------------------------------------------------------------------- memory


def test_memory_within_budget_writes_json_and_markdown(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    size = 96
    rc = memory.main(
        ["--size", str(size), "--model", str(tiny_onnx), "--out", str(tmp_path), "--threads", "1", "--allow-dirty"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((tmp_path / "memory.json").read_text())
    check_environment(data["environment"])
    m, v = data["measured"], data["verdict"]
    assert m["output_shape"] == [4 * size, 4 * size, 3] and m["output_bytes"] == (4 * size) ** 2 * 3
    assert m["torch_imported"] is False and m["onnxruntime_imported"] is True
    assert 0 < m["rss_baseline_kib"] <= m["peak_rss_kib"]
    assert v["passed"] is True
    assert v["budget_bytes"] == m["output_bytes"] + 500 * memory.MB
    assert v["peak_rss_bytes"] == m["peak_rss_kib"] * 1024
    assert v["ratio"] == pytest.approx(v["peak_rss_bytes"] / v["budget_bytes"])
    assert v["margin_bytes"] == pytest.approx(v["budget_bytes"] - v["peak_rss_bytes"])
    assert (tmp_path / "memory.md").read_text().count("PASS") == 1
    assert any("PASS" in line for line in last_table(out))


def test_memory_zero_budget_fails(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    """Negative control: nothing fits in the output array alone."""
    rc = memory.main(
        [
            "--size",
            "32",
            "--model",
            str(tiny_onnx),
            "--out",
            str(tmp_path),
            "--budget-mb",
            "0",
            "--threads",
            "1",
            "--allow-dirty",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1, out
    v = json.loads((tmp_path / "memory.json").read_text())["verdict"]
    assert v["passed"] is False and v["margin_bytes"] < 0 and v["ratio"] > 1
    assert any("FAIL" in line for line in last_table(out))


def test_memory_verdict_boundary() -> None:
    measured = {"peak_rss_kib": 1000, "rss_baseline_kib": 100, "output_bytes": 1024 * 1000 - 10}
    assert memory.verdict(measured, 10 / memory.MB)["passed"] is True  # exactly at the budget
    assert memory.verdict(measured, 9 / memory.MB)["passed"] is False


# --------------------------------------------------------------------------- seams


def test_choose_halo_needs_the_target_from_there_on() -> None:
    halos = [0, 2, 4, 8, 16]
    assert seams.choose_halo(halos, [10, 60, 40, 70, math.inf], 50) == 8  # the dip at 4 does not count
    assert seams.choose_halo(halos, [60, 60, 60, 60, 60], 50) == 0
    assert seams.choose_halo(halos, [10, 20, 30, 40, 45], 50) is None
    assert seams.first_reaching(halos, [10, 60, 40, 70, 80], 50) == 2
    assert seams.choose_halo_by_error(halos, [90, 3, 0.6, 0.4, 0.0], 0.5) == 8
    assert seams.nominal_overhead(128, 16) == pytest.approx(1.5625)


def test_seams_curve_rises_with_the_halo(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "ihc48.png"
    write_image(image, crop("ihc.png", 48))
    halos = [0, 1, 2, 4, 8, 16]
    rc = seams.main(
        [
            "--model",
            str(tiny_onnx),
            "--data",
            str(image),
            "--tiles",
            "16",
            "--halos",
            ",".join(map(str, halos)),
            "--out",
            str(tmp_path),
            "--threads",
            "1",
            "--allow-dirty",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((tmp_path / "seams.json").read_text())
    check_environment(data["environment"])
    assert data["settings"]["downscale"] is False  # photos are the LR input by default
    assert data["images"][0]["lr_shape"] == [48, 48, 3]
    (summary,) = data["summary"]
    curve = [float(c["min_psnr_db"]) for c in summary["curve"]]  # "inf" for identical outputs
    assert [c["halo"] for c in summary["curve"]] == halos
    assert curve[0] < curve[-1] and curve[-1] > 80, curve
    for before, after in zip(curve, curve[1:]):  # non-decreasing, give or take float noise
        assert after >= before - 1.0, curve
    assert summary["chosen_halo"] == seams.choose_halo(halos, curve, 50.0)
    assert summary["chosen_halo"] is not None
    errors = [c["max_abs_err"] for c in summary["curve"]]
    assert errors[0] > errors[-1]
    assert summary["halo_by_error"] == seams.choose_halo_by_error(halos, errors, 0.5)
    from runtime.tiling import plan_tiles

    assert [r["tiles"] for r in data["results"]] == [len(plan_tiles(48, 48, 16, h)) for h in halos]
    assert data["results"][0]["tiles"] == 9  # halo 0: a plain 3×3 grid
    table = last_table(out)
    assert table[0].startswith("| halo") and len(table) == 2 + len(halos)
    assert "smallest halo" in out and (tmp_path / "seams.md").is_file()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "seams.png").stat().st_size > 0


# --------------------------------------------------------------------------- quality


def independent_psnr_y(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """MATLAB-convention PSNR-Y written out again, without runtime.metrics."""

    def y(img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float64)
        if img.ndim == 2:
            return img
        return np.round(16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255)

    d = (y(sr) - y(hr))[border:-border, border:-border]
    return 10 * math.log10(255**2 / np.mean(d * d))


def test_quality_table_json_and_bicubic_psnr(tiny_onnx: Path, tmp_path: Path, capsys) -> None:
    dataset = tmp_path / "Tiny"  # BasicSR-like: the images lie in an HR/ subfolder
    hr_dir = dataset / "HR"
    hr_dir.mkdir(parents=True)
    hrs = {"camera": crop("camera.png", 50), "ihc": crop("ihc.png", 48)}  # 50: mod-crop to 48
    for name, hr in hrs.items():
        write_image(hr_dir / f"{name}.png", hr)
    write_image(hr_dir / "ihc_LR.png", imresize(hrs["ihc"][:48, :48], 0.25))  # must be skipped
    out_dir = tmp_path / "out"
    rc = quality.main(
        [
            "--model",
            str(tiny_onnx),
            "--data",
            str(dataset),
            "--out",
            str(out_dir),
            "--strips",
            "1",
            "--threads",
            "1",
            "--allow-dirty",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads((out_dir / "quality.json").read_text())
    check_environment(data["environment"])
    (ds,) = data["datasets"]
    assert ds["skipped"] == ["ihc_LR.png"] and [r["image"] for r in ds["images"]] == ["camera", "ihc"]
    keys = {f"{m}_{k}" for m in ("psnr_y", "ssim_y") for k in ("bicubic", "model", "gain")}
    for row in ds["images"]:
        assert keys <= set(row)
        assert row["psnr_y_gain"] == pytest.approx(row["psnr_y_model"] - row["psnr_y_bicubic"])
        hr = hrs[row["image"]][:48, :48]
        assert row["hr_size"] == [48, 48]
        bicubic = imresize(imresize(hr, 0.25), 4.0)
        assert row["psnr_y_bicubic"] == pytest.approx(independent_psnr_y(bicubic, hr, 4), abs=1e-9)
    assert ds["mean"]["psnr_y_bicubic"] == pytest.approx(np.mean([r["psnr_y_bicubic"] for r in ds["images"]]))
    assert len(ds["strips"]) == 1 and Path(ds["strips"][0]).is_file()
    table = last_table(out)
    headers = [h.strip() for h in table[0].strip("|").split("|")]
    assert headers[:3] == ["dataset", "image", "size"] and "PSNR-Y gain" in headers and "SSIM-Y model" in headers
    assert len(table) == 2 + 2 + 1  # header, rule, two images, mean


def test_quality_recognises_dataset_layouts(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    # SelfExSR release: Set5/image_SRF_4/img_001_SRF_4_{HR,LR,bicubic}.png
    srf = tmp_path / "Set5" / "image_SRF_4"
    srf.mkdir(parents=True)
    for kind in ("HR", "LR", "bicubic"):
        write_image(srf / f"img_001_SRF_4_{kind}.png", img)
    (tmp_path / "Set5" / "image_SRF_2").mkdir()
    ds = quality.find_dataset(tmp_path / "Set5", scale=4)
    assert [p.name for p in ds.images] == ["img_001_SRF_4_HR.png"] and ds.name == "Set5"
    # DIV2K: DIV2K/DIV2K_valid_HR/0801.png beside DIV2K_valid_LR_bicubic/
    div = tmp_path / "DIV2K"
    (div / "DIV2K_valid_LR_bicubic").mkdir(parents=True)
    (div / "DIV2K_valid_HR").mkdir()
    write_image(div / "DIV2K_valid_HR" / "0801.png", img)
    assert [p.name for p in quality.find_dataset(div, scale=4).images] == ["0801.png"]
    # a plain folder, and a single file
    flat = tmp_path / "mine"
    flat.mkdir()
    write_image(flat / "b.png", img)
    write_image(flat / "a.jpg", img)
    assert [p.name for p in quality.find_dataset(flat, scale=4).images] == ["a.jpg", "b.png"]
    assert len(quality.find_dataset(flat / "b.png", scale=4).images) == 1
    empty = tmp_path / "empty"
    (empty / "misc").mkdir(parents=True)
    with pytest.raises(quality.EvaluationError, match="no HR images"):
        quality.find_dataset(empty, scale=4)


# --------------------------------------------------------------------------- dirty tree


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed git checkout with one package (pkg/, pkg/sub/) and a plain folder (notes/)."""
    root = tmp_path / "repo"
    for name in ("pkg/__init__.py", "pkg/core.py", "pkg/sub/__init__.py", "notes/a.txt", "README"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def test_git_state_counts_tracked_changes_and_untracked_package_files(repo: Path) -> None:
    from runtime.results import git_state

    clean = git_state(repo)
    assert clean.commit and len(clean.commit) == 40 and clean.dirty is False
    assert clean.record() == {"commit": clean.commit, "dirty": False, "changes": []}
    # Untracked files outside every package do not change what the code computes.
    (repo / "scratch.txt").write_text("x")
    (repo / "notes" / "b.txt").write_text("x")
    (repo / "runs").mkdir()
    (repo / "runs" / "out.json").write_text("{}")
    assert git_state(repo).dirty is False
    # An untracked module inside a package (or a subfolder of one) does.
    (repo / "pkg" / "sub" / "extra").mkdir()
    (repo / "pkg" / "sub" / "extra" / "new.py").write_text("x = 1\n")
    state = git_state(repo)
    assert state.dirty is True and state.changes == ("?? pkg/sub/extra/new.py",)
    (repo / "pkg" / "sub" / "extra" / "new.py").unlink()
    # So does a modified tracked file, anywhere.
    (repo / "README").write_text("changed\n")
    assert git_state(repo).changes == (" M README",)


def test_git_state_outside_git_is_unknown(tmp_path: Path) -> None:
    from runtime.results import git_state

    state = git_state(tmp_path)
    assert state.commit is None and state.dirty is None and state.record()["dirty"] is None


def test_require_clean_tree_refuses_a_dirty_tree_unless_allowed(repo: Path, tmp_path: Path) -> None:
    from benchmarks.common import DirtyTreeError, require_clean_tree

    assert require_clean_tree(False, root=repo).dirty is False
    (repo / "pkg" / "core.py").write_text("changed\n")
    with pytest.raises(DirtyTreeError, match=r"M pkg/core.py.*--allow-dirty"):
        require_clean_tree(False, root=repo)
    assert require_clean_tree(True, root=repo).changes == (" M pkg/core.py",)
    assert require_clean_tree(False, root=tmp_path / "nowhere").commit is None  # unknown: nothing to contradict


def _quality_json(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"datasets": [{"name": "t", "images": [{"image": "a", "psnr_y_model": 30.0, "niqe_model": 6.0}]}]})
    )
    return path


def test_scripts_refuse_to_write_from_a_dirty_tree(repo: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The real check on a real (temporary) checkout: refused without --allow-dirty, nothing
    written; with it, the results say the tree was dirty and what differed."""
    from benchmarks import common, compare_quality

    monkeypatch.setattr(common, "REPO_ROOT", repo)
    base, run = _quality_json(tmp_path / "base.json"), _quality_json(tmp_path / "r" / "run.json")
    (repo / "pkg" / "new.py").write_text("x = 1\n")
    out = tmp_path / "out"
    assert compare_quality.main([str(base), str(run), "--out", str(out)]) == 2
    assert "--allow-dirty" in capsys.readouterr().err and not out.exists()
    assert quality.main(["--model", "none.onnx", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "?? pkg/new.py" in capsys.readouterr().err and not out.exists()

    assert compare_quality.main([str(base), str(run), "--out", str(out), "--allow-dirty"]) == 0
    git_record = json.loads((out / "compare_quality.json").read_text())["environment"]["git"]
    assert git_record["dirty"] is True and git_record["changes"] == ["?? pkg/new.py"]

    git(repo, "add", "pkg/new.py")
    git(repo, "commit", "-q", "-m", "new")
    assert compare_quality.main([str(base), str(run), "--out", str(out)]) == 0
    assert json.loads((out / "compare_quality.json").read_text())["environment"]["git"]["dirty"] is False


RESULT_SCRIPTS = [
    "seams",
    "quality",
    "memory",
    "parity",
    "throughput",
    "throughput_gpu",
    "fp16_onnx",
    "compare_quality",
    "int8_gate",
    "peers",
    "border_band",
    "serve",
    "triton_check",
    "large_image",
    "field_table",
]


def test_the_allow_dirty_list_names_every_script_that_writes_results() -> None:
    writers = {p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py") if "write_results(" in p.read_text()}
    assert writers <= set(RESULT_SCRIPTS), sorted(writers - set(RESULT_SCRIPTS))


@pytest.mark.parametrize("script", RESULT_SCRIPTS)
def test_every_script_that_writes_results_has_allow_dirty(script: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "--allow-dirty" in res.stdout
