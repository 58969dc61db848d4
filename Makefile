# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
# GPU users: `make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" setup`
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-all lint bench-quick gpu-check clean

# --no-compile: Python compiles the modules it imports on first use; compiling every module
# of torch and its neighbours up front made the set-up take about twice as long
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(TORCH_SPEC)
	$(PY) -m pip install --quiet --no-compile -e '.[dev,kafka,bench]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m stream.cli demo

# the dashboard's browser test needs Chromium: .ci/install-browser installs it when missing (root,
# apt-get), while the virtual environment is set up beside it
# pytest-xdist: one test process per core (-n auto); tests use their own temporary folders and topics
test:
	bash .ci/install-browser & browser=$$!; $(MAKE) --no-print-directory setup && wait $$browser
	$(PY) -m pytest -q -n auto -m "not slow" stream operators connectors tests

test-all:
	bash .ci/install-browser & browser=$$!; $(MAKE) --no-print-directory setup && wait $$browser
	$(PY) -m pytest -q -n auto stream operators connectors tests

lint: setup
	$(PY) -m ruff check stream operators connectors tests benchmarks

# Every benchmark at its --quick size (each under a minute here); full sizes: python benchmarks/NAME.py
BENCHMARKS := passthrough river_overhead nab htm_scaling tta continual pruning kafka serve_overhead
bench-quick: setup
	for b in $(BENCHMARKS); do $(PY) benchmarks/$$b.py --quick || exit 1; done

# Every test and benchmark with a CUDA path at small size, one JSON with the card's name
# (benchmarks/results/gpu_check.json); without a GPU it reports "no GPU" and runs the CPU path
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
