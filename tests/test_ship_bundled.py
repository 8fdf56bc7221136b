"""models/ship_bundled_v2.sh: the weights choice on the committed evaluation log, without
writing anything (--dry-run), and its argument errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "models" / "ship_bundled_v2.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_dry_run_picks_the_larger_smallest_gain_and_breaks_near_ties_by_x4() -> None:
    result = _run("--dry-run", "--force")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (REPO / "models/bundled_v2/eval_log.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in records)
    gains: dict[str, dict[int, float]] = {}
    for r in records:
        if r["step"] == last:
            gains.setdefault(r["weights"], {})[r["scale"]] = r["gain_db"]
    best_min = max(min(g.values()) for g in gains.values())
    near = [w for w, g in gains.items() if min(g.values()) >= best_min - 0.05]
    expected = max(near, key=lambda w: gains[w][4])
    assert result.stdout.strip() == expected
    assert f"step {last}, data/photos/val" in result.stderr and f"weights: {expected}" in result.stderr
    assert _run("--dry-run", "--force", "--weights", "ema").stdout.strip() == "ema"


def test_bad_arguments_are_usage_errors() -> None:
    for args, needle in (
        (("--weights", "foo"), "expects ema or raw"),
        (("--halo", "x"), "--halo expects"),
        (("--nope",), "unknown argument"),
    ):
        result = _run(*args)
        assert result.returncode == 2 and needle in result.stderr, (args, result.stderr)
