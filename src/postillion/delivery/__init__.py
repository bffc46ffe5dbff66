"""Delivery agents: the seam between the queue manager and the ways mail leaves the queue.

Owns: ``DeliveryRequest``, ``RecipientResult`` and the ``DeliveryAgent`` protocol; the agents
themselves live in their own modules (smtp.py, lmtp.py, local.py, virtual.py).
Must not import: server, cli.
Follows: Postfix's delivery agent contract (one request per queue file and next hop, one
status per recipient), maddy's delivery target interface.

Agents never raise for delivery failures: every recipient gets a result, temporary problems
``deferred`` with a 4.x.x code, permanent ones ``bounced`` with 5.x.x.  They raise only on bugs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postillion.queue.envelope import Envelope, Recipient

FINAL_STATUSES = frozenset({"sent", "bounced", "expired", "delivered"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRequest:
    queue_id: str
    envelope: Envelope
    content: bytes
    recipients: list[tuple[int, Recipient]]  # (index in envelope.recipients, recipient)
    transport: str  # "smtp", "relay", "lmtp", "local", "virtual"
    nexthop: str  # "example.org", "[192.0.2.1]:587", "unix:/path"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientResult:
    rcpt: int
    status: str  # "sent" | "deferred" | "bounced"
    dsn: str  # "2.0.0", "4.4.1", "5.1.1"
    relay: str  # "mx.example.org[192.0.2.7]:25", "local", "none"
    text: str  # the log's "(...)" after status=
    conn_time: float = 0.0  # delays "c": DNS, connect, greeting, HELO, TLS
    xfer_time: float = 0.0  # delays "d": transmission
    conn_use: int = 0  # the how-many-th delivery over a cached connection (logged when > 1)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class DeliveryAgent(Protocol):
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]: ...
