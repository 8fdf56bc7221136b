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
        [
            sys.executable,
            str(SCRIPT),
            "--configs",
            "tiny",
            "--sizes",
            "32x24",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
            "--name",
            "tp",
            "--allow-dirty",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    data = json.loads((out / "tp.json").read_text()) if res.returncode == 0 else {}
    return res, data, out


@pytest.mark.slow
def test_cli_runs_and_writes_results(tiny_run) -> None:
    res, data, out = tiny_run
    assert res.returncode == 0, res.stderr
    assert (out / "tp.md").is_file()
    assert ENV_KEYS <= set(data["environment"])
    assert data["models"]["tiny"]["config_name"] == "tiny"
    # The Markdown table is printed last and lists every mode.
    table = [ln for ln in res.stdout.rstrip().splitlines()[-(2 + len(throughput.MODES)) :] if ln.startswith("|")]
    assert len(table) == 2 + len(throughput.MODES)
    assert all(any(mode in ln for ln in table) for mode in throughput.MODES)


@pytest.mark.slow
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
    auto = by_mode["ort-auto"]
    assert auto["settings"]["tile"] == "auto" and auto["settings"]["windows"] == 1  # 32x24 fits: one window
    h = auto["settings"]["halo"]  # the one window carries the mirrored border: (32+2h) x (24+2h) pixels
    assert auto["overlap"] == pytest.approx((32 + 2 * h) * (24 + 2 * h) / (32 * 24)) and h > 0
    assert "whole image" in auto["settings"]["plan"] and auto["settings"]["border"] == h
    assert math.isclose(auto["vs_halo_arithmetic"], auto["tiled_overhead"] / auto["overlap"], rel_tol=1e-9)
    assert math.isclose(tiled["vs_halo_arithmetic"], tiled["tiled_overhead"] / tiled["overlap"], rel_tol=1e-9)


@pytest.mark.parametrize("sizes", ["12y3", "0x5", "abc", "32x", ","])
def test_invalid_sizes_exit_2(sizes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        throughput.main(["--sizes", sizes, "--configs", "tiny"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and "WIDTHxHEIGHT" in err


def test_parse_sizes() -> None:
    assert throughput.parse_sizes("120x68, 240X135") == [(120, 68), (240, 135)]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("throughput_sweep")
    res = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--configs",
            "tiny",
            "--sizes",
            "40x30",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--tiles",
            "16,32",
            "--halos",
            "0,4",
            "--batches",
            "1,2",
            "--io",
            "float32-nchw,uint8-nhwc",
            "--precisions",
            "fp32,fp16",
            "--out",
            str(out),
            "--name",
            "sw",
            "--no-plot",
            "--allow-dirty",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=180,
    )
    data = json.loads((out / "sw.json").read_text()) if res.returncode == 0 else {}
    return res, data, out


@pytest.mark.slow
def test_tiling_sweep_rows_and_columns(tiny_sweep) -> None:
    res, data, out = tiny_sweep
    assert res.returncode == 0, res.stderr
    rows = data["tiling_rows"]
    combos = [(r["varied"], r["tile"], r["halo"], r["batch"], r["io"], r["precision"]) for r in rows]
    # The default (tile 128, the tiny config's halo 16) first, the 2×2 grid, then one row per other axis value.
    assert combos == [
        ("default", 128, 16, 1, "float32-nchw", "fp32"),
        ("tile/halo", 16, 0, 1, "float32-nchw", "fp32"),
        ("tile/halo", 16, 4, 1, "float32-nchw", "fp32"),
        ("tile/halo", 32, 0, 1, "float32-nchw", "fp32"),
        ("tile/halo", 32, 4, 1, "float32-nchw", "fp32"),
        ("batch", 128, 16, 2, "float32-nchw", "fp32"),
        ("io", 128, 16, 1, "uint8-nhwc", "fp32"),
        ("precision", 128, 16, 1, "float32-nchw", "fp16"),
    ]
    assert {v["precision"] + " " + v["io"] for v in data["models"]["tiny"]["onnx_variants"]} == {
        "fp16 float32-nchw",
        "fp32 uint8-nhwc",
    }
    md = (out / "sw.md").read_text()
    assert "## Tiling sweep (ort-tiled)" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| config") and "speed vs default" in ln)
    assert [c.strip() for c in header.strip("|").split("|")] == throughput.TILING_HEADERS
    assert sum(ln.startswith("| tiny") for ln in md.splitlines()) == len(rows) + len(throughput.MODES)
    # Rows without the sweep flags are what they were: the three modes.
    assert sorted(r["mode"] for r in data["rows"]) == sorted(throughput.MODES)


@pytest.mark.slow
def test_tiling_sweep_ratios_use_rows_of_the_same_run(tiny_sweep) -> None:
    res, data, _ = tiny_sweep
    assert res.returncode == 0, res.stderr
    main = {r["mode"]: r for r in data["rows"]}
    rows = data["tiling_rows"]
    default = next(r for r in rows if r["varied"] == "default")
    for r in rows:
        assert len(r["times_s"]) == 1
        assert r["default_median_s"] == default["median_s"]
        assert r["torch_median_s"] == main["torch-eager"]["median_s"]
        assert r["ort_whole_median_s"] == main["ort-whole"]["median_s"]
        assert r["main_table_tiled_median_s"] == main["ort-tiled"]["median_s"]
        assert math.isclose(r["speed_vs_default"], default["median_s"] / r["median_s"], rel_tol=1e-9)
        assert math.isclose(r["speedup_vs_torch"], r["torch_median_s"] / r["median_s"], rel_tol=1e-9)
        assert math.isclose(r["time_vs_whole"], r["median_s"] / r["ort_whole_median_s"], rel_tol=1e-9)
        assert math.isclose(r["nominal_overlap"], (r["tile"] + 2 * r["halo"]) ** 2 / r["tile"] ** 2, rel_tol=1e-9)
        assert r["actual_overlap"] >= 1.0 and r["tiles"] >= 1 and r["peak_rss_mib"] > 0
        window_mp = r["tiles"] * r["window"][0] * r["window"][1] / 1e6
        assert math.isclose(r["ms_per_window_mp"], r["median_s"] * 1e3 / window_mp, rel_tol=1e-9)
    assert default["speed_vs_default"] == 1.0
    # A halo at least the model's receptive-field need keeps the tiled output equal to torch up to rounding.
    assert default["max_abs_diff_vs_torch"] <= 2
    # 40x30 in tiles of 16 without halo: 3 × 2 windows of 16² for 1200 pixels.
    t16 = next(r for r in rows if (r["tile"], r["halo"]) == (16, 0))
    assert t16["tiles"] == 6 and math.isclose(t16["actual_overlap"], 6 * 16 * 16 / 1200, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--tiles", "0,64"], "--tiles"),
        (["--halos", "-1"], "--halos"),
        (["--batches", "0"], "--batches"),
        (["--io", "float16-nchw"], "--io"),
        (["--precisions", "int8"], "--precisions"),
        (["--tiles", "64", "--modes", "ort-whole"], "--modes"),
    ],
)
def test_invalid_sweep_flags_exit_2(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        throughput.main(["--configs", "tiny", *argv])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


# --------------------------------------------------------------------------- timing and RSS helpers


def test_time_calls_warms_up_then_syncs_inside_each_timed_interval() -> None:
    from benchmarks.timing import time_calls

    events: list[str] = []
    calls = iter(range(100))

    def fn() -> int:
        events.append("call")
        return next(calls)

    times, last = time_calls(fn, 2, 3, sync=lambda: events.append("sync"))
    assert events == ["call", "call", "sync"] + ["call", "sync"] * 3
    assert len(times) == 3 and all(t >= 0 for t in times) and last == 4
    events.clear()
    assert time_calls(fn, 0, 1)[1] == 5 and events == ["call"]  # no hook: no sync


def test_summarize_and_rates() -> None:
    from benchmarks.timing import percentile, rates, summarize

    s = summarize([0.4, 0.1, 0.2, 0.3], 100, 50, 4)
    assert (s["min_s"], s["max_s"]) == (0.1, 0.4) and s["median_s"] == pytest.approx(0.25)
    assert s["p90_s"] == pytest.approx(0.37) == percentile([0.1, 0.2, 0.3, 0.4], 90)
    assert s["input_mp_per_s"] == pytest.approx(0.005 / 0.25) and s["images_per_s"] == pytest.approx(4.0)
    assert s["output_mp_per_s"] == pytest.approx(16 * s["input_mp_per_s"])
    assert rates(0.0, 10, 10, 4)["images_per_s"] == math.inf


def test_row_peak_rss_follows_a_reset() -> None:
    import mmap

    from benchmarks.rss import peak_rss_mib, reset_peak_rss, row_peak_rss_mib

    before = reset_peak_rss()
    if before is None:
        pytest.skip("no /proc/self/clear_refs here")
    # 64 MiB of fresh anonymous pages, each touched: a heap block could reuse pages that a
    # long test session already holds resident, and then the RSS would not move.
    block = mmap.mmap(-1, 64 << 20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    peak = row_peak_rss_mib()
    assert peak is not None and peak >= before + 60 and peak_rss_mib() >= peak - 1
    block.close()
