#!/usr/bin/env bash
# `make model`: retrain the bundled neardup_cd weights from their recipe and print their table (~35 min on an
# idle 2-core machine; not part of `make test`).
#  1. bench/finetune_gain.py trains the recipe on the 200 BSDS500 training photos (val held out) and prints the
#     per-family table against efficientnet_lite0 on the val attacks (default and extended sets);
#  2. scripts/pack_model.py writes that encoder as neardup/weights/neardup_cd.pt (float16) + neardup_cd.json.
# OUT (default out/model) keeps the run: a second `make model` reuses the finished training.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BSDS=${BSDS:-../shared/data/bsds500}
OUT=${OUT:-out/model}
RECIPE=neardup/configs/recipes/neardup_cd.yaml
[ -d "$BSDS/train" ] && [ -d "$BSDS/val" ] || { echo "Error: BSDS500 photos not found at $BSDS (set BSDS=...)" >&2; exit 2; }
echo "== 1/2 train the recipe on $BSDS/train and score it on the val attacks (bench/finetune_gain.py)"
"$PY" bench/finetune_gain.py --out "$OUT/holdout" --data "$BSDS" --recipe "$RECIPE"
echo "== 2/2 pack: neardup/weights/neardup_cd.pt"
"$PY" scripts/pack_model.py "$OUT/holdout/run/best.pt" --recipe "$RECIPE" --holdout "$OUT/holdout/result.json" \
  --images "BSDS500 train (200 photos; the 100 val photos held out for the table)"
