# Two entry points: `make demo` (the main job) and `make test` (the test suite).
# Each creates its own virtual environment with the CPU build of TensorFlow
# (and JAX's CPU wheels). `make test` runs the whole suite on TensorFlow, then
# again on JAX without the TensorFlow-only tests and the slow training checks
# (except those marked `jax_too`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,jax,test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/keras-harden demo --out saved_models/

# Test files run in parallel processes, one module per process at a time (so
# module fixtures are built once); the small models here are bound by Python,
# not by the cores' arithmetic.
PARALLEL := -n auto --maxprocesses 4 --dist loadscope

test: $(VENV)/.installed
	$(VENV)/bin/ruff check keras_harden tests examples benchmarks
	$(PY) -m pytest $(PARALLEL)
	KERAS_BACKEND=jax $(PY) -m pytest $(PARALLEL) -m "not tf_only and (not slow or jax_too)"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check keras_harden tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
