# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-deps test system-deps lint bench schema clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: demo-deps $(STAMP)
	$(BIN)/fleetroom demo $(ARGS)

# Mosquitto for the essay demo's million real cars: installed when run as root with apt-get, else one
# line saying how, and the demo runs on the embedded broker.
demo-deps:
	@PYTHON=$(PYTHON) .ci/system-deps --demo

# Debian's mosquitto, its clients and what builds the fleetroom Mosquitto plugin: installed
# when run as root with apt-get, else one line saying what to install (and no test runs).
system-deps:
	@PYTHON=$(PYTHON) .ci/system-deps

test: system-deps $(STAMP)
	$(BIN)/lint-imports --config pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/lint-imports --config pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@for b in bench/*.py; do $(BIN)/python $$b --quick || exit 1; done

schema: $(STAMP)
	$(BIN)/fleetroom schema --out docs/schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
