# Every target installs what it needs first: `make test` and `make demo` work on a fresh clone
# with only python3 present. constraints.txt pins the versions known to work together.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo bench lint docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[emulator,dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

demo: install
	$(VENV)/bin/fleetscan demo

bench: install
	$(PY) -m benchmarks

lint: install
	$(VENV)/bin/ruff check fleetscan tests benchmarks docs
	$(VENV)/bin/ruff format --check fleetscan tests benchmarks docs README.md
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or page.
# NO_MKDOCS_2_WARNING: Material's end-of-life notice (May 2027) is recorded in the README; it
# would otherwise print a banner on every build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) site fleetscan-demo fleetscan-audit .pytest_cache .mypy_cache .ruff_cache
