# Every target installs what it needs first: `make test` and `make demo` work on a fresh clone
# with only python3 present. constraints.txt pins the versions known to work together.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The deploy kit's checks (deploy/README.md). Each list can be replaced on the command line, which
# is how tests/test_deploy_lint.py shows that each check fails on a planted mistake. The manifests
# are checked against the oldest Kubernetes they support (1.29: backoffLimitPerIndex and
# podReplacementPolicy on by default) and the newest schemas kubernetes-validate ships.
CFN_TEMPLATES := $(wildcard deploy/cloudformation/*.yaml)
DOCKERFILES := deploy/Dockerfile
K8S_MANIFESTS := $(wildcard deploy/kubernetes/*.yaml)
K8S_VERSIONS := 1.29.0 1.37.0

.PHONY: install test demo bench lint lint-deploy docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[emulator,dev]'
	touch $(STAMP)

install: $(STAMP)

# Four workers (pytest-xdist): most tests wait on emulated latency and child processes, not the
# CPU, so four processes on a 2-core machine keep both cores busy. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4

test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS)

demo: install
	$(VENV)/bin/fleetscan demo

bench: install
	$(PY) -m benchmarks

lint: install
	$(VENV)/bin/ruff check fleetscan tests benchmarks docs
	$(VENV)/bin/ruff format --check fleetscan tests benchmarks docs README.md
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory lint-deploy

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or page.
# NO_MKDOCS_2_WARNING: Material's end-of-life notice (May 2027) is recorded in the README; it
# would otherwise print a banner on every build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# No install prerequisite: `make lint` installs first, and the tests run it with VENV set to theirs.
lint-deploy:
	$(if $(CFN_TEMPLATES),$(VENV)/bin/cfn-lint -- $(CFN_TEMPLATES))
	$(if $(DOCKERFILES),$(VENV)/bin/hadolint --no-color $(DOCKERFILES))
	$(if $(K8S_MANIFESTS),for version in $(K8S_VERSIONS); do \
		$(VENV)/bin/kubernetes-validate --strict --quiet --kubernetes-version $$version \
			$(K8S_MANIFESTS) || exit 1; done)

clean:
	rm -rf $(VENV) site fleetscan-demo fleetscan-audit .pytest_cache .mypy_cache .ruff_cache
