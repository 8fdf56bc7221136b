"""train.evaluate: the paper's evaluation of a checkpoint (PSNR/SSIM-Y, NIQE, bicubic, strips)."""

from __future__ import annotations

import json
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
    rc = evaluate.main([str(repo_root / "models/eusr-compact.safetensors"), "--data", str(hr_folder),
                        "--out", str(out), "--strips", "1", "--threads", "1"])
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
    rc = evaluate.main([str(repo_root / "models/eusr-compact.safetensors"), "--data", str(hr_folder),
                        "--scale", "3", "--out", str(tmp_path), "--strips", "0"])
    assert rc == 2
    assert "scales [2, 4, 8], not 3" in capsys.readouterr().err


def test_evaluate_weights_picks_the_moving_average_or_the_raw_weights(hr_folder, tmp_path, repo_root, capsys):
    """A --ema run's checkpoint holds both; auto/ema score the average, raw the live weights."""
    from train.checkpoint import load_model, save_checkpoint

    bundled = repo_root / "models/eusr-compact.safetensors"
    model = load_model(bundled)
    ema = {k: v * 0.9 if k.endswith("outputs.4.weight") else v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert any(k.endswith("outputs.4.weight") for k in ema)
    both = save_checkpoint(tmp_path / "both.safetensors", model, config=model.config.to_dict(), config_name="compact",
                           ema_state={k: v.clone() for k, v in ema.items()})

    def psnr(ckpt: Path, *flags: str) -> float:
        out = tmp_path / f"ev_{ckpt.stem}_{'_'.join(flags) or 'auto'}"
        assert evaluate.main([str(ckpt), "--data", str(hr_folder), "--out", str(out), "--strips", "0", "--threads", "1", *flags]) == 0
        data = json.loads((out / "evaluate.json").read_text())
        assert data["model"]["weights"] == (flags[1] if flags else "auto")
        return data["datasets"][0]["mean"]["psnr_y_model"]

    raw = psnr(both, "--weights", "raw")
    assert raw == psnr(bundled)  # the live weights are the bundled model's
    assert psnr(both) == psnr(both, "--weights", "ema") != raw
    assert evaluate.main([str(bundled), "--data", str(hr_folder), "--weights", "ema", "--out", str(tmp_path / "x")]) == 2
    assert "holds no moving-average weights" in capsys.readouterr().err
