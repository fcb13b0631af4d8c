# imgopt: a Next.js-compatible image optimizer.
#
#   docker build -t imgopt .
#   docker run -p 3001:3001 -e IMGOPT_ORIGIN=https://www.example.com imgopt
#
# Every `imgopt serve` flag is also an environment variable: --cache-dir -> IMGOPT_CACHE_DIR,
# --cache -> IMGOPT_CACHE (redis://host:6379/0 shares one cache between replicas), --config ->
# IMGOPT_CONFIG (a JSON file with the Next.js `images` object), IMGOPT_WORKERS (set it to the
# container's CPU limit: Python sees the host's CPUs), IMGOPT_DRAIN_TIMEOUT (seconds in-flight
# requests get after SIGTERM, 20 by default: give `docker stop -t` / the grace period more),
# IMGOPT_LOG_LEVEL, ... (see docs/deploy.md).
#
# Stages: `deps` installs requirements/runtime.lock (exact versions, hashes checked, wheels only)
# into the virtual environment /opt/imgopt; `build` compiles imgopt itself (with its C kernels)
# and stages its files; the final image copies the two, so it has no compiler, no pip and no
# layer of files that a later layer deletes. A source edit rebuilds `build` only: the dependency
# layer is reused as long as the lock is unchanged.
#
# The base is the official python:3.11-slim (Debian bookworm), pinned by digest; update the digest
# to take the base's security fixes. Any Debian-based image with python3 and python3-venv works:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim -t imgopt .
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY requirements/runtime.lock requirements/build.lock /tmp/
# Wheels only, but for pyvips, which PyPI has as source only (pure Python): it is built with the
# locked backends of build.lock, which go again at the end with pip itself.
RUN python3 -m venv /opt/imgopt \
    && /opt/imgopt/bin/pip install --no-deps --require-hashes --only-binary :all: -r /tmp/build.lock \
    && /opt/imgopt/bin/pip install --no-deps --require-hashes --only-binary :all: --no-binary pyvips --no-build-isolation -r /tmp/runtime.lock \
    && /opt/imgopt/bin/pip uninstall --yes pip setuptools pkgconfig \
    && /opt/imgopt/bin/python -c "import pyvips, uvicorn, httptools, uvloop, starlette, httpx, redis"

FROM deps AS build
# The C kernels need a compiler and Python's headers (python:3.11-slim has the headers; Debian's
# python3 has them in python3-dev). Then a throwaway venv with the locked build backend builds the
# wheel, and pip (run for /opt/imgopt's interpreter) stages its installed files under /staging.
RUN headers=$(python3 -c "import os, sysconfig; print('' if os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')) else 'python3-dev')") \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev $headers \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/build.lock /tmp/build.lock
RUN python3 -m venv /opt/tools \
    && /opt/tools/bin/pip install --no-deps --require-hashes --only-binary :all: -r /tmp/build.lock
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY native ./native
COPY imgopt ./imgopt
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/tools/bin/pip --python /opt/imgopt/bin/python install --no-deps --no-index --no-warn-script-location --root /staging /tmp/wheels/imgopt_server-*.whl \
    && cd / && PYTHONPATH=$(echo /staging/opt/imgopt/lib/python3*/site-packages) /opt/imgopt/bin/python -c \
       "import imgopt.app, imgopt.workerproc, imgopt.transform, imgopt.stores.redis, imgopt.stores.bucket, imgopt.sources.bucket, imgopt.native as n, sys; sys.exit(0 if n.IMPLEMENTATION == 'c' else 'the C kernels were not built')"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="imgopt" \
      org.opencontainers.image.description="Self-hosted, Next.js-compatible image optimization service on libvips" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.url="https://github.com/imgopt/imgopt" \
      org.opencontainers.image.source="https://github.com/imgopt/imgopt" \
      org.opencontainers.image.documentation="https://github.com/imgopt/imgopt/blob/main/docs/deploy.md" \
      org.opencontainers.image.vendor="the imgopt authors"
# glibc malloc, which imgopt tunes itself (2 arenas, 4 MiB mmap threshold, malloc_trim when idle;
# imgopt/malloc.py). No MALLOC_* or LD_PRELOAD here: either makes imgopt leave malloc alone.
# benchmarks/bench_memory.py measured jemalloc worse (RSS +22% from 500 to 5,000 requests, glibc
# as tuned +6%).
#
# Any UID can run it (OpenShift gives a random one, always in group 0): the cache directory
# belongs to group 0 and is group-writable; nothing else is written outside it and /tmp.
RUN useradd --system --uid 10001 --gid 0 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin imgopt \
    && mkdir -p /var/cache/imgopt \
    && chown 10001:0 /var/cache/imgopt \
    && chmod 0775 /var/cache/imgopt
COPY --from=deps /opt/imgopt /opt/imgopt
COPY --from=build /staging/ /

ENV PATH=/opt/imgopt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMGOPT_HOST=0.0.0.0 \
    IMGOPT_PORT=3001 \
    IMGOPT_CACHE_DIR=/var/cache/imgopt

USER 10001:0
WORKDIR /var/cache/imgopt
EXPOSE 3001
# /healthz answers 200 while the process serves (body says "degraded" when Redis is away).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IMGOPT_PORT', '3001'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["imgopt"]
CMD ["serve"]
