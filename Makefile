# k8scc: every target installs what it needs itself (apt packages, uv, the Python
# environment, Go-built binaries cached under ~/.cache/k8scc).
SHELL := /bin/bash
# uv is pinned and lives in the cache, never taken from PATH: a fresh machine has none there,
# and another version could resolve the lock differently.
UV_VERSION := 0.13.9
K8SCC_CACHE ?= $(HOME)/.cache/k8scc
UV := $(K8SCC_CACHE)/tools/uv-$(UV_VERSION)/bin/uv
PYTEST_ARGS ?=

.PHONY: demo test lint unit cluster e2e testbed bench setup binaries images clean

setup:
	@UV=$(UV) UV_VERSION=$(UV_VERSION) bash scripts/setup.sh

demo: setup
	@$(UV) run --frozen python -m demo $(if $(KEEP),--keep,)

# Binaries are built (or found in the cache) before pytest, so a cold build does not count
# against any test's timeout.
binaries: setup
	@$(UV) run --frozen python -m testbed.binaries etcd kube kubectl node containerd coredns pause fabric-3.1 fabric-2.5 >/dev/null

# The node's images likewise (Debian roots, Fabric's image layouts, the peer image).
images: setup binaries
	@$(UV) run --frozen python -m testbed --images

test: setup lint binaries images
	@$(UV) run --frozen pytest --durations=25 $(PYTEST_ARGS)

lint: setup
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy

unit: setup
	@$(UV) run --frozen pytest -m unit $(PYTEST_ARGS)

cluster: setup binaries images
	@$(UV) run --frozen pytest -m cluster $(PYTEST_ARGS)

e2e: setup binaries images
	@$(UV) run --frozen pytest -m e2e $(PYTEST_ARGS)

# A control plane and real node to explore by hand; prints the kubeconfig path.
testbed: setup
	@$(UV) run --frozen python -m testbed

# Starts its own test bed; writes bench/results/<timestamp>.{json,md} and plots (BENCH_ARGS=--quick).
bench: setup binaries images
	@$(UV) run --frozen python -m bench $(BENCH_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
