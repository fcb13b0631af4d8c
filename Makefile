# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install run test test-py test-loader lint bench bench-next clean lock loader

# Exactly the versions (and hashes) of requirements/test.lock, then imgopt itself without
# resolving anything. `make lock` refreshes the locks after a change to pyproject.toml.
$(STAMP): pyproject.toml setup.py requirements/test.lock $(wildcard native/*.c native/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements/test.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "requirements/*.lock do not match pyproject.toml: run 'make lock'" >&2; exit 1; }
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

# ruff (the rule set is in pyproject.toml) and mypy on imgopt/, both at zero
lint: $(STAMP)
	$(VENV)/bin/ruff check imgopt
	$(VENV)/bin/mypy

# Benchmarks, separate from `make test`; installs and generated files go to .bench-cache/
# (BENCH_CACHE=DIR elsewhere). `make bench` writes benchmarks/RESULTS.md (~55 min on 2 quiet
# cores; BENCH_ARGS=--quick for a smoke run). `make bench-next`: imgopt side by side with Next.js's
# own optimizer (npm ci + next build into the cache on first use, needs Node.js >= 20.9 and npm)
# -> benchmarks/RESULTS-next.md (OUT=FILE elsewhere); knobs in benchmarks/compare_next.sh.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

bench-next: $(STAMP)
	benchmarks/compare_next.sh

# One command refreshes the locks after a change to pyproject.toml: `make lock`. It writes, with
# uv and with hashes, from the ranges in pyproject.toml: requirements/runtime.lock (what the
# container image installs), requirements/test.lock (what `make install` and CI install) and
# requirements/build.lock (the image's build backends, from requirements/build.in). Pins already
# in the locks are kept while they still fit; `make lock UPGRADE=1` takes the newest of everything.
UV_VERSION ?= 0.13.9
LOCK_TOOLS := .venv-lock
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

lock:
	test -x $(LOCK_TOOLS)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/runtime.lock
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml --extra test -c requirements/runtime.lock $(LOCK_FLAGS) -o requirements/test.lock
	$(LOCK_TOOLS)/bin/uv pip compile requirements/build.in -c requirements/runtime.lock $(LOCK_FLAGS) -o requirements/build.lock

# The next/image loader as an npm tarball: dist/imgopt-next-loader-<version>.tgz
loader:
	mkdir -p dist
	cd loader && npm pack --silent --pack-destination ../dist

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .imgopt-cache .pytest_cache dist
