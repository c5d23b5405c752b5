#!/usr/bin/env bash
# make demo: attack -> extract -> exact search on BSDS500 (100 val photos as originals, 200 train
# photos as distractors), for efficientnet_lite0 and for pHash. Outputs under out/demo/.
set -euo pipefail
ND=${ND:-.venv/bin/neardup}
OUT=${OUT:-out/demo}
DATA=${BSDS500:-../shared/data/bsds500}
mkdir -p "$OUT"
if [ -d "$DATA/val" ] && [ -d "$DATA/train" ]; then
  VAL=$DATA/val; TRAIN=$DATA/train; FT_BATCH=32
  echo "== photos: BSDS500 from $DATA (val as originals, train as distractors)"
else
  echo "== $DATA not found: falling back to scikit-image's sample photos (a much smaller demo)"
  .venv/bin/python -m neardup.data.samples "$OUT/samples"
  VAL=$OUT/samples/val; TRAIN=$OUT/samples/train; FT_BATCH=4
fi
t0=$(date +%s)
echo "== 1/5 neardup attack $VAL $OUT/queries"
$ND attack "$VAL" "$OUT/queries"
for model in efficientnet_lite0 phash; do
  echo "== 2/5 neardup extract ($model): originals, distractors, queries"
  $ND extract "$VAL" --model $model --out "$OUT/features/$model/originals" --overwrite
  $ND extract "$TRAIN" --model $model --out "$OUT/features/$model/distractors" --overwrite
  $ND extract "$OUT/queries" --model $model --out "$OUT/features/$model/queries" --overwrite
  echo "== 3/5 neardup search exact ($model)"
  $ND search exact --database "$OUT/features/$model/originals" --queries "$OUT/features/$model/queries" \
    --distractors "$OUT/features/$model/distractors" --out "$OUT/search_$model.json" --quiet
done
echo "== 4/5 neardup report"
$ND report "$OUT/search_efficientnet_lite0.json" "$OUT/search_phash.json"
echo "== 5/5 neardup finetune (a short run: 3 epochs on the distractor photos, validated on 580 queries)"
rm -rf "$OUT/finetune"
$ND finetune "$TRAIN" --out "$OUT/finetune" --epochs 3 --batch-size $FT_BATCH \
  --val-queries "$OUT/queries" --val-database "$VAL" --val-distractors "$TRAIN" --val-max-queries 580 --val-every 3
echo "== demo finished in $(( $(date +%s) - t0 )) s; results in $OUT/"
