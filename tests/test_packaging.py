"""What users install: the locks agree with pyproject.toml; the sdist and the wheel build, the
sdist carries its tests' fixtures, and the wheel installed in a clean virtual environment (from
the runtime lock) answers `imgopt --version` and serves; the npm tarball of the loader has its
LICENSE and repository, and its types resolve from ESM and CJS (@arethetypeswrong/cli).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import imgopt
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The locks are universal; these tests read them for CPython 3.11 on Linux, what CI and the image run.
ENVIRONMENT = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.9",
               "sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython",
               "platform_python_implementation": "CPython"}


def read_lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for the entries of requirements/<name> that apply to ENVIRONMENT."""
    text = (LOCKS / name).read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", text):
        line = entry.split("\\\n")[0].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(ENVIRONMENT):
            continue
        (spec,) = req.specifier
        assert spec.operator == "==", f"{name}: {line} is not pinned"
        pins[canonicalize_name(req.name)] = (spec.version, re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return pins


def check_covered(requirements: list[str], lock: str, extras: tuple[str, ...] = ("",)) -> None:
    pins = read_lock(lock)
    for text in requirements:
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({**ENVIRONMENT, "extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/{lock}: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements/{lock} pins {req.name}=={pins[name][0]}, pyproject.toml wants {req.specifier}: run `make lock`")


def test_every_dependency_is_locked_with_hashes():
    check_covered(PYPROJECT["project"]["dependencies"], "runtime.lock")
    check_covered(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"],
                  "test.lock", extras=("", "test"))
    build_in = [line.split("#")[0].strip() for line in (LOCKS / "build.in").read_text().splitlines()]
    check_covered([r for r in build_in if r], "build.lock")
    check_covered(PYPROJECT["build-system"]["requires"], "build.lock")
    for lock in ("runtime.lock", "test.lock", "build.lock"):
        for name, (_version, hashes) in read_lock(lock).items():
            assert hashes, f"{name} has no hash in requirements/{lock}"


def test_ci_tests_the_versions_the_image_ships():
    runtime, test = read_lock("runtime.lock"), read_lock("test.lock")
    assert {n: v for n, (v, _h) in runtime.items()} == {n: test[n][0] for n in runtime}
    build = read_lock("build.lock")
    assert {n: build[n][0] for n in build if n in runtime} == {n: runtime[n][0] for n in build if n in runtime}


def test_runtime_needs_no_development_server_extras():
    pins = read_lock("runtime.lock")
    assert {"uvicorn", "httptools", "uvloop"} <= set(pins)
    assert not {"watchfiles", "websockets", "python-dotenv", "pyyaml", "pytest"} & set(pins)


# -- the distributions ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build`: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "License classifiers are deprecated" not in run.stderr + run.stdout
    assert "`project.license` as a TOML table is deprecated" not in run.stderr + run.stdout
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_carries_what_its_tests_need(dists):
    name = f"imgopt_server-{imgopt.__version__}"
    assert dists["sdist"].name == f"{name}.tar.gz"
    with tarfile.open(dists["sdist"]) as tar:
        files = {m.name.removeprefix(name + "/") for m in tar.getmembers()}
    for path in ("tests/conftest.py", "tests/origin.py", "tests/imagecorpus.py", "tests/cluster.py",
                 "tests/test_units.py", "tests/e2e/site/package.json", "tests/e2e/site/app/page.js",
                 "tests/container/make-base-image.sh", "LICENSE", "CHANGELOG.md", "README.md", "Dockerfile",
                 "requirements/runtime.lock", "native/module.c", "deploy/kubernetes/kustomization.yaml",
                 "loader/index.js", "loader/package.json"):
        assert path in files, path
    assert not [f for f in files if "node_modules" in f or "__pycache__" in f or f.endswith(".so")]
    assert not [f for f in files if f.startswith(("tests/e2e/artifacts", "tests/e2e/site/.next"))]


def test_sdist_tests_run_from_the_sdist(dists, tmp_path):
    """A few of the sdist's own test files, run in the unpacked sdist against its own imgopt."""
    with tarfile.open(dists["sdist"]) as tar:
        tar.extractall(tmp_path, filter="data")
    (src,) = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "IMGOPT_"))}
    which = subprocess.run([sys.executable, "-c", "import imgopt; print(imgopt.__file__)"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=60)
    assert Path(which.stdout.strip()).is_relative_to(src)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::RuntimeWarning",
                          "tests/test_deploy.py", "tests/test_units.py"],
                         cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout) and " failed" not in run.stdout


def test_wheel_metadata(dists):
    wheel = dists["wheel"]
    assert wheel.name.startswith(f"imgopt_server-{imgopt.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = HeaderParser().parsestr(zf.read(f"imgopt_server-{imgopt.__version__}.dist-info/METADATA").decode())
    assert meta["Name"] == "imgopt-server" and meta["Version"] == imgopt.__version__
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert f"imgopt_server-{imgopt.__version__}.dist-info/licenses/LICENSE" in names
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier"))
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    runtime = {canonicalize_name(r.name) for r in requires if not r.marker or r.marker.evaluate(ENVIRONMENT)}
    assert "uvicorn" in runtime and not [r for r in requires if r.name == "uvicorn" and r.extras]
    assert any(n.startswith("imgopt/_native") for n in names), "the C kernels are built into the wheel"
    assert not [n for n in names if n.startswith("tests/")]


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtual environment: the runtime lock (hashes checked), then the wheel alone."""
    env = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    pip = [str(env / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
    for args in (["--require-hashes", "-r", str(LOCKS / "runtime.lock")], ["--no-deps", str(dists["wheel"])]):
        run = subprocess.run(pip + args, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    check = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    return env


def test_installed_wheel_prints_its_version(venv, tmp_path):
    out = subprocess.run([str(venv / "bin" / "imgopt"), "--version"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"imgopt {imgopt.__version__}"


@pytest.fixture
def installed_server(venv, tmp_path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGOPT_", "PYTHON"))}
    log = open(tmp_path / "imgopt.log", "wb")
    proc = subprocess.Popen([str(venv / "bin" / "imgopt"), "serve", "--port", str(port),
                             "--cache-dir", str(tmp_path / "cache")],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


def test_installed_wheel_serves(installed_server, venv, tmp_path):
    proc, url = installed_server
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "imgopt.log").read_text()
        try:
            health = httpx.get(url + "/healthz", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, (tmp_path / "imgopt.log").read_text()
            time.sleep(0.2)
    assert health.status_code == 200
    # it runs the installed copy (with its C kernels), not this checkout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import imgopt.native as n; print(n.__file__); print(n.IMPLEMENTATION)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    path, implementation = where.stdout.split()
    assert Path(path).is_relative_to(venv) and implementation == "c"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


# -- the loader's npm tarball ---------------------------------------------------------------------

LOADER = ROOT / "loader"


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        pytest.skip("npm is not installed")
    return found


def test_loader_tarball_has_license_readme_and_repository(tmp_path):
    pkg = json.loads((LOADER / "package.json").read_text())
    assert pkg["license"] == PYPROJECT["project"]["license"]
    assert pkg["repository"]["url"].endswith(".git") and pkg["repository"]["directory"] == "loader"
    assert (LOADER / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    out = subprocess.run([npm(), "pack", "--json", "--pack-destination", str(tmp_path)], cwd=LOADER,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (info,) = json.loads(out.stdout)
    files = {f["path"] for f in info["files"]}
    assert {"LICENSE", "README.md", "package.json", "index.js", "index.cjs", "index.d.ts", "index.d.cts"} <= files
    assert not [f for f in files if f.startswith(("test/", "node_modules/", "scripts/"))]
    with tarfile.open(tmp_path / info["filename"]) as tar:
        packed = json.load(tar.extractfile("package/package.json"))
    assert packed["repository"] == pkg["repository"]


def test_loader_types_resolve_in_esm_and_cjs():
    """`attw --pack`: every entry point's types, under node10, node16 (CJS and ESM) and bundler."""
    if not (LOADER / "node_modules" / "@arethetypeswrong" / "cli").exists():
        ci = subprocess.run([npm(), "ci", "--no-audit", "--no-fund"], cwd=LOADER, capture_output=True,
                            text=True, timeout=600)
        assert ci.returncode == 0, ci.stderr
    out = subprocess.run([str(LOADER / "node_modules" / ".bin" / "attw"), "--pack", ".", "--format", "json"],
                         cwd=LOADER, capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    assert report["problems"] == {} or not report["problems"], json.dumps(report["problems"], indent=1)
    assert out.returncode == 0, out.stderr
    entries = report["analysis"]["entrypoints"]
    assert {".", "./index.js", "./index.cjs"} <= set(entries)
