# Set-up is two commands: `make demo` and `make test`. Each creates or reuses .venv, installs
# the project (a regular install: mypy reads the installed, typed packages), and makes sure
# Fashion-MNIST is present before it runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
PKGS := search spaces trainers reports
SRC := pyproject.toml $(shell find $(PKGS) -name '*.py' -o -name '*.json' -o -name 'py.typed')
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data system test lint unit docs reference demo bench quality gpu-bundle clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Third-party dependencies (slow, once): re-run only when pyproject.toml changes.
$(VENV)/.deps: pyproject.toml | $(VENV)/bin/python
	$(PIP) '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(PY) -c "import torch, torchvision, optuna" 
	touch $@

# The project itself (fast): re-installed whenever a source file changes.
# (build/ is setuptools' copy of the sources: a module renamed or removed would stay in it.)
$(VENV)/.installed: $(VENV)/.deps $(SRC)
	rm -rf build
	$(PIP) --no-deps --force-reinstall . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import bwbpf.search, bwbpf.spaces, bwbpf.trainers, bwbpf.reports"
	touch $@

install: $(VENV)/.installed

# System packages the tests need (Debian): Chromium for the browser tests, PostgreSQL for
# the multi-worker tests (each test run starts its own server in a temporary folder).
SYSTEM_PKGS := chromium postgresql
system:
	@need=""; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$need >/dev/null || \
	      (apt-get update -q >/dev/null && apt-get install -y -q $$need >/dev/null); \
	  else \
	    echo "missing system packages:$$need (sudo apt-get install$$need)"; \
	  fi; \
	fi

data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	      (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	  else \
	    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'" \
	         "or pass --data-dir to bwbpf-search"; \
	  fi; \
	fi

lint: install
	$(VENV)/bin/ruff check $(PKGS) tests benchmarks docs
	$(VENV)/bin/mypy -p bwbpf.search -p bwbpf.spaces -p bwbpf.trainers -p bwbpf.reports
	$(VENV)/bin/mypy benchmarks/*.py  # scripts that import each other by module name
	$(VENV)/bin/lint-imports --no-cache  # the layers declared in pyproject.toml

# Tests run on every core (pytest-xdist); TEST_JOBS=0 runs them in this process, one at a time.
TEST_JOBS ?= auto
unit: install
	$(VENV)/bin/pytest -q -n $(TEST_JOBS) -m "not integration"

test: install data system lint docs
	$(VENV)/bin/pytest -q -n $(TEST_JOBS) --durations=15

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or a
# page missing from the nav. `make reference` writes the command-line page from the parser
# (a test fails while the committed page and the parser disagree).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

reference: install
	$(PY) -m bwbpf.search.command_line.reference docs/reference/cli.md

# The main job: the most accurate decoupling of the small backbone (vgg8b at 0.25 width) that
# trains at least 2x faster than end-to-end BP with one device per block and keeps at most 0.6
# of BP's activations; TPE + Hyperband, 12 trials of 3 epochs on 3,000 Fashion-MNIST images,
# into study.db; the 2 best, the reference decouplings and BP are confirmed on one more seed,
# and the run ends with the confirmed best against the references and against BP.
DEMO_FLAGS := --study demo --backbone vgg8b --width 0.25 --dataset fashion-mnist \
  --train-subset 3000 --val-size 1000 --epochs 3 --n-trials 12 --sampler tpe \
  --pruner hyperband --min-speedup 2 --max-memory 0.6 --bp-lrs 0.025,0.05 \
  --confirm-top 2 --confirm-seeds 1

demo: install data
	$(VENV)/bin/bwbpf-search run $(DEMO_FLAGS)
	$(VENV)/bin/bwbpf-search export --study demo -o best.json --force
	$(VENV)/bin/bwbpf-search report --study demo -o report.html --csv trials.csv --force

bench: install data
	$(PY) benchmarks/run_all.py

# The evidence: constrained searches (old and new space) vs BP and the paper's, transfer to
# VGG-16, and the budget curve at 1-30 epochs (hours; resumable: benchmarks/out/).
quality: install data
	$(PY) benchmarks/quality.py

# Everything benchmarks/gpu_check.sh needs on a GPU machine that has torch but no network:
# the Fashion-MNIST files and wheels of the pure-Python dependencies (for Python 3.12).
GPU_WHEELS := optuna sqlalchemy alembic Mako colorlog jsonschema jsonschema-specifications \
  referencing rpds-py attrs plotly narwhals greenlet
gpu-bundle: data
	mkdir -p benchmarks/data/fashion-mnist .whl
	cp $(FMNIST)/*.gz benchmarks/data/fashion-mnist/
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info runs
