"""benchmarks/throughput.py: the CLI runs on the tiny config, writes consistent rows, and
refuses bad sizes. Fast on purpose (one 32×24 image, no warm-up, one repeat): it checks the
script, not the speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import throughput

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "throughput.py"
ENV_KEYS = {"date", "command", "host", "threads", "versions", "git"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("throughput")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--configs", "tiny", "--sizes", "32x24", "--warmup", "0", "--repeats", "1",
         "--threads", "1", "--out", str(out), "--name", "tp"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    data = json.loads((out / "tp.json").read_text()) if res.returncode == 0 else {}
    return res, data, out


def test_cli_runs_and_writes_results(tiny_run) -> None:
    res, data, out = tiny_run
    assert res.returncode == 0, res.stderr
    assert (out / "tp.md").is_file()
    assert ENV_KEYS <= set(data["environment"])
    assert data["models"]["tiny"]["config_name"] == "tiny"
    # The Markdown table is printed last and lists every mode.
    table = [ln for ln in res.stdout.rstrip().splitlines()[-5:] if ln.startswith("|")]
    assert len(table) == 2 + len(throughput.MODES)
    assert all(any(mode in ln for ln in table) for mode in throughput.MODES)


def test_rows_per_mode_and_ratios(tiny_run) -> None:
    res, data, _ = tiny_run
    assert res.returncode == 0, res.stderr
    rows = data["rows"]
    assert sorted(r["mode"] for r in rows) == sorted(throughput.MODES)
    by_mode = {r["mode"]: r for r in rows}
    torch_median = by_mode["torch-eager"]["median_s"]
    for r in rows:
        assert (r["config"], r["width"], r["height"]) == ("tiny", 32, 24)
        assert len(r["times_s"]) == 1
        assert r["min_s"] <= r["median_s"] <= r["p90_s"] <= r["max_s"]
        assert r["input_mp_per_s"] > 0 and r["output_mp_per_s"] > 0 and r["images_per_s"] > 0
        assert math.isclose(r["output_mp_per_s"], 16 * r["input_mp_per_s"], rel_tol=1e-9)
        assert r["torch_median_s"] == torch_median
        assert math.isclose(r["speedup_vs_torch"], r["torch_median_s"] / r["median_s"], rel_tol=1e-9)
        assert r["peak_rss_mib"] > 0
        assert r["max_abs_diff_vs_torch"] <= 2  # same model: uint8 outputs agree up to rounding
    assert by_mode["torch-eager"]["speedup_vs_torch"] == 1.0
    tiled = by_mode["ort-tiled"]
    assert math.isclose(tiled["tiled_overhead"], tiled["median_s"] / by_mode["ort-whole"]["median_s"], rel_tol=1e-9)
    assert by_mode["ort-whole"]["settings"] == {"tile": 32, "halo": 0}


@pytest.mark.parametrize("sizes", ["12y3", "0x5", "abc", "32x", ","])
def test_invalid_sizes_exit_2(sizes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        throughput.main(["--sizes", sizes, "--configs", "tiny"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and "WIDTHxHEIGHT" in err


def test_parse_sizes() -> None:
    assert throughput.parse_sizes("120x68, 240X135") == [(120, 68), (240, 135)]
