#!/usr/bin/env bash
# The CUDA check, on a GPU machine, from anywhere in the repo:
#   benchmarks/gpu_check.sh [FASHION_MNIST_DIR]
# The four Fashion-MNIST IDX files lie in FASHION_MNIST_DIR (default benchmarks/data/fashion-mnist;
# `make gpu-bundle` copies them there). Python packages the machine lacks travel as wheels in
# .whl/ (`make gpu-bundle` downloads them); torch must be there already.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_site.sh "$@"
exec timeout 470 python3 benchmarks/gpu_check.py --data-dir "$DATA" --device cuda
