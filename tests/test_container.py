"""The Dockerfile built and run for real: a read-only root filesystem, no capabilities, no new
privileges and an arbitrary UID in group 0 (as OpenShift runs images); AVIF and WebP served;
HEALTHCHECK healthy; `docker stop` during a request lets it finish (200) and exits 0.

Docker Hub is not needed: the base image (the Dockerfile's PYTHON_IMAGE, python:3.11-slim) is
stood in for by Debian bookworm with its python3 (3.11), made once with debootstrap by
tests/container/make-base-image.sh and kept under a tag that names the script's and the CA
bundle's contents, so later runs skip it. Needs a Docker daemon and, for the base image, root and
debootstrap (.ci/run installs docker.io and debootstrap and starts dockerd). Without them the
tests are skipped, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from PIL import Image

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE_SCRIPT = ROOT / "tests" / "container" / "make-base-image.sh"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "imgopt:container-test"
# The classic builder: in every Docker engine Debian ships, and it pulls no frontend image.
DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


def unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the container tests cannot run: {why}")
    pytest.skip(why)


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=DOCKER_ENV)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def base_image() -> str:
    if shutil.which("docker") is None:
        unavailable("no docker client")
    if docker("info", check=False, timeout=30).returncode != 0:
        unavailable("no Docker daemon answers")
    digest = hashlib.sha256(BASE_SCRIPT.read_bytes())
    if CA_BUNDLE.exists():
        digest.update(CA_BUNDLE.read_bytes())
    tag = f"imgopt-test-base:{digest.hexdigest()[:16]}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        unavailable("the base image needs root and debootstrap")
    out = subprocess.run(["sh", str(BASE_SCRIPT), tag], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    return tag


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    out = subprocess.run(["docker", "build", "--force-rm", "--build-arg", f"PYTHON_IMAGE={base_image}", "-t", IMAGE, str(ROOT)],
                         capture_output=True, text=True, timeout=1800, env=DOCKER_ENV)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    return IMAGE


def png(width: int, height: int) -> bytes:
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class GatedOrigin:
    """An HTTP origin on 127.0.0.1: /photo.png at once; /slow.png only once `release` is set
    (`arrived` tells that imgopt's fetch is waiting)."""

    def __init__(self) -> None:
        self.body = png(640, 480)
        self.arrived = threading.Event()
        self.release = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/slow.png"):
                    origin.arrived.set()
                    origin.release.wait(120)
                elif not self.path.startswith("/photo.png"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(origin.body)))
                self.end_headers()
                self.wfile.write(origin.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "GatedOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[GatedOrigin]:
    with GatedOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def container(image: str, origin: GatedOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    port = free_port()
    # The image has no Node.js: it reads the site's build, the config next build resolved (what an
    # output: 'standalone' folder keeps), as docs/deploy.md shows.
    config = tmp_path_factory.mktemp("config") / "required-server-files.json"
    config.write_text(json.dumps({"version": 1, "config": {
        "basePath": "", "assetPrefix": "", "trailingSlash": False,
        "images": {"formats": ["image/avif", "image/webp"]},  # Next's default is WebP only
    }}))
    config.chmod(0o644)
    run = docker(
        "run", "--detach",
        "--network", "host",  # only loopback: imgopt on 127.0.0.1:port, the origin on the host's 127.0.0.1
        "--read-only", "--tmpfs", "/tmp",
        "--volume", "/var/cache/imgopt",  # a fresh volume takes the image's directory: 10001:0, mode 775
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", "12345:0",
        "--health-interval", "1s", "--health-start-period", "60s",
        "--env", "IMGOPT_HOST=127.0.0.1", "--env", f"IMGOPT_PORT={port}",
        "--env", f"IMGOPT_ORIGIN={origin.url}",
        "--mount", f"type=bind,source={config},target=/etc/imgopt/required-server-files.json,readonly",
        "--env", "IMGOPT_NEXT_CONFIG=/etc/imgopt/required-server-files.json",
        image,
    )
    cid = run.stdout.strip()
    try:
        yield {"id": cid, "url": f"http://127.0.0.1:{port}", "port": port}
    finally:
        docker("rm", "--force", "--volumes", cid, check=False)


def state(cid: str) -> dict[str, Any]:
    return json.loads(docker("inspect", "--format", "{{json .State}}", cid).stdout)


def logs(cid: str) -> str:
    out = docker("logs", cid, check=False)
    return out.stdout + out.stderr


def wait_healthy(container: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while (st := state(container["id"]))["Running"] and st["Health"]["Status"] == "starting":
        assert time.monotonic() < deadline, f"still starting:\n{logs(container['id'])}"
        time.sleep(0.5)
    assert st["Running"], f"the container exited ({st['ExitCode']}):\n{logs(container['id'])}"
    return st


def test_healthcheck_reports_healthy(container):
    st = wait_healthy(container)
    assert st["Health"]["Status"] == "healthy", st["Health"]["Log"][-3:]
    assert st["Health"]["Log"][-1]["ExitCode"] == 0
    assert httpx.get(container["url"] + "/healthz", timeout=10).status_code == 200


def test_serves_avif_and_webp_as_an_arbitrary_uid_with_a_read_only_root(container):
    assert wait_healthy(container)["Health"]["Status"] == "healthy"
    url = container["url"] + "/_next/image"
    params = {"url": "/photo.png", "w": "256", "q": "75"}
    avif = httpx.get(url, params=params, headers={"Accept": "image/avif,image/webp,*/*"}, timeout=60)
    assert avif.status_code == 200, avif.text
    assert avif.headers["content-type"] == "image/avif"
    assert avif.content[4:12] in (b"ftypavif", b"ftypavis")
    webp = httpx.get(url, params=params, headers={"Accept": "image/webp,*/*"}, timeout=60)
    assert webp.status_code == 200, webp.text
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).size == (256, 192)
    # The disk cache was written by UID 12345 through group 0's write permission.
    files = docker("exec", container["id"], "find", "/var/cache/imgopt", "-type", "f").stdout.split()
    assert files, "nothing was cached"
    assert docker("exec", container["id"], "id", "-u").stdout.strip() == "12345"
    # The AVIF above came from the formats of the mounted build: the image has no node to ask.
    assert docker("exec", container["id"], "sh", "-c", "command -v node", check=False).returncode != 0


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_docker_stop_drains_the_request_in_flight_and_exits_0(container, origin):
    assert wait_healthy(container)["Health"]["Status"] == "healthy"
    result: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            result["response"] = httpx.get(container["url"] + "/_next/image",
                                           params={"url": "/slow.png", "w": "128", "q": "75"},
                                           headers={"Accept": "image/webp,*/*"}, timeout=120)
        except httpx.HTTPError as e:
            result["error"] = e

    client = threading.Thread(target=slow_request)
    client.start()
    assert origin.arrived.wait(60), "imgopt never fetched /slow.png"
    stopper = threading.Thread(target=lambda: result.update(stop=docker("stop", "--time", "60", container["id"],
                                                                       check=False, timeout=120)))
    stopper.start()
    # SIGTERM has arrived when imgopt stops listening; only then may the origin answer.
    deadline = time.monotonic() + 60
    while listening(container["port"]):
        assert time.monotonic() < deadline, "imgopt kept listening after docker stop"
        time.sleep(0.1)
    assert state(container["id"])["Running"], "imgopt quit with a request in flight"
    origin.release.set()
    client.join(120)
    stopper.join(120)
    assert "error" not in result, result.get("error")
    assert result["response"].status_code == 200
    assert result["response"].headers["content-type"] == "image/webp"
    assert result["stop"].returncode == 0, result["stop"].stderr
    st = state(container["id"])
    assert not st["Running"]
    assert st["ExitCode"] == 0 and not st["OOMKilled"], logs(container["id"])
