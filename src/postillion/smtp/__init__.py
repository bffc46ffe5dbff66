"""The sans-IO SMTP engine: bytes in, events out, replies back in, bytes out.

Public API: ``ServerConnection``, ``Settings``, the event classes, ``NEED_DATA`` and ``PAUSED``.
This package does no I/O: it never imports asyncio, socket or ssl (h11's rule).
"""

from postillion.smtp._events import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    ConnectionLost,
    DataStart,
    Etrn,
    Event,
    Helo,
    MailFrom,
    MailParams,
    MessageComplete,
    Notice,
    RcptParams,
    RcptTo,
    StartTls,
    Vrfy,
)
from postillion.smtp._client import (
    ClientConnection,
    ClientProtocolError,
    Closed,
    Extensions,
    SaslClient,
    ServerReply,
    dot_stuff,
    parse_ehlo,
    xtext_encode,
)
from postillion.smtp._server import CommandStats, ServerConnection, Settings
from postillion.smtp._state import COMMANDS, SUMMARY_ORDER, Phase

__all__ = [
    "NEED_DATA", "PAUSED", "Auth", "AuthResponse", "COMMANDS", "CommandStats", "ConnectionLost",
    "DataStart", "Etrn", "Event", "Helo", "MailFrom", "MailParams", "MessageComplete", "Notice",
    "Phase", "RcptParams", "RcptTo", "SUMMARY_ORDER", "ServerConnection", "Settings", "StartTls", "Vrfy",
    # client engine (smtp/_client.py)
    "ClientConnection", "ClientProtocolError", "Closed", "Extensions", "SaslClient", "ServerReply",
    "dot_stuff", "parse_ehlo", "xtext_encode",
]  # fmt: skip
