# Everything installs itself: `make demo` and `make test` work on a fresh machine with only Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep the suite inside CI's budget on 2 cores; TF's own threads would oversubscribe two workers.
PYTEST_WORKERS ?= 2
# The tests that run the exported fast step in real TFLM need tinyprop_tflm_runner, built from a TFLM tree
# (converters/tflm_host_runner.py): the user's TINYPROP_TFLM_DIR or TINYPROP_TFLM_RUNNER, else ../shared's
# esp-tflite-micro when it is beside the checkout (as in CI); with none they skip and say why.
SHARED_TFLM := $(abspath ../shared/tflm/esp-tflite-micro)
ifeq ($(strip $(TINYPROP_TFLM_DIR)$(TINYPROP_TFLM_RUNNER)),)
ifneq ($(wildcard $(SHARED_TFLM)),)
demo test test-numerics-onednn-off tflm-runner tflm-runner-m4: export TINYPROP_TFLM_DIR := $(SHARED_TFLM)
endif
endif
# Built runners live outside the checkout, one per TFLM tree and micro/ sources: a fresh clone of the same code
# reuses one (a cold build takes minutes), a change rebuilds.
export TINYPROP_TFLM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tinyprop-tf/tflm-runner

.PHONY: venv toolchains tflm-runner tflm-runner-m4 demo test test-numerics-onednn-off test-fast clean bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,sweep]'
	touch $(STAMP)

venv: $(STAMP)

# Cross compilers, clang (libFuzzer) and QEMU for micro/, and the real Fashion-MNIST IDX files the loader tests
# read, from Debian packages. Needs root (CI runs as root);
# elsewhere the C++ cross/fuzz tests skip and say why.
toolchains:
	@if [ "$$(id -u)" = 0 ]; then bash micro/install_toolchains.sh && \
	  { dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt-get install -y -q dataset-fashion-mnist >/dev/null \
	    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; }; \
	else echo "note: not root, skipping micro/install_toolchains.sh (cross-compile tests will skip)"; fi

# The runner measures train_fast.tflite's arena for the demo's board project (without one the project can only
# budget train.tflite's, several times larger).
demo: $(STAMP) tflm-runner
	$(VENV)/bin/tinyprop demo

# Builds the runner once, before the test workers start (a no-op when the cache has it, or without a tree).
tflm-runner: $(STAMP) toolchains
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -c 'from tinyprop_tf.converters import tflm_host_runner; raise SystemExit(tflm_host_runner.main())'

# The same runner as Cortex-M4F images for QEMU's mps2-an386, one per board RAM size (nRF52840 256 KiB, nRF5340
# 448 KiB, all 4 MiB): the TFLM build once (minutes), each RAM size a relink. Needs the Arm cross compiler and QEMU.
tflm-runner-m4: $(STAMP) toolchains tflm-runner
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -c 'from tinyprop_tf.converters import tflm_host_runner; raise SystemExit(tflm_host_runner.main("m4"))'

# Runs every test, slow end-to-end ones included (they are the proof).
test: $(STAMP) toolchains tflm-runner tflm-runner-m4
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(PYTEST_WORKERS) -q -rs --durations=15

# TensorFlow's float32 results depend on the CPU (oneDNN's kernels, on by default on AVX-512 machines, sum in other
# orders). CI runs the tests whose numbers that could move (training, export, verify against float64, the fast
# step in TFLM) a second time with oneDNN off; `TF_ENABLE_ONEDNN_OPTS=0 make test` runs everything that way.
NUMERICS_TESTS := tests/test_export.py tests/test_fast_export.py tests/test_sparsify_and_training.py \
	tests/test_reference_gradients.py tests/test_policies_and_selection.py
test-numerics-onednn-off: $(STAMP) toolchains tflm-runner tflm-runner-m4
	TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(PYTEST_WORKERS) -q -rs $(NUMERICS_TESTS)

# Quick local loop: skips the slow end-to-end tests.
test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/host_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
