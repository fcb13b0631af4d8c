"""pytest glue for the benchmarks (not part of `make test`: pyproject's testpaths is tests/).

* collects ``bench_*.py`` here (so ``pytest benchmarks`` works without -o python_files=...);
* ``--benchmark-disable`` (pyproject's default addopts) or ``BENCH_SMOKE=1`` => smoke mode:
  every bench runs once on a tiny workload, which checks the harness without measuring;
* skips everything when the image corpus is missing (build it: python benchmarks/make_corpus.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C  # noqa: E402


def pytest_collect_file(file_path: Path, parent):  # noqa: ANN001
    # (a file named on the command line is collected by pytest itself: do not add it twice)
    # bench_*.py scripts without test functions (e.g. bench_replicas.py) are left alone
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path) and "\ndef test_" in file_path.read_text()):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    if not C.corpus_available():
        skip = pytest.mark.skip(reason=f"no corpus at {C.CORPUS}: run benchmarks/make_corpus.py (or set BENCH_CORPUS)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke(request) -> bool:
    disabled = request.config.getoption("benchmark_disable", False) and not request.config.getoption(
        "benchmark_enable", False)
    return bool(disabled or os.environ.get("BENCH_SMOKE") == "1")


@pytest.fixture(scope="session")
def photos(smoke):
    imgs = C.load_corpus(["photo"])
    return imgs[:2] if smoke else imgs


@pytest.fixture(scope="session")
def pngs(smoke):
    imgs = C.load_corpus(["png"])
    return imgs[:1] if smoke else imgs


@pytest.fixture(scope="session")
def origin():
    o = C.Origin().start()
    yield o
    o.stop()
