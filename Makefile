# Fresh machine: `make demo` sets up and serves the built-in demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast check bench bench-optimize bench-models clean

# torch is installed first and pinned: the CPU build lies on this machine's disk, and an unpinned
# torch (asked for by sentence-transformers) would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[demo,optimize,test,bench]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/leanserve demo --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'

check: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/serving.py

bench-optimize: $(STAMP)
	$(PY) benchmarks/optimize.py

bench-models: $(STAMP)
	$(PY) benchmarks/models.py

clean:
	rm -rf $(VENV) benchmarks/.venv-ray .pytest_cache .mypy_cache .ruff_cache
