#!/bin/bash
# Fine-tune on one node with 8 A100s: SimCLR's large-batch recipe (LARS, linear lr scaling).
# Submit with: sbatch examples/slurm_finetune_8xa100.sh /data/images /data/val_queries /data/val_originals
#SBATCH --job-name=neardup-finetune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1          # torchrun starts the 8 workers itself
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64           # view making (attacks + augmentations) runs in DataLoader workers
#SBATCH --mem=256G
#SBATCH --time=24:00:00
#SBATCH --requeue                    # pre-empted jobs come back and --resume continues them
#SBATCH --output=%x-%j.out
set -euo pipefail

IMAGES=${1:?training images}
VAL_QUERIES=${2:?attacked validation folder (neardup attack output)}
VAL_ORIGINALS=${3:?their originals}
RUN=${RUN:-runs/finetune-$SLURM_JOB_ID}

source .venv/bin/activate              # pip install -c constraints.txt -e '.[gpu]' on the cluster
RESUME=""
[ -f "$RUN/checkpoint.pt" ] && RESUME="--resume"   # requeued after pre-emption: continue exactly

# 8 processes x 256 images x 2 views = global batch 4096; lr 0.3 x 4096/256 = 4.8 (SimCLR, LARS).
srun torchrun --standalone --nnodes 1 --nproc-per-node 8 -m neardup finetune "$IMAGES" \
  --out "$RUN" $RESUME \
  --model efficientnet_lite0 \
  --optimizer lars --lr 0.3 --head-lr 0.3 --lr-scaling linear --weight-decay 1e-6 \
  --batch-size 256 --epochs 100 --warmup-epochs 10 --image-size 224 \
  --temperature 0.1 --sync-bn --no-freeze-bn --freeze-stages 0 \
  --amp bf16 --workers 7 \
  --val-queries "$VAL_QUERIES" --val-database "$VAL_ORIGINALS" --val-every 5 --val-max-queries 5000

# Several nodes: replace --standalone with
#   --nnodes $SLURM_NNODES --rdzv-backend c10d --rdzv-endpoint $(scontrol show hostnames | head -n1):29500
# and set --ntasks-per-node=1 with --nodes=N.
