"""Mail-event logging in Postfix's exact wording: the only place that formats these lines.

Owns: one method per mail event (connect, client=, reject, disconnect with command counters,
TLS, SASL failures, lost connection, ...), the ``host[addr]`` client identity, and the
sanitising of client-supplied text (control characters escaped, length capped, AUTH payloads
never logged).  Where the finished lines go is a ``LogSink``'s job: ``server.proclog.LogSinks``
writes them to ``maillog_file``, syslog and/or stderr with the ``Nov 25 08:13:40 host`` prefix.
Must not import: server, queue, config (callers pass plain values; sinks arrive as a Protocol).
Follows: Postfix smtpd(8) (``smtpd.c``: connect/disconnect/lost connection/improper pipelining,
``smtpd_check.c`` ``log_whatsup``, ``smtpd_sasl_glue.c``/``smtpd_sasl_proto.c``), cleanup(8)
(``message-id=``), ``util/msg.c`` severities, ``util/escape.c`` and ``util/printable.c``; the
texts in docs are checked against live Postfix 3.7 logs.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Protocol

CLIENT_TEXT_LIMIT = 100  # smtpd.c logs at most 100 bytes of unexpected client input
CLIENT_FIELD_LIMIT = 512  # bound for helo names and addresses (longer than any legal one)

# smtpd.c smtpd_cmd_table order; "unknown" is the table's sentinel entry, counted last.
COMMAND_ORDER = (
    "helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
    "rset", "noop", "vrfy", "etrn", "quit", "help",
)
UNKNOWN = "unknown"


class LogSink(Protocol):
    """Where finished lines go: *tag* is ``<syslog_name>/<process>``, *text* the message."""

    def emit(self, tag: str, text: str, *, pid: int | None = None) -> None: ...


@dataclass
class MemorySink:
    """Keeps ``tag[pid]: text`` lines in memory (tests, ``postillion check`` transcripts)."""

    lines: list[str] = field(default_factory=list)

    def emit(self, tag: str, text: str, *, pid: int | None = None) -> None:
        self.lines.append(f"{tag}[{os.getpid() if pid is None else pid}]: {text}")

    def texts(self) -> list[str]:
        return [line.split("]: ", 1)[1] for line in self.lines]


class TeeSink:
    """Several sinks at once."""

    def __init__(self, *sinks: LogSink) -> None:
        self.sinks = sinks

    def emit(self, tag: str, text: str, *, pid: int | None = None) -> None:
        for sink in self.sinks:
            sink.emit(tag, text, pid=pid)


# --- sanitising ---------------------------------------------------------------------------

_C_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 92: "\\\\"}


def escape_bytes(data: bytes, limit: int = CLIENT_TEXT_LIMIT) -> str:
    """``util/escape.c``: printable ASCII as is, ``\\r\\n\\t...`` and ``\\ooo`` octal otherwise.

    Only the first *limit* bytes are shown, as smtpd does for pipelined input.
    """
    out = []
    for b in data[:limit]:
        if b in _C_ESCAPES:
            out.append(_C_ESCAPES[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def printable(text: str | bytes, limit: int = CLIENT_FIELD_LIMIT) -> str:
    """``util/printable.c``: every non-printable character becomes ``?``; cut to *limit*.

    UTF-8 text stays readable (smtputf8_enable); invalid bytes become ``?`` too.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text[:limit]
    return "".join(ch if ch.isprintable() and ch != "\ufffd" else "?" for ch in text)


def client_id(name: str | None, addr: str, port: int | None = None, port_logging: bool = False) -> str:
    """``localhost[127.0.0.1]``; ``unknown[addr]`` without a verified name; ``:port`` with
    ``smtpd_client_port_logging = yes``."""
    ident = f"{printable(name) if name else 'unknown'}[{addr}]"
    if port_logging and port is not None:
        ident += f":{port}"
    return ident


# --- command counters ---------------------------------------------------------------------


class CommandCounters:
    """Per-session command statistics for the ``disconnect from`` line.

    ``record("EHLO", ok=True)``; unrecognised command names count as ``unknown``.
    """

    def __init__(self) -> None:
        self._ok: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def record(self, cmd: str, ok: bool) -> None:
        name = cmd.strip().lower()
        if name not in COMMAND_ORDER:
            name = UNKNOWN
        self._total[name] = self._total.get(name, 0) + 1
        self._ok[name] = self._ok.get(name, 0) + (1 if ok else 0)

    def counts(self, cmd: str) -> tuple[int, int]:
        """(succeeded, total) for one command name."""
        name = cmd.lower()
        return self._ok.get(name, 0), self._total.get(name, 0)

    def summary(self) -> str:
        """``ehlo=2 starttls=1 auth=0/5 ... commands=6/17`` (``commands=0/0`` for none)."""
        parts = []
        for name in (*COMMAND_ORDER, UNKNOWN):
            total = self._total.get(name, 0)
            if total:
                ok = self._ok[name]
                parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        ok_all, total_all = sum(self._ok.values()), sum(self._total.values())
        # smtpd.c prints "/total" for the grand total also when it is zero ("commands=0/0").
        if ok_all == total_all and total_all:
            parts.append(f"commands={ok_all}")
        else:
            parts.append(f"commands={ok_all}/{total_all}")
        return " ".join(parts)


# --- the logger ----------------------------------------------------------------------------


def _reply_text(reply: object) -> str:
    """First line of a reply as sent, ``554 5.7.1 text`` (a ``replies.Reply`` or a string)."""
    lines = getattr(reply, "lines", None)
    if callable(lines):
        first = str(lines()[0])
        # a multi-line reply's "554-" continuation mark becomes the final line's space
        return first[:3] + " " + first[4:] if first[3:4] == "-" else first
    return str(reply)


class MailLog:
    """Logs mail events as ``<syslog_name>/<process>[pid]: <text>``.

    *syslog_name* is the service's (``postfix/submission``); lines of other programs that run
    in this process (cleanup's ``message-id=``) use *main_syslog_name*, the main.cf value,
    because Postfix's cleanup is not a per-service process.
    """

    def __init__(
        self,
        syslog_name: str,
        process: str = "smtpd",
        *,
        sink: LogSink,
        main_syslog_name: str = "postfix",
        pid: int | None = None,
    ) -> None:
        self.syslog_name = syslog_name
        self.process = process
        self.sink = sink
        self.main_syslog_name = main_syslog_name
        self._pid = pid

    @property
    def tag(self) -> str:
        return f"{self.syslog_name}/{self.process}"

    def _emit(self, text: str, *, tag: str | None = None) -> None:
        # Last line of defence: one event is one line, whatever a caller passed in.
        if any(ch in text for ch in "\r\n\0"):
            text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0")
        self.sink.emit(tag or self.tag, text, pid=self._pid)

    # --- severities (util/msg.c) ---
    def info(self, text: str) -> None:
        self._emit(text)

    def warning(self, text: str) -> None:
        self._emit(f"warning: {text}")

    def error(self, text: str) -> None:
        self._emit(f"error: {text}")

    def fatal(self, text: str) -> None:
        """Log only; the caller exits (Postfix's msg_fatal exits by itself)."""
        self._emit(f"fatal: {text}")

    def panic(self, text: str, exc: BaseException | None = None) -> None:
        """``panic: text: ValueError: detail`` then the traceback, one ``panic:`` line each."""
        if exc is None:
            self._emit(f"panic: {text}")
            return
        self._emit(f"panic: {text}: {type(exc).__name__}: {exc}")
        for chunk in traceback.format_exception(exc):
            for line in chunk.rstrip("\n").split("\n"):
                self._emit(f"panic: {line}")

    # --- session events (smtpd.c) ---
    def connect(self, client: str) -> None:
        self._emit(f"connect from {client}")

    def disconnect(self, client: str, counters: CommandCounters) -> None:
        self._emit(f"disconnect from {client} {counters.summary()}")

    def _after(self, reason: str, client: str, last_cmd: str, nbytes: int | None) -> None:
        size = f" ({nbytes} bytes)" if nbytes is not None else ""
        self._emit(f"{reason} after {last_cmd}{size} from {client}")

    def lost_connection(self, client: str, last_cmd: str, nbytes: int | None = None) -> None:
        """``lost connection after DATA (12 bytes) from c[ip]``; *last_cmd* is the upper-case
        command name, ``CONNECT``, ``UNKNOWN`` or ``END-OF-MESSAGE``; *nbytes* only after
        DATA/BDAT."""
        self._after("lost connection", client, last_cmd, nbytes)

    def timeout(self, client: str, last_cmd: str, nbytes: int | None = None) -> None:
        self._after("timeout", client, last_cmd, nbytes)

    def too_many_errors(self, client: str, last_cmd: str) -> None:
        self._after("too many errors", client, last_cmd, None)

    def improper_pipelining(self, client: str, last_cmd: str, rest: bytes) -> None:
        """``improper command pipelining after HELO from c[ip]: MAIL FROM:<a@b.test>\\r\\n``."""
        self._emit(f"improper command pipelining after {last_cmd} from {client}: {escape_bytes(rest)}")

    def non_smtp_command(self, client: str, line: str | bytes) -> None:
        self.warning(f"non-SMTP command from {client}: {printable(line, CLIENT_TEXT_LIMIT)}")

    def tls_established(self, client: str, description: str, *, trust: str = "Anonymous") -> None:
        """``Anonymous TLS connection established from c[ip]: TLSv1.3 with cipher ...``.

        *trust* is ``Anonymous`` (no client certificate), ``Untrusted``, ``Trusted`` or
        ``Verified``.
        """
        self._emit(f"{trust} TLS connection established from {client}: {description}")

    def tls_handshake_failed(self, client: str) -> None:
        self._emit(f"SSL_accept error from {client}: -1")

    # --- transaction events ---
    def queued_client(
        self,
        queue_id: str,
        client: str,
        sasl_method: str | None = None,
        sasl_username: str | None = None,
        sasl_sender: str | None = None,
    ) -> None:
        """``ID: client=c[ip], sasl_method=PLAIN, sasl_username=alice`` (smtpd_sasl_mail_log)."""
        text = f"{queue_id}: client={client}"
        if sasl_method:
            text += f", sasl_method={sasl_method}"
        if sasl_username:
            text += f", sasl_username={printable(sasl_username)}"
        if sasl_sender:
            text += f", sasl_sender={printable(sasl_sender)}"
        self._emit(text)

    def reject(
        self,
        queue_id: str | None,
        stage: str,
        client: str,
        reply: object,
        *,
        sender: str | None = None,
        recipient: str | None = None,
        proto: str | None = None,
        helo: str | None = None,
        action: str = "reject",
    ) -> None:
        """``NOQUEUE: reject: RCPT from c[ip]: 554 5.7.1 <x>: Relay access denied; from=<a@b>
        to=<x> proto=ESMTP helo=<c>`` (smtpd_check.c log_whatsup).

        *reply* is a ``replies.Reply`` or its text; *action* is ``reject``,
        ``reject_warning``, ``discard``, ``hold``, ``filter``, ``redirect``, ``warn`` ...
        Fields that are not known yet are left out, as Postfix does.
        """
        text = f"{queue_id or 'NOQUEUE'}: {action}: {stage} from {client}: {_reply_text(reply)};"
        if sender is not None:
            text += f" from=<{printable(sender)}>"
        if recipient is not None:
            text += f" to=<{printable(recipient)}>"
        if proto:
            text += f" proto={proto}"
        if helo is not None:
            text += f" helo=<{printable(helo)}>"
        self._emit(text)

    def message_id(self, queue_id: str, msgid: str) -> None:
        """cleanup's ``ID: message-id=<...>``; *msgid* is the header value as found or added
        (with its angle brackets); ``""`` (no Message-ID at all) logs ``message-id=<>`` as
        cleanup_message.c does."""
        self._emit(
            f"{queue_id}: message-id={printable(msgid) if msgid else '<>'}",
            tag=f"{self.main_syslog_name}/cleanup",
        )

    # --- SASL (smtpd_sasl_glue.c) ---
    def sasl_failed(self, client: str, text: str) -> None:
        """``warning: c[ip]: <text>``, *text* being e.g. ``SASL PLAIN authentication failed:
        authentication failure, sasl_username=alice`` (see :func:`sasl_failure_text`)."""
        self.warning(f"{client}: {text}")

    def sasl_auth_failed(
        self, client: str, mechanism: str, reason: str, username: str | None = None
    ) -> None:
        self.sasl_failed(client, sasl_failure_text(mechanism, reason, username))

    def sasl_aborted(self, client: str, mechanism: str) -> None:
        self.warning(f"{client}: SASL {printable(mechanism, 20)} authentication aborted")

    def sasl_backend_failure(self, detail: str) -> None:
        """``warning: SASL authentication failure: cannot connect to saslauthd server: ...``."""
        self.warning(f"SASL authentication failure: {detail}")

    # --- anvil limits ---
    def limit_exceeded(self, what: str, count: int, client: str, service: str) -> None:
        """``warning: Connection rate limit exceeded: 3 from c[ip] for service submission``."""
        self.warning(f"{what} limit exceeded: {count} from {client} for service {service}")


def format_delay(seconds: float) -> str:
    """Postfix's delay numbers: ``0``, ``0.04``, ``1.2``, ``12`` (two significant digits below 10)."""
    if seconds < 0.01:
        return "0"
    if seconds < 10:
        text = f"{seconds:.2g}"
        return text if "e" not in text else f"{seconds:.2f}"
    return str(int(round(seconds)))


class QueueLog:
    """The queue manager's and delivery agents' lines (Postfix qmgr.c, log_adhoc.c)."""

    def __init__(self, syslog_name: str, *, sink: LogSink, pid: int | None = None) -> None:
        self.syslog_name = syslog_name
        self.sink = sink
        self._pid = pid

    def _emit(self, process: str, text: str) -> None:
        if any(ch in text for ch in "\r\n\0"):
            text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0")
        self.sink.emit(f"{self.syslog_name}/{process}", text, pid=self._pid)

    def info(self, text: str, process: str = "qmgr") -> None:
        self._emit(process, text)

    def warning(self, text: str, process: str = "qmgr") -> None:
        self._emit(process, f"warning: {text}")

    def active(self, queue_id: str, sender: str, size: int, nrcpt: int) -> None:
        """``ID: from=<a@b>, size=309, nrcpt=1 (queue active)``."""
        self._emit("qmgr", f"{queue_id}: from=<{printable(sender)}>, size={size}, nrcpt={nrcpt} (queue active)")

    def removed(self, queue_id: str) -> None:
        self._emit("qmgr", f"{queue_id}: removed")

    def expired(self, queue_id: str, sender: str) -> None:
        self._emit("qmgr", f"{queue_id}: from=<{printable(sender)}>, status=expired, returned to sender")

    def delivery(
        self,
        process: str,
        queue_id: str,
        *,
        to: str,
        orig_to: str | None,
        relay: str,
        delay: float,
        delays: tuple[float, float, float, float],
        dsn: str,
        status: str,
        text: str,
        conn_use: int = 0,
    ) -> None:
        """``ID: to=<x>, relay=mx[ip]:25, delay=0.12, delays=a/b/c/d, dsn=2.0.0, status=sent (...)``;
        ``conn_use=N`` after the relay when a cached connection carried its N-th delivery."""
        orig = f" orig_to=<{printable(orig_to)}>," if orig_to and orig_to != to else ""
        use = f" conn_use={conn_use}," if conn_use > 1 else ""
        self._emit(
            process,
            f"{queue_id}: to=<{printable(to)}>,{orig} relay={relay},{use} delay={format_delay(delay)}, "
            f"delays={'/'.join(format_delay(d) for d in delays)}, dsn={dsn}, "
            f"status={status} ({printable(text, 500)})",
        )

    def notification(self, queue_id: str, kind: str, new_id: str, *, to: str = "sender") -> None:
        """``ID: sender non-delivery notification: NEWID`` (bounce(8)); *to* is ``sender`` or
        ``postmaster``."""
        self._emit("bounce", f"{queue_id}: {to} {kind} notification: {new_id}")


def sasl_failure_text(mechanism: str, reason: str, username: str | None) -> str:
    """``SASL PLAIN authentication failed: authentication failure, sasl_username=alice``.

    Never pass decoded AUTH payloads here: *reason* is the server's verdict, *username* the
    authentication identity (``(unavailable)`` when unknown).
    """
    user = printable(username) if username else "(unavailable)"
    return f"SASL {printable(mechanism, 20)} authentication failed: {reason}, sasl_username={user}"
