#!/usr/bin/env bash
# make demo: attack -> extract -> exact search -> ... -> dedup on BSDS500 (100 val photos as originals, 200 train
# photos as distractors), for neardup_cd (the bundled default) and for pHash. Outputs under out/demo/.
set -euo pipefail
ND=${ND:-.venv/bin/neardup}
OUT=${OUT:-out/demo}
DATA=${BSDS500:-../shared/data/bsds500}
mkdir -p "$OUT"
if [ -d "$DATA/val" ] && [ -d "$DATA/train" ]; then
  VAL=$DATA/val; TRAIN=$DATA/train; FT_BATCH=32; PCA="--pca 256"
  echo "== photos: BSDS500 from $DATA (val as originals, train as distractors)"
else
  echo "== $DATA not found: falling back to scikit-image's sample photos (a much smaller demo)"
  .venv/bin/python -m neardup.data.samples "$OUT/samples"
  VAL=$OUT/samples/val; TRAIN=$OUT/samples/train; FT_BATCH=4; PCA=""  # too few photos to fit a PCA
fi
t0=$(date +%s)
echo "== 1/8 neardup attack $VAL $OUT/queries"
$ND attack "$VAL" "$OUT/queries"
for model in neardup_cd phash; do
  echo "== 2/8 neardup extract ($model): originals, distractors, queries"
  $ND extract "$VAL" --model $model --out "$OUT/features/$model/originals" --overwrite
  $ND extract "$TRAIN" --model $model --out "$OUT/features/$model/distractors" --overwrite
  $ND extract "$OUT/queries" --model $model --out "$OUT/features/$model/queries" --overwrite
  echo "== 3/8 neardup search exact ($model)"
  $ND search exact --database "$OUT/features/$model/originals" --queries "$OUT/features/$model/queries" \
    --distractors "$OUT/features/$model/distractors" --out "$OUT/search_$model.json" --quiet
done
echo "== 4/8 neardup report"
$ND report "$OUT/search_neardup_cd.json" "$OUT/search_phash.json"
echo "== 5/8 neardup search bench (exact vs approximate faiss indexes, 20k synthetic distractors added) + plot"
$ND search bench --database "$OUT/features/neardup_cd/originals" --queries "$OUT/features/neardup_cd/queries" \
  --distractors "$OUT/features/neardup_cd/distractors" --index Flat --index "IVF{nlist},Flat" --index HNSW32 \
  --nprobe 4 --nprobe 16 --ef-search 64 --synthetic 20000 $PCA --out "$OUT/search_bench"
$ND plot "$OUT/search_bench/results.json" --out "$OUT/search_bench/figures"
echo "== 6/8 neardup cluster (k-NN graph, threshold sweep; mosaics in $OUT/cluster_neardup_cd)"
$ND cluster "$OUT/features/neardup_cd/originals" "$OUT/features/neardup_cd/queries" \
  "$OUT/features/neardup_cd/distractors" --method graph --sweep 0.05:0.4:0.05 \
  --exclude distractor --out "$OUT/cluster_neardup_cd"
echo "== 7/8 neardup finetune (a short run: 3 epochs on the distractor photos, validated on up to 580 queries)"
rm -rf "$OUT/finetune"
$ND finetune "$TRAIN" --out "$OUT/finetune" --epochs 3 --batch-size $FT_BATCH \
  --val-queries "$OUT/queries" --val-database "$VAL" --val-distractors "$TRAIN" --val-max-queries 580 --val-every 3
echo "== 8/8 neardup dedup (originals + their attacked copies + distractors as one collection; no labels, calibrated threshold)"
$ND dedup "$OUT/features/neardup_cd/originals" "$OUT/features/neardup_cd/queries" \
  "$OUT/features/neardup_cd/distractors" --out "$OUT/dedup" --overwrite
echo "== the dedup report: open file://$(cd "$OUT/dedup" && pwd)/report.html in a browser"
echo "== demo finished in $(( $(date +%s) - t0 )) s; results in $OUT/"
