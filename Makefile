# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install run test test-py test-loader bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/imgopt serve $(ARGS)

test: test-py test-loader

test-py: $(STAMP)
	$(PY) -m pytest -q

test-loader:
	cd loader && node --test

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-enable -q

clean:
	rm -rf $(VENV) .imgopt-cache .pytest_cache
