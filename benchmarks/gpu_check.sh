#!/usr/bin/env bash
# The CUDA check, on a GPU machine, from anywhere in the repo:
#   benchmarks/gpu_check.sh [FASHION_MNIST_DIR]
# The four Fashion-MNIST IDX files lie in FASHION_MNIST_DIR (default benchmarks/data/fashion-mnist;
# `make gpu-bundle` copies them there). Python packages the machine lacks travel as wheels in
# .whl/ (`make gpu-bundle` downloads them); torch must be there already.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-benchmarks/data/fashion-mnist}
SITE=${SITE:-/tmp/bwbpf-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout 470 python3 benchmarks/gpu_check.py --data-dir "$DATA" --device cuda
