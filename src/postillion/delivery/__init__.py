"""Delivery agents: the seam between the queue manager and the ways mail leaves the queue.

Owns: ``DeliveryRequest``, ``RecipientResult`` and the ``DeliveryAgent`` protocol; the agents
themselves live in their own modules (smtp.py, lmtp.py, local.py, virtual.py).
Must not import: server, cli.
Follows: Postfix's delivery agent contract (one request per queue file and next hop, one
status per recipient), maddy's delivery target interface.

An agent may return several results for one recipient, each with ``address`` set (the
local agent does, one per alias member); ``merge_member_results`` folds them into the one
status the queue file records.

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
    # The final address delivered to when it is not the queued recipient: one result per
    # member of an alias expansion (logged as ``to=<address>, orig_to=<recipient>``).
    address: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


_RANK = {"sent": 0, "bounced": 1, "deferred": 2}


def merge_member_results(results: list[RecipientResult]) -> list[RecipientResult]:
    """One result per queued recipient from per-member results, in first-seen order.

    A recipient is done only when every member is: any deferred member makes it deferred
    (the whole expansion is tried again later, as Postfix's local(8) does), else any bounced
    member makes it bounced; the worst member's dsn and text speak for the recipient.
    """
    merged: dict[int, RecipientResult] = {}
    for res in results:
        old = merged.get(res.rcpt)
        if old is None or _RANK.get(res.status, 2) > _RANK.get(old.status, 2):
            merged[res.rcpt] = res if old is None else _replace(res, old)
    return [_strip(r) for r in merged.values()]


def _replace(worse: RecipientResult, old: RecipientResult) -> RecipientResult:
    return RecipientResult(rcpt=worse.rcpt, status=worse.status, dsn=worse.dsn,
                           relay=worse.relay, text=worse.text,
                           conn_time=max(worse.conn_time, old.conn_time),
                           xfer_time=max(worse.xfer_time, old.xfer_time),
                           conn_use=worse.conn_use, address=worse.address)


def _strip(res: RecipientResult) -> RecipientResult:
    if res.address is None:
        return res
    return RecipientResult(rcpt=res.rcpt, status=res.status, dsn=res.dsn, relay=res.relay,
                           text=res.text, conn_time=res.conn_time, xfer_time=res.xfer_time,
                           conn_use=res.conn_use)


class DeliveryAgent(Protocol):
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]: ...
