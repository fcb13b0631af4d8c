"""``--local-root`` never serves anything outside the root.

A real imgopt process serves a folder that sits next to a "secret" folder holding a valid
PNG (so serving it by mistake would be a 200 with an image, not an error). Every spelling of
"go up a level" is tried, plus symlinks that leave the root, device files, FIFOs and folders.
A control case (a file and a symlink that stay inside the root) shows the setup does serve
what it should, so the refusals are not an accident of the fixture.
"""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from PIL import Image

from conftest import ImgoptServer

W, Q = 384, 75
SECRET_COLOUR = (13, 37, 42)

# Every one of these names something outside the root (or a non-file) if a naive server
# joined it to the root after decoding. None of them may give a 200.
TRAVERSALS = [
    "/../outside/secret.png",
    "/../../outside/secret.png",
    "/./../outside/secret.png",
    "/%2e%2e/outside/secret.png",
    "/%2E%2E/outside/secret.png",
    "/.%2e/outside/secret.png",
    "/%2e./outside/secret.png",
    "/%252e%252e/outside/secret.png",
    "/%25252e%25252e/outside/secret.png",
    "/..%2foutside%2fsecret.png",
    "/..%2Foutside%2Fsecret.png",
    "/%2e%2e%2foutside%2fsecret.png",
    "/%2e%2e%2Foutside/secret.png",
    "/sub/..%2f..%2foutside/secret.png",
    "/..\\outside\\secret.png",
    "/..%5coutside%5csecret.png",
    "/..%5Coutside/secret.png",
    "/%5c..%5c..%5coutside%5csecret.png",
    "/sub\\..\\..\\outside\\secret.png",
    "/%c0%ae%c0%ae/outside/secret.png",  # overlong UTF-8 for '.'
    "/%e0%80%ae%e0%80%ae/outside/secret.png",
    "/%u002e%u002e/outside/secret.png",
    "/ok.png%00/../../outside/secret.png",
    "/secret.png%00.png",
    "/%00",
    "/..%00/outside/secret.png",
    "//outside/secret.png",
    "/%2f..%2foutside%2fsecret.png",
    "/%2F%2E%2E%2Foutside%2Fsecret.png",
    "/sub/../../outside/secret.png",
    "/sub/%2e%2e/%2e%2e/outside/secret.png",
    "/....//outside/secret.png",
    "/..;/outside/secret.png",
    "/../../../../../../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/etc/passwd",
    "/%2fetc%2fpasswd",
    "/proc/self/environ",
    "/..%2f..%2f..%2f..%2f..%2f..%2fproc%2fself%2fenviron",
    # symlinks, devices, folders inside the root
    "/link-out.png",
    "/link-abs-out.png",
    "/linkdir/secret.png",
    "/linkdir/../outside/secret.png",
    "/dev-zero",
    "/dev-null",
    "/chardev",
    "/fifo",
    "/sub",
    "/sub/",
    "/",
    "/%2e",
    "/loop-a",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("localroot")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), SECRET_COLOUR).save(buf, "PNG")
    (outside / "secret.png").write_bytes(buf.getvalue())
    # A copy *inside* the root must stay out of reach too when reached through `outside/`.
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "PNG")
    (root / "ok.png").write_bytes(buf.getvalue())
    (root / "sub" / "inner.png").write_bytes(buf.getvalue())
    os.symlink("../outside/secret.png", root / "link-out.png")
    os.symlink(str(outside / "secret.png"), root / "link-abs-out.png")
    os.symlink("../outside", root / "linkdir")
    os.symlink("/dev/zero", root / "dev-zero")
    os.symlink("/dev/null", root / "dev-null")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("ok.png", root / "link-in.png")  # stays inside: allowed
    os.symlink("sub/inner.png", root / "link-in-sub.png")
    os.mkfifo(root / "fifo")
    try:
        os.mknod(root / "chardev", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # like /dev/zero
    except OSError:
        os.symlink("/dev/zero", root / "chardev")  # not allowed to mknod: same risk via a link
    # A 20 GB sparse file: over maximumResponseBody, and reading it would be a disaster.
    with open(root / "huge.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(20 * 1024**3)
    return base


@pytest.fixture(scope="module")
def srv(tree: Path) -> Iterator[ImgoptServer]:
    s = ImgoptServer(tree / "imgopt", None, "--local-root", str(tree / "root")).start()
    yield s
    s.stop()


def _get(srv: ImgoptServer, url: str) -> httpx.Response:
    # The url goes in as the raw query value: only the characters that would break the
    # query itself are escaped, every %xx of the attack is sent as written.
    raw = url.replace("%", "%25").replace("&", "%26").replace("#", "%23").replace("+", "%2B")
    raw = raw.replace("\\", "%5C").replace(" ", "%20")
    return httpx.get(f"{srv.url}/_next/image?url={raw}&w={W}&q={Q}",
                     headers={"Accept": "image/png"}, timeout=15)


def test_control_files_inside_the_root_are_served(srv):
    for url in ("/ok.png", "/sub/inner.png", "/link-in.png", "/link-in-sub.png", "/sub/../ok.png",
                "/%2e/ok.png", "/sub/%2e%2e/ok.png"):
        r = _get(srv, url)
        assert r.status_code == 200, (url, r.status_code, r.text)
        assert Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((5, 5)) == (200, 10, 10)


@pytest.mark.parametrize("url", TRAVERSALS)
def test_nothing_outside_the_root_or_not_a_file_is_served(srv, tree, url):
    t0 = time.monotonic()
    r = _get(srv, url)
    assert time.monotonic() - t0 < 5, "a FIFO or device must not block the read"
    assert r.status_code in (400, 404), (url, r.status_code, r.text)
    assert r.headers["content-type"].startswith("text/plain")
    assert str(tree) not in r.text, "error messages must not disclose file-system paths"
    assert b"root:" not in r.content


def test_secret_bytes_never_leave(srv, tree):
    """Belt and braces: no traversal answer carries the secret's pixels in any form."""
    for url in TRAVERSALS[:12]:
        r = _get(srv, url)
        if r.status_code == 200:  # would already have failed above; keep the reason readable
            im = Image.open(io.BytesIO(r.content)).convert("RGB")
            assert im.getpixel((5, 5)) != SECRET_COLOUR, url


def test_huge_sparse_file_is_refused_without_reading_it(srv):
    t0 = time.monotonic()
    r = _get(srv, "/huge.png")
    assert r.status_code == 413
    assert r.text == '"url" parameter is valid but internal response is invalid'
    assert time.monotonic() - t0 < 2
    assert srv.proc is not None
    rss_kb = int(Path(f"/proc/{srv.proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    assert rss_kb < 400_000


def test_symlink_swapped_after_start_is_still_checked(srv, tree):
    """The check runs per request on the resolved path, not once at start-up."""
    link = tree / "root" / "swap.png"
    os.symlink("ok.png", link)
    try:
        assert _get(srv, "/swap.png").status_code == 200
        link.unlink()
        os.symlink("../outside/secret.png", link)
        # a cached variant of the old target may be served (same url); another width must not be
        r = httpx.get(f"{srv.url}/_next/image?url=/swap.png&w=256&q={Q}", timeout=15)
        assert r.status_code == 400
    finally:
        link.unlink()


def test_root_folder_itself_may_be_reached_through_a_symlink(tree):
    """--local-root given as a symlink: files inside work, the outside stays out of reach."""
    alias = tree / "root-alias"
    if not alias.exists():
        os.symlink(tree / "root", alias)
    s = ImgoptServer(tree / "imgopt-alias", None, "--local-root", str(alias)).start()
    try:
        assert _get(s, "/ok.png").status_code == 200
        assert _get(s, "/link-out.png").status_code == 400
        assert _get(s, "/..%2foutside%2fsecret.png").status_code == 400
    finally:
        s.stop()
