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
# The every_backend runs (capture tests: no servers, no browser) in two pytest workers
# (pytest-xdist): CI's 2 cores, each test on one thread (OMP_NUM_THREADS=1).
WORKERS ?= -n 2
# setup.py's Keras range, as CI tests it: the venv's Keras is the newest release; the
# oldest release the range allows and the pinned next release (a keras-nightly build)
# run the every_backend tests on every backend too. Moving a pin is a one-line change.
KERAS_OLDEST ?= keras==3.12.0
KERAS_NEXT ?= keras-nightly==3.16.0.dev2026102704
KERAS_VERSIONS ?= $(KERAS_OLDEST) $(KERAS_NEXT)
KERAS_DIR ?= .keras-versions
# Each pytest run lists its slowest tests, so a CI log says where its time went.
DURATIONS ?= --durations=10

.PHONY: demo test test-backends test-keras-versions lint setup clean

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
# TensorFlow, then the every_backend tests under JAX and PyTorch, then those on the
# oldest and the next Keras on every backend.
test: setup
	CHROMIUM="$$(bash tests/find_chromium.sh)" && export CHROMIUM && \
	$(PY) -m ruff check tb_batch_images tests demo benchmarks && \
	$(VENV)/bin/lint-imports && \
	KERAS_BACKEND=tensorflow $(PY) -m pytest -ra $(DURATIONS) $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-backends
	$(MAKE) --no-print-directory test-keras-versions

test-backends: setup
	@for backend in $(BACKENDS); do \
	  echo "== KERAS_BACKEND=$$backend: the every_backend tests"; \
	  KERAS_BACKEND=$$backend OMP_NUM_THREADS=1 \
	    $(PY) -m pytest -ra -m every_backend $(WORKERS) $(DURATIONS) $(PYTEST_ARGS) || exit 1; \
	done

# Each Keras of KERAS_VERSIONS goes into its own folder (no dependencies: the venv
# has them) and shadows the venv's Keras through PYTHONPATH.
test-keras-versions: setup
	@for spec in $(KERAS_VERSIONS); do \
	  dir="$(KERAS_DIR)/$$spec"; \
	  [ -d "$$dir" ] || $(PY) -m pip install --quiet --no-deps --target "$$dir" "$$spec" || exit 1; \
	  for backend in tensorflow $(BACKENDS); do \
	    echo "== $$spec, KERAS_BACKEND=$$backend: the every_backend tests"; \
	    PYTHONPATH="$$PWD/$$dir" KERAS_BACKEND=$$backend OMP_NUM_THREADS=1 \
	      $(PY) -m pytest -ra -m every_backend -p no:cacheprovider $(WORKERS) $(DURATIONS) $(PYTEST_ARGS) || exit 1; \
	  done; \
	done

lint: setup
	$(PY) -m ruff check tb_batch_images tests demo benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check tb_batch_images tests demo benchmarks

clean:
	rm -rf $(VENV) $(KERAS_DIR) build *.egg-info
