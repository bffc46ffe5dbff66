"""Next-hop resolution for the smtp delivery agent: MX, A/AAAA and null MX, with Postfix's texts.

Owns: turning a nexthop (``example.org``, ``example.org:2525``, ``[mx.example.org]:587``,
``[192.0.2.1]``) into an ordered list of ``Target`` addresses, and every DNS failure into a
``LookupFailure`` carrying Postfix's DSN status and reason text.
Must not import: server, cli, queue (it knows nothing about messages).
Follows: RFC 5321 §5.1 (MX, implicit MX), RFC 7505 (null MX), Postfix smtp_addr.c
(smtp_domain_addr / smtp_host_addr statuses) and dns_lookup.c (the "Name service error" texts),
smtp_mx_address_limit, inet_protocols (also for numeric next hops such as ``[::1]:2525``),
smtp_host_lookup, smtp_defer_if_no_mx_address_found.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

# dns_strerror() texts for the resolver's h_errno values.
HOST_NOT_FOUND = "Host not found"
TRY_AGAIN = "Host not found, try again"
NO_RECOVERY = "Non-recoverable error"
NO_DATA = "Host found but no data record of requested type"


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try: ``host`` is the MX (or nexthop) name, ``address`` its IP."""

    host: str
    address: str
    port: int
    pref: int = 0

    @property
    def namaddr(self) -> str:
        """``host[ip]``, Postfix's session->namaddr (used in "said:" texts)."""
        return f"{self.host}[{self.address}]"

    @property
    def namaddrport(self) -> str:
        """``host[ip]:port``, the relay= field."""
        return f"{self.host}[{self.address}]:{self.port}"


class LookupFailure(Exception):
    """No address to try: ``dsn`` is 4.x.x (deferred) or 5.x.x (bounced)."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text


@dataclass(frozen=True, slots=True)
class Nexthop:
    """A parsed nexthop: ``mx`` is False for the ``[host]`` form (no MX lookup)."""

    host: str
    port: int
    mx: bool


def parse_nexthop(nexthop: str, default_port: int = 25) -> Nexthop:
    """``[host]:port`` / ``host:port`` / ``host``; ``[ipv6:2001:db8::1]`` is accepted too.

    A port may be a number or a service name (``submission``) like Postfix allows.
    """
    text = nexthop.strip()
    text = text.removeprefix("inet:")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad nexthop {nexthop!r}")
        host, rest = text[1:end], text[end + 1 :]
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        mx = False
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            host, rest = text, ""
        else:
            rest = ":" + port_text
        mx = True
    port = default_port
    if rest:
        if not rest.startswith(":") or len(rest) < 2:
            raise ValueError(f"bad nexthop {nexthop!r}")
        port = _port(rest[1:])
    if not host:
        raise ValueError(f"bad nexthop {nexthop!r}")
    return Nexthop(host.rstrip(".") if mx else host, port, mx)


def _port(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise ValueError(f"unknown service: {text}/tcp") from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Resolver:
    """The lookups the smtp agent needs, over dnspython's asyncio resolver.

    ``nameservers``: ``["127.0.0.1:5353", "::1"]``; empty means the system's resolv.conf.
    ``families``: the address record types inet_protocols allows, in query order.
    ``native``: also ask getaddrinfo() (smtp_host_lookup = dns, native / native).
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        *,
        families: tuple[str, ...] = ("A", "AAAA"),
        use_dns: bool = True,
        native: bool = False,
        address_limit: int = 5,
        randomize: bool = True,
        lifetime: float = 10.0,
        defer_no_mx_address: bool = False,
    ) -> None:
        self.families = families
        self.defer_no_mx_address = defer_no_mx_address
        self.use_dns = use_dns
        self.native = native
        self.address_limit = address_limit
        self.randomize = randomize
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [_nameserver(n) for n in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = lifetime

    async def targets(self, nexthop: Nexthop) -> list[Target]:
        """Addresses to try in order; raises LookupFailure when there are none."""
        if _is_ip(nexthop.host):
            self._check_family(nexthop.host)
            return [Target(nexthop.host, nexthop.host, nexthop.port)]
        if nexthop.mx and self.use_dns:
            targets = await self._mx_targets(nexthop)
        else:
            targets = [Target(nexthop.host, a, nexthop.port) for a in await self._host(nexthop.host)]
        if self.address_limit > 0:
            targets = targets[: self.address_limit]
        return targets

    async def _mx_targets(self, nexthop: Nexthop) -> list[Target]:
        name = nexthop.host
        try:
            answer = await self._resolver.resolve(name, "MX", raise_on_no_answer=False)
            records = list(answer.rrset) if answer.rrset is not None else []
        except dns.resolver.NXDOMAIN:
            records = []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise LookupFailure("4.4.3", _name_error(name, "MX", TRY_AGAIN)) from exc
        except dns.exception.DNSException as exc:
            raise LookupFailure("5.4.3", _name_error(name, "MX", NO_RECOVERY)) from exc
        if any(str(r.exchange) == "." for r in records):
            raise LookupFailure("5.1.0", f"Domain {name} does not accept mail (nullMX)")
        if not records:
            # RFC 5321 §5.1: no MX records, so the domain itself is the implicit MX.
            return [Target(name, a, nexthop.port) for a in await self._host(name)]
        by_pref: dict[int, list[str]] = {}
        for r in records:
            by_pref.setdefault(int(r.preference), []).append(str(r.exchange).rstrip("."))
        targets: list[Target] = []
        last: LookupFailure | None = None
        for pref in sorted(by_pref):
            hosts = by_pref[pref]
            if self.randomize:
                random.shuffle(hosts)  # RFC 5321 §5.1: spread load over equal preferences
            for host in hosts:
                try:
                    addresses = await self._host(host)
                except LookupFailure as exc:
                    # Postfix ignores MX hosts without addresses as long as one has some.
                    last = exc
                    continue
                targets.extend(Target(host, a, nexthop.port, pref) for a in addresses)
        if not targets:
            assert last is not None
            if self.defer_no_mx_address and last.dsn[0] == "5":
                # smtp_defer_if_no_mx_address_found: same text, soft status.
                raise LookupFailure("4" + last.dsn[1:], last.text)
            raise last
        return targets

    def _check_family(self, address: str) -> None:
        """A numeric address of a family inet_protocols leaves out: smtp_addr_one() hands it
        to the DNS lookup, which refuses numeric names."""
        rtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        if rtype not in self.families:
            raise LookupFailure("5.4.4", f"Name service error for {address}: invalid host or domain name")

    async def _host(self, host: str) -> list[str]:
        """A/AAAA addresses of one host, per inet_protocols; LookupFailure when none."""
        if _is_ip(host):
            self._check_family(host)
            return [host]
        addresses: list[str] = []
        failure: LookupFailure | None = None
        if self.use_dns:
            for rtype in self.families:
                try:
                    answer = await self._resolver.resolve(host, rtype, raise_on_no_answer=False)
                except dns.resolver.NXDOMAIN:
                    failure = LookupFailure("5.4.4", _name_error(host, rtype, HOST_NOT_FOUND))
                    continue
                except (dns.exception.Timeout, dns.resolver.NoNameservers):
                    failure = LookupFailure("4.4.3", _name_error(host, rtype, TRY_AGAIN))
                    continue
                except dns.exception.DNSException:
                    failure = LookupFailure("5.4.3", _name_error(host, rtype, NO_RECOVERY))
                    continue
                if answer.rrset is None:
                    failure = failure if failure and failure.dsn[0] == "4" else LookupFailure(
                        "5.4.4", _name_error(host, rtype, NO_DATA))
                    continue
                addresses.extend(r.address for r in answer.rrset)
        if not addresses and self.native:
            addresses = await self._native(host, failure)
        if not addresses:
            raise failure or LookupFailure("5.4.4", f"{host}: host not found")
        return addresses

    async def _native(self, host: str, failure: LookupFailure | None) -> list[str]:
        wanted = {"A": socket.AF_INET, "AAAA": socket.AF_INET6}
        families = {wanted[f] for f in self.families}
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            soft = exc.errno == socket.EAI_AGAIN or (failure is not None and failure.dsn[0] == "4")
            raise LookupFailure("4.4.4" if soft else "5.4.4",
                                f"unable to look up host {host}: {exc.strerror}") from exc
        out: list[str] = []
        for family, _t, _p, _c, sockaddr in infos:
            if family in families and sockaddr[0] not in out:
                out.append(str(sockaddr[0]))
        return out


def _name_error(name: str, rtype: str, reason: str) -> str:
    return f"Host or domain name not found. Name service error for name={name} type={rtype}: {reason}"


def _nameserver(spec: str) -> dns.nameserver.Nameserver:
    """``ip``, ``ip:port``, ``[ipv6]:port`` → a UDP/TCP (Do53) name server."""
    text = spec.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
        text = host
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = int(port_text)
    ipaddress.ip_address(text)  # ValueError for names: resolvers are given by address
    return dns.nameserver.Do53Nameserver(text, port)


def families_for(inet_protocols: list[str]) -> tuple[str, ...]:
    """inet_protocols (``all``, ``ipv4``, ``ipv6``, ``ipv4, ipv6``) → record types to ask."""
    words = {w.lower() for w in inet_protocols}
    if not words or "all" in words:
        return ("A", "AAAA")
    out = []
    if "ipv4" in words:
        out.append("A")
    if "ipv6" in words:
        out.append("AAAA")
    return tuple(out)
