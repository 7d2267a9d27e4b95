# Sourced by the GPU checks (gpu_check.sh, gpu_distributed.sh), from the repository root:
# installs the wheels `make gpu-bundle` put in .whl/ and this project into $SITE (torch must be
# on the machine already), and puts $SITE on PYTHONPATH. Sets DATA from the first argument.
DATA=${1:-benchmarks/data/fashion-mnist}
SITE=${SITE:-/tmp/bwbpf-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
