"""The local delivery agent: mydestination recipients -> aliases -> the user's Maildir.

Owns: ``LocalAgent`` (a ``DeliveryAgent``): alias_maps expansion (through
``delivery.aliases``), the UNIX passwd lookup, ``home_mailbox`` Maildir delivery as the
user, members of an alias in other domains handed to a ``Forwarder`` (a new queue file, like
Postfix's forward.c resubmitting through cleanup), and Postfix's status texts.
Must not import: server, cli.
Follows: Postfix local(8) and its sources local/local.c, local/recipient.c, local/alias.c,
local/mailbox.c, local/maildir.c, local/unknown.c, local/forward.c; aliases(5).

Differences from Postfix, on purpose: only ``home_mailbox = <dir>/`` (Maildir) delivery;
with ``mailbox_command`` set, or ``home_mailbox`` empty or not ending in ``/`` (mbox),
recipients are deferred with a warning that says so, so no mail is lost while the
configuration is fixed.  ``|command``, ``/file`` and ``:include:`` alias members are refused
("mail to command is restricted").  ``.forward`` files, ``luser_relay``, ``owner-`` aliases
and mailbox_transport/fallback_transport are not implemented.

One ``RecipientResult`` goes back per queued recipient; when an alias expands to several
members, the worst member outcome decides it (deferred > bounced > sent) and the optional
``on_member`` callback sees each member, for Postfix's ``to=<member>, orig_to=<alias>`` log
lines.  As in Postfix, a retry after a partly failed expansion delivers to all members again.
"""

from __future__ import annotations

import logging
import pwd
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.aliases import Leaf, LocalNaming, expand_local
from postillion.delivery.maildir import (
    MaildirError,
    Owner,
    deliver_maildir,
    delivered_to_loop,
    delivery_headers,
    to_lf,
)
from postillion.errors import PostillionError, TableLookupError
from postillion.policy._lists import DomainList
from postillion.tables import TableList
from postillion.tables.aliases import open_alias_maps

RELAY = "local"
# local/unknown.c: with no alias and no account, mail to these is discarded with a warning.
_REQUIRED_ALIASES = frozenset({"postmaster", "mailer-daemon"})


class Forwarder(Protocol):
    """Queues a copy of the message for alias members in other domains.

    Returns the new queue id; raises (any ``PostillionError``, e.g. QueueWriteError) when
    the copy could not be queued, and the recipient is deferred.
    """

    async def forward(self, *, sender: str, recipients: list[str], content: bytes) -> str: ...


@dataclass(frozen=True, slots=True)
class MemberResult:
    """The outcome for one member of an alias expansion (Postfix logs one line each)."""

    to: str
    orig_to: str
    status: str
    dsn: str
    text: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str
    dsn: str
    text: str


_RANK = {"sent": 0, "bounced": 1, "deferred": 2}


def _outcome(dsn: str, text: str) -> _Outcome:
    return _Outcome("deferred" if dsn.startswith("4") else "bounced", dsn, text)


def domain_list(params: Params, name: str) -> DomainList:
    """``mydestination`` / ``virtual_mailbox_domains`` as policy matches them."""
    parent = params.get_list("parent_domain_matches_subdomains")
    return DomainList(name, params.get_list(name), params.config_dir, parent_style=name in parent)


class LocalAgent:
    """local(8).  ``deliver()`` never raises for delivery problems."""

    def __init__(
        self, params: Params, *, forwarder: Forwarder | None = None,
        warn: Callable[[str], None] | None = None,
        on_member: Callable[[str, MemberResult], None] | None = None,
        getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
    ) -> None:
        cfg = params.config_dir
        self.aliases = TableList(open_alias_maps(params.get("alias_maps"), cfg))
        self.mydestination = domain_list(params, "mydestination")
        self.naming = LocalNaming(is_local_domain=self.mydestination.match,
                                  myorigin=params.get("myorigin"),
                                  recipient_delimiter=params.get("recipient_delimiter"))
        self.home_mailbox = params.get("home_mailbox").strip()
        # raw: the command holds per-delivery macros ($EXTENSION, ...) expanded at use time
        self.mailbox_command = (params.raw("mailbox_command") or "").strip()
        self.hostname = params.get("myhostname") or socket.gethostname()
        self.forwarder = forwarder
        self.warn = warn or logging.getLogger("postillion.local").warning
        self.on_member = on_member
        self._getpwnam = getpwnam

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        results = []
        for index, rcpt in request.recipients:
            start = time.monotonic()
            outcome = await self._recipient(request, rcpt.address)
            results.append(RecipientResult(rcpt=index, status=outcome.status, dsn=outcome.dsn,
                                           relay=RELAY, text=outcome.text,
                                           xfer_time=time.monotonic() - start))
        return results

    async def _recipient(self, request: DeliveryRequest, address: str) -> _Outcome:
        try:
            leaves = await expand_local(address, self.aliases, self.naming)
        except TableLookupError as exc:
            self.warn(f"{request.queue_id}: alias lookup for {address}: {exc}")
            return _Outcome("deferred", "4.3.0", "alias database unavailable")
        outcomes: list[tuple[Leaf, _Outcome]] = []
        forwards = [leaf for leaf in leaves if leaf.kind == "forward"]
        for leaf in leaves:
            if leaf.kind == "mailbox":
                outcomes.append((leaf, await self._mailbox(request, address, leaf)))
            elif leaf.kind == "failed":
                if leaf.dsn == "5.4.6" and leaf.text.startswith("alias database loop"):
                    self.warn(leaf.text)
                outcomes.append((leaf, _outcome(leaf.dsn, leaf.text)))
        if forwards:
            forwarded = await self._forward(request, address, forwards)
            outcomes.extend((leaf, forwarded) for leaf in forwards)
        if self.on_member is not None and (len(outcomes) > 1 or any(l.via for l, _ in outcomes)):
            for leaf, o in outcomes:
                self.on_member(request.queue_id, MemberResult(
                    to=leaf.address, orig_to=address, status=o.status, dsn=o.dsn, text=o.text))
        if not outcomes:  # cannot happen: every expansion path ends in a leaf
            return _Outcome("deferred", "4.3.0", "alias database unavailable")
        return max((o for _, o in outcomes), key=lambda o: _RANK[o.status])

    async def _mailbox(self, request: DeliveryRequest, address: str, leaf: Leaf) -> _Outcome:
        try:
            account = self._getpwnam(leaf.user)
        except KeyError:
            if leaf.user in _REQUIRED_ALIASES:
                self.warn(f"required alias not found: {leaf.user}")
                return _Outcome("sent", "2.0.0", "discarded")
            return _Outcome("bounced", "5.1.1", f'unknown user: "{leaf.user}"')
        if self.mailbox_command or not self.home_mailbox.endswith("/"):
            what = (f"mailbox_command = {self.mailbox_command}" if self.mailbox_command
                    else f"home_mailbox = {self.home_mailbox}")
            self.warn(f"{request.queue_id}: {what}: postillion delivers only to a Maildir "
                      "(home_mailbox = Maildir/); mail stays queued")
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        if delivered_to_loop(request.content, address):
            return _Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}")
        maildir = Path(account.pw_dir) / self.home_mailbox
        message = delivery_headers(sender=request.envelope.sender, delivered_to=address,
                                   original=address) + to_lf(request.content)
        owner = Owner(account.pw_uid, account.pw_gid)
        try:
            await deliver_maildir(maildir, message, owner=owner, hostname=self.hostname)
        except MaildirError as exc:
            if "Permission denied" in exc.text:
                self.warn(f"maildir access problem for UID/GID={owner.uid}/{owner.gid}: "
                          f"{exc.text}")
                self.warn("perhaps you need to create the maildirs in advance")
            return _outcome(exc.dsn, f"maildir delivery failed: {exc.text}")
        return _Outcome("sent", "2.0.0", "delivered to maildir")

    async def _forward(self, request: DeliveryRequest, address: str,
                       leaves: list[Leaf]) -> _Outcome:
        if self.forwarder is None:
            self.warn(f"{request.queue_id}: cannot forward mail for {address} to "
                      f"{', '.join(l.address for l in leaves)}: no forwarding queue configured")
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        # forward.c: the copy carries Delivered-To, so a loop through other hosts is caught.
        content = (b"Delivered-To: " + address.encode("utf-8", "surrogateescape") + b"\r\n"
                   + request.content)
        try:
            queue_id = await self.forwarder.forward(
                sender=request.envelope.sender, recipients=[l.address for l in leaves],
                content=content)
        except (OSError, PostillionError) as exc:
            self.warn(f"{request.queue_id}: forward: {exc}")
            return _Outcome("deferred", "4.3.0", "mail forwarding transaction failed")
        return _Outcome("sent", "2.0.0", f"forwarded as {queue_id}")
