"""Reproduce the first steps of the bundled v2 training and compare them bit-exactly with a record.

Issue 19's acceptance: "the training command that made the model reproduces its first 200 steps
bit-exactly from the committed data". This runs that command itself
(``models/train_bundled_v2.sh --steps N`` into a fresh temporary run folder, nothing published)
and hashes every tensor of the checkpoint it leaves (weights, Adam moments, moving average,
torch RNG) with the numpy RNG state, then compares with the digest recorded below.

    python models/check_first_steps.py              # 200 steps, a few minutes on two cores
    python models/check_first_steps.py --steps 5    # the short variant (the slow test)
    python models/check_first_steps.py --steps 200 --record   # print a new reference entry

Exit status: 0 match; 1 mismatch; 3 mismatch where the reference was recorded with another
torch or CPU instruction set (floating-point kernels differ there, so bit-exactness across them
is not expected); 2 bad arguments or no reference for that number of steps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a file from a checkout: import this checkout's train/runtime
SCRIPT = REPO / "models" / "train_bundled_v2.sh"
TRAIN_DIRS = ("data/photos/train", "data/photos/train_extra")

# Recorded with `python models/check_first_steps.py --steps N --record` (see models/TRAINING_LOG.md),
# 2026-12-02 on the project's 2-core AMD EPYC machine.
REFERENCES: dict[int, dict[str, object]] = {
    200: {
        "state_sha256": "2e7f24d2e0584e0143690b1b7dba0abc7394324e6236e4547d95ee9a569474e2",
        "losses": [54.615019149780274, 17.477624111175537, 12.64064531326294, 10.96718397140503],
        "data_sha256": "6c2b620267f4a17cd73bfe8f178fd515ac08b025354e481a30dd23cdecb4178b",
        "torch": "2.13.0+cpu",
        "cpu_capability": "AVX512",
        "cpu_vendor": "AuthenticAMD",
        "amx": "no",
    },
    5: {
        "state_sha256": "973fb6fd24fbc6308ee07979e4b0dc2b7d0b7b7681f6533e104ad91563ca2d1e",
        "losses": [178.99254913330077],
        "data_sha256": "6c2b620267f4a17cd73bfe8f178fd515ac08b025354e481a30dd23cdecb4178b",
        "torch": "2.13.0+cpu",
        "cpu_capability": "AVX512",
        "cpu_vendor": "AuthenticAMD",
        "amx": "no",
    },
}


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's vendor and flags from /proc/cpuinfo ('' and none elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("vendor_id", ""), set(fields.get("flags", "").split())


def environment() -> dict[str, str]:
    """What decides the floating-point results besides the code: torch and the CPU kernels it
    picks. torch's capability says AVX512 on both of this workplace's CPU kinds, but oneDNN's
    convolutions differ between an AMD EPYC and an Intel Xeon with AMX (seen: the 5-step state
    differs, the first loss in its 7th digit), so the vendor and AMX count too."""
    import torch

    vendor, flags = _cpuinfo()
    return {
        "torch": torch.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_vendor": vendor,
        "amx": "yes" if "amx_tile" in flags else "no",
    }


def data_digest() -> str:
    """SHA-256 over the training images' names and contents, in the order training lists them."""
    from runtime.utils import file_sha256
    from train.data import list_image_sources

    h = hashlib.sha256()
    for path in list_image_sources([REPO / d for d in TRAIN_DIRS]):
        h.update(f"{path.relative_to(REPO).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def state_digest(checkpoint: Path) -> tuple[int, str]:
    """(step, SHA-256 of every tensor's name, dtype, shape and bytes in name order, then the
    numpy RNG state): equal digests mean a bit-identical training state."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(checkpoint), "pt") as f:
        meta = f.metadata()
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(meta.get("rng_numpy", "").encode())
    return int(json.loads(meta["train_state"])["step"]), h.hexdigest()


def run_first_steps(steps: int, run_dir: Path) -> list[float]:
    """Run the schedule's first ``steps`` steps into the empty ``run_dir``; the logged losses."""
    cmd = [
        "bash",
        str(SCRIPT),
        "--steps",
        str(steps),
        "--hours",
        "0",
        "--run-dir",
        str(run_dir),
        "--state-dir",
        "",
        "--no-eval",
    ]
    print("running:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    log = run_dir / "train_log.jsonl"
    return [json.loads(line)["loss"] for line in log.read_text().splitlines() if line.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        type=int,
        default=200,
        help=f"steps reproduced (a recorded reference must exist: {sorted(REFERENCES) or 'none yet'})",
    )
    p.add_argument("--record", action="store_true", help="print the reference entry of this run instead of comparing")
    p.add_argument(
        "--keep", type=Path, default=None, help="run in this (new) folder and keep it, instead of a temporary one"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.steps < 1:
        print(f"error: --steps must be at least 1, got {args.steps}", file=sys.stderr)
        return 2
    reference = REFERENCES.get(args.steps)
    if reference is None and not args.record:
        print(f"error: no reference recorded for --steps {args.steps}; recorded: {sorted(REFERENCES)}", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists():
        print(f"error: --keep {args.keep}: exists already; the run must start from nothing", file=sys.stderr)
        return 2
    data = data_digest()
    with tempfile.TemporaryDirectory(prefix="bundled_v2_check_") as tmp:
        run_dir = args.keep or Path(tmp) / "run"
        losses = run_first_steps(args.steps, run_dir)
        step, digest = state_digest(run_dir / "last.safetensors")
    if step != args.steps:
        print(f"error: the run stopped at step {step}, expected {args.steps}", file=sys.stderr)
        return 1
    entry = {"state_sha256": digest, "losses": losses, "data_sha256": data, **environment()}
    if args.record:
        print(f"    {args.steps}: {json.dumps(entry)},")
        return 0
    if digest == reference["state_sha256"]:
        print(f"OK: steps 1-{args.steps} reproduce bit-exactly (state {digest[:16]}…)")
        return 0
    print(f"MISMATCH after {args.steps} steps: state {digest}, recorded {reference['state_sha256']}")
    if data != reference["data_sha256"]:
        print("  the training images differ from those of the reference (data/photos/train, train_extra)")
    first = next((i for i, (a, b) in enumerate(zip(losses, reference["losses"])) if a != b), None)
    if first is not None:
        print(f"  logged losses first differ at record {first}: {losses[first]!r} vs {reference['losses'][first]!r}")
    env = environment()
    if any(env[k] != reference[k] for k in env):
        print(
            f"  reference recorded with { ({k: reference[k] for k in env}) }, this is {env}: floating-point kernels "
            "differ between those, so bit-exactness is not expected here"
        )
        return 3
    return 1


if __name__ == "__main__":
    sys.exit(main())
