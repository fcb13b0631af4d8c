"""Tests for imgopt.netguard (the SSRF guard).

These tests use no network and look up no external name.  The only resolver
lookup is 'localhost' (answered from /etc/hosts).  Every other resolve_checked
call either takes the literal path or runs against a fake getaddrinfo.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgopt.netguard import (
    ForbiddenAddress,
    InvalidHost,
    ResolveError,
    is_public_address,
    parse_ip_literal,
    resolve_checked,
    url_host,
)

LOOPBACK = IPv4Address("127.0.0.1")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def no_dns(monkeypatch):
    """Make any resolver call fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError(f"unexpected DNS lookup: {args!r}")

    async def aboom(self, *args, **kwargs):
        boom(*args)

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", aboom)


@pytest.fixture
def fake_resolver(monkeypatch):
    """Install a fake loop.getaddrinfo.  Call the fixture with the result (or exception)."""
    calls: list[tuple] = []

    def install(result):
        async def fake(self, host, port, *, family=0, type=0, proto=0, flags=0):
            calls.append((host, port, type))
            if isinstance(result, BaseException):
                raise result
            return result

        monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", fake)
        return calls

    return install


def _ai(ip: str, port: int = 80):
    if ":" in ip:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))


# --------------------------------------------------------------------------
# parse_ip_literal
# --------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0x7f.0.0.1",
    "0x7F.0x0.0x0.0x1",
    "0177.0.0.1",
    "0177.0000.0.01",
    "017700000001",
    "127.0.0.1.",
    "127.1.",
    "0x7f.1",
    "127.0x1",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
    "127\u30020\u30020\u30021",  # ideographic full stop
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_parse_loopback_spellings(host):
    assert parse_ip_literal(host) == LOOPBACK


@pytest.mark.parametrize(
    "host, expected",
    [
        ("[::1]", IPv6Address("::1")),
        ("::1", IPv6Address("::1")),
        ("[::]", IPv6Address("::")),
        ("[::ffff:127.0.0.1]", IPv6Address("::ffff:7f00:1")),
        ("[::FFFF:7F00:1]", IPv6Address("::ffff:7f00:1")),
        ("[2606:4700:4700::1111]", IPv6Address("2606:4700:4700::1111")),
        ("0", IPv4Address("0.0.0.0")),
        ("0x", IPv4Address("0.0.0.0")),
        ("0.0.0.0", IPv4Address("0.0.0.0")),
        ("4294967295", IPv4Address("255.255.255.255")),
        ("0xffffffff", IPv4Address("255.255.255.255")),
        ("10.1.2.3", IPv4Address("10.1.2.3")),
        ("10.66051", IPv4Address("10.1.2.3")),
        ("8.8.8.8", IPv4Address("8.8.8.8")),
        ("134744072", IPv4Address("8.8.8.8")),
        ("169.254.43518", IPv4Address("169.254.169.254")),
        ("0xa9fea9fe", IPv4Address("169.254.169.254")),
    ],
)
def test_parse_literals(host, expected):
    assert parse_ip_literal(host) == expected


def test_zone_ids_are_not_url_hosts(no_dns):
    # WHATWG (and so Node and ada) rejects a zone id in a URL host
    for host in ("[fe80::1%eth0]", "fe80::1%eth0", "[fe80::1%25eth0]"):
        assert parse_ip_literal(host) is None
        with pytest.raises(InvalidHost):
            run(resolve_checked(host, 80, allow_private=True))


def test_url_host_is_ada_form():
    assert url_host("EXAMPLE.com") == ("example.com", None)
    assert url_host("ex%61mple.com") == ("example.com", None)
    assert url_host("faß.de") == ("xn--fa-hia.de", None)
    assert url_host("0x7f.1") == ("127.0.0.1", LOOPBACK)
    assert url_host("::1") == ("[::1]", IPv6Address("::1"))
    assert url_host("[0:0::FFFF:7f00:1]") == ("[::ffff:7f00:1]", IPv6Address("::ffff:7f00:1"))
    for bad in ("xn--zz", "a:80", "[::1]:80", "u@h", "a/b", "a b", "", "256.0.0.1"):
        with pytest.raises(ValueError):
            url_host(bad)


def test_names_go_to_the_resolver_in_ada_form(fake_resolver):
    calls = fake_resolver([_ai("93.184.216.34")])
    run(resolve_checked("EX%41MPLE.com", 80, allow_private=False))
    run(resolve_checked("faß.de", 80, allow_private=False))
    assert [c[0] for c in calls] == ["example.com", "xn--fa-hia.de"]


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "LOCALHOST",
        "",
        "foo.bar.",
        "127.0.0.1.example.com",  # ends in a label, not a number
        "0x7f.example",
        "1e3",
        # ends in a number but is not valid IPv4 (a WHATWG parser rejects the URL):
        "256.0.0.1",
        "1.2.3.4.5",
        "127.0.0.256",
        "127.16777216",
        "4294967296",
        "08.0.0.1",  # 8 is not an octal digit
        "0x7g.0.0.1",
        "127..0.1",
        "foo.1",
        "foo.0x1",
        # not IPv6:
        "[127.0.0.1]",
        "[example.com]",
        "[::1",
        "::ffff:127.1",
        "1:2:3:4:5:6:7:8:9",
    ],
)
def test_parse_non_literals(host):
    assert parse_ip_literal(host) is None


# --------------------------------------------------------------------------
# is_public_address
# --------------------------------------------------------------------------

REFUSED_HOSTS = [
    # loopback in every spelling
    *LOOPBACK_SPELLINGS,
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::1]",
    "::127.0.0.1",
    "[::127.0.0.1]",
    # unspecified / this network
    "[::]",
    "0.0.0.0",
    "0",
    "0.1.2.3",
    # private
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    # link-local / cloud metadata
    "169.254.169.254",
    "0xa9fea9fe",
    "2852039166",
    "[::ffff:169.254.169.254]",
    "[fe80::1]",
    "[fe80::a9fe:a9fe]",
    # CGNAT, multicast, broadcast, reserved
    "100.64.0.1",
    "100.127.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "[ff02::1]",
    "[ff0e::1]",
    # unique local, site local
    "[fc00::1]",
    "[fd12::1]",
    "[fd00:ec2::254]",  # AWS IMDS over IPv6
    "[fec0::1]",
    # documentation / benchmarking / special purpose
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "198.19.255.255",
    "192.0.0.1",
    "192.0.0.8",
    "192.0.0.170",
    "192.88.99.1",
    "[2001:db8::1]",
    "[3fff::1]",
    "[100::1]",
    "[2001:2::1]",
    "[2001:10::1]",
    "[2001:20::1]",
    # IPv4-embedding IPv6: refused even when the embedded address is public
    "[64:ff9b::7f00:1]",
    "[64:ff9b::8.8.8.8]",
    "[64:ff9b:1::a00:1]",
    "[2002:7f00:1::]",
    "[2002:808:808::1]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",  # Teredo
    "[::ffff:8.8.8.8]",
    "[::8.8.8.8]",
    "[::ffff:0:8.8.8.8]",  # SIIT IPv4-translated
    # outside 2000::/3 (unallocated)
    "[4000::1]",
    "[e000::1]",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_refused_spellings(host):
    addr = parse_ip_literal(host)
    assert addr is not None, host
    assert is_public_address(addr) is False
    # The string forms are refused too, without going through parse_ip_literal.
    assert is_public_address(str(addr)) is False
    assert is_public_address(host) is False


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_refused_spellings_via_resolve_checked(host, no_dns):
    with pytest.raises(ForbiddenAddress) as info:
        run(resolve_checked(host, 80, allow_private=False))
    assert info.value.host == host
    assert len(info.value.addresses) == 1
    assert info.value.forbidden == [info.value.addresses[0][1]]


PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "172.15.255.255",
    "100.128.0.1",
    "100.63.255.255",
    "192.169.0.1",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
]


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses(ip):
    assert is_public_address(ip) is True
    assert is_public_address(ipaddress.ip_address(ip)) is True
    assert parse_ip_literal(ip) == ipaddress.ip_address(ip)


def test_public_bracketed_string():
    assert is_public_address("[2606:4700:4700::1111]") is True


@pytest.mark.parametrize(
    "value",
    ["", "example.com", "localhost", "127.1", "2130706433", "0x7f000001", "1.2.3.4.5", "[::1", "::g", "fe80::1%", None, 42],
)
def test_unparseable_is_not_public(value):
    assert is_public_address(value) is False


def test_zone_id_is_stripped_and_refused():
    assert is_public_address("fe80::1%eth0") is False
    assert is_public_address(IPv6Address("fe80::1%25")) is False
    # a zone id on an otherwise global address is refused as well
    assert is_public_address("2606:4700:4700::1111%eth0") is False
    assert is_public_address("[2606:4700:4700::1111%eth0]") is False


def test_no_dns_fixture_is_effective(no_dns):
    # guards the guard: names really do hit the poisoned resolver
    with pytest.raises(AssertionError, match="unexpected DNS lookup"):
        run(resolve_checked("img.test", 80, allow_private=True))


# --------------------------------------------------------------------------
# resolve_checked
# --------------------------------------------------------------------------


def test_localhost_is_forbidden():
    with pytest.raises(ForbiddenAddress) as info:
        run(resolve_checked("localhost", 80, allow_private=False))
    exc = info.value
    assert exc.host == "localhost"
    assert exc.addresses
    assert all(ipaddress.ip_address(ip).is_loopback for _, ip in exc.addresses)
    msg = str(exc)
    assert "localhost" in msg and "loopback" in msg and exc.addresses[0][1] in msg


def test_localhost_allowed_when_private_allowed():
    addrs = run(resolve_checked("localhost", 80, allow_private=True))
    assert addrs
    assert len(addrs) == len(set(addrs))
    for family, ip in addrs:
        assert family in (socket.AF_INET, socket.AF_INET6)
        assert ipaddress.ip_address(ip).is_loopback
        assert ipaddress.ip_address(ip).version == (4 if family == socket.AF_INET else 6)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "[::1]", "[::ffff:7f00:1]"])
def test_literals_skip_dns(host, no_dns):
    with pytest.raises(ForbiddenAddress):
        run(resolve_checked(host, 80, allow_private=False))
    addrs = run(resolve_checked(host, 80, allow_private=True))
    assert len(addrs) == 1
    family, ip = addrs[0]
    assert ipaddress.ip_address(ip) == parse_ip_literal(host)
    assert family == (socket.AF_INET if ":" not in ip else socket.AF_INET6)


def test_public_literals_pass_without_dns(no_dns):
    assert run(resolve_checked("8.8.8.8", 443, allow_private=False)) == [(socket.AF_INET, "8.8.8.8")]
    assert run(resolve_checked("134744072", 443, allow_private=False)) == [(socket.AF_INET, "8.8.8.8")]
    assert run(resolve_checked("[2606:4700:4700::1111]", 443, allow_private=False)) == [
        (socket.AF_INET6, "2606:4700:4700::1111")
    ]


def test_resolver_order_and_dedup(fake_resolver):
    calls = fake_resolver([_ai("93.184.216.34"), _ai("2606:2800:220:1::1"), _ai("93.184.216.34"), _ai("1.1.1.1")])
    addrs = run(resolve_checked("img.test", 8443, allow_private=False))
    assert addrs == [
        (socket.AF_INET, "93.184.216.34"),
        (socket.AF_INET6, "2606:2800:220:1::1"),
        (socket.AF_INET, "1.1.1.1"),
    ]
    assert calls == [("img.test", 8443, socket.SOCK_STREAM)]


def test_one_private_address_poisons_the_answer(fake_resolver):
    fake_resolver([_ai("93.184.216.34"), _ai("10.0.0.5"), _ai("::ffff:169.254.169.254")])
    with pytest.raises(ForbiddenAddress) as info:
        run(resolve_checked("rebind.test", 80, allow_private=False))
    exc = info.value
    assert exc.host == "rebind.test"
    assert [ip for _, ip in exc.addresses] == ["93.184.216.34", "10.0.0.5", "::ffff:169.254.169.254"]
    assert exc.forbidden == ["10.0.0.5", "::ffff:169.254.169.254"]
    assert "10.0.0.5 (private)" in str(exc)
    assert "169.254.169.254" in str(exc)
    # allow_private lets everything through, in order
    assert len(run(resolve_checked("rebind.test", 80, allow_private=True))) == 3


def test_scoped_link_local_from_resolver_is_refused(fake_resolver):
    fake_resolver([_ai("fe80::1%eth0")])
    with pytest.raises(ForbiddenAddress):
        run(resolve_checked("ll.test", 80, allow_private=False))


def test_garbage_from_resolver_is_refused(fake_resolver):
    fake_resolver([(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("not-an-ip", 80))])
    with pytest.raises(ForbiddenAddress):
        run(resolve_checked("weird.test", 80, allow_private=False))


@pytest.mark.parametrize(
    "error",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        OSError("boom"),
        UnicodeError("label too long"),
    ],
)
def test_resolution_failure(fake_resolver, error):
    fake_resolver(error)
    with pytest.raises(ResolveError) as info:
        run(resolve_checked("nx.test", 80, allow_private=False))
    assert info.value.host == "nx.test"
    assert info.value.reason
    assert "nx.test" in str(info.value)


def test_empty_result_is_resolve_error(fake_resolver):
    fake_resolver([])
    with pytest.raises(ResolveError):
        run(resolve_checked("empty.test", 80, allow_private=True))


@pytest.mark.parametrize(
    "host",
    [
        "",
        "256.0.0.1",
        "1.2.3.4.5",
        "foo.1",
        "127.0.0.1..",
        "[127.0.0.1]",
        "[localhost]",
        "::ffff:127.1",
        "a..b",
        ".a",
        "ex ample.com",
        "ex%2fample.com",
        # URL hosts (Node accepts them) that are no DNS name
        'a"b.com',
        "a{b}.com",
        "a*b.com",
        "a`b.com",
        "x" * 64 + ".com",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        "user@host",
        "a/b",
        "a\x00b",
        "a\uff0fb",  # full-width solidus, NFKC-maps to '/'
    ],
)
def test_invalid_hosts_never_reach_dns(host, no_dns):
    for allow in (False, True):
        with pytest.raises(InvalidHost):
            run(resolve_checked(host, 80, allow_private=allow))


@pytest.mark.parametrize("port", [-1, 65536, "80"])
def test_bad_port(port, no_dns):
    with pytest.raises(ValueError):
        run(resolve_checked("8.8.8.8", port, allow_private=False))


def test_exceptions_are_readable():
    exc = ForbiddenAddress("h.test", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "8.8.8.8")])
    assert exc.forbidden == ["127.0.0.1"]
    assert str(exc) == "host 'h.test' resolves to non-public address(es): 127.0.0.1 (loopback)"
    err = ResolveError("h.test", "no addresses")
    assert (err.host, err.reason) == ("h.test", "no addresses")
    assert str(err) == "cannot resolve host 'h.test': no addresses"


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

# The ranges netguard refuses on top of ``not is_global``.  Written out here
# separately from the module's own list so that the test is an independent
# oracle.  (Python's is_global varies by version: 3.11.7 counts 224/4 and
# most of 192.0.0/24 as global.)
EXTRA_BLOCKED_V4 = [
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast (netguard's own addition)
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
    )
]

EMBEDDING_V6 = [IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")]

ipv4s = st.one_of(st.ip_addresses(v=4), st.integers(0, 2**32 - 1).map(IPv4Address))
ipv6s = st.one_of(st.ip_addresses(v=6), st.integers(0, 2**128 - 1).map(IPv6Address))
rand16 = st.integers(0, 2**16 - 1)
rand32 = st.integers(0, 2**32 - 1)
rand80 = st.integers(0, 2**80 - 1)


@given(ipv4s)
def test_ipv4_public_iff_global_and_not_extra_blocked(v4):
    expected = v4.is_global and not any(v4 in net for net in EXTRA_BLOCKED_V4)
    assert is_public_address(v4) is expected
    assert is_public_address(str(v4)) is expected


@given(v4=ipv4s, server=rand32, flags=rand16, port=rand16, suffix=rand80, mid=st.integers(0, 2**48 - 1))
def test_ipv4_embedded_in_ipv6_is_never_public(v4, server, flags, port, suffix, mid):
    n = int(v4)
    forms = [
        IPv6Address((0xFFFF << 32) | n),  # ::ffff:a.b.c.d (mapped)
        IPv6Address(n),  # ::a.b.c.d (compatible)
        IPv6Address(int(IPv6Address("64:ff9b::")) | n),  # NAT64 well-known prefix
        IPv6Address(int(IPv6Address("64:ff9b:1::")) | (mid << 32) | n),  # local-use NAT64
        IPv6Address((0x2002 << 112) | (n << 80) | suffix),  # 6to4
        IPv6Address(  # Teredo: 2001:0:server:flags:~port:~client
            (0x20010000 << 96) | (server << 64) | (flags << 48) | ((port ^ 0xFFFF) << 32) | (n ^ 0xFFFFFFFF)
        ),
    ]
    for addr in forms:
        assert is_public_address(addr) is False, addr
        assert is_public_address(str(addr)) is False, addr
        assert is_public_address(f"[{addr}]") is False, addr
        assert parse_ip_literal(f"[{addr}]") == addr


@given(ipv6s)
def test_ipv6_public_implies_global_unicast(v6):
    if is_public_address(v6):
        assert v6.is_global
        assert v6 in IPv6Network("2000::/3")
        assert not any(v6 in net for net in EMBEDDING_V6)
        assert v6 not in IPv6Network("2001::/23")
        assert v6 not in IPv6Network("2001:db8::/32")


def _fmt(value: int, radix: str) -> str:
    if radix == "dec":
        return str(value)
    if radix == "hex":
        return hex(value)
    if radix == "HEX":
        return "0X" + format(value, "X")
    return "0" + format(value, "o")  # octal ("00" for zero is still valid)


radixes = st.sampled_from(["dec", "hex", "HEX", "oct"])


@given(ipv4s)
def test_parse_decimal_and_hex_integer(v4):
    assert parse_ip_literal(str(int(v4))) == v4
    assert parse_ip_literal(hex(int(v4))) == v4
    assert parse_ip_literal("0" + format(int(v4), "o")) == v4


@given(v4=ipv4s, rs=st.lists(radixes, min_size=4, max_size=4), parts=st.integers(1, 4), dot=st.booleans())
def test_parse_dotted_mixed_radix_forms(v4, rs, parts, dot):
    b = v4.packed
    head = list(b[: parts - 1])
    tail = int.from_bytes(b[parts - 1 :], "big")
    numbers = head + [tail]
    text = ".".join(_fmt(x, r) for x, r in zip(numbers, rs))
    assert parse_ip_literal(text) == v4
    if dot:
        assert parse_ip_literal(text + ".") == v4
    else:
        # The same text means the same thing to the C library's inet_aton
        # (purely local, no DNS).
        assert socket.inet_aton(text) == v4.packed


@given(v4=ipv4s)
def test_parse_hex_dotted(v4):
    assert parse_ip_literal(".".join(hex(x) for x in v4.packed)) == v4
    assert parse_ip_literal(".".join(f"0x{x:02X}" for x in v4.packed)) == v4


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("0123456789abcdefxX.:[]%ga\uff10\u3002 ")), max_size=24) | st.text(max_size=24))
def test_never_crashes_on_garbage(text):
    result = parse_ip_literal(text)
    assert result is None or isinstance(result, (IPv4Address, IPv6Address))
    assert is_public_address(text) in (True, False)
    if result is not None and not is_public_address(result):
        # Whatever spelling was used, a non-public literal stays non-public.
        assert is_public_address(str(result)) is False
