"""ServerConnection: the sans-IO SMTP server engine (bytes in, events and replies out).

Owns: line framing, command parsing, sequencing and every protocol-level reply (syntax,
order, limits, pipelining, dot-unstuffing, BDAT counting, the STARTTLS buffer flush).
Decisions that need policy, authentication or the queue are handed out as events.
Must not import: asyncio, socket, ssl, logging, config (settings come in as ``Settings``).
Follows: RFC 5321, RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 3207 (STARTTLS),
RFC 4954 (AUTH), Postfix smtpd(8) replies and limits.

Usage (h11 style)::

    conn = ServerConnection(settings)
    conn.send(replies.greeting(banner))
    conn.receive_data(data)                   # b"" means EOF
    while (ev := conn.next_event()) not in (NEED_DATA, PAUSED):
        ... conn.send(reply) for ev ...
    transport.write(conn.data_to_send())
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postillion import replies
from postillion.replies import Reply
from postillion.smtp import _params
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
    MessageComplete,
    Notice,
    RcptTo,
    Sentinel,
    StartTls,
    Vrfy,
)
from postillion.smtp._state import COMMANDS, FORBIDDEN_VERBS, Phase

# Postfix is_header(): printable ASCII up to a colon (the first word of "Subject: hi" or
# "From:<a@b>"); then the client is sending a message, not commands.
_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+:")

_WHITESPACE_TO_SPACE = str.maketrans("\t\r\v\f", "    ")

_DATA_PARTIAL_LIMIT = 65536  # bytes of one message line kept before passing them on

# RFC 5321 §4.5.3.1.4 allows 512; Postfix reads command lines up to line_length_limit.
DEFAULT_LINE_LIMIT = 2048  # line_length_limit default


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What the engine needs to know about its service; built from main.cf by the driver."""

    hostname: str = "localhost"  # myhostname
    tls_available: bool = False  # a TLS context exists and the level is may/encrypt
    tls_required: bool = False  # smtpd_tls_security_level = encrypt
    auth_enabled: bool = False  # smtpd_sasl_auth_enable
    auth_tls_only: bool = False  # smtpd_tls_auth_only, or implied by encrypt
    auth_mechanisms: tuple[str, ...] = ()  # offered before TLS (smtpd_sasl_security_options)
    auth_mechanisms_tls: tuple[str, ...] = ()  # offered under TLS (smtpd_sasl_tls_security_options)
    broken_sasl_auth_clients: bool = False
    message_size_limit: int = 10240000
    line_length_limit: int = DEFAULT_LINE_LIMIT
    recipient_limit: int = 1000  # smtpd_recipient_limit (0 = no limit)
    recipient_overshoot_limit: int = 1000  # smtpd_recipient_overshoot_limit
    soft_error_limit: int = 10
    hard_error_limit: int = 20
    junk_command_limit: int = 100
    helo_required: bool = False
    disable_vrfy: bool = False
    smtputf8_enable: bool = True
    discard_ehlo_keywords: frozenset[str] = frozenset()
    forbid_unauth_pipelining: bool = True  # Postfix >= 3.9 default
    forbid_bare_newline: str = "normal"  # no | normal | strict (never accept LF.LF as end)
    bare_newline_reject_code: int = 550
    sasl_response_limit: int = 12288


@dataclass(slots=True)
class _Transaction:
    sender: str | None = None  # None = no MAIL yet
    recipients: int = 0
    rcpt_attempts: int = 0
    rcpt_overshoot: int = 0  # RCPTs answered 452 "too many recipients"
    bdat: bool = False  # a BDAT chunk has been received in this transaction
    smtputf8: bool = False  # MAIL FROM said SMTPUTF8


@dataclass(slots=True)
class _Pending:
    """The event whose reply we are waiting for."""

    command: str  # counter name (lower case) or "" for replies not counted
    event: Event
    on_reply: str = ""  # what a positive reply means


@dataclass(slots=True)
class CommandStats:
    """Per-command ok/total counts for the ``disconnect from`` summary line."""

    counts: dict[str, list[int]] = field(default_factory=dict)

    def record(self, name: str, ok: bool) -> None:
        entry = self.counts.setdefault(name, [0, 0])
        entry[1] += 1
        if ok:
            entry[0] += 1


class ServerConnection:
    """One SMTP server session, without I/O."""

    def __init__(self, settings: Settings, *, tls_active: bool = False) -> None:
        self.settings = settings
        self.phase = Phase.GREETING
        self.tls_active = tls_active
        self.helo_name: str | None = None
        self.esmtp = False
        self.authenticated = False
        self.error_count = 0
        self.junk_commands = 0
        self.stats = CommandStats()
        self.last_command = "CONNECT"  # for "lost connection after X"
        self.data_bytes = 0  # message bytes received in the current DATA/BDAT
        self.pipelining_violation = False
        self.closing = False
        self._enhanced = "enhancedstatuscodes" not in settings.discard_ehlo_keywords
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._pending: _Pending | None = None
        self._events: list[Event] = []  # queued notices and engine-made events
        self._tx = _Transaction()
        self._skip_long_line = False
        # DATA / BDAT reception
        self._data = bytearray()
        self._data_too_big = False
        self._data_bare_lf = False
        self._prev_crlf = True
        self._mid_line = False  # DATA: part of the current line was already passed on
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None
        self._bdat_chunk = 0

    # ------------------------------------------------------------------ public API
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; ``b""`` means the client closed its side."""
        if data:
            if self.phase is not Phase.CLOSED:
                self._in += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def in_transaction(self) -> bool:
        return self._tx.sender is not None

    @property
    def tarpit(self) -> bool:
        """Postfix: once the soft error limit is reached, every reply is delayed."""
        return self.error_count >= self.settings.soft_error_limit

    def ehlo_keywords(self) -> list[str]:
        s = self.settings
        discard = s.discard_ehlo_keywords
        words: list[str] = []

        def add(name: str, text: str) -> None:
            if name not in discard:
                words.append(text)

        add("pipelining", "PIPELINING")
        add("size", f"SIZE {s.message_size_limit}" if s.message_size_limit > 0 else "SIZE")
        if not s.disable_vrfy:
            add("vrfy", "VRFY")
        add("etrn", "ETRN")
        if s.tls_available and not self.tls_active:
            add("starttls", "STARTTLS")
        mechs = self.auth_mechanisms()
        if mechs:
            add("auth", "AUTH " + " ".join(mechs))
            if s.broken_sasl_auth_clients:
                add("auth", "AUTH=" + " ".join(mechs))
        add("enhancedstatuscodes", "ENHANCEDSTATUSCODES")
        add("8bitmime", "8BITMIME")
        add("dsn", "DSN")
        if s.smtputf8_enable:
            add("smtputf8", "SMTPUTF8")
        add("chunking", "CHUNKING")
        return words

    def auth_mechanisms(self) -> tuple[str, ...]:
        """Mechanisms offered right now; empty when AUTH is not available in this state."""
        s = self.settings
        if not s.auth_enabled or "auth" in s.discard_ehlo_keywords:
            return ()
        if (s.auth_tls_only or s.tls_required) and not self.tls_active:
            return ()
        return s.auth_mechanisms_tls if self.tls_active else s.auth_mechanisms

    def ehlo_reply(self) -> Reply:
        return replies.ehlo_ok(self.settings.hostname, self.ehlo_keywords())

    def helo_reply(self) -> Reply:
        return replies.helo_ok(self.settings.hostname)

    def send(self, reply: Reply) -> None:
        """Answer the pending event (or send the greeting first thing)."""
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.GREETING:
            self._write(reply)
            self.phase = Phase.COMMAND
            if reply.code >= 400:
                self._close()
            return
        pending = self._pending
        if pending is None:
            raise RuntimeError("send() without a pending event")
        if reply.code == 334:
            if pending.command != "auth":
                raise RuntimeError("334 is only valid during AUTH")
            self._write(reply)
            self.phase = Phase.AUTH_RESPONSE
            return
        self._pending = None
        self.phase = Phase.COMMAND
        ok = reply.code < 400
        action = pending.on_reply
        if ok:
            if action == "helo":
                ev = pending.event
                assert isinstance(ev, Helo)
                self._reset_transaction()
                self.helo_name = ev.name
                self.esmtp = ev.extended
            elif action == "mail":
                ev = pending.event
                assert isinstance(ev, MailFrom)
                self._tx = _Transaction(sender=ev.address, smtputf8=ev.params.smtputf8)
            elif action == "rcpt":
                self._tx.recipients += 1
            elif action == "data":
                if reply.code == 354:
                    self.phase = Phase.DATA
                    self.last_command = "DATA"
                    self.data_bytes = 0
                    self._data.clear()
                    self._data_too_big = False
                    self._data_bare_lf = False
                    self._prev_crlf = True
                    self._mid_line = False
                self._write(reply)
                return  # DATA's outcome is counted at end of message
            elif action == "auth":
                self.authenticated = True
            elif action == "starttls":
                discarded = len(self._in)
                self._in.clear()  # RFC 3207 §4.2: nothing sent before the handshake counts
                if discarded:
                    self._events.append(
                        Notice(kind="discarded_after_starttls", command="STARTTLS", detail=str(discarded))
                    )
                self.phase = Phase.TLS
        if action == "message":
            self._reset_transaction()
            if ok:
                # Postfix: the error counter counts errors "without delivering mail"
                self.error_count = 0
                self.junk_commands = 0
        if action == "rcpt":
            self._tx.rcpt_attempts += 1
        self._finish(pending.command, reply)

    def tls_started(self) -> None:
        """The handshake after STARTTLS succeeded: start over as RFC 3207 §4.2 requires."""
        self.tls_active = True
        self.helo_name = None
        self.esmtp = False
        self.authenticated = False
        self._reset_transaction()
        self._in.clear()
        self.phase = Phase.COMMAND

    def close_with(self, reply: Reply) -> None:
        """Send a final reply outside the command flow (timeout, shutdown) and hang up."""
        if self.phase is not Phase.CLOSED:
            self._count_interrupted()
            self._write(reply.with_close())
            self._close()

    def _count_interrupted(self) -> None:
        """Postfix counts a command when it starts, so one cut short by a timeout or a lost
        connection shows as failed in the summary (``data=0/1``, ``auth=0/1``)."""
        name = {Phase.DATA: "data", Phase.BDAT: "bdat", Phase.AUTH_RESPONSE: "auth"}.get(self.phase)
        if name is not None:
            self.stats.record(name, False)

    def next_event(self) -> Event | Sentinel:
        if self._events:
            return self._events.pop(0)
        while True:
            if self.phase in (Phase.REPLY, Phase.TLS, Phase.GREETING):
                return PAUSED
            if self.phase is Phase.CLOSED:
                return PAUSED
            if self.phase is Phase.DATA:
                ev = self._read_data()
            elif self.phase is Phase.BDAT:
                ev = self._read_bdat()
            else:
                ev = self._read_line()
            if self._events:
                if ev is not None and ev is not NEED_DATA:
                    self._events.append(ev)
                return self._events.pop(0)
            if ev is NEED_DATA:
                if self._eof and self.phase is not Phase.CLOSED:
                    self._count_interrupted()
                    self.phase = Phase.CLOSED
                    self.closing = True
                    return ConnectionLost()
                return NEED_DATA
            if ev is not None:
                return ev

    # ------------------------------------------------------------------ internals
    def _write(self, reply: Reply) -> None:
        self._out += reply.encode(enhanced=self._enhanced)
        if reply.close:
            self._close()

    def _close(self) -> None:
        self.phase = Phase.CLOSED
        self.closing = True
        self._in.clear()

    def _reset_transaction(self) -> None:
        self._tx = _Transaction()
        self._data.clear()

    def _finish(self, command: str, reply: Reply) -> None:
        """Write a command's final reply, count it, and apply the hard error limit."""
        ok = reply.code < 400
        if command:
            self.stats.record(command, ok)
        if not ok:
            self.error_count += 1
        self._write(reply)
        if (
            self.phase is not Phase.CLOSED
            and self.error_count >= self.settings.hard_error_limit
        ):
            self._events.append(Notice(kind="too_many_errors", command=self.last_command))
            self._write(replies.too_many_errors(self.settings.hostname))

    def _auto(self, command: str, reply: Reply) -> None:
        """A reply the engine gives on its own."""
        self._finish(command, reply)

    def _ask(self, command: str, event: Event, on_reply: str = "") -> Event:
        self._pending = _Pending(command=command, event=event, on_reply=on_reply)
        self.phase = Phase.REPLY
        return event

    def _next_line(self) -> tuple[bytes, bool] | bool:
        """Pop one line without its ending, with whether it ended in CRLF.

        Returns False when no complete line is buffered yet and True when a line was
        consumed and answered here (too long); the caller then just loops.
        """
        auth = self.phase is Phase.AUTH_RESPONSE
        limit = self.settings.sasl_response_limit if auth else max(self.settings.line_length_limit, 512)
        nl = self._in.find(b"\n")
        if nl < 0:
            # Too long only if it would be too long even when a trailing CR starts the CRLF,
            # so the verdict does not depend on where the packets were cut.
            if len(self._in) - self._in.endswith(b"\r") > limit:
                self._skip_long_line = True  # keep discarding until the line ends
                self._in.clear()
            return False
        raw = bytes(self._in[:nl])
        del self._in[: nl + 1]
        crlf = raw.endswith(b"\r")
        if crlf:
            raw = raw[:-1]
        if self._skip_long_line or len(raw) > limit:
            self._skip_long_line = False
            if auth:
                self._pending = None
                self.phase = Phase.COMMAND
                self._finish("auth", replies.SASL_RESPONSE_LIMIT)
            else:
                self.last_command = "UNKNOWN"
                self._events.append(Notice(kind="command_too_long", command="UNKNOWN"))
                self._finish("unknown", replies.command_too_long(self.settings.hostname))
            return True
        return raw, crlf

    def _read_line(self) -> Event | Sentinel | None:
        got = self._next_line()
        if got is False:
            return NEED_DATA
        if got is True:
            return None
        raw, crlf = got
        if not crlf and self.settings.forbid_bare_newline == "strict":
            self._events.append(Notice(kind="bare_lf", command=self.last_command))
            self.stats.record("unknown", False)
            self._write(replies.bare_lf(self.settings.hostname, self.settings.bare_newline_reject_code))
            return None
        if self.phase is Phase.AUTH_RESPONSE:
            self.phase = Phase.REPLY
            return AuthResponse(line=raw.decode("ascii", "replace"))
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.last_command = "UNKNOWN"
            self._auto("unknown", replies.BAD_UTF8)
            return None
        return self._command(line)

    def _check_pipelining(self, cmd: str, last: bool) -> bool:
        """Postfix's "improper command pipelining" rule; True when the session must end."""
        if not self._in:
            return False
        if not (last or not self.esmtp):
            return False
        self.pipelining_violation = True
        rest = bytes(self._in[:100]).decode("latin-1")
        self._events.append(Notice(kind="improper_pipelining", command=cmd, detail=rest))
        if cmd == "STARTTLS":
            return False  # the buffered plaintext is discarded after the 220 instead
        if self.settings.forbid_unauth_pipelining:
            self.stats.record(cmd.lower(), False)
            self._write(replies.SYNC_ERROR)
            return True
        return False

    def _command(self, line: str) -> Event | None:
        # Postfix's tokenizer splits on any white space (ISSPACE), so a stray CR or TAB
        # separates words; it must never reach an argument (or a reply that echoes one).
        line = line.translate(_WHITESPACE_TO_SPACE)
        verb, _, arg = line.strip(" ").partition(" ")
        arg = arg.strip(" ")
        upper = verb.upper()
        if not verb:
            self.last_command = "UNKNOWN"
            self._auto("unknown", replies.BAD_SYNTAX)
            return None
        if _HEADER_NAME.match(verb) or upper in FORBIDDEN_VERBS:
            # A mail header or an HTTP proxy request: not an SMTP client (Postfix "I can break rules").
            self._events.append(Notice(kind="non_smtp_command", command=upper, detail=line[:100]))
            self.stats.record("unknown", False)
            self._write(replies.NON_SMTP)
            return None
        cmd = COMMANDS.get(upper)
        if cmd is None:
            self.last_command = "UNKNOWN"
            self._auto("unknown", replies.NOT_RECOGNIZED)
            return None
        self.last_command = upper
        name = upper.lower()
        if cmd.junk:
            # Postfix: "junk_cmds++ > smtpd_junk_command_limit" (compared before counting)
            if self.junk_commands > self.settings.junk_command_limit:
                self.error_count += 1
            self.junk_commands += 1
        if upper != "BDAT" and self._check_pipelining(upper, cmd.last):
            return None
        if self.settings.tls_required and not self.tls_active and not cmd.pre_tls:
            self._auto(name, replies.MUST_STARTTLS)
            return None
        handler = getattr(self, f"_cmd_{name}")
        result: Event | None = handler(arg)
        return result

    # ------------------------------------------------------------------ commands
    def _cmd_helo(self, arg: str) -> Event | None:
        return self._helo(arg, extended=False)

    def _cmd_ehlo(self, arg: str) -> Event | None:
        return self._helo(arg, extended=True)

    def _helo(self, arg: str, *, extended: bool) -> Event | None:
        if not arg:
            self._auto("ehlo" if extended else "helo", replies.EHLO_SYNTAX if extended else replies.HELO_SYNTAX)
            return None
        return self._ask("ehlo" if extended else "helo", Helo(name=arg, extended=extended), "helo")

    def _cmd_starttls(self, arg: str) -> Event | None:
        if arg:
            self._auto("starttls", replies.STARTTLS_SYNTAX)
        elif self.tls_active:
            self._auto("starttls", replies.TLS_ACTIVE)
        elif not self.settings.tls_available or "starttls" in self.settings.discard_ehlo_keywords:
            self._auto("starttls", replies.NOT_IMPLEMENTED)
        else:
            return self._ask("starttls", StartTls(), "starttls")
        return None

    def _cmd_auth(self, arg: str) -> Event | None:
        words = arg.split()
        refusal: Reply | None = None
        if self.settings.helo_required and self.helo_name is None:
            refusal = replies.SEND_HELO_FIRST
        elif not self.auth_mechanisms():
            refusal = replies.AUTH_NOT_ENABLED
        elif self.in_transaction:
            refusal = replies.AUTH_IN_TRANSACTION
        elif self.authenticated:
            refusal = replies.ALREADY_AUTHENTICATED
        elif not 1 <= len(words) <= 2:
            refusal = replies.AUTH_SYNTAX
        mech = words[0].upper() if words else ""
        initial = words[1] if len(words) == 2 else None
        return self._ask("auth", Auth(mechanism=mech, initial_response=initial, refusal=refusal), "auth")

    def _cmd_mail(self, arg: str) -> Event | None:
        s = self.settings
        if s.helo_required and self.helo_name is None:
            self._auto("mail", replies.SEND_HELO_FIRST)
            return None
        if self.in_transaction:
            self._auto("mail", replies.MAIL_AFTER_BDAT if self._tx.bdat else replies.NESTED_MAIL)
            return None
        split = _params.split_path_and_params(arg, "FROM")
        if split is None:
            self._auto("mail", replies.MAIL_SYNTAX)
            return None
        path, words = split
        try:
            params = _params.parse_mail_params(
                words, size_limit=s.message_size_limit, smtputf8_enable=s.smtputf8_enable
            )
        except _params.ParamError as e:
            if e.reply == replies.SIZE_EXCEEDED:
                # Postfix smtpd_check_size() logs this one as a policy reject (NOQUEUE: reject: MAIL).
                sender = path.strip()
                if sender.startswith("<") and sender.endswith(">"):
                    sender = sender[1:-1]
                self._events.append(Notice(kind="size_exceeded", command="MAIL", detail=sender))
            self._auto("mail", e.reply)
            return None
        try:
            address = _params.parse_path(path, allow_null=True, utf8=params.smtputf8)
        except ValueError:
            reply = replies.BAD_SENDER
            if not path.isascii() and not params.smtputf8:
                reply = replies.R(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
            self._auto("mail", reply)
            return None
        return self._ask("mail", MailFrom(address=address, params=params), "mail")

    def _cmd_rcpt(self, arg: str) -> Event | None:
        if not self.in_transaction:
            self._auto("rcpt", replies.NEED_MAIL)
            return None
        if self._tx.bdat:
            self._auto("rcpt", replies.R(503, "5.5.1", "Error: RCPT after BDAT"))
            return None
        split = _params.split_path_and_params(arg, "TO")
        if split is None:
            self._auto("rcpt", replies.RCPT_SYNTAX)
            return None
        path, words = split
        try:
            params = _params.parse_rcpt_params(words)
        except _params.ParamError as e:
            self._auto("rcpt", e.reply)
            return None
        smtputf8 = self._tx.smtputf8
        try:
            address = _params.parse_path(path, allow_null=False, utf8=smtputf8)
        except ValueError:
            reply = replies.BAD_RECIPIENT
            if not path.isascii() and not smtputf8:
                reply = replies.R(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
            self._auto("rcpt", reply)
            return None
        limit = self.settings.recipient_limit
        if limit and self._tx.recipients >= limit:
            # Postfix rcpt_cmd(): the 452 counts as a success (no error, no tarpit) until
            # smtpd_recipient_overshoot_limit, so a client that ignores it is not cut off early.
            self._tx.rcpt_overshoot += 1
            if self._tx.rcpt_overshoot <= self.settings.recipient_overshoot_limit:
                self.stats.record("rcpt", True)
                self._write(replies.TOO_MANY_RCPT)
            else:
                self._auto("rcpt", replies.TOO_MANY_RCPT)
            return None
        return self._ask("rcpt", RcptTo(address=address, params=params), "rcpt")

    def _cmd_data(self, arg: str) -> Event | None:
        # Postfix data_cmd() order: recipients first, then the argument count.
        if self._tx.bdat:
            self._auto("data", replies.DATA_AFTER_BDAT)
        elif not self.in_transaction:
            self._auto("data", replies.NEED_RCPT)
        elif self._tx.recipients == 0:
            self._auto("data", replies.NO_VALID_RCPT)
        elif arg:
            self._auto("data", replies.DATA_SYNTAX)
        else:
            return self._ask("data", DataStart(), "data")
        return None

    def _cmd_bdat(self, arg: str) -> Event | None:
        if "chunking" in self.settings.discard_ehlo_keywords:
            # Like STARTTLS: a discarded keyword disables the command; no chunk is read.
            self._auto("bdat", replies.NOT_IMPLEMENTED)
            return None
        words = arg.split()
        if not 1 <= len(words) <= 2 or not words[0].isdigit() or len(words[0]) > 18 or (
            len(words) == 2 and words[1].upper() != "LAST"
        ):
            self.stats.record("bdat", False)
            self._write(replies.BDAT_SYNTAX)
            return None
        size = int(words[0])
        self._bdat_remaining = size
        self._bdat_chunk = size
        self._bdat_last = len(words) == 2
        error: Reply | None = None
        if not self.in_transaction:
            error = replies.NEED_MAIL
        elif self._tx.recipients == 0:
            error = replies.NO_VALID_RCPT
        if not self._tx.bdat:
            self._data.clear()
            self.data_bytes = 0
            self._data_too_big = False
        self._bdat_error = error
        if error is None:
            self._tx.bdat = True
        self.phase = Phase.BDAT
        return None

    def _cmd_rset(self, arg: str) -> Event | None:
        if arg:
            self._auto("rset", replies.RSET_SYNTAX)
        else:
            self._reset_transaction()
            self._auto("rset", replies.OK)
        return None

    def _cmd_noop(self, arg: str) -> Event | None:
        self._auto("noop", replies.OK)
        return None

    def _cmd_vrfy(self, arg: str) -> Event | None:
        if self.settings.disable_vrfy:
            self._auto("vrfy", replies.VRFY_DISABLED)
        elif not arg:
            self._auto("vrfy", replies.VRFY_SYNTAX)
        else:
            return self._ask("vrfy", Vrfy(argument=arg))
        return None

    def _cmd_etrn(self, arg: str) -> Event | None:
        if self.settings.helo_required and self.helo_name is None:
            self._auto("etrn", replies.R(503, "", "Error: send HELO/EHLO first"))
        elif self.in_transaction:
            self._auto("etrn", replies.ETRN_IN_TRANSACTION)
        elif len(arg.split()) != 1:
            self._auto("etrn", replies.ETRN_SYNTAX)
        else:
            return self._ask("etrn", Etrn(domain=arg))
        return None

    def _cmd_quit(self, arg: str) -> Event | None:
        self._auto("quit", replies.BYE)
        return None

    def _cmd_help(self, arg: str) -> Event | None:
        self._auto("help", replies.HELP)
        return None

    # ------------------------------------------------------------------ message content
    def _append_content(self, chunk: bytes) -> None:
        self.data_bytes += len(chunk)
        limit = self.settings.message_size_limit
        if self._data_too_big:
            return
        if limit > 0 and len(self._data) + len(chunk) > limit:
            self._data_too_big = True
            self._data.clear()
            return
        self._data += chunk

    def _read_data(self) -> Event | Sentinel | None:
        buf = self._in
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                # A partial line this long cannot be the end marker; pass it on to bound memory
                # (Postfix REC_TYPE_CONT), keeping a trailing CR that may start the CRLF.
                if len(buf) > _DATA_PARTIAL_LIMIT:
                    keep = 1 if buf.endswith(b"\r") else 0
                    chunk = bytes(buf[: len(buf) - keep])
                    del buf[: len(buf) - keep]
                    if not self._mid_line and chunk.startswith(b"."):
                        chunk = chunk[1:]
                    self._append_content(chunk)
                    self._mid_line = True
                return NEED_DATA
            crlf = nl > 0 and buf[nl - 1] == 0x0D
            line = bytes(buf[: nl - 1 if crlf else nl])
            del buf[: nl + 1]
            if not crlf:
                if self.settings.forbid_bare_newline == "strict":
                    self._events.append(Notice(kind="bare_lf", command="DATA"))
                    self.stats.record("data", False)
                    self._write(replies.bare_lf(self.settings.hostname, self.settings.bare_newline_reject_code))
                    return None
                self._data_bare_lf = True
            if not self._mid_line:  # the rest of a long line is never a marker or stuffed
                if line == b"." and crlf and self._prev_crlf:
                    return self._end_of_message(chunked=False)
                if line.startswith(b".") and line != b".":
                    line = line[1:]
            self._append_content(line + b"\r\n")
            self._prev_crlf = crlf
            self._mid_line = False

    def _read_bdat(self) -> Event | Sentinel | None:
        if self._bdat_remaining:
            take = min(self._bdat_remaining, len(self._in))
            if take == 0:
                return NEED_DATA
            chunk = bytes(self._in[:take])
            del self._in[:take]
            self._bdat_remaining -= take
            if self._bdat_error is None:
                self._append_content(chunk)
            if self._bdat_remaining:
                return NEED_DATA
        self.phase = Phase.COMMAND
        self.last_command = "BDAT"
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self._reset_transaction()
            self._auto("bdat", error)
            return None
        if self._bdat_last:
            return self._end_of_message(chunked=True)
        if self._data_too_big:
            self._reset_transaction()
            self._auto("bdat", replies.SIZE_EXCEEDED)
            return None
        self._auto("bdat", replies.bdat_ok(self._bdat_chunk))
        return None

    def _end_of_message(self, *, chunked: bool) -> Event | None:
        command = "bdat" if chunked else "data"
        self.phase = Phase.COMMAND
        self.last_command = "END-OF-MESSAGE"
        if self._data_too_big:
            self._reset_transaction()
            self._auto(command, replies.SIZE_EXCEEDED)
            return None
        content = bytes(self._data)
        self._data.clear()
        return self._ask(
            command,
            MessageComplete(content=content, chunked=chunked, bare_lf=self._data_bare_lf),
            "message",
        )
