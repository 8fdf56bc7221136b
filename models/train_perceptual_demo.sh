#!/usr/bin/env bash
# Demonstration of phase 3 (4PP-EUSR perceptual fine-tuning) on two CPU cores: the paper's
# recipe (losses, weights, lr 1e-5 / 2e-5, batch 2, 48x48 LR patches, three x4 routes every
# step, decimation after x8) for 800 steps from the bundled phase-1 model, with the
# synthetic-data score predictors of models/train_demo_predictors.sh (run that first), and
# a moving average of the generator's weights (--ema 0.99: chosen over the raw weights on
# data/photos/val, not on the test photos). Validation on data/photos/val every 100 steps.
# 2.17 s per step on 2 idle cores (~29 min); then the held-out evaluation of phase 1 and of
# the result, and their per-image comparison.
#
#   bash models/train_perceptual_demo.sh [RUNS_DIR] [SEED] [EXTRA train.perceptual FLAGS...]
#   bash models/train_perceptual_demo.sh runs 2 --alpha-p 0     # Table 6: no predictor terms (~23 min)
#
# Results of seeds 0-2, of --alpha-p 0 and of --d-warmup 300 --steps 620 (a discriminator
# warm-up; ~28 min): benchmarks/results/perceptual_demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}
SEED=${2:-0}
EXTRA=("${@:3}")
TAG=$(printf '%s' "${EXTRA[*]:-}" | tr -c 'A-Za-z0-9.' '_')
OUT="$RUNS/perceptual_demo_seed$SEED${TAG:+_$TAG}"

python -m train.perceptual --generator models/eusr-compact.safetensors \
    --aesthetic-predictor "$RUNS/predictors/ava/best.safetensors" \
    --subjective-predictor "$RUNS/predictors/tid/best.safetensors" \
    --out "$OUT" --steps 800 --seed "$SEED" --ema 0.99 --threads 2 \
    --val-every 100 --save-every 100 --log-every 10 --quiet "${EXTRA[@]}"

python -m train.evaluate models/eusr-compact.safetensors --data data/photos/test \
    --out "$RUNS/eval_phase1" --strips 0 --threads 2
python -m train.evaluate "$OUT/last.safetensors" --data data/photos/test \
    --out "$OUT/eval" --strips 5 --threads 2
python -m benchmarks.compare_quality "$RUNS/eval_phase1/evaluate.json" "$OUT/eval/evaluate.json" \
    --labels "phase 3 (seed $SEED)" --baseline-label "phase 1" --out "$OUT" --name compare_phase1
