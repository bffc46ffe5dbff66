"""Events the SMTP server engine hands to its driver.

Owns: the event types (frozen, slotted, keyword-only dataclasses, h11 style).
Must not import: asyncio, sockets, ssl, config, logging.

Every event except ``ConnectionLost`` needs exactly one answer through
``ServerConnection.send(reply)`` before the engine reads further (an ``Auth``
exchange answers with 334 challenges until its final reply).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from postillion.replies import Reply


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"  # feed more bytes with receive_data()
    PAUSED = "PAUSED"  # an event is waiting for its reply (or the connection is closing)


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


@dataclass(frozen=True, slots=True, kw_only=True)
class MailParams:
    """ESMTP MAIL FROM parameters (RFC 1870, 6152, 6531, 4954, 3461)."""

    size: int | None = None
    body: str | None = None  # "7BIT" | "8BITMIME"
    smtputf8: bool = False
    auth: str | None = None  # decoded xtext; "<>" kept as is
    ret: str | None = None  # "FULL" | "HDRS"
    envid: str | None = None  # decoded xtext


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptParams:
    """ESMTP RCPT TO parameters (RFC 3461)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or subset of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # "rfc822;addr" with the xtext decoded


@dataclass(frozen=True, slots=True, kw_only=True)
class Helo:
    name: str
    extended: bool  # EHLO


@dataclass(frozen=True, slots=True, kw_only=True)
class MailFrom:
    address: str  # "" for the null sender
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptTo:
    address: str
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataStart:
    """DATA passed the protocol checks; answer 354 (replies.DATA_GO) to receive the message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageComplete:
    """The whole message, dot-unstuffed, lines ending in CRLF; answer 250 queued or an error."""

    content: bytes
    chunked: bool  # received with BDAT
    bare_lf: bool = False  # some line ended in a bare LF (kept as content, never as end of data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Etrn:
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls:
    """Answer replies.STARTTLS_GO, flush it, run the handshake, then call tls_started()."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """An AUTH command.

    ``refusal`` is the reply the engine would give (not enabled, in a transaction,
    already authenticated, syntax); the driver applies its rate limit first (Postfix
    counts every AUTH command, refused or not) and then sends ``refusal`` when set.
    """

    mechanism: str
    initial_response: str | None
    refusal: Reply | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResponse:
    """One client line of an AUTH exchange (after a 334 challenge)."""

    line: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLost:
    """The client closed the connection without QUIT (or the engine already hung up)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """Something the driver should log; needs no answer.

    kind is one of: improper_pipelining (detail = rest of input), non_smtp_command
    (detail = the line), too_many_errors, bare_lf, command_too_long,
    discarded_after_starttls (detail = byte count), size_exceeded (MAIL SIZE= over
    message_size_limit; detail = the sender address, for the reject log line).
    """

    kind: str
    command: str
    detail: str = ""


Event = (
    Helo
    | MailFrom
    | RcptTo
    | DataStart
    | MessageComplete
    | Vrfy
    | Etrn
    | StartTls
    | Auth
    | AuthResponse
    | ConnectionLost
    | Notice
)
