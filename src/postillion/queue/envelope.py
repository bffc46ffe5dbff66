"""The envelope of one queued message: who sent it, to whom, and how it arrived.

Owns: the ``Envelope`` and ``Recipient`` values that smtpd fills during a transaction and the
queue stores next to the message content.
Must not import: anything from postillion (plain data).
Follows: RFC 5321 (MAIL/RCPT), RFC 3461 (DSN: RET, ENVID, NOTIFY, ORCPT), RFC 6152 / RFC 3030
(BODY=8BITMIME / BINARYMIME), RFC 6531 (SMTPUTF8), RFC 4954 (AUTH=).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")
RET_VALUES = ("FULL", "HDRS")
NOTIFY_VALUES = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One RCPT TO: the address without angle brackets, and its DSN parameters.

    ``orcpt`` is the ORCPT value as given (``rfc822;x@example.org``); ``notify`` is None when
    the client sent no NOTIFY, else a tuple from NOTIFY_VALUES.
    """

    address: str
    orcpt: str | None = None
    notify: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.notify is not None:
            bad = [n for n in self.notify if n not in NOTIFY_VALUES]
            if bad:
                raise ValueError(f"bad NOTIFY value {bad[0]!r}")


@dataclass(slots=True, kw_only=True)
class Envelope:
    """Everything about a message except its content.

    ``sender`` is the MAIL FROM address without brackets; ``""`` is the null sender ``<>``.
    ``size`` is the SIZE= the client declared (None when it declared none).
    ``arrival_time`` is a POSIX timestamp (seconds, float).
    ``queue_id`` is filled in by the queue store.
    """

    sender: str
    recipients: list[Recipient] = field(default_factory=list)
    ret: str | None = None
    envid: str | None = None
    body_type: str = "7BIT"
    smtputf8: bool = False
    size: int | None = None
    arrival_time: float = 0.0
    client_name: str | None = None
    client_addr: str | None = None
    client_port: int | None = None
    helo_name: str | None = None
    protocol: str = "ESMTP"
    sasl_method: str | None = None
    sasl_username: str | None = None
    sasl_sender: str | None = None
    service: str | None = None
    queue_id: str | None = None

    def __post_init__(self) -> None:
        if self.body_type not in BODY_TYPES:
            raise ValueError(f"bad body type {self.body_type!r}")
        if self.ret is not None and self.ret not in RET_VALUES:
            raise ValueError(f"bad RET value {self.ret!r}")
