# Everything a fresh machine needs: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
BUILT := $(VENV)/.infodrop-built
SOURCES := setup.py $(shell find csrc -type f 2>/dev/null)

# The CUDA toolkit, for building the CUDA extension where nvcc exists (see setup.py).
export CUDA_HOME ?= /usr/local/cuda

.PHONY: run test check bench build clean

run: $(BUILT)
	$(PY) -m infodrop check

test: $(BUILT)
	$(PY) -m pytest -q tests

check: $(BUILT)
	$(PY) -m infodrop check

bench: $(BUILT)
	$(PY) -m infodrop bench

build: $(BUILT)

$(DEPS): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Builds the C++ (and, with a CUDA toolkit, CUDA) extensions in place.
$(BUILT): $(DEPS) $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build infodrop/*.so *.egg-info $(BUILT)
