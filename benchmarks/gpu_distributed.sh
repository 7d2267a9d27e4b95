#!/usr/bin/env bash
# The multi-GPU check of the distributed schedule (NCCL), on a machine with 2 or more GPUs:
#   benchmarks/gpu_distributed.sh [FASHION_MNIST_DIR]
# Installs as benchmarks/gpu_check.sh does (wheels from `make gpu-bundle` in .whl/), then trains
# one decoupling with as many blocks as GPUs: once on one GPU (sequential), once with
# `torchrun --standalone --nproc-per-node <GPU count>` (one rank per GPU), and prints images/s
# and the speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-benchmarks/data/fashion-mnist}
SITE=${SITE:-/tmp/bwbpf-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 560 python3 benchmarks/gpu_distributed.py --data-dir "$DATA"
