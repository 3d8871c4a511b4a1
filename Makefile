# The README's two commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 6006

.PHONY: demo test lint setup clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $@

setup: $(VENV)/.installed

# Sets up, trains the demo runs offline, then serves TensorBoard on 127.0.0.1.
demo: setup
	$(PY) -m demo --port $(PORT)

# Sets up, finds (or installs) Chromium for the browser tests, runs every test.
test: setup
	CHROMIUM="$$(bash tests/find_chromium.sh)" && export CHROMIUM && \
	$(PY) -m ruff check tb_batch_images tests demo benchmarks && \
	$(PY) -m pytest -ra $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check tb_batch_images tests demo benchmarks
	$(PY) -m ruff format --check tb_batch_images tests demo benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
