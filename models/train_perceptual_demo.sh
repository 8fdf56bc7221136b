#!/usr/bin/env bash
# Demonstration of phase 3 (4PP-EUSR perceptual fine-tuning) on two CPU cores: the paper's
# recipe (losses, weights, lr 1e-5 / 2e-5, batch 2, 48x48 LR patches, three x4 routes every
# step, decimation after x8) for 800 steps from the bundled phase-1 model, with the
# synthetic-data score predictors of models/train_demo_predictors.sh (run that first).
# 2.17 s per step on 2 idle cores (~29 min); then the held-out evaluation, before and after.
# Results: benchmarks/results/perceptual_demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}

python -m train.perceptual --generator models/eusr-compact.safetensors \
    --aesthetic-predictor "$RUNS/predictors/ava/best.safetensors" \
    --subjective-predictor "$RUNS/predictors/tid/best.safetensors" \
    --out "$RUNS/perceptual_demo" --steps 800 --threads 2 \
    --val-every 200 --save-every 100 --log-every 10 --quiet

python -m train.evaluate models/eusr-compact.safetensors --data data/photos/test \
    --out "$RUNS/perceptual_demo/eval_phase1" --threads 2
python -m train.evaluate "$RUNS/perceptual_demo/last.safetensors" --data data/photos/test \
    --out "$RUNS/perceptual_demo/eval" --strips 5 --threads 2
