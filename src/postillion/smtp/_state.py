"""The SMTP server's command table and phases: the one place that says what is allowed when.

Owns: which commands exist, their Postfix flags (allowed before TLS on an ``encrypt``
service, must be last in a pipelined group, counts as junk), and the connection phases.
Must not import: anything above ``replies``.
Follows: Postfix smtpd.c's command table (SMTPD_CMD_FLAG_PRE_TLS / _LAST / _LIMIT), RFC 2920 §3.1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.Enum):
    GREETING = "greeting"  # connected, greeting not yet sent
    COMMAND = "command"  # reading a command line
    REPLY = "reply"  # an event is waiting for the driver's reply
    AUTH_RESPONSE = "auth-response"  # a 334 was sent; the next line is an AUTH response
    DATA = "data"  # reading message lines up to CRLF.CRLF
    BDAT = "bdat"  # reading a counted BDAT chunk
    TLS = "tls"  # 220 Ready to start TLS sent; waiting for the handshake
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    pre_tls: bool = False  # allowed before STARTTLS when TLS is required
    last: bool = False  # must be the last command of a pipelined group (RFC 2920)
    junk: bool = False  # counts against smtpd_junk_command_limit


# Order matters: it is the order of the "disconnect from" summary (Postfix's table order).
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("HELO", pre_tls=True, last=True, junk=True),
        Command("EHLO", pre_tls=True, last=True, junk=True),
        Command("STARTTLS", pre_tls=True, last=True),
        Command("AUTH"),
        Command("MAIL"),
        Command("RCPT"),
        Command("DATA", last=True),
        Command("BDAT"),
        Command("RSET", junk=True),
        Command("NOOP", pre_tls=True, last=True, junk=True),
        Command("VRFY", last=True, junk=True),
        Command("ETRN", junk=True),
        Command("QUIT", pre_tls=True),
        Command("HELP", pre_tls=True, last=True),
    )
}

SUMMARY_ORDER: tuple[str, ...] = (
    "helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt",
    "data", "bdat", "rset", "noop", "vrfy", "etrn", "quit", "help", "unknown",
)  # fmt: skip

# Postfix smtpd_forbid_commands default: web-proxy verbs that mean "not an SMTP client".
FORBIDDEN_VERBS = frozenset({"CONNECT", "GET", "POST"})

EHLO_KEYWORDS: tuple[str, ...] = (
    "pipelining", "size", "vrfy", "etrn", "starttls", "auth", "enhancedstatuscodes",
    "8bitmime", "dsn", "smtputf8", "chunking",
)  # fmt: skip
