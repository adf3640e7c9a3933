# The two commands: `make demo` and `make test` (see README.md).
# Both create .venv if missing and install the pinned requirements once; a second
# run reinstalls nothing unless requirements.txt, requirements-nodeps.txt or
# pyproject.toml changed. CI points VENV at a cache outside the clone (.ci/run).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MASKGIT := $(VENV)/bin/maskgit
REQ_HASH := $(shell cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
SMOKE ?= 1
PYTEST_ARGS ?=

.PHONY: venv install data fid-weights setup demo test unit-test notebook-test \
        check-notebooks notebooks benchmark benchmark-quick bench clean-venv browser-check live-check

venv: $(STAMP) install

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# The editable install points at this checkout; redo it (seconds) when the
# environment was last linked to another clone (CI shares one venv across clones).
install: $(STAMP)
	@test -x $(MASKGIT) && $(PY) -I -c "import maskgit_lib, pathlib, sys; sys.exit(pathlib.Path(maskgit_lib.__file__).resolve().parent.parent != pathlib.Path('$(CURDIR)').resolve())" 2>/dev/null \
	  || $(PY) -m pip install --disable-pip-version-check --quiet --no-deps --no-build-isolation -e .

data: venv
	$(MASKGIT) prepare-data

fid-weights: venv
	$(MASKGIT) prepare-fid

setup: data fid-weights

demo: setup
	$(MASKGIT) demo

test: setup unit-test check-notebooks notebook-test

unit-test: venv
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# Notebooks run top to bottom in smoke mode; nbval --nbval-lax fails on any error
# and every correctness check is an assert inside a cell.
notebook-test: venv
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  SMOKE=$(SMOKE) MPLBACKEND=Agg $(PY) -m pytest -q --nbval-lax --nbval-current-env \
	    --nbval-cell-timeout=900 -p no:cacheprovider notebooks; \
	else echo "no notebooks yet"; fi

check-notebooks: venv
	$(PY) tools/check_notebooks.py notebooks

# Executed copies (real mode, not smoke) for reading, in notebooks/executed/ (git-ignored).
notebooks: setup
	@mkdir -p notebooks/executed
	SMOKE=0 MPLBACKEND=Agg $(VENV)/bin/jupyter nbconvert --to notebook --execute \
	  --ExecutePreprocessor.timeout=1800 --output-dir notebooks/executed notebooks/*.ipynb

benchmark: setup
	$(MASKGIT) benchmark

benchmark-quick: setup
	$(MASKGIT) benchmark --quick

bench: setup
	$(MASKGIT) bench

clean-venv:
	rm -rf $(VENV)

# Two checks in headless Chromium (PASS/FAIL per check, screenshots in docs/img/):
# 1. the frame viewers animate with no kernel: notebooks 03 and 04 run in smoke mode with their widget
#    state saved, exported to HTML and driven with the keyboard and Play (tools/browser_check.py);
# 2. the hole painter of notebook 04 with a live kernel: JupyterLab on 127.0.0.1, a real mouse drag
#    on the canvas, Fill, the player it makes (tools/live_check.py; `make live-check` alone).
# The first run installs requirements-browser.txt, Debian's chromium if missing, and the widget JS
# (npm pack, into .cache/browser/); later runs are offline.
# Already executed notebooks work too: make browser-check BROWSER_NOTEBOOKS="notebooks/executed/*.ipynb"
BROWSER_NOTEBOOKS ?=
browser-check: data
	@$(PY) tools/browser_check.py $(BROWSER_NOTEBOOKS); saved=$$?; \
	 $(PY) tools/live_check.py; live=$$?; \
	 test $$saved -eq 0 -a $$live -eq 0

live-check: data
	$(PY) tools/live_check.py
