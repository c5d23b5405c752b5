#!/bin/bash
# Deduplicate a large collection on a Ray cluster started inside one SLURM allocation: a Ray head on the first
# node, one Ray worker per other node, then `neardup dedup --ray auto` as the driver on the head node.
# Submit with: sbatch examples/slurm_ray_dedup.sh /shared/images /shared/scans/run1
# IMAGES, --out and the virtual environment must be on a filesystem every node sees (the workers read the images
# and the feature stores; the driver, on the head node, writes --out).
#SBATCH --job-name=neardup-ray-dedup
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1          # one Ray process (head or worker) per node; Ray starts the actors itself
#SBATCH --cpus-per-task=32           # decode tasks (and CPU encode actors) run on these
#SBATCH --gpus-per-node=4            # one encode actor per GPU; drop this line on CPU nodes
#SBATCH --mem=0                      # the whole node: index shards and the object store live in RAM
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --requeue                    # a pre-empted job comes back: committed shards and edge shards are resumed
#SBATCH --output=%x-%j.out
set -euo pipefail

IMAGES=${1:?folder (or list file) of images, on a shared filesystem}
OUT=${2:-scans/dedup-$SLURM_JOB_ID}
PORT=${RAY_PORT:-6379}
GPUS=${SLURM_GPUS_ON_NODE:-0}

source .venv/bin/activate              # pip install -c constraints.txt -e '.[ray]' on the cluster

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS="$head_ip:$PORT"    # what `--ray auto` joins

# --block keeps each `ray start` in the foreground of its srun step, so SLURM tracks (and ends) it
srun --nodes=1 --ntasks=1 -w "$head" --overlap \
  ray start --head --node-ip-address="$head_ip" --port="$PORT" --include-dashboard=false \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS" --block &
sleep 15
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" --overlap \
    ray start --address="$RAY_ADDRESS" --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="$GPUS" --block &
done
sleep 30
ray status || true

# The driver runs here, on the head node. Extraction: Ray Data decodes on every node's CPUs and encodes on one
# actor per GPU; the k-NN graph: index shards spread over the nodes, query blocks searched in parallel, edges
# written as edge shards in $OUT/graph; grouping on this node (its memory estimate is printed first).
# Defaults: one encode actor per GPU (2/3 of the CPUs on CPU nodes), half the CPUs as index shards.
neardup dedup "$IMAGES" --out "$OUT" --ray auto --batch-size 256 --no-report

ray stop || true
