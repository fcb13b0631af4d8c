"""SSRF guard: decide whether an upstream address may be contacted.

Next.js (spec §3.1) refuses any upstream whose ``ipaddr.js`` ``range()`` is not
``'unicast'``, but it checks a separately resolved address list.  imgopt is
stricter in two ways:

* The check runs on the addresses that will actually be connected to.
  :func:`resolve_checked` returns the vetted ``(family, ip)`` list, and the
  caller must connect to exactly those addresses (pin them) instead of letting
  the HTTP client resolve the name again.  That defeats DNS rebinding.
* Every way of writing an address is covered.  Hosts are read by ada, the
  WHATWG URL parser Node bundles (:func:`url_host`), so the IPv4 shorthands
  (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``, trailing dot,
  full-width digits, ...) mean what they mean to Next, and
  :func:`is_public_address` refuses every IPv6 range that carries an IPv4
  address (mapped, compatible, NAT64, 6to4, Teredo), whatever that address is.

The module has no state.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import TypeAlias

import ada_url

__all__ = [
    "IPAddress",
    "ForbiddenAddress",
    "InvalidHost",
    "ResolveError",
    "is_public_address",
    "parse_ip_literal",
    "resolve_checked",
    "url_host",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_v4 = ipaddress.IPv4Network
_v6 = ipaddress.IPv6Network

# IPv4 ranges that are refused in any case.  They are listed explicitly and do
# not depend on ``is_global`` alone: its contents change between Python
# versions, and older versions count multicast and most of 192.0.0.0/24 as
# "global".
_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified / 'this network'"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "carrier-grade NAT"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local / cloud metadata"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "IETF protocol assignments"),
    (_v4("192.0.2.0/24"), "documentation"),
    # The deprecated 6to4 relay anycast prefix (RFC 7526).  Packets sent to it
    # are decapsulated by relays, so it gets the same treatment as 2002::/16.
    (_v4("192.88.99.0/24"), "6to4 relay anycast"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "benchmarking"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("240.0.0.0/4"), "reserved / broadcast"),
)

# IPv6 ranges that carry an IPv4 address.  ALL of them are refused, even when
# the IPv4 address inside is public.  Each one can be turned into a packet to
# an IPv4 host by something other than our own check: the kernel for
# v4-mapped and compatible addresses, a NAT64 gateway (which may sit inside
# the deployment's network and reach its RFC 1918 space), a 6to4 relay, or a
# Teredo relay.  We cannot know how far that path reaches into internal IPv4
# networks.  Next.js refuses them too (their ipaddr.js range is not
# 'unicast').
_V6_EMBEDDING: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::ffff:0:0/96"), "IPv4-mapped"),
    (_v6("::/96"), "IPv4-compatible"),
    (_v6("64:ff9b::/96"), "NAT64"),
    (_v6("64:ff9b:1::/48"), "local-use NAT64"),
    (_v6("2002::/16"), "6to4"),
    (_v6("2001::/32"), "Teredo"),
)

_V6_COMPAT = _v6("::/96")
_V6_NAT64_WKP = _v6("64:ff9b::/96")

# Other IPv6 ranges that are refused.  Most of them already lie outside
# 2000::/3, which is required anyway (see below).  They are listed so that the
# error message can name them.
_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("100::/64"), "discard-only"),
    # Benchmarking 2001:2::/48, ORCHID 2001:10::/28, ORCHIDv2 2001:20::/28, ...
    (_v6("2001::/23"), "IETF protocol assignments"),
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("3fff::/20"), "documentation"),
    (_v6("fc00::/7"), "unique-local"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "site-local"),
    (_v6("ff00::/8"), "multicast"),
)

# IANA allocates global unicast space only from 2000::/3.  Anything outside it
# is special or unallocated, so it is refused without further checks.
_V6_GLOBAL_UNICAST = _v6("2000::/3")


class ForbiddenAddress(Exception):
    """A host resolved to (or is) at least one non-public address.

    ``host`` is the host as given.  ``addresses`` is the full resolved list of
    ``(family, ip)`` pairs.  ``forbidden`` holds the ip strings that were
    refused.
    """

    def __init__(self, host: str, addresses: list[tuple[int, str]]) -> None:
        self.host = host
        self.addresses = list(addresses)
        self.forbidden = [ip for _, ip in self.addresses if _refusal_reason(ip) is not None]
        details = ", ".join(f"{ip} ({_refusal_reason(ip)})" for ip in self.forbidden)
        super().__init__(f"host {host!r} resolves to non-public address(es): {details or '?'}")


class ResolveError(Exception):
    """A host could not be resolved, or is not a valid host at all."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"cannot resolve host {host!r}: {reason}")


class InvalidHost(ResolveError):
    """A host that can never be resolved (not a URL host, or not a DNS name): never sent to DNS."""


def _as_address(addr: IPAddress | str) -> IPAddress | None:
    if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return addr
    if not isinstance(addr, str):
        return None
    text = addr
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address that an IPv4-embedding IPv6 address carries, if it can be found."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.teredo is not None:
        return addr.teredo[1]  # the (de-obfuscated) client address
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _V6_COMPAT or addr in _V6_NAT64_WKP:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None  # 64:ff9b:1::/48: where the IPv4 address sits depends on the prefix length


def _refusal_reason(addr: IPAddress | str) -> str | None:
    """Return ``None`` if *addr* is public, or else a short reason for refusing it."""
    ip = _as_address(addr)
    if ip is None:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv4Address):
        for net, label in _V4_BLOCKED:
            if ip in net:
                return label
        return None if ip.is_global else "not globally routable"
    # Drop any zone id ("%eth0") so that range membership is plain arithmetic.
    scoped = ip.scope_id is not None
    ip6 = ipaddress.IPv6Address(int(ip))
    for net6, label in _V6_BLOCKED[:2]:  # "::" and "::1" come before "::/96"
        if ip6 in net6:
            return label
    for net6, label in _V6_EMBEDDING:
        if ip6 in net6:
            v4 = _embedded_ipv4(ip6)
            if v4 is None:
                return label
            inner = _refusal_reason(v4)
            # The whole range is refused whatever it carries; the embedded
            # address only makes the message more useful.
            return f"{label} embedding {v4}" + (f" ({inner})" if inner else "")
    for net6, label in _V6_BLOCKED[2:]:
        if ip6 in net6:
            return label
    if ip6 not in _V6_GLOBAL_UNICAST:
        return "outside global unicast 2000::/3"
    if not ip6.is_global:
        return "not globally routable"
    # A zone id only makes sense for link-scoped addresses.  On anything else
    # it is a sign of trickery, so the address is refused.
    return "zone id on a global address" if scoped else None


def is_public_address(addr: IPAddress | str) -> bool:
    """True only for globally routable unicast addresses.

    *addr* is an :mod:`ipaddress` object or a string in standard notation.
    Square brackets around IPv6 and zone ids (``fe80::1%eth0``) are accepted.
    The zone id is stripped before the range checks, and a scoped address is
    always refused (a zone id on a global address makes no sense).
    Strings that do not parse give ``False``; use :func:`url_host` first for
    URL-style shorthands such as ``127.1``.

    Refused: everything that is not ``is_global``, and also these ranges,
    listed explicitly because ``is_global`` differs between Python versions:

    * IPv4: 0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16 (link-local,
      cloud metadata), 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24 (6to4
      relay), 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4
      (multicast), 240/4 (reserved, including 255.255.255.255).
    * IPv6: everything outside 2000::/3 (::, ::1, 100::/64, fc00::/7,
      fe80::/10, fec0::/10, ff00::/8, ...), 2001::/23 (Teredo, benchmarking,
      ORCHID, ...), 2001:db8::/32, 3fff::/20, and every range that carries an
      IPv4 address: ::ffff:0:0/96, ::/96, 64:ff9b::/96, 64:ff9b:1::/48,
      2002::/16 and 2001::/32.  These are refused even when the IPv4 address
      inside is public, because NAT64 gateways and 6to4/Teredo relays can
      carry the connection to internal IPv4 hosts.
    """
    return _refusal_reason(addr) is None


_NOT_IN_HOST = frozenset("/\\?#@" + "".join(chr(c) for c in range(0x21)) + "\x7f")
# A name the resolver may be asked about: LDH labels (and '_') of 1 to 63 characters.
_DNS_NAME = re.compile(r"(?=.{1,253}\.?\Z)[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?", re.ASCII)


def url_host(host: str) -> tuple[str, IPAddress | None]:
    """``(host, address)`` as a WHATWG URL parser (ada, Node's own) reads a URL host.

    The host comes back in ada's form (lower case, punycode, IPv6 in brackets) with its
    address when it is an IP literal: ``127.1``, ``2130706433``, ``0x7f.0.0.1``,
    ``0177.0.0.1``, ``127.0.0.1.`` and full-width ``１２７.０.０.１`` are all 127.0.0.1. A bare
    IPv6 address (as HTTP clients pass it) is read as if bracketed. ``ValueError`` for what
    is not a URL host: something new URL() rejects (``256.0.0.1``, ``foo.1``, ``[::1``,
    IPv6 zone ids, bad IDNA) or text with a port, userinfo, path, spaces or controls.
    """
    if not isinstance(host, str) or not host or not _NOT_IN_HOST.isdisjoint(host):
        raise ValueError(f"not a URL host: {host!r}")
    if host.startswith("["):
        if host.find("]") != len(host) - 1:
            raise ValueError(f"not a URL host: {host!r}")
    elif ":" in host:
        host = f"[{host}]"
    u = ada_url.parse_url(f"http://{host}/", ("hostname", "host_type"))
    name, kind = u["hostname"], u["host_type"]
    if kind == ada_url.HostType.IPV4:
        return name, ipaddress.IPv4Address(name)
    if kind == ada_url.HostType.IPV6:
        return name, ipaddress.IPv6Address(name[1:-1])
    return name, None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host names when it is an IP literal (see :func:`url_host`), else None."""
    try:
        return url_host(host)[1]
    except ValueError:
        return None


async def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[tuple[int, str]]:
    """Resolve *host* and refuse it unless every address is public.

    *host* is a URL host (normally already in ada's form, as the fetcher passes
    it; a bare IPv6 address is fine).  IP literals (every spelling
    :func:`url_host` reads) are used as they are, with no DNS.  Names go to
    ``loop.getaddrinfo(name, port, type=SOCK_STREAM)``.  Hosts that cannot be
    resolved by construction (not a URL host, or not a DNS name: forbidden
    characters, empty or over-long labels) raise :class:`InvalidHost` without DNS.

    Returns ``[(family, ip_string), ...]`` in resolver order, without
    duplicates.  The caller must connect only to these addresses and must not
    resolve *host* again, or DNS rebinding gets past the check.

    If *allow_private* is false and ANY address is not public (see
    :func:`is_public_address`), :class:`ForbiddenAddress` is raised.  A
    resolver failure, an invalid host or an empty result raises
    :class:`ResolveError`.  There is no timeout here; wrap the call in
    :func:`asyncio.wait_for` if needed.
    """
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"invalid port: {port!r}")
    if not isinstance(host, str):
        raise ResolveError(repr(host), "host is not a string")

    try:
        name, literal = url_host(host)
    except ValueError:
        raise InvalidHost(host, "not a valid URL host") from None
    addrs: list[tuple[int, str]] = []
    if literal is not None:
        family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
        addrs.append((family, str(literal)))
    else:
        if not _DNS_NAME.fullmatch(name):
            raise InvalidHost(host, "not a DNS host name")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise ResolveError(host, str(exc) or type(exc).__name__) from exc
        seen: set[tuple[int, str]] = set()
        for family, _type, _proto, _canon, sockaddr in infos:
            entry = (family, str(sockaddr[0]))
            if entry not in seen:
                seen.add(entry)
                addrs.append(entry)
        if not addrs:
            raise ResolveError(host, "no addresses")

    if not allow_private and any(not is_public_address(ip) for _, ip in addrs):
        raise ForbiddenAddress(host, addrs)
    return addrs
