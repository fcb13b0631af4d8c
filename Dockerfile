# syntax=docker/dockerfile:1
# imgopt: a Next.js-compatible image optimizer. Two stages: the builder compiles the wheel
# (including the optional C kernels) and every dependency wheel; the runtime stage installs
# those wheels only, so it has no compiler, no headers and no build tools.
#
#   docker build -t imgopt .
#   docker run -p 3001:3001 -e IMGOPT_ORIGIN=https://www.example.com imgopt
#
# Every `imgopt serve` flag is also an environment variable: --cache-dir -> IMGOPT_CACHE_DIR,
# --cache -> IMGOPT_CACHE (redis://host:6379/0 shares one cache between replicas), --config ->
# IMGOPT_CONFIG (a JSON file with the Next.js `images` object), IMGOPT_WORKERS (set it to the
# container's CPU limit: Python sees the host's CPUs), IMGOPT_LOG_LEVEL, ... (see docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native ./native
COPY imgopt ./imgopt
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; w = glob.glob('/wheels/imgopt-*.whl')[0]; sys.exit(0 if any('_native' in n for n in zipfile.ZipFile(w).namelist()) else 'the C kernels were not built into ' + w)"

FROM ${PYTHON_IMAGE} AS runtime
# glibc malloc, which imgopt tunes itself (2 arenas, 4 MiB mmap threshold, malloc_trim when idle;
# imgopt/malloc.py). No MALLOC_* or LD_PRELOAD here: either makes imgopt leave malloc alone.
# benchmarks/bench_memory.py measured jemalloc worse (RSS +22% from 500 to 5,000 requests, glibc
# as tuned +6%).
RUN groupadd --system --gid 10001 imgopt \
    && useradd --system --uid 10001 --gid imgopt --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin imgopt \
    && mkdir -p /var/cache/imgopt \
    && chown 10001:10001 /var/cache/imgopt
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels imgopt \
    && rm -rf /wheels \
    && python -c "import imgopt.app, imgopt.native, imgopt.rediscache"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGOPT_HOST=0.0.0.0 \
    IMGOPT_PORT=3001 \
    IMGOPT_CACHE_DIR=/var/cache/imgopt

USER 10001:10001
WORKDIR /var/cache/imgopt
EXPOSE 3001
# /healthz answers 200 while the process serves (body says "degraded" when Redis is away).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IMGOPT_PORT', '3001'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["imgopt"]
CMD ["serve"]
