#!/usr/bin/env bash
# Demonstration score predictors for phase 3, trained on SYNTHETIC stand-ins for TID2013
# and AVA (train/synthetic_iqa.py: distorted crops of data/photos/train whose "opinion
# scores" are a formula of the distortion strength). They predict technical quality
# (blur, noise, JPEG), not real human opinion or aesthetics: the real data sets cannot be
# downloaded here. With AVA.txt + images or TID2013, run the same trainer with the paper's
# defaults instead (python -m train.score_predictor --dataset ava|tid2013 --root DIR).
#
# Writes runs/synthetic_tid, runs/synthetic_ava (data) and runs/predictors/{tid,ava}/
# {best,last}.safetensors (load with train.models.nima.load_score_predictor).
#
# Shortened recipe for two CPU cores (about 6 minutes of wall time each, the two runs
# side by side, one thread each): ImageNet-initialised backbone (bundled torchvision file),
# stage A (head only) 160 steps of batch 32 at the paper's lr 1e-3, stage B (all layers)
# 120 steps of batch 16 at lr 3e-5 (the paper's 1e-5 barely moves in so few steps).
# Crops are the spec's 192 px from 256 px images (no resize needed).
#
# Measured (2 CPU cores, shared; 7 min wall for the whole script), validation at step 280
# (= best.safetensors for both):
#   tid: 399 train / 57 val (references i01-i03); val EMD 0.1600 vs 0.2725 for the constant
#        predictor; SROCC 0.918, PLCC 0.888
#   ava: 480 train / 120 val (20% held out);   val EMD 0.1101 vs 0.2453; SROCC 0.922, PLCC 0.925
# On unseen photos (data/photos/test, centre 192 crops) both rank every pristine crop above
# its bicubic ×4 down-up version, but score smooth photos (hubble, retina) low whatever
# their sharpness: a synthetic-data predictor reads smoothness as blur.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}

python -m train.synthetic_iqa --format tid2013 --out "$OUT/synthetic_tid" --references 24 --size 256 --seed 0
python -m train.synthetic_iqa --format ava --out "$OUT/synthetic_ava" --count 600 --size 256 --seed 0

COMMON=(--steps-a 160 --steps-b 120 --batch-a 32 --batch-b 16 --lr-a 1e-3 --lr-b 3e-5
        --crop 192 --resize 256 --val-every 40 --log-every 10 --threads 1 --device cpu --seed 0 --quiet)
nice -n 10 python -m train.score_predictor --dataset tid2013 --root "$OUT/synthetic_tid" \
    --out "$OUT/predictors/tid" "${COMMON[@]}" &
TID=$!
nice -n 10 python -m train.score_predictor --dataset ava --root "$OUT/synthetic_ava" \
    --out "$OUT/predictors/ava" "${COMMON[@]}" &
AVA=$!
wait "$TID"
wait "$AVA"
