#!/usr/bin/env bash
# The multi-GPU check of the distributed schedule (NCCL), on a machine with 2 or more GPUs:
#   benchmarks/gpu_distributed.sh [FASHION_MNIST_DIR]
# Installs as benchmarks/gpu_check.sh does (wheels from `make gpu-bundle` in .whl/), then trains
# one decoupling with as many blocks as GPUs: once on one GPU (sequential), once with
# `torchrun --standalone --nproc-per-node <GPU count>` (one rank per GPU), and prints images/s
# and the speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_site.sh "$@"
exec timeout 560 python3 benchmarks/gpu_distributed.py --data-dir "$DATA"
