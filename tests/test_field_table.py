"""benchmarks/field_table.py on a small stand-in for Set5/Set14/BSD100 made of real photos
(the benchmark sets themselves never enter the repository or its tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import field_table

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos" / "test"


@pytest.fixture(scope="module")
def srbench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set5/Set14/BSD100 in the SelfExSR layout: 96x96 crops of two colour photos and, in
    Set14, one grey photo (as Set14's img_003)."""
    root = tmp_path_factory.mktemp("srbench")
    crops = {
        "Set5": [("ihc", (100, 100))],
        "Set14": [("ihc", (300, 200)), ("camera", (200, 150))],
        "BSD100": [("hubble_crop", (120, 60))],
    }
    for name, items in crops.items():
        (root / name).mkdir()
        for i, (photo, (x, y)) in enumerate(items, 1):
            with Image.open(PHOTOS / f"{photo}.png") as im:
                im.crop((x, y, x + 96, y + 96)).save(root / name / f"img_{i:03d}_SRF_4_HR.png")
    return root


@pytest.mark.slow
def test_field_table_measures_every_set_beside_the_paper(srbench: Path, tmp_path: Path) -> None:
    assert field_table.main([str(srbench), "--scales", "4,8", "--out", str(tmp_path), "--allow-dirty"]) == 0
    data = json.loads((tmp_path / "field_table.json").read_text())
    assert data["runs"] == ["field_table_x4", "field_table_x8"]
    x4, x8 = data["summary"]["x4"], data["summary"]["x8"]
    assert list(x4["sets"]) == list(x8["sets"]) == ["Set5", "Set14", "BSD100"]
    assert x4["model"]["runner"] == "upscaler" and x8["model"]["runner"] == "torch"
    for block in (x4, x8):
        for e in block["sets"].values():
            assert np.isfinite(e["psnr_y_model"]) and np.isfinite(e["psnr_y_bicubic"])
            assert e["psnr_y_gain"] == pytest.approx(e["psnr_y_model"] - e["psnr_y_bicubic"])
    # the per-scale runs are the quality benchmark's own files
    per_image = json.loads((tmp_path / "field_table_x4.json").read_text())
    assert per_image["benchmark"] == "quality" and per_image["settings"]["scale"] == 4
    assert x4["sets"]["Set5"]["paper"]["EUSR"] == [32.352, 0.896]
    # the grey image is scored as it is; replicated to RGB its Y range shrinks to 219/255 and
    # its PSNR rises by 20 log10(255/219) = 1.32 dB (before rounding): half of that on a set of two
    set14 = x4["sets"]["Set14"]
    assert set14["grey_images"] == 1 and x4["sets"]["Set5"]["grey_images"] == 0
    assert 0.4 < set14["psnr_y_bicubic_grey_as_rgb"] - set14["psnr_y_bicubic"] < 0.9
    md = (tmp_path / "field_table.md").read_text()
    assert "## ×4, beside the paper's Table 2" in md and "## ×8" in md and "Set14 holds 1 grey image" in md
    assert "| Set5   |" in md and "32.352 / 0.896" in md


def test_missing_sets_say_where_to_get_them(srbench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert field_table.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--allow-dirty"]) == 2
    assert "no such folder" in capsys.readouterr().err
    partial = tmp_path / "partial"
    (partial / "Set5").mkdir(parents=True)
    assert field_table.main([str(partial), "--out", str(tmp_path / "o"), "--allow-dirty"]) == 2
    err = capsys.readouterr().err
    assert "no Set14, BSD100 folder(s)" in err and "SelfExSR" in err


@pytest.mark.parametrize("scales", ["3", "4,x", ""])
def test_bad_scales_are_usage_errors(srbench: Path, scales: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        field_table.main([str(srbench), "--scales", scales])
    assert exc.value.code == 2 and "--scales" in capsys.readouterr().err
