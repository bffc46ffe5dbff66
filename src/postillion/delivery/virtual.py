"""The virtual delivery agent: hosted-domain mailboxes under virtual_mailbox_base.

Owns: ``VirtualAgent`` (a ``DeliveryAgent``): virtual_mailbox_maps (address -> path
relative to virtual_mailbox_base; a trailing ``/`` means Maildir), virtual_uid_maps /
virtual_gid_maps / virtual_minimum_uid, the Delivered-To loop check, and Postfix's texts;
``VirtualAgent.is_virtual_domain`` answers virtual_mailbox_domains for the router;
``VirtualAliases`` wraps virtual_alias_maps for the queue manager.
Must not import: server, cli.
Follows: Postfix virtual(8), virtual/recipient.c, virtual/mailbox.c, virtual/maildir.c,
virtual/unknown.c; cleanup(8) for virtual_alias_maps (see ``delivery.aliases``).

Differences from Postfix: an empty or relative virtual_mailbox_base defers with a warning
(Postfix's virtual(8) exits with a fatal error, which defers too); a map result without a trailing ``/`` (an mbox file) is deferred
with a warning, since postillion writes Maildir only.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.aliases import expand_virtual_aliases
from postillion.delivery.local import domain_list
from postillion.delivery.maildir import (
    MaildirError,
    Owner,
    deliver_maildir,
    delivered_to_loop,
    delivery_headers,
    to_lf,
)
from postillion.errors import TableLookupError
from postillion.tables import TableList, mail_addr_keys, open_tables

RELAY = "virtual"
_CONFIG_ERROR = ("deferred", "4.3.5", "mail system configuration error")


class VirtualAgent:
    """virtual(8).  ``deliver()`` never raises for delivery problems."""

    def __init__(self, params: Params, *, warn: Callable[[str], None] | None = None) -> None:
        cfg = params.config_dir
        self.base = params.get("virtual_mailbox_base").strip()
        self.mailbox_maps = TableList(open_tables(params.get("virtual_mailbox_maps"), cfg))
        self.uid_maps = TableList(open_tables(params.get("virtual_uid_maps"), cfg))
        self.gid_maps = TableList(open_tables(params.get("virtual_gid_maps"), cfg))
        self.minimum_uid = params.get_int("virtual_minimum_uid")
        self.recipient_delimiter = params.get("recipient_delimiter")
        self.domains = domain_list(params, "virtual_mailbox_domains")
        self.hostname = params.get("myhostname") or socket.gethostname()
        self.warn = warn or logging.getLogger("postillion.virtual").warning

    async def is_virtual_domain(self, domain: str) -> bool:
        """``domain`` is in virtual_mailbox_domains (TableLookupError propagates)."""
        return await self.domains.match(domain)

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        results = []
        for index, rcpt in request.recipients:
            start = time.monotonic()
            status, dsn, text = await self._recipient(request, rcpt.address)
            results.append(RecipientResult(rcpt=index, status=status, dsn=dsn, relay=RELAY,
                                           text=text, xfer_time=time.monotonic() - start))
        return results

    async def _find(self, maps: TableList, user: str) -> str | None:
        # mail_addr_find(..., IGNORE_EXTENSION): user+ext@domain, user@domain, @domain.
        return await maps.find(mail_addr_keys(user, recipient_delimiter=self.recipient_delimiter,
                                              local_domain=False))

    async def _recipient(self, request: DeliveryRequest, address: str) -> tuple[str, str, str]:
        user = address.lower()
        if not self.base.startswith("/"):
            # virtual/mailbox.c stops with a fatal error; the mail waits for a fixed main.cf.
            self.warn(f"do not specify relative pathname: virtual_mailbox_base = {self.base}")
            return _CONFIG_ERROR
        if delivered_to_loop(request.content, address):
            return "bounced", "5.4.6", f"mail forwarding loop for {address}"
        try:
            mailbox = await self._find(self.mailbox_maps, user)
        except TableLookupError as exc:
            self.warn(f"table {self.mailbox_maps.spec}: lookup {user}: {exc}")
            return _CONFIG_ERROR
        if mailbox is None:
            return "bounced", "5.1.1", f'unknown user: "{user}"'
        owner_or_error = await self._owner(user)
        if isinstance(owner_or_error, tuple):
            return owner_or_error
        path = f"{self.base}/{mailbox}"
        if not path.endswith("/"):
            self.warn(f"recipient {user}: {path} is a mailbox file: postillion delivers only "
                      "to a Maildir (end the virtual_mailbox_maps result with /); mail stays "
                      "queued")
            return _CONFIG_ERROR
        message = delivery_headers(sender=request.envelope.sender, delivered_to=address,
                                   original=address) + to_lf(request.content)
        try:
            await deliver_maildir(Path(path), message, owner=owner_or_error,
                                  hostname=self.hostname)
        except MaildirError as exc:
            if "Permission denied" in exc.text:
                self.warn(f"maildir access problem for UID/GID={owner_or_error.uid}/"
                          f"{owner_or_error.gid}: {exc.text}")
                self.warn("perhaps you need to create the maildirs in advance")
            status = "deferred" if exc.temporary else "bounced"
            return status, exc.dsn, f"maildir delivery failed: {exc.text}"
        return "sent", "2.0.0", "delivered to maildir"

    async def _owner(self, user: str) -> Owner | tuple[str, str, str]:
        ids: list[int] = []
        for maps, what, low in ((self.uid_maps, "uid", self.minimum_uid),
                                (self.gid_maps, "gid", 1)):
            try:
                value = await self._find(maps, user)
            except TableLookupError as exc:
                self.warn(f"table {maps.spec}: lookup {user}: {exc}")
                return _CONFIG_ERROR
            if value is None:
                self.warn(f"recipient {user}: not found in {maps.spec or f'virtual_{what}_maps'}")
                return _CONFIG_ERROR
            number = _atol(value)
            if number < low:
                self.warn(f"recipient {user}: bad {what} {value} in {maps.spec}")
                return _CONFIG_ERROR
            ids.append(number)
        return Owner(ids[0], ids[1])


def _atol(text: str) -> int:
    """C atol(): leading digits, 0 when there are none."""
    digits = ""
    for c in text.strip():
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else 0


class VirtualAliases:
    """virtual_alias_maps for the queue manager: ``await rewrite(address)`` -> the new
    recipient list, or None when the address is not aliased.

    Raises VirtualAliasError (limits; defer) and TableLookupError (defer).
    """

    def __init__(self, params: Params) -> None:
        cfg = params.config_dir
        self.maps = TableList(open_tables(params.get("virtual_alias_maps"), cfg))
        self.mydestination = domain_list(params, "mydestination")
        self.myorigin = params.get("myorigin")
        self.recipient_delimiter = params.get("recipient_delimiter")
        self.propagate = "virtual" in params.get_list("propagate_unmatched_extensions")
        self.recursion_limit = params.get_int("virtual_alias_recursion_limit")
        self.expansion_limit = params.get_int("virtual_alias_expansion_limit")

    async def rewrite(self, address: str) -> list[str] | None:
        return await expand_virtual_aliases(
            address, self.maps, recipient_delimiter=self.recipient_delimiter,
            is_local_domain=self.mydestination.match, myorigin=self.myorigin,
            propagate_extension=self.propagate, recursion_limit=self.recursion_limit,
            expansion_limit=self.expansion_limit)
