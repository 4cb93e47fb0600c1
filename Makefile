# Two commands on a fresh machine: `make run` (the main job end to end) and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
FIND_LINKS ?= $(shell pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p" | head -1)
export UV_PYTHON_DOWNLOADS := never
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PREFECT_HOME := $(CURDIR)/.state/prefect

CHROMIUM ?= /usr/bin/chromium

.PHONY: venv browser run test lint bench docs clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip install --python $(VENV)/bin/python $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) \
	    --compile-bytecode -c requirements/constraints.txt -e '.[dev]'
	@# flows/, infra/ and bench/ are not installed (the wheel holds only predrnn): the checkout goes on the path
	$(VENV)/bin/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], \
	    'predrnn-checkout.pth').write_text('$(CURDIR)\n')"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m flows.run

# The UI tests drive Debian's Chromium with Playwright (no browser download); installed when missing.
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Debian's chromium at $(CHROMIUM): sudo apt-get install chromium" >&2; fi; }

test: $(STAMP) browser
	PREDRNN_CHROMIUM=$(CHROMIUM) $(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check predrnn flows tests bench infra
	$(VENV)/bin/mypy predrnn

bench: $(STAMP)
	$(VENV)/bin/predrnn bench

# The documentation site into site/; the CLI and configuration reference are generated from the code.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .state
