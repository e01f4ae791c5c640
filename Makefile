# modeldeploy: every developer and CI entry point. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
# Bytecode is written (and then reused): with PYTHONDONTWRITEBYTECODE=1, as some shells set it, every
# Python process the tests start compiled its imports from source again: 11.5-12.5 s of CPU to import
# the server and operator modules against 4.6-4.7 s with bytecode (2026-12-03, /tmp/imp.py-style
# import of modeldeploy_serving.cli, fastapi, numpy, onnxruntime, xgboost, modeldeploy_operator.main).
unexport PYTHONDONTWRITEBYTECODE
export MODELDEPLOY_CACHE ?= $(HOME)/.cache/modeldeploy
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER := $(VENV)/bin/modeldeploy-cluster
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: the tests of the one local cluster run in three streams on three
# of them (MODELDEPLOY_CLUSTER_STREAMS), the rest spread over the others, in the order tests/conftest.py
# gives the groups (hence --no-loadscope-reorder). 1 runs everything in order.
TEST_WORKERS ?= 5
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder,-p no:xdist)

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

# serving's C extension modules are compiled in place by its build hook (serving/hatch_build.py) when
# uv builds its editable install. uv reuses a built one while serving's cache keys (pyproject.toml, the
# hook, the .c files: their mtimes) are unchanged, and then runs no hook: after `git clean -fdx` the
# module was missing (checked 2026-12-06). --reinstall-package rebuilds it on every run of this target
# (0.9 s); the hook and the .c files are prerequisites, so an edit runs it.
$(VENV)/.installed: uv.lock pyproject.toml */pyproject.toml tests/cluster/pyproject.toml \
		serving/hatch_build.py $(wildcard serving/src/modeldeploy_serving/*.c) | $(UV)
	$(UV) sync --all-packages --frozen --reinstall-package modeldeploy-serving
	touch $@

.PHONY: install
install: $(VENV)/.installed system-deps binaries  ## dev environment: Python deps, system packages, control-plane binaries

.PHONY: system-deps
system-deps:  ## Debian packages (pod network, real node, images, Kafka, PostgreSQL) and the Kafka broker jars (cached)
	@hack/install-system-deps.sh

.PHONY: binaries
binaries:  ## build etcd, kube-*, kubectl, kubelet, kwok, helm, CoreDNS, registry from Go modules (cached)
	@tests/cluster/build-binaries.sh >/dev/null

# The local cluster's registry (plain HTTP). `make images REGISTRY=registry.example.com PUSH=0`
# builds and exports without pushing; TLS_VERIFY=false pushes to another plain-HTTP registry.
REGISTRY ?= 10.244.0.1:5000
PUSH ?= 1
TLS_VERIFY ?=

.PHONY: images
images: system-deps  ## build the serving and operator images with buildah, export OCI archives, push to $(REGISTRY)
	REGISTRY=$(REGISTRY) PUSH=$(PUSH) TLS_VERIFY=$(TLS_VERIFY) hack/images.sh

.PHONY: lint
lint: $(VENV)/.installed  ## ruff, mypy and import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contract/src operator/src serving/src plugin/src tests bench
	$(VENV)/bin/lint-imports

.PHONY: chart-docs
chart-docs: $(VENV)/.installed  ## regenerate the values table of charts/modeldeploy/README.md from values.yaml
	$(PY) hack/chart_values_table.py

.PHONY: dashboard
dashboard: $(VENV)/.installed  ## regenerate the Grafana dashboard charts/modeldeploy/dashboards/modeldeploy.json
	$(PY) hack/dashboard.py

.PHONY: fmt
fmt: $(VENV)/.installed  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: install  ## the whole test suite (starts the local control plane on demand)
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(VENV)/.installed  ## fast tests only: no cluster
	$(VENV)/bin/pytest $(XDIST) -m "not cluster" $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: $(VENV)/.installed  ## coverage-guided fuzzing of the V2/V1 decoders (FUZZ_SECONDS, default 600)
	mkdir -p .fuzz/corpus
	cd .fuzz && ../$(PY) ../tests/fuzz/fuzz_decoders.py -max_total_time=$${FUZZ_SECONDS:-600} \
		-dict=../tests/fuzz/decoders.dict corpus
	FUZZ_EXAMPLES=5000 $(VENV)/bin/pytest tests/unit/serving/test_serving_properties.py -q -p no:randomly \
		--hypothesis-seed=$$RANDOM

.PHONY: cluster-up
cluster-up: install  ## start the local control plane (idempotent) and print how to use it
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: $(VENV)/.installed  ## stop the local control plane and remove its state
	$(CLUSTER) down

.PHONY: demo
demo: install  ## the main job: cluster, operator, churn model, predictions
	hack/demo.sh
