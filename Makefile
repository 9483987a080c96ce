# Ferry: every task goes through here. Targets create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)

.PHONY: help venv protos config-docs run test test-fast lint typecheck bench clean

help:
	@echo "make run      start the local stack (object store, services, gateway on :8000)"
	@echo "make test     run every test (creates .venv)"
	@echo "make protos   regenerate Python code from protos/"
	@echo "make config-docs  regenerate the variable tables of docs/configuration.md and deploy/README.md"
	@echo "make lint     ruff; make typecheck: mypy"
	@echo "make bench    run the benchmarks in bench/"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

config-docs: $(STAMP)
	$(PY) scripts/gen_config_docs.py

run: $(STAMP)
	$(PY) -m ferry.stack

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
