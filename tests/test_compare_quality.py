"""benchmarks/compare_quality.py: per-image changes against a baseline, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare_quality


def _quality_json(path: Path, values: dict[str, tuple[float, float]]) -> Path:
    """The part of the train.evaluate / quality.py schema the comparison reads."""
    images = [
        {"image": name, "psnr_y_model": p, "niqe_model": n, "ssim_y_model": 0.5} for name, (p, n) in values.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"datasets": [{"name": "test", "images": images}]}))
    return path


def test_changes_means_and_improved_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _quality_json(tmp_path / "base.json", {"a": (30.0, 6.0), "b": (40.0, 8.0)})
    run = _quality_json(tmp_path / "r1" / "evaluate.json", {"b": (39.0, 9.0), "a": (29.5, 5.0)})  # order differs
    assert (
        compare_quality.main([str(base), str(run), "--out", str(tmp_path / "out"), "--name", "c", "--allow-dirty"]) == 0
    )
    result = json.loads((tmp_path / "out" / "c.json").read_text())
    assert result["images"] == ["test/a", "test/b"]
    niqe, psnr = result["runs"]["r1"]["niqe"], result["runs"]["r1"]["psnr_y"]
    assert niqe["deltas"] == [-1.0, 1.0] and niqe["mean_delta"] == 0.0 and niqe["improved"] == 1  # lower NIQE is better
    assert psnr["deltas"] == [-0.5, -1.0] and psnr["mean_delta"] == -0.75 and psnr["improved"] == 0
    md = (tmp_path / "out" / "c.md").read_text()
    assert "| test/a" in md and "-1.000" in md and "Improved on: r1 1 of 2." in md
    assert (tmp_path / "out" / "c.png").stat().st_size > 0
    assert "NIQE: r1 +0.000 (1/2 improved)" in capsys.readouterr().out


def test_refuses_runs_that_score_other_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _quality_json(tmp_path / "base.json", {"a": (30.0, 6.0), "b": (40.0, 8.0)})
    run = _quality_json(tmp_path / "run.json", {"a": (30.0, 6.0)})
    assert compare_quality.main([str(base), str(run), "--out", str(tmp_path), "--allow-dirty"]) == 2
    assert f"{run}: lacks images the baseline {base} scores: test/b" in capsys.readouterr().err
    assert compare_quality.main([str(base), str(tmp_path / "none.json"), "--out", str(tmp_path), "--allow-dirty"]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"rows": []}')
    assert compare_quality.main([str(base), str(tmp_path / "other.json"), "--out", str(tmp_path), "--allow-dirty"]) == 2
    assert "expected the JSON of train.evaluate" in capsys.readouterr().err
    assert (
        compare_quality.main([str(base), str(run), str(run), "--labels", "x", "--out", str(tmp_path), "--allow-dirty"])
        == 2
    )
    assert "--labels: 1 names for 2 runs" in capsys.readouterr().err
