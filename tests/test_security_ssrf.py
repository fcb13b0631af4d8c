"""SSRF. With dangerouslyAllowLocalIP false nothing reaches a non-public address.

Two layers of tests:

* Over HTTP against a real imgopt process whose remotePatterns allow *every* host
  (``{"hostname": "**"}``), so the address guard, not the pattern check, is what must refuse.
  Every attack URL spells an address that lands on 127.0.0.1, where the hostile origin
  listens: if the guard let one through, the origin's hit counter would show it.
* In-process against the real :class:`imgopt.sources.Fetcher` for what cannot be staged over
  HTTP on one loopback-only machine: a redirect *from an allowed public host* to a private
  one, non-loopback private ranges, and DNS rebinding. Two test aids are installed there, and
  nothing else is replaced:
  - a one-pair exemption: ``127.0.0.1:<origin port>`` is treated as if it were a public host
    (the stand-in for "an allowed image CDN"). Every other host, including other spellings
    of 127.0.0.1 and other ports, goes through the real ``netguard.resolve_checked``.
  - a tripwire under the guard that records every address the fetcher really connects to
    and refuses (without any system call) anything that is not loopback, so a regression
    can never send a packet anywhere but 127.0.0.1 / ::1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpcore
import pytest

from imgopt import fetch as fetch_mod
from imgopt.sources import Fetcher
from imgopt import netguard
from imgopt.config import Settings, parse_images_config
from imgopt.errors import NOT_ALLOWED, UPSTREAM_INVALID, ImageError
from imgopt.params import parse_remote_url, parse_request

NOT_ALLOWED_BODY = '"url" parameter is not allowed'
ALLOW_ALL_HOSTS = {"remotePatterns": [{"hostname": "**"}]}  # dangerouslyAllowLocalIP: default false


def loopback_spellings(port: int) -> list[str]:
    """Hosts that all mean this machine; the origin listens on 127.0.0.1:port."""
    hosts = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0X7F000001", "0x7f.0.0.1",
        "0x7f.0x0.0x0.0x1", "0177.0.0.1", "0177.0.0.01", "017700000001", "0177.1",
        "127.000.000.001", "127.0.0.1.", "127.255.255.254", "0", "0.0.0.0", "0x0", "00000",
        "%31%32%37.0.0.1", "%31%32%37%2e%30%2e%30%2e%31",
        "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
        "127\u30020\u30020\u30021",  # ideographic full stops
        "127\uff0e0\uff0e0\uff0e1",
        "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[::FFFF:127.0.0.1]",
        "[::127.0.0.1]", "[::7f00:1]", "[64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]",
        "[64:ff9b:1::7f00:1]", "[2002:7f00:1::]", "[2002:7f00:0001::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo whose client is 127.0.0.1
        "[::1]", "[0:0:0:0:0:0:0:1]", "[0000::0001]", "[::]",
        "localhost", "LOCALHOST", "LocalHost", "localhost.", "%6c%6f%63%61%6c%68%6f%73%74",
        "\u24dbocalhost",  # circled l, IDNA-maps to localhost
    ]
    return [f"http://{h}:{port}" for h in hosts]


_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")


def private_names_in_hosts(text: str) -> list[str]:
    """The names a hosts file maps to non-public addresses (its loopback and private entries)."""
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and not netguard.is_public_address(fields[0]):
            names.update(n.lower() for n in fields[1:] if _HOST_NAME.fullmatch(n.lower()))
    return sorted(names)


def this_machines_private_names() -> list[str]:
    """Names this machine has for itself, found at test time from its hosts file (only read):
    localhost, the host name, a container's name... Each must be refused like 127.0.0.1. A name
    is kept only when the system resolver gives it nothing but non-public addresses (hosts file
    names resolve locally: no DNS query leaves the machine). localhost is always among them."""
    try:
        text = Path("/etc/hosts").read_text(errors="replace")
    except OSError:
        text = ""
    kept = []
    for name in ["localhost", *private_names_in_hosts(text)][:32]:
        try:
            addrs = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            continue
        if addrs and not any(netguard.is_public_address(a) for a in addrs) and name not in kept:
            kept.append(name)
    return kept


def userinfo_urls(port: int) -> list[str]:
    return [
        f"http://user:pw@127.0.0.1:{port}/test.png",
        f"http://user@localhost:{port}/test.png",
        f"http://@127.0.0.1:{port}/test.png",
        f"http://:@127.0.0.1:{port}/test.png",
        f"http://example.com@127.0.0.1:{port}/test.png",
        f"http://example.com:80@127.0.0.1:{port}/test.png",
        f"http://127.0.0.1:{port}@example.com/test.png",
        f"http://127.0.0.1:{port}\\@example.com/test.png",
        f"http://a%40b@127.0.0.1:{port}/test.png",
        f"https://user:pw@example.com/test.png",
    ]


def other_scheme_urls(port: int) -> list[str]:
    return [
        "file:///etc/passwd", f"gopher://127.0.0.1:{port}/_GET%20/test.png", f"dict://127.0.0.1:{port}/",
        f"ftp://127.0.0.1:{port}/test.png", "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)", f"ws://127.0.0.1:{port}/", f"http+unix://%2Ftmp%2Fx/test.png",
    ]


def _raw_query_value(url: str) -> str:
    return quote(url, safe=":/@[]!$'()*,;=~")


def test_private_names_in_hosts_file_text():
    text = ("127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback  # loopback\n"
            "# 10.0.0.9 commented-out\n93.184.215.14 public.example\n127.0.1.1 Box.Lan box\n"
            "172.17.0.2 c0ffee\n10.1.2.3 under_score\nfe80::1%eth0 linklocal\n")
    assert private_names_in_hosts(text) == [
        "box", "box.lan", "c0ffee", "ip6-localhost", "ip6-loopback", "linklocal", "localhost"]


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from conftest import ImgoptServer

    srv = ImgoptServer(tmp_path_factory.mktemp("ssrf"), ALLOW_ALL_HOSTS).start()
    yield srv
    srv.stop()


def test_every_loopback_spelling_is_refused_before_connecting(guarded, origin):
    urls = loopback_spellings(origin.port)
    assert len(urls) == 46
    names = this_machines_private_names()
    assert "localhost" in names
    urls += [f"http://{name}:{origin.port}" for name in names]
    before = len(origin.requests)
    failures = []
    for i, base in enumerate(urls):
        path = f"/ssrf-{i}/test.png"
        r = guarded.raw(f"url={_raw_query_value(base + path)}&w=640&q=75")
        if r.status_code != 400 or r.text != NOT_ALLOWED_BODY:
            failures.append((base, r.status_code, r.text))
        if origin.hits[path]:
            failures.append((base, "REACHED THE ORIGIN"))
    assert not failures
    assert len(origin.requests) == before  # not one connection reached the origin


def test_userinfo_is_refused(guarded, origin):
    before = len(origin.requests)
    for url in userinfo_urls(origin.port):
        r = guarded.raw(f"url={_raw_query_value(url)}&w=640&q=75")
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert r.text in (NOT_ALLOWED_BODY, '"url" parameter is invalid'), url
    assert len(origin.requests) == before


def test_other_schemes_are_refused(guarded, origin):
    before = len(origin.requests)
    for url in other_scheme_urls(origin.port):
        r = guarded.raw(f"url={quote(url, safe='')}&w=640&q=75")
        assert r.status_code == 400, (url, r.status_code, r.text)
    assert len(origin.requests) == before


def test_guard_is_the_only_thing_in_the_way(make_server, origin):
    """Control: the same config plus dangerouslyAllowLocalIP does fetch from the origin, so the
    refusals above come from the address guard (not from a broken URL or a dead origin)."""
    srv = make_server({**ALLOW_ALL_HOSTS, "dangerouslyAllowLocalIP": True})
    for base in (f"http://127.1:{origin.port}", f"http://2130706433:{origin.port}",
                 f"http://[::ffff:127.0.0.1]:{origin.port}", f"http://localhost:{origin.port}"):
        r = srv.raw(f"url={_raw_query_value(base + '/test.png')}&w=640&q=75", headers={"Accept": "image/webp"})
        assert r.status_code == 200, (base, r.status_code, r.text)


def test_redirect_hops_are_checked_against_remote_patterns(make_server, origin):
    origin.add_file("/ok/pic.png", (origin.root / "test.png").read_bytes())
    srv = make_server({
        "dangerouslyAllowLocalIP": True,
        "remotePatterns": [{"protocol": "http", "hostname": "127.0.0.1", "port": str(origin.port),
                            "pathname": "/ok/**"}],
    })
    base = origin.base_url

    def via_redirect(location: str):
        return srv.get(f"{base}/ok/r?status=302&location={quote(location, safe='')}", 640, 75)

    assert via_redirect("/ok/pic.png").status_code == 200  # control: an allowed hop is followed
    origin.reset_counters()
    for location in (
        "/test.png", "/ok/../test.png", "/ok/%2e%2e/test.png", "/ok/.%2E/test.png",
        f"http://localhost:{origin.port}/ok/pic.png", f"http://[::ffff:127.0.0.1]:{origin.port}/ok/pic.png",
        f"https://127.0.0.1:{origin.port}/ok/pic.png", f"http://127.0.0.1:1/ok/pic.png",
        f"http://user:pw@127.0.0.1:{origin.port}/ok/pic.png",
        f"//localhost:{origin.port}/ok/pic.png",
    ):
        r = via_redirect(location)
        assert r.status_code == 400, (location, r.status_code, r.text)
        assert r.text == NOT_ALLOWED_BODY, location
    assert origin.hits["/test.png"] == 0 and origin.hits["/ok/pic.png"] == 0
    assert {rec.path for rec in origin.requests} == {"/ok/r"}  # only the first hop ever connected


# -- in-process: redirects from a "public" host, private ranges, rebinding ------------------------


class Tripwire(httpcore.AsyncNetworkBackend):
    """Records every connect; refuses anything that is not loopback before any system call."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner
        self.connects: list[tuple[str, int]] = []
        self.blocked: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[override]
        self.connects.append((host, port))
        try:
            ip = ipaddress.ip_address(host)  # the guard must hand over an address, never a name
        except ValueError:
            self.blocked.append((host, port))
            raise httpcore.ConnectError(f"tripwire: asked to connect to a name {host!r}")
        if not ip.is_loopback:
            self.blocked.append((host, port))
            raise httpcore.ConnectError(f"tripwire: refused non-loopback {host}")
        return await self.inner.connect_tcp(host, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class Harness:
    def __init__(self, origin, monkeypatch, images: dict[str, Any] | None = None) -> None:
        self.origin = origin
        self.cfg = parse_images_config(images or ALLOW_ALL_HOSTS)
        self.settings = Settings(images=self.cfg, fetch_timeout=5.0)
        self.resolved: list[str] = []
        real = netguard.resolve_checked
        exempt = ("127.0.0.1", origin.port)

        async def resolve(host: str, port: int, *, allow_private: bool):
            self.resolved.append(host)
            if (host, port) == exempt:  # the stand-in for an allowed public CDN
                return [(socket.AF_INET, "127.0.0.1")]
            return await real(host, port, allow_private=allow_private)

        monkeypatch.setattr(netguard, "resolve_checked", resolve)

    def fetch(self, url: str) -> tuple[int, Tripwire, bytes | str]:
        async def go():
            f = Fetcher(self.settings)
            guard = f.remote.transport._pool._pool._network_backend  # the retrying transport's pool
            assert isinstance(guard, fetch_mod.GuardedBackend)
            wire = Tripwire(guard._inner)
            guard._inner = wire
            req = parse_request(urlencode({"url": url, "w": 640, "q": 75}), "image/webp", self.cfg)
            try:
                orig = await f.fetch(req)
                return 200, wire, orig.body
            except ImageError as e:
                return e.status, wire, e.message
            finally:
                await f.aclose()

        return asyncio.run(go())


PRIVATE_LITERALS = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.0.1", "192.168.255.255",
    "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254", "192.0.0.1", "192.0.2.1",
    "198.18.0.1", "198.51.100.1", "203.0.113.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "0.0.0.1", "192.88.99.1", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376",
    "10.1", "[fd00::1]", "[fc00::1]", "[fe80::1]", "[febf::1]", "[fec0::1]", "[ff02::1]", "[ff05::1:3]",
    "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::10.0.0.1]",
    "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "[2002:c0a8:101::1]", "[2001:db8::1]", "[100::1]",
    "[::ffff:8.8.8.8]", "[64:ff9b::8.8.8.8]", "[2002:808:808::1]",  # IPv4-embedding: refused whatever they carry
    "[fd00:ec2::254]",
]


@pytest.fixture
def internal():
    """A second listener on 127.0.0.1: the "internal service" an attacker wants to reach."""
    from origin import Origin

    with Origin() as o:
        o.add_file("/secret.png", b"\x89PNG\r\n\x1a\n" + b"internal" * 16)
        yield o


def _refused_without_connecting(status: int, message: Any) -> bool:
    # 400 from the guard or the patterns; or 502 when httpx itself cannot parse the Location
    # (it does so even with redirects off). Either way nothing was connected to.
    return (status, message) == (400, NOT_ALLOWED) or (
        status == 502 and str(message).startswith(UPSTREAM_INVALID))


def test_redirect_from_allowed_host_to_loopback_is_refused(origin, internal, monkeypatch):
    h = Harness(origin, monkeypatch)
    status, wire, body = h.fetch(f"{origin.base_url}/chain/1/test.png")
    assert status == 200 and body[:4] == b"\x89PNG"  # control: the exempt host works, hops too
    ok = quote(f"{origin.base_url}/test.png", safe="")
    assert h.fetch(f"{origin.base_url}/redirect?to={ok}")[0] == 200  # absolute Location too
    targets = [f"{b}/secret.png" for b in loopback_spellings(internal.port)]
    targets += [f"http://127.0.0.1:{origin.port}@127.0.0.1:{internal.port}/secret.png"]
    origin.reset_counters()
    for target in targets:
        status, wire, message = h.fetch(f"{origin.base_url}/redirect?to={quote(target, safe='')}&code=302")
        assert _refused_without_connecting(status, message), (target, status, message)
        assert wire.connects == [("127.0.0.1", origin.port)], target  # only the first hop connected
    assert internal.requests == []
    assert origin.hits["/redirect"] == len(targets)
    assert len(targets) >= 45


def test_redirect_chain_checks_every_hop(origin, internal, monkeypatch):
    h = Harness(origin, monkeypatch)
    evil = quote(f"http://localhost:{internal.port}/secret.png", safe="")
    # hop 1 -> hop 2 (same allowed host) -> hop 3 localhost: refused at hop 3, after 2 connects
    inner = quote(f"/redirect?to={evil}&code=307", safe="")
    status, wire, message = h.fetch(f"{origin.base_url}/redirect?to={inner}&code=301")
    assert (status, message) == (400, NOT_ALLOWED)
    assert len(wire.connects) == 2 and wire.blocked == []
    assert internal.requests == []


@pytest.mark.parametrize("literal", PRIVATE_LITERALS)
def test_private_ranges_refused_directly_and_after_redirect(origin, monkeypatch, literal):
    h = Harness(origin, monkeypatch)
    status, wire, message = h.fetch(f"http://{literal}/x.png")
    assert (status, message) == (400, NOT_ALLOWED)
    assert wire.connects == []
    status, wire, message = h.fetch(
        f"{origin.base_url}/redirect?to={quote(f'http://{literal}:8080/x.png', safe='')}")
    assert _refused_without_connecting(status, message), (status, message)
    assert wire.connects == [("127.0.0.1", origin.port)] and wire.blocked == []


def test_connects_to_the_checked_address_without_resolving_again(origin, monkeypatch):
    """DNS rebinding: the name is resolved once, the result checked, and exactly that address
    is connected to. A second resolution (by the HTTP client) would fail here, because the fake
    name resolves only once."""
    calls: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *a, **kw):
        if host == "rebind.test":
            calls.append(host)
            if len(calls) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "rebinding window: resolved twice")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # Guard on: the single answer is private, so the request is refused and nothing connects.
    h = Harness(origin, monkeypatch)
    status, wire, message = h.fetch(f"http://rebind.test:{origin.port}/test.png")
    assert (status, message) == (400, NOT_ALLOWED)
    assert wire.connects == [] and calls == ["rebind.test"]
    # Guard off (dangerouslyAllowLocalIP): the fetch works only if the checked address is
    # the one connected to; a second lookup would raise.
    calls.clear()
    monkeypatch.undo()
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    h = Harness(origin, monkeypatch, {**ALLOW_ALL_HOSTS, "dangerouslyAllowLocalIP": True})
    status, wire, body = h.fetch(f"http://rebind.test:{origin.port}/test.png")
    assert status == 200 and body[:4] == b"\x89PNG"
    assert calls == ["rebind.test"]
    assert wire.connects == [("127.0.0.1", origin.port)]


def test_name_resolving_to_mixed_public_and_private_is_refused(origin, monkeypatch):
    """Any one private address in the answer refuses the host (an attacker cannot hide
    127.0.0.1 behind a public first answer and rely on fallback)."""

    def getaddrinfo(host, port, *a, **kw):
        assert host == "mixed.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    h = Harness(origin, monkeypatch)
    status, wire, message = h.fetch(f"http://mixed.test:{origin.port}/test.png")
    assert (status, message) == (400, NOT_ALLOWED)
    assert wire.connects == []


def test_refusal_is_fast_and_does_not_wait_for_the_network(guarded, origin):
    t0 = time.monotonic()
    for base in loopback_spellings(origin.port)[:10]:
        assert guarded.raw(f"url={_raw_query_value(base + '/hang')}&w=640&q=75").status_code == 400
    assert time.monotonic() - t0 < 5  # /hang never answers: any connection would have stalled
    assert origin.hits["/hang"] == 0


def test_relative_urls_never_leave_the_origin(make_server, origin):
    """With --origin, a relative url is a path on that origin, however it is spelled: nothing
    that a browser would read as another host (``/\\evil``, ``/%5Cevil``, ``/@evil``) makes
    imgopt connect anywhere else. (evil.test does not resolve: trying it would be a 502.)"""
    srv = make_server(None, "--origin", origin.base_url)
    for url in ("/\\evil.test/x.png", "/%5Cevil.test/x.png", "/%5C%5Cevil.test/x.png", "/@evil.test/x.png",
                "/%2F%2Fevil.test/x.png", "/%2F/evil.test/x.png", "/.//evil.test/x.png", "/./\\evil.test/x.png"):
        origin.reset_counters()
        r = srv.raw(f"url={quote(url, safe='/%@')}&w=640&q=75")
        assert r.status_code in (400, 404), (url, r.status_code, r.text)
        if r.status_code == 404:  # it was fetched: from the origin, as a path
            assert len(origin.requests) == 1, url
            assert "evil.test" in origin.requests[0].path and origin.requests[0].path.startswith("/"), url
