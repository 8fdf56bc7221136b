#!/usr/bin/env bash
# The second bundled model (issue 19): the compact EUSR on the 47 committed photos
# (data/photos/train + data/photos/train_extra), validated on data/photos/val, in resumable
# pieces on two CPU cores. Plan, measurements and the record of every piece:
# models/TRAINING_LOG.md.
#
#   nice -n 10 bash models/train_bundled_v2.sh --hours 2      # one piece of about two hours
#   git add models/bundled_v2 && git commit -m "bundled v2: steps A-B" -- models/bundled_v2
#
# Each invocation continues from the furthest checkpoint of the run folder (runs/bundled_v2,
# git-ignored) and the committed state (models/bundled_v2), trains in chunks of 1000 (stage 1)
# or 250 steps (one `python -m train.pretrain --resume` each; resume is bit-exact, so how a run is cut
# into pieces and chunks does not change a single weight), starts no chunk it cannot finish
# inside the budget, and copies checkpoint and logs to models/bundled_v2 after every chunk.
#
# Schedule (compact, batch 16, 48×48 LR patches, seed 0, 2 threads, patches drawn by area,
# moving average of the weights with decay 0.999 throughout):
#   stage 1   steps     1-12000  ×4 only; lr 4e-4, halved at 8000
#   stage 2a  steps 12001-14000  ×2/×4/×8 drawn 0.3/0.2/0.5; ×2 and ×8 warm-started from ×4's
#                                modules at step 12000; lr 1e-4
#   stage 2b  steps 14001-15000  as 2a, lr 5e-5; the moving average restarts from the raw
#                                weights of step 14000 (added during steps 12909-13150, before 2b began:
#                                the average of 2a mixes ×2/×8 weights from before and right
#                                after the warm start, -15.9/-6.8 dB vs bicubic on val at 12908)
# (Stage 1 was planned to 20000 with a second halving at 16000 and cut to 12000 at step 9000,
# when its EMA weights already cleared issue 19's ×4 targets at step 7700: steps 1-12000 are
# the same under both plans, and the hours go to ×2/×8, which only stage 2 trains.)
# Measured step costs (2 threads, no other load; they vary by ±20% from run to run on this
# host): ×2 0.42-0.60 s, ×4 1.13-1.61 s, ×8 7.9-9.5 s. At ×4 1.3 s and ×8 8.7 s, stage 1 takes
# ≈ 7.2 h and stage 2 (mean 4.8 s/step) ≈ 4.0 h of full two-core time; under `nice -n 10` on
# the shared machine the first 200 steps took 2.56 s each, about twice that.
#
# Options:
#   --hours H       wall-clock budget of this piece (default 2; 0 = no limit)
#   --steps N       at most N steps in this piece (default: no limit; 0 = only sync and publish)
#   --run-dir DIR   working run folder (default runs/bundled_v2)
#   --state-dir DIR committed copy of checkpoint and logs (default models/bundled_v2; '' = none)
#   --no-eval       skip the per-chunk ×2/×4/×8 evaluation on data/photos/val (eval_log.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."

HOURS=2
MAX_STEPS=""
RUN=runs/bundled_v2
STATE=models/bundled_v2
EVAL=1
ARGS_GIVEN=$(printf '%q ' "$@")

usage() { sed -n '/^# Options:/,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --hours) HOURS=${2:?--hours needs a number}; shift 2 ;;
        --steps) MAX_STEPS=${2:?--steps needs a number}; shift 2 ;;
        --run-dir) RUN=${2:?--run-dir needs a folder}; shift 2 ;;
        --state-dir) STATE=${2-}; shift 2 ;;
        --no-eval) EVAL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
BUDGET_S=$(awk -v h="$HOURS" 'BEGIN { if (h !~ /^[0-9]*\.?[0-9]+$/) exit 1; printf "%d", h * 3600 }') ||
    { echo "error: --hours expects a non-negative number of hours, got '$HOURS'" >&2; exit 2; }
if [ -n "$MAX_STEPS" ] && ! [[ "$MAX_STEPS" =~ ^[0-9]+$ ]]; then
    echo "error: --steps expects a non-negative integer, got '$MAX_STEPS'" >&2
    exit 2
fi

# --- the schedule: never change a stage that a committed checkpoint has entered ------------
DATA=(--train-dir data/photos/train data/photos/train_extra --sample-by area --patch 48 --batch-size 16
      --val-dir data/photos/val --val-scale 4)
FIXED=(--config compact --seed 0 --threads 2 --device cpu --ema 0.999 --quiet)
STAGE_NAMES=(1 2a 2b)
STAGE_END=(12000 14000 15000)
STAGE_CHUNK=(1000 250 250)
STAGE_MS_PER_STEP=(1700 6200 6200)   # a first guess of a chunk's wall time (measured ×1.3), until one is timed
STAGE_FLAGS=(
    "--scales 4 --lr 4e-4 --lr-halve-every 8000 --log-every 50 --val-every 500 --save-every 100"
    "--scales 2,4,8 --scale-weights 0.3,0.2,0.5 --lr 1e-4 --lr-halve-every 1000000 --log-every 25 --val-every 250 --save-every 50"
    "--scales 2,4,8 --scale-weights 0.3,0.2,0.5 --lr 5e-5 --lr-halve-every 1000000 --log-every 25 --val-every 250 --save-every 50"
)
STAGE_EVAL_SCALES=("4" "2,4,8" "2,4,8")
WARM_START_AT=12000                  # the step whose checkpoint stage 2a copies ×4 into ×2 and ×8 from
EMA_RESTART_AT=14000                 # the step whose raw weights stage 2b's moving average starts from
FINAL=${STAGE_END[-1]}
LOGS=(train_log.jsonl val_log.jsonl eval_log.jsonl pieces.jsonl)

ckpt_step() {  # the training step saved in a checkpoint (0 when there is none)
    python - "$1" <<'PY'
import json, sys
from pathlib import Path
from safetensors import safe_open
path = Path(sys.argv[1])
if not path.is_file():
    print(0)
else:
    with safe_open(str(path), "pt") as f:
        print(int(json.loads(f.metadata().get("train_state", "{}")).get("step", 0)))
PY
}

trim_logs() {  # drop log records past the checkpoint's step (left by a piece killed between saves)
    python - "$1" "$2" "${LOGS[@]}" <<'PY'
import json, sys
from pathlib import Path
folder, step = Path(sys.argv[1]), int(sys.argv[2])
for name in sys.argv[3:]:
    path = folder / name
    if not path.is_file() or name == "pieces.jsonl":
        continue
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    kept = [l for l in lines if json.loads(l).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(l + "\n" for l in kept))
        print(f"{path}: dropped {len(lines) - len(kept)} record(s) after step {step}")
PY
}

evaluate() {  # PSNR-Y on data/photos/val of every trained path, moving-average and raw weights
    python - "$RUN" "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
import torch
from train.checkpoint import load_checkpoint, load_model
from train.validation import Validator
torch.set_num_threads(2)
run, stage, scales = Path(sys.argv[1]), sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
ckpt = run / "last.safetensors"
step = int(load_checkpoint(ckpt).train_state["step"])
validators = {s: Validator(Path("data/photos/val"), s) for s in scales}
with (run / "eval_log.jsonl").open("a") as log:
    for weights in ("ema", "raw"):
        model = load_model(ckpt, weights=weights)
        for s, validate in validators.items():
            res = validate(model, torch.device("cpu"))
            log.write(json.dumps({"step": step, "stage": stage, "weights": weights, "scale": s, **res}) + "\n")
            print(f"eval step {step} ×{s} {weights}: PSNR-Y {res['psnr_y']:.3f} dB (gain {res['gain_db']:+.3f})")
PY
}

copy_state() {  # copy checkpoint and logs from folder $1 to folder $2 (each file replaced atomically)
    mkdir -p "$2"
    for name in last.safetensors args.json "${LOGS[@]}"; do
        if [ -f "$1/$name" ]; then
            cp "$1/$name" "$2/.$name.tmp" && mv "$2/.$name.tmp" "$2/$name"
        fi
    done
}

# --- continue from the furthest state -------------------------------------------------------
mkdir -p "$RUN"
run_step=$(ckpt_step "$RUN/last.safetensors")
if [ -n "$STATE" ]; then
    state_step=$(ckpt_step "$STATE/last.safetensors")
    if [ "$state_step" -gt "$run_step" ]; then
        echo "continuing from $STATE (step $state_step; $RUN was at step $run_step)"
        copy_state "$STATE" "$RUN"
        run_step=$state_step
    elif [ "$run_step" -gt "$state_step" ]; then
        echo "note: $RUN (step $run_step) is ahead of $STATE (step $state_step): continuing it; this piece publishes both"
    fi
fi
trim_logs "$RUN" "$run_step"
START_STEP=$run_step
T0=$SECONDS
echo "piece: step $START_STEP of $FINAL, budget ${HOURS} h${MAX_STEPS:+, at most $MAX_STEPS steps}; load: $(cut -d' ' -f1-3 /proc/loadavg)"

measured_stage=""
rate_ms=0
while :; do
    cur=$(ckpt_step "$RUN/last.safetensors")
    stage=-1
    for i in "${!STAGE_END[@]}"; do
        if [ "$cur" -lt "${STAGE_END[$i]}" ]; then stage=$i; break; fi
    done
    [ "$stage" -ge 0 ] || { echo "schedule complete: step $cur"; break; }
    target=$(( cur + STAGE_CHUNK[stage] ))
    [ "$target" -le "${STAGE_END[$stage]}" ] || target=${STAGE_END[$stage]}
    if [ -n "$MAX_STEPS" ]; then
        last=$(( START_STEP + MAX_STEPS ))
        [ "$cur" -lt "$last" ] || break
        [ "$target" -le "$last" ] || target=$last
    fi
    if [ "$BUDGET_S" -gt 0 ]; then
        [ "$measured_stage" = "$stage" ] || rate_ms=${STAGE_MS_PER_STEP[$stage]}
        fit=$(( (BUDGET_S - (SECONDS - T0)) * 1000 / rate_ms ))
        if [ "$fit" -lt 10 ]; then echo "budget spent: no chunk of 10 steps fits in the time left"; break; fi
        [ "$target" -le $(( cur + fit )) ] || target=$(( cur + fit ))
    fi
    resume=()
    [ "$cur" -eq 0 ] || resume=(--resume "$RUN/last.safetensors")
    [ "$cur" -ne "$WARM_START_AT" ] || [ "$stage" -ne 1 ] || resume+=(--warm-start-from 4)
    [ "$cur" -ne "$EMA_RESTART_AT" ] || [ "$stage" -ne 2 ] || resume+=(--ema-restart)
    # shellcheck disable=SC2206  # the stage's flags are one word-split string by design
    flags=(${STAGE_FLAGS[$stage]})
    echo "stage ${STAGE_NAMES[$stage]}: steps $(( cur + 1 ))-$target"
    c0=$SECONDS
    python -m train.pretrain "${FIXED[@]}" "${DATA[@]}" "${flags[@]}" --steps "$target" --out "$RUN" "${resume[@]}"
    if [ "$EVAL" -eq 1 ]; then evaluate "${STAGE_NAMES[$stage]}" "${STAGE_EVAL_SCALES[$stage]}"; fi
    rate_ms=$(( (SECONDS - c0) * 1000 / (target - cur) ))   # start-up, validation and evaluation included
    [ "$rate_ms" -gt 0 ] || rate_ms=1
    measured_stage=$stage
    # publish after every chunk: a piece killed later (a session that ends) still leaves its
    # finished chunks in the committed state, not only in the git-ignored run folder
    if [ -n "$STATE" ]; then copy_state "$RUN" "$STATE"; fi
done

# --- record the piece and publish -----------------------------------------------------------
END_STEP=$(ckpt_step "$RUN/last.safetensors")
WALL=$(( SECONDS - T0 ))
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- train runtime models/train_bundled_v2.sh data 2>/dev/null || COMMIT="$COMMIT+dirty"
if [ "$END_STEP" -gt "$START_STEP" ]; then
    python - "$RUN" "$START_STEP" "$END_STEP" "$WALL" "$COMMIT" "$ARGS_GIVEN" "$(nice)" <<'PY'
import datetime, json, sys
from pathlib import Path
run, start, end, wall, commit, args, niceness = Path(sys.argv[1]), *map(int, sys.argv[2:5]), *sys.argv[5:]
vals = [json.loads(l) for l in (run / "val_log.jsonl").read_text().splitlines() if l.strip()]
val = vals[-1] if vals else {}
command = f"nice -n {niceness} bash models/train_bundled_v2.sh {args}".strip()
piece = {"date": datetime.date.today().isoformat(), "commit": commit, "command": command, "from_step": start,
         "to_step": end, "wall_s": wall, "s_per_step": round(wall / (end - start), 3),
         "val_psnr_y_x4": val.get("psnr_y"), "val_gain_db_x4": val.get("gain_db")}
with (run / "pieces.jsonl").open("a") as f:
    f.write(json.dumps(piece) + "\n")
gain = f"{val['psnr_y']:.3f} ({val['gain_db']:+.3f})" if val else "-"
print("row for models/TRAINING_LOG.md:")
print(f"| {piece['date']} | {commit} | `{command}` | {start} → {end} | {wall // 3600}:{wall % 3600 // 60:02d} "
      f"({piece['s_per_step']} s/step) | {gain} |")
PY
fi
if [ -n "$STATE" ]; then
    copy_state "$RUN" "$STATE"
    echo "published step $END_STEP to $STATE ($(du -h "$STATE/last.safetensors" | cut -f1)); commit it:"
    echo "  git add $STATE && git commit -m \"bundled v2: steps $START_STEP-$END_STEP\" -- $STATE"
fi
echo "piece done: steps $START_STEP → $END_STEP in ${WALL} s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
