# The README's two commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 6006
# The CPU builds of the other backends (the default torch wheel pulls gigabytes of
# CUDA libraries).
JAX_SPEC ?= jax[cpu]
TORCH_SPEC ?= torch==2.13.0+cpu
# KerasHub, for the object-detection tests (a RetinaNet built from configs). Without
# --no-deps it pulls full tensorflow and tensorflow-text (~1 GB) beside tensorflow-cpu;
# it imports only these two of its dependencies besides what is installed already.
KERAS_HUB_SPEC ?= keras-hub==0.32.0 regex tokenizers
# The tests that hold on every Keras backend carry the `every_backend` marker (all of
# tests/capture/); `make test` runs them once more per backend.
BACKENDS ?= jax torch

.PHONY: demo test test-backends lint setup clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev]" "$(JAX_SPEC)" "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-deps $(KERAS_HUB_SPEC)
	touch $@

setup: $(VENV)/.installed

# Sets up, trains the demo runs offline, then serves TensorBoard on 127.0.0.1.
# Any backend: KERAS_BACKEND=jax make demo
demo: setup
	$(PY) -m demo --port $(PORT)

# Sets up, finds (or installs) Chromium for the browser tests, runs every test under
# TensorFlow, then the backend-neutral suites under JAX and PyTorch.
test: setup
	CHROMIUM="$$(bash tests/find_chromium.sh)" && export CHROMIUM && \
	$(PY) -m ruff check tb_batch_images tests demo benchmarks && \
	$(VENV)/bin/lint-imports && \
	KERAS_BACKEND=tensorflow $(PY) -m pytest -ra $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-backends

test-backends: setup
	@for backend in $(BACKENDS); do \
	  echo "== KERAS_BACKEND=$$backend: the every_backend tests"; \
	  KERAS_BACKEND=$$backend OMP_NUM_THREADS=1 \
	    $(PY) -m pytest -ra -m every_backend $(PYTEST_ARGS) || exit 1; \
	done

lint: setup
	$(PY) -m ruff check tb_batch_images tests demo benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check tb_batch_images tests demo benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
