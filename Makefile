# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install run test test-py test-loader bench bench-next clean

$(STAMP): pyproject.toml setup.py $(wildcard native/*.c native/*.h)
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

# Benchmarks (issue #5), separate from `make test`: writes benchmarks/RESULTS.md (~55 min on 2 quiet
# cores). BENCH_ARGS=--quick for a smoke run. Side by side with Next.js: benchmarks/compare_next.sh
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

bench-next: $(STAMP)
	benchmarks/compare_next.sh

clean:
	rm -rf $(VENV) .imgopt-cache .pytest_cache
