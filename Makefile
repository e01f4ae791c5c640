# modeldeploy: every developer and CI entry point. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export MODELDEPLOY_CACHE ?= $(HOME)/.cache/modeldeploy
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER := $(VENV)/bin/modeldeploy-cluster
PYTEST_ARGS ?=

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: uv.lock pyproject.toml */pyproject.toml tests/cluster/pyproject.toml | $(UV)
	$(UV) sync --all-packages --frozen
	touch $@

.PHONY: install
install: $(VENV)/.installed system-deps binaries  ## dev environment: Python deps, system packages, control-plane binaries

.PHONY: system-deps
system-deps:  ## Debian packages the tests use (iproute2, containerd, runc, CNI plugins, buildah, ...)
	@hack/install-system-deps.sh

.PHONY: binaries
binaries:  ## build etcd, kube-*, kubectl, kubelet, kwok, helm, CoreDNS, registry from Go modules (cached)
	@tests/cluster/build-binaries.sh >/dev/null

.PHONY: lint
lint: $(VENV)/.installed  ## ruff, mypy and import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contract/src operator/src serving/src tests/cluster/src
	$(VENV)/bin/lint-imports

.PHONY: fmt
fmt: $(VENV)/.installed  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: install  ## the whole test suite (starts the local control plane on demand)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(VENV)/.installed  ## fast tests only: no cluster
	$(VENV)/bin/pytest -m "not cluster" $(PYTEST_ARGS)

.PHONY: cluster-up
cluster-up: install  ## start the local control plane (idempotent) and print how to use it
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: $(VENV)/.installed  ## stop the local control plane and remove its state
	$(CLUSTER) down

.PHONY: demo
demo: install  ## the main job: cluster, operator, churn model, predictions
	hack/demo.sh
