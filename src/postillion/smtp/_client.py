"""ClientConnection: the sans-IO SMTP client engine (commands out as bytes, replies in).

Owns: building client commands (EHLO/HELO, STARTTLS, AUTH, MAIL FROM with its ESMTP
parameters, RCPT TO with DSN parameters, DATA with dot-stuffing, BDAT, RSET, QUIT), parsing
server replies (multi-line, enhanced status codes the way Postfix's smtp_chat_resp() reads
them), EHLO keyword parsing, and matching each reply to the command it answers, which is
what makes PIPELINING safe to drive: the caller may write several commands at once and reads
the replies back in order.
Must not import: asyncio, socket, ssl, logging, config (h11's rule: bring your own I/O).
Follows: RFC 5321, RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 3207 (STARTTLS),
RFC 4954 (AUTH) with RFC 4616 (PLAIN) and the LOGIN draft, RFC 1870 (SIZE), RFC 6152
(8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN); Postfix smtp(8) smtp_proto.c/smtp_chat.c.

Usage::

    conn = ClientConnection()                 # expects the server greeting first
    conn.receive_data(data)                   # b"" means the server closed the connection
    while (ev := conn.next_event()) is not NEED_DATA:
        ...                                   # ServerReply (ev.command says for what) or Closed
    writer.write(conn.ehlo("client.example"))
"""

from __future__ import annotations

import base64
import re
from collections import deque
from dataclasses import dataclass, field

from postillion.smtp._events import NEED_DATA, Sentinel

# Postfix reads reply lines of up to line_length_limit (2048) and has no line count limit;
# we bound both so a hostile server cannot grow our memory without end.
MAX_LINE = 65536
MAX_REPLY_LINES = 1000

_REPLY_LINE = re.compile(rb"^(\d{3})([ -]|$)")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?= |$)")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")

# What the reply answers; also the text Postfix puts in "(in reply to ... command)".
GREETING = "greeting"
EHLO = "EHLO"
HELO = "HELO"
STARTTLS = "STARTTLS"
AUTH = "AUTH"
MAIL = "MAIL FROM"
RCPT = "RCPT TO"
DATA = "DATA"
END_OF_DATA = "end of DATA"
BDAT = "BDAT"
RSET = "RSET"
QUIT = "QUIT"


class ClientProtocolError(Exception):
    """The server sent something that is not an SMTP reply, or replied out of turn."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerReply:
    """One complete server reply.

    ``lines`` are the raw reply lines without CRLF (``"250-PIPELINING"``), non-printable
    characters replaced by ``?`` as Postfix's printable() does.  ``command`` is the command
    the reply answers (GREETING, EHLO, MAIL, RCPT, ...).
    """

    code: int
    lines: tuple[str, ...]
    command: str = ""

    @property
    def text(self) -> str:
        """The reply as Postfix logs it: all lines joined by one space."""
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status, as smtp_chat_resp() derives it from the last line.

        A missing code, or one whose class differs from the reply's, becomes ``X.0.0``;
        replies other than 2xx/4xx/5xx have none (``""``).
        """
        first = str(self.code)[0]
        if first not in "245":
            return ""
        rest = self.lines[-1][4:].lstrip(" ")
        m = _ENHANCED.match(rest)
        if m and m.group(1) == first:
            return m.group(0)
        return f"{first}.0.0"

    @property
    def words(self) -> list[str]:
        """The text of each line after the code and separator."""
        return [line[4:] for line in self.lines]

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400


@dataclass(frozen=True, slots=True, kw_only=True)
class Closed:
    """The server closed the connection; ``pending`` is how many replies never came."""

    pending: int


@dataclass(frozen=True, slots=True)
class Extensions:
    """What an EHLO reply announced: keyword (upper case) → its parameter text."""

    keywords: dict[str, str] = field(default_factory=dict)
    server_name: str = ""

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.keywords

    @property
    def size_limit(self) -> int | None:
        """SIZE limit in bytes; 0 = announced without a limit; None = SIZE not announced.

        A non-numeric limit is ignored like Postfix does ("bad EHLO SIZE limit").
        """
        if "SIZE" not in self.keywords:
            return None
        value = self.keywords["SIZE"].split()
        if value and value[0].isdigit():
            return int(value[0])
        return 0

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(w.upper() for w in self.keywords.get("AUTH", "").split())


def parse_ehlo(reply: ServerReply) -> Extensions:
    """Keywords of a positive EHLO reply.

    Like Postfix, ``AUTH=LOGIN PLAIN`` (the pre-RFC form some servers still send) counts as
    ``AUTH LOGIN PLAIN``; later duplicates of a keyword add their parameters.
    """
    keywords: dict[str, str] = {}
    words = reply.words
    server_name = words[0].split(" ", 1)[0] if words else ""
    for line in words[1:]:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:[ =](.*))?$", line.strip())
        if not m:
            continue
        name, value = m.group(1).upper(), (m.group(2) or "").strip()
        keywords[name] = f"{keywords[name]} {value}".strip() if name in keywords else value
    return Extensions(keywords, server_name)


def xtext_encode(value: str, special: str = "+=") -> str:
    """RFC 3461 xtext, as Postfix's xtext_quote(): ``+XX`` for every byte of the UTF-8 form
    that is not printable ASCII, and for ``special``."""
    out = []
    for o in value.encode("utf-8"):
        if o < 33 or o > 126 or chr(o) in special:
            out.append(f"+{o:02X}")
        else:
            out.append(chr(o))
    return "".join(out)


def dot_stuff(content: bytes) -> bytes:
    """Message content as it goes on the wire after DATA, ending in ``.<CR><LF>``.

    Bare LF line ends become CRLF (queue files hold the message as received); a line that
    starts with ``.`` gets a second one (RFC 5321 §4.5.2); a last line without an end gets
    one, so the terminator can never be glued to content.
    """
    text = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if text.startswith(b"."):
        text = b"." + text
    text = text.replace(b"\r\n.", b"\r\n..")
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return text + b".\r\n"


# ---------------------------------------------------------------------- SASL client side
@dataclass(slots=True)
class SaslClient:
    """Client half of AUTH PLAIN / LOGIN (sans-IO): ``initial()`` then ``step(challenge)``.

    ``initial()`` is the initial response for the AUTH command line (None = send none);
    ``step()`` gets each decoded 334 challenge and returns the next line to send.
    """

    mechanism: str
    username: str
    password: str
    _step: int = 0

    def __post_init__(self) -> None:
        self.mechanism = self.mechanism.upper()
        if self.mechanism not in SASL_MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {self.mechanism!r}")

    def initial(self) -> str | None:
        if self.mechanism == "PLAIN":
            raw = f"\0{self.username}\0{self.password}".encode()
            return base64.b64encode(raw).decode("ascii")
        return None

    def step(self, challenge: bytes) -> str:
        self._step += 1
        if self.mechanism == "LOGIN" and self._step <= 2:
            value = self.username if self._step == 1 else self.password
            return base64.b64encode(value.encode()).decode("ascii")
        raise ClientProtocolError("authentication protocol loop")


SASL_MECHANISMS = ("PLAIN", "LOGIN")


# ------------------------------------------------------------------------- the engine
class ClientConnection:
    """One SMTP client session, without I/O.

    Every command method returns the bytes to write and records which reply it waits for;
    ``next_event()`` hands back replies in command order, each labelled with its command.
    """

    def __init__(self, *, expect_greeting: bool = True) -> None:
        self._in = bytearray()
        self._lines: list[str] = []
        self._pending: deque[str] = deque([GREETING] if expect_greeting else [])
        self._eof = False
        self.closed = False
        self.extensions = Extensions()
        self.esmtp = False
        self.tls_active = False
        self.discarded_after_starttls = 0

    # --------------------------------------------------------------- input side
    @property
    def pending(self) -> int:
        """Replies still expected."""
        return len(self._pending)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means it closed the connection."""
        if not data:
            self._eof = True
            return
        self._in += data

    def next_event(self) -> ServerReply | Closed | Sentinel:
        """The next complete reply, ``Closed`` after EOF, or ``NEED_DATA``."""
        while True:
            nl = self._in.find(b"\n")
            if nl < 0:
                if len(self._in) > MAX_LINE:
                    raise ClientProtocolError("reply line too long")
                if self._eof:
                    self.closed = True
                    return Closed(pending=len(self._pending))
                return NEED_DATA
            raw = bytes(self._in[:nl]).rstrip(b"\r")
            del self._in[: nl + 1]
            m = _REPLY_LINE.match(raw)
            if m is None:
                # Postfix's smtp_chat_resp() skips lines that lack a reply code.
                continue
            line = _UNPRINTABLE.sub("?", raw.decode("utf-8", "replace"))
            self._lines.append(line)
            if len(self._lines) > MAX_REPLY_LINES:
                raise ClientProtocolError("too many reply lines")
            if m.group(2) == b"-":
                continue
            lines, self._lines = tuple(self._lines), []
            if not self._pending:
                raise ClientProtocolError(f"unexpected reply: {lines[-1][:100]}")
            reply = ServerReply(code=int(m.group(1)), lines=lines, command=self._pending.popleft())
            self._after_reply(reply)
            return reply

    def _after_reply(self, reply: ServerReply) -> None:
        if reply.command == EHLO and 200 <= reply.code < 300:
            self.esmtp = True
            self.extensions = parse_ehlo(reply)
        elif reply.command == HELO and 200 <= reply.code < 300:
            self.esmtp = False
            self.extensions = Extensions()
        elif reply.command == STARTTLS and 200 <= reply.code < 300:
            # Anything after the 220 was sent before TLS and must not be read as TLS-protected
            # replies (the client side of CVE-2011-0411).
            self.discarded_after_starttls = len(self._in)
            self._in.clear()
            self._lines.clear()

    def tls_started(self) -> None:
        """The TLS handshake succeeded: forget what the plaintext EHLO said (RFC 3207 §4.2)."""
        self.tls_active = True
        self.esmtp = False
        self.extensions = Extensions()

    # -------------------------------------------------------------- output side
    def _command(self, line: str, expect: str | None) -> bytes:
        if "\r" in line or "\n" in line:
            raise ValueError("SMTP command must not contain CR or LF")
        if expect is not None:
            self._pending.append(expect)
        return line.encode("utf-8") + b"\r\n"

    def ehlo(self, name: str) -> bytes:
        return self._command(f"EHLO {name}", EHLO)

    def helo(self, name: str) -> bytes:
        return self._command(f"HELO {name}", HELO)

    def starttls(self) -> bytes:
        return self._command("STARTTLS", STARTTLS)

    def auth(self, mechanism: str, initial_response: str | None = None) -> bytes:
        if initial_response is None:
            return self._command(f"AUTH {mechanism}", AUTH)
        # RFC 4954 §4: an empty initial response is sent as "=".
        return self._command(f"AUTH {mechanism} {initial_response or '='}", AUTH)

    def auth_response(self, line: str) -> bytes:
        """One line answering a 334 challenge (``*`` cancels the exchange)."""
        return self._command(line, AUTH)

    def mail(
        self,
        sender: str,
        *,
        size: int | None = None,
        body: str | None = None,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        auth: str | None = None,
    ) -> bytes:
        """MAIL FROM with parameters in Postfix's order: SIZE, BODY, ENVID, RET, SMTPUTF8.

        The caller decides which parameters the server's extensions allow.
        """
        parts = [f"MAIL FROM:<{sender}>"]
        if size is not None:
            parts.append(f"SIZE={size}")
        if body is not None:
            parts.append(f"BODY={body}")
        if envid:
            parts.append(f"ENVID={xtext_encode(envid)}")
        if ret:
            parts.append(f"RET={ret}")
        if smtputf8:
            parts.append("SMTPUTF8")
        if auth is not None:
            parts.append(f"AUTH={auth}")
        return self._command(" ".join(parts), MAIL)

    def rcpt(
        self, address: str, *, orcpt: str | None = None, notify: tuple[str, ...] | None = None
    ) -> bytes:
        """RCPT TO, then ORCPT (xtext, ``addr-type;`` left as is) and NOTIFY, like Postfix."""
        parts = [f"RCPT TO:<{address}>"]
        if orcpt:
            parts.append(f"ORCPT={xtext_encode(orcpt)}")
        if notify:
            parts.append("NOTIFY=" + ",".join(notify))
        return self._command(" ".join(parts), RCPT)

    def data(self) -> bytes:
        return self._command("DATA", DATA)

    def message(self, content: bytes) -> bytes:
        """The content after a 354 reply: dot-stuffed and terminated; expects one reply."""
        self._pending.append(END_OF_DATA)
        return dot_stuff(content)

    def bdat(self, chunk: bytes, *, last: bool) -> bytes:
        """One BDAT chunk (no dot-stuffing; RFC 3030 counts octets)."""
        head = f"BDAT {len(chunk)}{' LAST' if last else ''}"
        self._pending.append(END_OF_DATA if last else BDAT)
        return head.encode("ascii") + b"\r\n" + chunk

    def rset(self) -> bytes:
        return self._command("RSET", RSET)

    def quit(self, *, expect_reply: bool = True) -> bytes:
        """QUIT; Postfix does not wait for its reply (smtp_skip_quit_response = yes)."""
        return self._command("QUIT", QUIT if expect_reply else None)
