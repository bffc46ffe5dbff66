"""The facts a policy decision is made from: one frozen PolicyContext per check.

Owns: PolicyContext and PolicyEvent (what the engine reports besides its reply).
Must not import: anything above ``replies``.
Follows: the SMTPD_STATE fields Postfix smtpd_check.c reads (name, addr, helo_name,
sender, recipient, sasl_username, ...), and access(5) for the side actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from postillion.replies import Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyContext:
    """What the session knows when it asks for a decision.

    ``sender``: None before MAIL FROM, ``""`` for the null sender ``<>``.
    ``recipient``: None outside RCPT TO (and at DATA with several recipients, as Postfix
    does so that a DATA reject does not name just one of them).
    ``client_name`` is the verified host name or ``"unknown"``.
    ``pipelining_violation``: the client had sent more input before this command was
    answered (Postfix: unread input is pending); reject_unauth_pipelining uses it for
    HELO-protocol clients and at DATA.
    """

    client_name: str
    client_addr: str
    client_port: int | str = 0
    helo_name: str | None = None
    protocol: str = "ESMTP"
    sender: str | None = None
    recipient: str | None = None
    sasl_username: str | None = None
    sasl_method: str | None = None
    tls_active: bool = False
    pipelining_violation: bool = False

    @property
    def namaddr(self) -> str:
        """``name[addr]``, the client form used in reply texts and logs."""
        return f"{self.client_name}[{self.client_addr}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent:
    """Something the session should log that is not the reply itself.

    ``kind`` is Postfix's log word: ``reject_warning`` (a reject that warn_if_reject
    turned into a log line; ``reply`` holds it), ``warn``/``info`` (access(5) WARN/INFO),
    ``hold``/``discard``/``filter``/``redirect``/``prepend``/``bcc`` (access(5) actions
    postillion does not carry out yet: evaluated as DUNNO) and ``warning`` (a
    configuration or table problem, for a ``warning:`` line).
    """

    kind: str
    text: str
    reply: Reply | None = None


EventSink = Callable[[PolicyEvent], None]
