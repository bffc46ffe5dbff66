"""Queue scheduling as pure functions of a clock: retry times, expiry, routing, batching.

Owns: when a deferred message is retried, when it expires, which transport and next hop a
recipient goes to, and how recipients are grouped into delivery requests.
Must not import: asyncio, server, delivery agents.
Follows: Postfix qmgr(8) (backoff from the message's age, clamped to minimal_backoff_time ..
maximal_backoff_time), trivial-rewrite(8) address classes (local, virtual, relay, default) and
transport(5) results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from postillion.queue.envelope import Recipient


def next_attempt(now: float, arrival: float, *, minimal: float, maximal: float) -> float:
    """Postfix: wait as long as the message is old, but at least minimal_backoff_time and at
    most maximal_backoff_time, so the retry interval doubles until it reaches the maximum."""
    age = max(0.0, now - arrival)
    return now + min(max(age, minimal), maximal)


def expired(now: float, arrival: float, *, sender: str, lifetime: float, bounce_lifetime: float) -> bool:
    """maximal_queue_lifetime, or bounce_queue_lifetime for bounces (the null sender)."""
    limit = bounce_lifetime if sender == "" else lifetime
    return now - arrival >= limit


def delay_warning_due(now: float, arrival: float, *, delay_warning_time: float, sent: bool) -> bool:
    return delay_warning_time > 0 and not sent and now - arrival >= delay_warning_time


@dataclass(frozen=True, slots=True)
class Route:
    transport: str  # "local", "virtual", "smtp", "relay", "lmtp", "error", "discard"
    nexthop: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """The parameters that decide where mail goes (trivial-rewrite's address classes)."""

    mydestination: frozenset[str]
    virtual_mailbox_domains: frozenset[str]
    relay_domains: frozenset[str]
    relayhost: str
    default_transport: str = "smtp"
    relay_transport: str = "relay"
    local_transport: str = "local"
    virtual_transport: str = "virtual"


def split_transport(value: str) -> tuple[str, str]:
    """``smtp:[mx.example]:587`` → ("smtp", "[mx.example]:587"); ``lmtp`` → ("lmtp", "")."""
    transport, _, nexthop = value.strip().partition(":")
    return transport.strip(), nexthop.strip()


async def route(
    address: str,
    routing: Routing,
    transport_lookup: Callable[[str], Awaitable[str | None]] | None = None,
) -> Route:
    """Where one recipient goes: transport_maps first (full address, then domain, then parent
    domains as ``.domain``), then the address class."""
    domain = address.rpartition("@")[2].lower() if "@" in address else ""
    if transport_lookup is not None:
        keys = [address.lower()] + ([domain] if domain else [])
        labels = domain.split(".")
        keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))] if domain else []
        for key in keys:
            found = await transport_lookup(key)
            if found:
                transport, nexthop = split_transport(found)
                if not transport:
                    transport = _class_route(domain, routing).transport
                return Route(transport, nexthop or domain)
    return _class_route(domain, routing)


def _class_route(domain: str, routing: Routing) -> Route:
    if not domain or domain in routing.mydestination:
        return Route(*_with_default_nexthop(routing.local_transport, domain))
    if domain in routing.virtual_mailbox_domains:
        return Route(*_with_default_nexthop(routing.virtual_transport, domain))
    if _in_domains(domain, routing.relay_domains):
        transport, nexthop = _with_default_nexthop(routing.relay_transport, domain)
        return Route(transport, routing.relayhost or nexthop)
    transport, nexthop = _with_default_nexthop(routing.default_transport, domain)
    return Route(transport, routing.relayhost or nexthop)


def _with_default_nexthop(value: str, domain: str) -> tuple[str, str]:
    transport, nexthop = split_transport(value)
    return transport, nexthop or domain


def _in_domains(domain: str, domains: frozenset[str]) -> bool:
    """relay_domains matches subdomains too (parent_domain_matches_subdomains)."""
    parts = domain.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


def batches(
    recipients: list[tuple[int, Recipient, Route]], *, recipient_limit: int
) -> list[tuple[Route, list[tuple[int, Recipient]]]]:
    """Group recipients by route, at most ``recipient_limit`` per delivery request (Postfix's
    ``*_destination_recipient_limit``), keeping the message's recipient order."""
    groups: dict[Route, list[tuple[int, Recipient]]] = {}
    for index, recipient, r in recipients:
        groups.setdefault(r, []).append((index, recipient))
    out: list[tuple[Route, list[tuple[int, Recipient]]]] = []
    size = max(1, recipient_limit)
    for r, members in groups.items():
        for i in range(0, len(members), size):
            out.append((r, members[i : i + size]))
    return out
