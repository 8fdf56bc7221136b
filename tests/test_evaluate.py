"""train.evaluate: the paper's evaluation of a checkpoint (PSNR/SSIM-Y, NIQE, bicubic, strips)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train import evaluate
from train.data import load_rgb

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory, photos_dir) -> Path:
    """Two 128×128 HR crops (large enough for one 96×96 NIQE block after a 4-px border)."""
    root = tmp_path_factory.mktemp("eval_hr")
    for name, (y, x) in [("camera.png", (200, 200)), ("ihc.png", (100, 100))]:
        Image.fromarray(load_rgb(photos_dir / "test" / name)[y : y + 128, x : x + 128]).save(root / name)
    return root


def test_evaluate_writes_per_image_and_mean_scores(hr_folder, tmp_path, repo_root, capsys):
    out = tmp_path / "eval"
    rc = evaluate.main(
        [
            str(repo_root / "models/eusr-compact.safetensors"),
            "--data",
            str(hr_folder),
            "--out",
            str(out),
            "--strips",
            "1",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    data = json.loads((out / "evaluate.json").read_text())
    (ds,) = data["datasets"]
    assert [r["image"] for r in ds["images"]] == ["camera", "ihc"]
    for row in ds["images"]:
        for key in ("psnr_y", "ssim_y", "niqe"):
            assert np.isfinite(row[f"{key}_model"]) and np.isfinite(row[f"{key}_bicubic"])
        # The trained ×4 path beats bicubic on PSNR-Y on these held-out crops.
        assert row["psnr_y_model"] > row["psnr_y_bicubic"]
    assert ds["mean"]["psnr_y_model"] == pytest.approx(np.mean([r["psnr_y_model"] for r in ds["images"]]))
    assert data["model"]["runner"] == "torch"
    (strip,) = ds["strips"]
    with Image.open(strip) as im:
        assert im.width > 3 * 128  # bicubic | model | HR side by side
    md = (out / "evaluate.md").read_text()
    assert "NIQE" in md and "**mean** (2)" in md


def test_evaluate_rejects_missing_and_non_checkpoint_files(hr_folder, tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nope.safetensors"), "--data", str(hr_folder)]) == 2
    assert "nope.safetensors: no such file" in capsys.readouterr().err
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used")
    assert evaluate.main([str(onnx), "--data", str(hr_folder)]) == 2
    assert "expected a .safetensors checkpoint" in capsys.readouterr().err


def test_evaluate_scale_the_model_lacks_is_an_error(hr_folder, tmp_path, repo_root, capsys):
    rc = evaluate.main(
        [
            str(repo_root / "models/eusr-compact.safetensors"),
            "--data",
            str(hr_folder),
            "--scale",
            "3",
            "--out",
            str(tmp_path),
            "--strips",
            "0",
        ]
    )
    assert rc == 2
    assert "scales [2, 4, 8], not 3" in capsys.readouterr().err


def test_evaluate_weights_picks_the_moving_average_or_the_raw_weights(hr_folder, tmp_path, repo_root, capsys):
    """A --ema run's checkpoint holds both; auto/ema score the average, raw the live weights."""
    from train.checkpoint import load_model, save_checkpoint

    bundled = repo_root / "models/eusr-compact.safetensors"
    model = load_model(bundled)
    ema = {
        k: v * 0.9 if k.endswith("outputs.4.weight") else v
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    assert any(k.endswith("outputs.4.weight") for k in ema)
    both = save_checkpoint(
        tmp_path / "both.safetensors",
        model,
        config=model.config.to_dict(),
        config_name="compact",
        ema_state={k: v.clone() for k, v in ema.items()},
    )

    def psnr(ckpt: Path, *flags: str) -> float:
        out = tmp_path / f"ev_{ckpt.stem}_{'_'.join(flags) or 'auto'}"
        assert (
            evaluate.main(
                [str(ckpt), "--data", str(hr_folder), "--out", str(out), "--strips", "0", "--threads", "1", *flags]
            )
            == 0
        )
        data = json.loads((out / "evaluate.json").read_text())
        assert data["model"]["weights"] == (flags[1] if flags else "auto")
        return data["datasets"][0]["mean"]["psnr_y_model"]

    raw = psnr(both, "--weights", "raw")
    assert raw == psnr(bundled)  # the live weights are the bundled model's
    assert psnr(both) == psnr(both, "--weights", "ema") != raw
    assert (
        evaluate.main([str(bundled), "--data", str(hr_folder), "--weights", "ema", "--out", str(tmp_path / "x")]) == 2
    )
    assert "holds no moving-average weights" in capsys.readouterr().err


def _without_timings(data: dict) -> dict:
    """The parts of a quality/evaluate JSON that must not depend on which front end wrote it."""
    datasets = [
        {
            **ds,
            "strips": [Path(s).name for s in ds["strips"]],
            "images": [{k: v for k, v in r.items() if k != "seconds"} for r in ds["images"]],
            "mean": {k: v for k, v in ds["mean"].items() if k != "seconds"},
        }
        for ds in data["datasets"]
    ]
    return {
        "model": {k: v for k, v in data["model"].items() if k != "torch_threads"},
        "settings": data["settings"],
        "datasets": datasets,
    }


def test_evaluate_and_the_quality_benchmark_are_one_implementation(hr_folder, tmp_path, repo_root):
    """train.evaluate and benchmarks/quality.py --runner torch write the same numbers and tables."""
    from benchmarks import quality

    ckpt = str(repo_root / "models/eusr-compact.safetensors")
    flags = ["--data", str(hr_folder), "--strips", "1", "--threads", "1", "--name", "q"]
    assert evaluate.main([ckpt, "--out", str(tmp_path / "ev"), *flags]) == 0
    assert (
        quality.main(["--model", ckpt, "--runner", "torch", "--out", str(tmp_path / "qu"), "--allow-dirty", *flags])
        == 0
    )
    ev, qu = (json.loads((tmp_path / d / "q.json").read_text()) for d in ("ev", "qu"))
    assert _without_timings(ev) == _without_timings(qu)
    assert set(ev["environment"]) == set(qu["environment"])

    def table(d: str) -> list[str]:  # the Markdown table without its timing column
        lines = (tmp_path / d / "q.md").read_text().splitlines()
        return [ln.rsplit("|", 2)[0] for ln in lines if ln.startswith("|")]

    assert table("ev") == table("qu") and len(table("ev")) == 2 + 2 + 1
    assert (tmp_path / "ev/q_strips/eval_hr0_camera.png").read_bytes() == (
        tmp_path / "qu/q_strips/eval_hr0_camera.png"
    ).read_bytes()


def test_runtime_evaluation_scores_any_upscale_function(hr_folder, tmp_path):
    """The typed core without torch: a 'model' that is bicubic itself gains exactly nothing."""
    from runtime.evaluation import EvaluatedModel, EvaluationError, EvaluationOptions
    from runtime.evaluation import evaluate as run_evaluation
    from runtime.imresize import imresize
    from runtime.results import environment

    lines: list[str] = []
    model = EvaluatedModel(lambda lr: imresize(lr, 4.0), 4, {"path": "bicubic", "runner": "function"})
    report = run_evaluation(
        EvaluationOptions(data=[hr_folder], out=tmp_path, name="bic", strips=0),
        lambda: contextlib.nullcontext(model),
        environment=environment(),
        echo=lines.append,
    )
    (ds,) = report.data["datasets"]
    assert [r["psnr_y_gain"] for r in ds["images"]] == [0.0, 0.0] and ds["mean"]["niqe_gain"] == 0.0
    assert (
        json.loads(report.paths["json"].read_text())["datasets"][0]["images"][0]["psnr_y_model"]
        == ds["images"][0]["psnr_y_bicubic"]
    )
    assert lines[-1] == report.table and lines[0].startswith(f"{hr_folder.name}: 2 HR images")
    with pytest.raises(EvaluationError, match="strips must be an integer >= 0, got -1"):
        EvaluationOptions(data=[hr_folder], out=tmp_path, name="x", strips=-1)
    with pytest.raises(EvaluationError, match=r"--data .*nope: no such file or folder"):
        run_evaluation(
            EvaluationOptions(data=[tmp_path / "nope"], out=tmp_path, name="x"),
            lambda: pytest.fail("the model must not be opened before the data is found"),
            environment={},
        )


def test_train_evaluate_imports_neither_benchmarks_nor_torch_at_import():
    code = (
        "import sys, train.evaluate, runtime.evaluation, runtime.results; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('benchmarks', 'torch')); "
        "sys.exit(str(bad) if bad else 0)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert res.returncode == 0, res.stdout + res.stderr
