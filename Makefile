# The README's two commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 6006
# The CPU builds of the other backends (the default torch wheel pulls gigabytes of
# CUDA libraries).
JAX_SPEC ?= jax[cpu]
TORCH_SPEC ?= torch==2.13.0+cpu
# The suites that hold on every Keras backend; `make test` runs them once per backend.
BACKEND_SUITES ?= tests/test_capture_correspondence.py tests/test_backends.py \
	tests/test_model_preprocessing.py tests/test_datasets.py \
	tests/test_bad_inputs.py tests/test_sample_stats.py tests/test_heads.py \
	tests/test_watchlist.py tests/test_unknown_size.py tests/test_masks.py
BACKENDS ?= jax torch

.PHONY: demo test test-backends lint setup clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev]" "$(JAX_SPEC)" "$(TORCH_SPEC)"
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
	KERAS_BACKEND=tensorflow $(PY) -m pytest -ra $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-backends

test-backends: setup
	@for backend in $(BACKENDS); do \
	  echo "== KERAS_BACKEND=$$backend: $(BACKEND_SUITES)"; \
	  KERAS_BACKEND=$$backend OMP_NUM_THREADS=1 \
	    $(PY) -m pytest -ra $(PYTEST_ARGS) $(BACKEND_SUITES) || exit 1; \
	done

lint: setup
	$(PY) -m ruff check tb_batch_images tests demo benchmarks
	$(PY) -m ruff format --check tb_batch_images tests demo benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
