"""Built-in content inspection: header_checks, mime_header_checks, nested_header_checks and
body_checks applied to one message, as Postfix's cleanup(8) does before the mail is queued.

Owns: walking a message (bytes, CRLF lines) the way Postfix's MIME parser classifies it
(primary headers, MIME headers, headers of attached messages, body lines and multipart
boundaries), asking the check tables, carrying out the actions (REJECT, DISCARD, HOLD, WARN,
INFO, IGNORE, STRIP, PREPEND, REPLACE, REDIRECT, BCC, FILTER, PASS, DUNNO/OK), and
formatting cleanup's log lines for them.  Pure: the tables arrive as plain lookup callables,
the result is a value; nothing here does I/O or logs.
Must not import: server, queue, maillog, tables (the caller opens the tables).
Follows: header_checks(5); Postfix cleanup/cleanup_message.c (cleanup_act, cleanup_act_log,
cleanup_header_callback, cleanup_body_callback), global/cleanup_strerror.c
(``550 5.7.1 message content rejected``), global/dsn_util.c (dsn_prepend), global/mime_state.c
(header classes), global/header_opts.c (which headers count as MIME headers).

Not done: header_size_limit truncation, line_length_limit chunking of long body lines,
multipart/digest default types, 8-bit/encoding detection.  FILTER is recorded in the result
and logged but postillion has no content_filter delivery: callers warn that it is ignored.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from postillion.replies import Reply

Lookup = Callable[[str], "str | None"]

# cleanup_strerror.c CLEANUP_STAT_CONT: what REJECT without text answers.
CONTENT_REJECTED = ("5.7.1", "message content rejected")
CONTENT_REJECT_CODE = 550  # CLEANUP_STAT_CONT
CONTENT_DEFER_CODE = 451  # CLEANUP_STAT_DEFER: REJECT with a 4.x.x text
BODY_CHECKS_SIZE_LIMIT = 51200  # body_checks_size_limit default
LOG_CONTENT_LIMIT = 200  # cleanup_act_log prints "%.200s" of the matched line

# header_opts.c: headers with HDR_OPT_MIME go to mime_header_checks wherever they appear.
MIME_HEADERS = frozenset({
    "content-description", "content-disposition", "content-id", "content-transfer-encoding",
    "content-type", "mime-version",
})
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_HEADER_TEXT = re.compile(r"^[\x21-\x39\x3b-\x7e]+[ \t]*:")  # is_header()
_DSN = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)


class HeaderClass(enum.Enum):
    """mime_state.c header classes, each with its own table."""

    PRIMARY = "header_checks"
    MULTIPART = "mime_header_checks"
    NESTED = "nested_header_checks"


class Disposition(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DISCARD = "discard"
    HOLD = "hold"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentChecks:
    """The opened check tables (None: not configured) and the limits that go with them."""

    header_checks: Lookup | None = None
    mime_header_checks: Lookup | None = None
    nested_header_checks: Lookup | None = None
    body_checks: Lookup | None = None
    body_checks_size_limit: int = BODY_CHECKS_SIZE_LIMIT
    disable_mime_input_processing: bool = False

    def __bool__(self) -> bool:
        return any((self.header_checks, self.mime_header_checks, self.nested_header_checks,
                    self.body_checks))

    def for_class(self, cls: HeaderClass) -> Lookup | None:
        if cls is HeaderClass.PRIMARY:
            return self.header_checks
        if cls is HeaderClass.MULTIPART:
            return self.mime_header_checks
        return self.nested_header_checks


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageContext:
    """What cleanup_act_log() prints about the message.

    ``origin`` is ``host[addr]`` for SMTP mail and ``local`` for sendmail; ``recipient`` the
    first envelope recipient; ``proto``/``helo`` are left out of the log when None.
    """

    queue_id: str
    origin: str
    sender: str
    recipient: str | None = None
    proto: str | None = None
    helo: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """What inspection decided.  ``log`` holds cleanup's lines without the ``cleanup[pid]: ``
    prefix (warnings start with ``warning: ``); ``reply`` is set for REJECT only."""

    content: bytes
    disposition: Disposition = Disposition.ACCEPT
    reply: Reply | None = None
    redirect: str | None = None
    filter: str | None = None
    bcc: tuple[str, ...] = ()
    log: tuple[str, ...] = ()


def dsn_prepend(default: str, text: str) -> str:
    """dsn_util.c: keep a leading ``X.Y.Z`` status in *text*, else put *default* in front."""
    if _DSN.match(text):
        return text
    return f"{default} {text}"


def reject_reply(reason: str) -> Reply:
    """smtpd's answer for a content reject: ``550 <reason>`` (``451`` for a 4.x.x reason)."""
    dsn, _, text = reason.partition(" ")
    code = CONTENT_DEFER_CODE if dsn.startswith("4") else CONTENT_REJECT_CODE
    return Reply(code=code, enhanced=dsn, text=text)


def log_text(text: str, limit: int | None = None) -> str:
    """Postfix's msg_printable(): control characters (folded-header newlines too) become '?'."""
    if limit is not None:
        text = text[:limit]
    return "".join("?" if (ord(c) < 32 or ord(c) == 127 or c == "\ufffd") else c for c in text)


@dataclass
class _State:
    checks: ContentChecks
    ctx: MessageContext
    out: list[bytes] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    filtering: bool = True  # CLEANUP_FLAG_FILTER: off after REJECT, DISCARD, REDIRECT, PASS
    disposition: Disposition = Disposition.ACCEPT
    reason: str | None = None
    redirect: str | None = None
    filter: str | None = None
    bcc: list[str] = field(default_factory=list)

    def act_log(self, action: str, context: str, line: str, text: str) -> None:
        """cleanup_act_log(): ``ID: action: header TEXT from ORIGIN; from=<> to=<> ...: text``."""
        c = self.ctx
        out = (f"{c.queue_id}: {action}: {context} {log_text(line, LOG_CONTENT_LIMIT)} "
               f"from {c.origin};")
        out += f" from=<{c.sender}>"
        if c.recipient is not None:
            out += f" to=<{c.recipient}>"
        if c.proto:
            out += f" proto={c.proto}"
        if c.helo is not None:
            out += f" helo=<{c.helo}>"
        if text:
            out += f": {text}"
        self.log.append(log_text(out))

    def warn(self, text: str) -> None:
        self.log.append(log_text(f"warning: {text}"))

    def act(self, context: str, line: str, value: str, map_class: str) -> str | None:
        """cleanup_act(): returns the line to keep (possibly replaced) or None to drop it."""
        command, _, optional = value.strip().partition(" ")
        if "\t" in command:
            command, _, more = command.partition("\t")
            optional = f"{more} {optional}".strip()
        optional = optional.strip()
        verb = command.upper()
        is_header = context == "header"
        if verb == "REJECT":
            reason = dsn_prepend("5.7.1", optional) if optional else " ".join(CONTENT_REJECTED)
            if reason[0] not in "45":
                self.warn(f"bad DSN action in {optional} -- need 4.x.x or 5.x.x")
                reason = "4" + reason[1:]
            self.reason = reason
            self.disposition = Disposition.REJECT
            self.filtering = False
            self.act_log("reject", context, line, reason)
        elif verb == "WARN":
            self.act_log("warning", context, line, optional)
        elif verb == "INFO":
            self.act_log("info", context, line, optional)
        elif verb == "FILTER":
            if not optional:
                self.warn(f"missing FILTER command argument in {map_class} map")
            elif ":" not in optional:
                self.warn(f"bad FILTER command {optional} in {map_class} -- need transport:destination")
            else:
                self.filter = optional
                self.act_log("filter", context, line, optional)
        elif verb == "DISCARD":
            self.act_log("discard", context, line, optional)
            self.disposition = Disposition.DISCARD
            self.filtering = False
        elif verb == "HOLD":
            if self.disposition not in (Disposition.HOLD, Disposition.DISCARD):
                self.act_log("hold", context, line, optional)
                self.disposition = Disposition.HOLD
        elif verb == "PREPEND":
            if not optional:
                self.warn(f"PREPEND action without text in {map_class} map")
            elif is_header and not _HEADER_TEXT.match(optional):
                self.warn(f'bad PREPEND header text "{optional}" in {map_class} map -- '
                          'need "headername: headervalue"')
            else:
                self.act_log("prepend", context, line, optional)
                self.out.append(optional.encode("utf-8", "surrogateescape") + b"\r\n")
        elif verb == "REPLACE":
            if not optional:
                self.warn(f"REPLACE action without text in {map_class} map")
            elif is_header and not _HEADER_TEXT.match(optional):
                self.warn(f'bad REPLACE header text "{optional}" in {map_class} map -- '
                          'need "headername: headervalue"')
            else:
                self.act_log("replace", context, line, optional)
                return optional
        elif verb == "REDIRECT":
            if "@" not in optional:
                self.warn(f'bad REDIRECT target "{optional}" in {map_class} map -- need user@domain')
            else:
                self.redirect = optional
                self.act_log("redirect", context, line, optional)
                self.filtering = False
        elif verb == "BCC":
            if "@" not in optional:
                self.warn(f'bad BCC address "{optional}" in {map_class} map -- need user@domain')
            elif optional not in self.bcc:
                self.bcc.append(optional)
        elif verb == "STRIP":
            self.act_log("strip", context, line, optional)
            return None
        elif verb == "PASS":
            self.act_log("pass", context, line, optional)
            self.filtering = False
        elif verb == "IGNORE":
            return None
        elif verb not in ("DUNNO", "OK"):
            self.warn(f"unknown command in {map_class} map: {value}")
        return line


def _text(raw: bytes) -> str:
    """The line as the tables see it: CRLF -> LF inside, no line ending at the end."""
    return raw.replace(b"\r\n", b"\n").rstrip(b"\n").decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    """A REPLACE result back to content: one line, CRLF."""
    return text.encode("utf-8", "surrogateescape").replace(b"\n", b"\r\n") + b"\r\n"


def _header(state: _State, raw: bytes, cls: HeaderClass, mime_enabled: bool) -> None:
    name = _FIELD.match(raw)
    if mime_enabled and name and name.group(1).decode("ascii").lower() in MIME_HEADERS:
        cls = HeaderClass.MULTIPART
    table = state.checks.for_class(cls)
    if state.filtering and table is not None:
        line = _text(raw)
        value = table(line)
        if value is not None:
            kept = state.act("header", line, value, cls.value)
            if kept is None:
                return
            if kept != line:
                state.out.append(_encode(kept))
                return
    state.out.append(raw)


def _body(state: _State, raw: bytes, offset: int) -> None:
    table = state.checks.body_checks
    limit = state.checks.body_checks_size_limit
    line = _text(raw)
    # header_checks(5) BUGS: empty lines never match.
    if state.filtering and table is not None and line and (limit <= 0 or offset < limit):
        value = table(line)
        if value is not None:
            kept = state.act("body", line, value, "body_checks")
            if kept is None:
                return
            if kept != line:
                state.out.append(_encode(kept))
                return
    state.out.append(raw)


def _content_type(fields: list[bytes]) -> tuple[str, bytes | None]:
    """(lower-case type/subtype, multipart boundary) from a header block."""
    for f in fields:
        m = _FIELD.match(f)
        if m and m.group(1).lower() == b"content-type":
            value = f[m.end():].replace(b"\r\n", b"").replace(b"\n", b"").strip()
            ctype = value.split(b";", 1)[0].strip().lower().decode("ascii", "replace")
            b = _BOUNDARY.search(value)
            boundary = (b.group(1) if b.group(1) is not None else b.group(2)) if b else None
            return ctype, boundary
    return "text/plain", None


def _lines(content: bytes) -> list[bytes]:
    lines = content.split(b"\n")
    last = lines.pop()
    out = [line + b"\n" for line in lines]
    if last:
        out.append(last)
    return out


def inspect_message(content: bytes, checks: ContentChecks, ctx: MessageContext) -> CheckResult:
    """Run the checks over *content*; the result says what cleanup does with the message."""
    if not checks:
        return CheckResult(content=content)
    state = _State(checks, ctx)
    mime = not checks.disable_mime_input_processing
    boundaries: list[bytes] = []
    header_class: HeaderClass | None = HeaderClass.PRIMARY  # None: in a body
    block: list[bytes] = []  # the header block being read: complete fields
    current: bytes | None = None  # the field being read (folded lines joined)
    offset = 0  # bytes since the start of the body segment (body_checks_size_limit)

    def flush_field() -> None:
        nonlocal current
        if current is not None:
            assert header_class is not None
            _header(state, current, header_class, mime)
            block.append(current)
            current = None

    def end_of_headers() -> HeaderClass | None:
        """Where the content after this header block goes: nested headers or a body."""
        nonlocal offset
        flush_field()
        offset = 0
        if not mime:
            return None
        ctype, boundary = _content_type(block)
        block.clear()
        if ctype.startswith("multipart/") and boundary:
            boundaries.append(boundary)
        elif ctype == "message/rfc822":
            return HeaderClass.NESTED
        return None

    for raw in _lines(content):
        if header_class is not None:
            if raw[:1] in (b" ", b"\t") and current is not None:
                current += raw
                continue
            if _FIELD.match(raw):
                flush_field()
                current = raw
                continue
            header_class = end_of_headers()
            if raw in (b"\r\n", b"\n"):
                state.out.append(raw)  # the empty line that ends the headers
                continue
            if header_class is not None:  # message/rfc822 without headers: treat as body
                header_class = None
        if boundaries and raw.startswith(b"--"):
            # mime_state.c compares only the boundary's length: "--BOUNDARY" then anything.
            hit = next((i for i in range(len(boundaries) - 1, -1, -1)
                        if raw.startswith(boundaries[i], 2)), None)
            if hit is not None:
                _body(state, raw, 0)
                closing = raw.startswith(b"--", 2 + len(boundaries[hit]))
                del boundaries[hit + (0 if closing else 1):]
                offset = 0
                if not closing:
                    header_class = HeaderClass.MULTIPART
                continue
        _body(state, raw, offset)
        offset += len(raw)
    if header_class is not None:
        flush_field()

    reply = reject_reply(state.reason) if state.reason is not None else None
    return CheckResult(
        content=b"".join(state.out),
        disposition=state.disposition,
        reply=reply,
        redirect=state.redirect,
        filter=state.filter,
        bcc=tuple(state.bcc),
        log=tuple(state.log),
    )
