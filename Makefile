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

# Every suite runs even when an earlier one fails; the summary names each failure and the exit
# status is non-zero if any failed.
test: $(STAMP)
	@py=0; $(MAKE) --no-print-directory test-py || py=$$?; \
	loader=0; $(MAKE) --no-print-directory test-loader || loader=$$?; \
	echo; echo "test summary: test-py $$([ $$py = 0 ] && echo passed || echo FAILED), test-loader $$([ $$loader = 0 ] && echo passed || echo FAILED)"; \
	[ $$py = 0 ] && [ $$loader = 0 ]

test-py: $(STAMP)
	$(PY) -m pytest -q

test-loader:
	cd loader && node --test

# Benchmarks, separate from `make test`; installs and generated files go to .bench-cache/
# (BENCH_CACHE=DIR elsewhere). `make bench` writes benchmarks/RESULTS.md (~55 min on 2 quiet
# cores; BENCH_ARGS=--quick for a smoke run). `make bench-next`: imgopt side by side with Next.js's
# own optimizer (npm ci + next build into the cache on first use, needs Node.js >= 20.9 and npm)
# -> benchmarks/RESULTS-next.md (OUT=FILE elsewhere); knobs in benchmarks/compare_next.sh.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

bench-next: $(STAMP)
	benchmarks/compare_next.sh

clean:
	rm -rf $(VENV) .imgopt-cache .pytest_cache
