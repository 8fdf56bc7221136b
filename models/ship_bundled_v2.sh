#!/usr/bin/env bash
# Ships the second bundled model (issue 19) once models/train_bundled_v2.sh has finished its
# schedule: picks the weights, writes the bundled checkpoint, its ×4 ONNX and the INT8 variant,
# then prints the measurements to make from a clean clone (models/TRAINING_LOG.md, "After the
# schedule").
#
#   bash models/ship_bundled_v2.sh                 # after step 15000
#   bash models/ship_bundled_v2.sh --weights raw --halo 8
#
# Which weights (moving average or raw) is decided on data/photos/val only, from the last
# evaluation in models/bundled_v2/eval_log.jsonl: the one whose *smallest* PSNR-Y gain over
# bicubic across ×2/×4/×8 is larger (every path must beat bicubic; a mean would let a strong ×4
# hide a weak ×2). Smallest gains within 0.05 dB of each other count as a tie, which the larger
# ×4 gain breaks: ×4 is the path the ONNX and the runtime ship. (The tie margin was added at step
# 15000, where raw led EMA on the smallest gain by 0.005 dB, ×2 +0.280 vs +0.275, while EMA led
# on ×4 by 0.135 dB, +0.800 vs +0.665.) Set5/Set14/BSD100 never enter this choice.
#
# Options:
#   --weights W   ema or raw instead of the rule above
#   --halo H      recommended halo written into the ONNX (default 8, v1's seam-curve choice;
#                 re-measure with benchmarks/seams.py and rerun with --halo if the curve moves)
#   --force       ship although the schedule has not reached its last step
#   --no-int8     skip `python -m calibration bundle` (the INT8 test then fails until it runs)
#   --dry-run     only say which weights it would ship (their name on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."

WEIGHTS=""
HALO=8
FORCE=0
INT8=1
DRY=0
usage() { sed -n '/^# Options:/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --weights) WEIGHTS=${2:?--weights needs ema or raw}; shift 2 ;;
        --halo) HALO=${2:?--halo needs LR pixels}; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-int8) INT8=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$WEIGHTS" in "" | ema | raw) ;; *) echo "error: --weights expects ema or raw, got '$WEIGHTS'" >&2; exit 2 ;; esac
[[ "$HALO" =~ ^[0-9]+$ ]] || { echo "error: --halo expects a non-negative integer, got '$HALO'" >&2; exit 2; }

STATE=models/bundled_v2
FINAL=$(sed -n 's/^STAGE_END=(.* \([0-9]*\))$/\1/p' models/train_bundled_v2.sh)
CHOICE=$(python - "$STATE/eval_log.jsonl" "$FINAL" "$FORCE" "$WEIGHTS" <<'EOF'
import json, sys
path, final, force, given = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
records = [json.loads(line) for line in open(path)]
last = max(r["step"] for r in records)
if last < final and not force:
    sys.exit(f"error: {path} ends at step {last}, the schedule at {final}: train on, or pass --force")
gains = {}
for r in records:
    if r["step"] == last:
        gains.setdefault(r["weights"], {})[r["scale"]] = r["gain_db"]
print(f"step {last}, data/photos/val, PSNR-Y gain over bicubic (dB):", file=sys.stderr)
for w, g in sorted(gains.items()):
    row = "  ".join(f"x{s} {g[s]:+.3f}" for s in sorted(g))
    print(f"  {w:4s} {row}  (smallest {min(g.values()):+.3f})", file=sys.stderr)
TIE_DB = 0.05
best_min = max(min(g.values()) for g in gains.values())
near = [w for w in gains if min(gains[w].values()) >= best_min - TIE_DB]
choice = given or max(near, key=lambda w: gains[w][4])
why = "given" if given else ("larger smallest gain" if len(near) == 1 else f"smallest gains within {TIE_DB} dB: larger x4 gain")
print(f"weights: {choice} ({why})", file=sys.stderr)
print(choice)
EOF
)
[ "$DRY" = 1 ] && { echo "$CHOICE"; exit 0; }

echo "== checkpoint: models/eusr-compact.safetensors ($CHOICE weights of $STATE/last.safetensors)"
python -m train.slim "$STATE/last.safetensors" models/eusr-compact.safetensors --weights "$CHOICE"
echo "== ×4 ONNX: runtime/models/eusr-compact-x4.onnx (halo $HALO)"
python export/to_onnx.py models/eusr-compact.safetensors -o runtime/models/eusr-compact-x4.onnx --halo "$HALO"
if [ "$INT8" = 1 ]; then
    echo "== INT8 variant and its gate (python -m calibration bundle)"
    python -m calibration bundle
fi
ls -l models/eusr-compact.safetensors runtime/models/eusr-compact-x4*.onnx

cat <<EOF

Shipped. Commit these files, then measure from a clean clone (results must come from a clean tree):
  git clone . /tmp/v2 && cd /tmp/v2
  python benchmarks/seams.py --update-results              # the seam curve: is halo $HALO still the choice?
  python benchmarks/quality.py --model runtime/models/eusr-compact-x4.onnx --data data/photos/test --update-results
  python benchmarks/quality.py --model models/eusr-compact.safetensors --scale 2 --data data/photos/test --name quality_x2 --strips 1 --update-results
  python benchmarks/quality.py --model models/eusr-compact.safetensors --scale 8 --data data/photos/test --name quality_x8 --strips 1 --update-results
  python benchmarks/field_table.py SRBENCH --update-results # Set5/Set14/BSD100: issue 19's targets
  python benchmarks/border_band.py --update-results         # issue 16's border band
  python benchmarks/parity.py --update-results
and copy benchmarks/results/ back. Then the README's tables, docs/results.md and the demo image.
EOF
