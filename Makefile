# Fresh machine: `make demo` sets up and serves the built-in demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test test-fast check bench bench-optimize bench-models bench-experiments bench-loadgen bench-scaleout bench-peers bench-grpc bench-overload bench-admission-cost soak bench-text clean

# torch is installed first and pinned: the CPU build lies on this machine's disk, and an unpinned
# torch (asked for by sentence-transformers) would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[demo,optimize,test,bench]'
	touch $@

install: $(STAMP)

# Debian packages the tests and benchmarks drive: Prometheus (scrapes a live server), headless Chromium
# with its WebDriver (the dashboard in a real browser), and load generators nobody here wrote (wrk, hey,
# h2load from nghttp2-client). Installed only when missing, and only where apt-get
# runs as root (CI); elsewhere the tests that need them say so and skip.
system-deps:
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v hey >/dev/null 2>&1 || missing="$$missing hey"; \
	command -v h2load >/dev/null 2>&1 || missing="$$missing nghttp2-client"; \
	fc-list 2>/dev/null | grep -q . || missing="$$missing fonts-dejavu-core"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
			|| echo "could not install$$missing: the tests that need them skip"; \
	else \
		echo "missing$$missing (apt-get install$$missing): the tests that need them skip"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/leanserve demo --host 127.0.0.1 --port 8000

test: $(STAMP) system-deps
	$(PY) -m pytest -q

test-fast: $(STAMP) system-deps
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

bench-experiments: $(STAMP)
	$(PY) benchmarks/experiments.py

bench-loadgen: $(STAMP)
	$(PY) benchmarks/loadgen.py
bench-scaleout: $(STAMP)
	$(PY) benchmarks/scaleout.py

# Every peer server beside leanserve on the same models; each peer is installed on first use into
# its own environment under benchmarks/.peers/ (git-ignored; Java is needed for TorchServe).
bench-peers: $(STAMP)
	$(PY) benchmarks/peers.py

# leanserve over gRPC and HTTP beside Triton's gRPC endpoint (PyTriton, installed as above).
bench-grpc: $(STAMP)
	$(PY) benchmarks/grpc_peers.py

bench-overload: $(STAMP)
	$(PY) benchmarks/overload.py

bench-admission-cost: $(STAMP)
	$(PY) benchmarks/admission_cost.py

soak: $(STAMP)
	$(PY) benchmarks/soak.py

bench-text: $(STAMP)
	$(PY) benchmarks/text.py

clean:
	rm -rf $(VENV) benchmarks/.venv-ray benchmarks/.peers .pytest_cache .mypy_cache .ruff_cache
