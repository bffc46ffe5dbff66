"""8-bit to 7-bit MIME downgrade for servers that do not announce 8BITMIME.

Owns: rewriting a message so that every body part declared ``8bit`` or ``binary`` goes out
as quoted-printable (leaf parts) or is relabelled ``7bit`` (multipart and message parts,
whose children are converted in turn), exactly where Postfix's mime_state machine does it.
Headers are passed through unchanged, 8-bit or not; only the Content-Transfer-Encoding
header of a converted part is dropped and a new one written at the end of that part's
header block.
Must not import: asyncio, config, server (pure bytes in, bytes out).
Follows: Postfix global/mime_state.c with MIME_OPT_DOWNGRADE (mime_state_update,
mime_state_downgrade: soft line break past 72 columns, ``=XX`` for control characters other
than TAB, ``=`` and bytes above 126, trailing space/TAB encoded), RFC 2045 §6.7, RFC 2046 §5.

Like Postfix, the encoding *domain* comes only from the Content-Transfer-Encoding header: a
part that carries 8-bit bytes without declaring 8bit/binary is sent as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto

MIME_NESTING_LIMIT = 100  # mime_nesting_limit default
MIME_BOUNDARY_LENGTH_LIMIT = 2048  # mime_boundary_length_limit default


class _State(Enum):
    PRIMARY = auto()
    MULTIPART = auto()
    NESTED = auto()
    BODY = auto()


class _Ctype(Enum):
    TEXT = auto()
    MESSAGE = auto()
    MULTIPART = auto()
    OTHER = auto()


class _Stype(Enum):
    PLAIN = auto()
    OTHER = auto()
    RFC822 = auto()
    PARTIAL = auto()
    EXTERN_BODY = auto()


# mime_encoding_map: encoding name -> its domain ("7bit" | "8bit" | "binary").
_DOMAINS = {"7bit": "7bit", "8bit": "8bit", "binary": "binary", "quoted-printable": "7bit", "base64": "7bit"}

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_TSPECIALS = '()<>@,;:\\"/[]?='


@dataclass(slots=True)
class _Frame:
    def_ctype: _Ctype
    def_stype: _Stype
    boundary: bytes


def _tokens(text: str) -> list[str]:
    """RFC 2045 tokens of a header value: quoted strings unquoted, comments skipped,
    tspecials as one-character tokens (Postfix's header_token())."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if text[i] == "\\":
                    i += 1
                elif text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        elif c == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            out.append("\0" + "".join(value))  # marks a quoted string: never a tspecial
        elif c in _TSPECIALS:
            out.append(c)
            i += 1
        else:
            j = i
            while j < n and text[j] not in _TSPECIALS and text[j] not in " \t\r\n\"(":
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _word(tok: str) -> str:
    return tok[1:] if tok.startswith("\0") else tok


def qp_encode_line(text: bytes) -> list[bytes]:
    """One input line as quoted-printable output lines (soft breaks end in ``=``)."""
    out: list[bytes] = []
    buf = bytearray()
    for ch in text:
        if len(buf) > 72:
            buf += b"="
            out.append(bytes(buf))
            buf.clear()
        if (ch < 32 and ch != 9) or ch == 61 or ch > 126:
            buf += b"=%02X" % ch
        else:
            buf.append(ch)
    if buf and buf[-1] in (32, 9):
        ch = buf.pop()
        buf += b"=%02X" % ch
    out.append(bytes(buf))
    return out


class _Downgrader:
    def __init__(self, nesting_limit: int, boundary_limit: int) -> None:
        self.nesting_limit = nesting_limit
        self.boundary_limit = boundary_limit
        self.out: list[bytes] = []
        self.stack: list[_Frame] = []  # innermost last
        self.header: bytes | None = None
        self.converted = False
        self._set(_State.PRIMARY, _Ctype.TEXT, _Stype.PLAIN, "7bit")

    def _set(self, state: _State, ctype: _Ctype, stype: _Stype, domain: str) -> None:
        self.state, self.ctype, self.stype, self.domain = state, ctype, stype, domain

    # ------------------------------------------------------------------ headers
    def _content_type(self, value: str) -> None:
        segments: list[list[str]] = [[]]
        for tok in _tokens(value):
            if tok == ";":
                segments.append([])
            else:
                segments[-1].append(tok)
        first = segments[0]
        if not first:
            return
        major = _word(first[0]).lower()
        minor = _word(first[2]).lower() if len(first) >= 3 and first[1] == "/" else ""
        if major == "text":
            self.ctype = _Ctype.TEXT
            self.stype = _Stype.PLAIN if minor == "plain" else _Stype.OTHER
        elif major == "message":
            self.ctype = _Ctype.MESSAGE
            self.stype = {"rfc822": _Stype.RFC822, "partial": _Stype.PARTIAL,
                          "external-body": _Stype.EXTERN_BODY}.get(minor, _Stype.OTHER)
        elif major == "multipart":
            self.ctype = _Ctype.MULTIPART
            if minor == "digest":
                defaults = (_Ctype.MESSAGE, _Stype.RFC822)
            else:
                defaults = (_Ctype.TEXT, _Stype.PLAIN)
            for seg in segments[1:]:
                # Every boundary parameter is pushed, like Postfix: hidden duplicates
                # cannot smuggle a part past the converter.
                if len(seg) >= 3 and _word(seg[0]).lower() == "boundary" and seg[1] == "=":
                    if len(self.stack) > self.nesting_limit:
                        continue
                    boundary = _word(seg[2]).encode("latin-1")[: self.boundary_limit]
                    self.stack.append(_Frame(*defaults, boundary))
        else:
            self.ctype = _Ctype.OTHER

    def _flush_header(self) -> None:
        header, self.header = self.header, None
        assert header is not None
        name, _, value = header.partition(b":")
        lname = name.lower()
        text = value.decode("latin-1")
        if lname == b"content-type":
            self._content_type(text)
        is_cte = lname == b"content-transfer-encoding"
        if is_cte:
            toks = _tokens(text)
            if toks and not toks[0].startswith("\0") and toks[0] not in _TSPECIALS:
                self.domain = _DOMAINS.get(toks[0].lower(), self.domain)
        if is_cte and self.domain != "7bit":
            self.converted = True
            return  # replaced at the end of the header block
        self.out.extend(header.split(b"\n"))

    # ------------------------------------------------------------------ lines
    def line(self, text: bytes) -> None:
        if self.state is not _State.BODY:
            if self.header is not None:
                if text[:1] in (b" ", b"\t"):
                    self.header += b"\n" + text
                    return
                self._flush_header()
            m = _HEADER_NAME.match(text)
            if m:
                # Postfix normalizes obsolete "name : value" to "name: value".
                n = len(m.group(1))
                self.header = text[:n] + text[n:].lstrip(b" \t")
                return
            # The end of a header block: the place for the new transfer encoding.
            if self.domain != "7bit":
                cte = b"7bit" if self.ctype in (_Ctype.MESSAGE, _Ctype.MULTIPART) else b"quoted-printable"
                self.out.append(b"Content-Transfer-Encoding: " + cte)
                self.converted = True
            if text == b"":
                if self.ctype is _Ctype.MESSAGE:
                    if self.stype is _Stype.RFC822:
                        self._set(_State.NESTED, _Ctype.TEXT, _Stype.PLAIN, "7bit")
                    else:
                        self.state = _State.BODY
                elif self.ctype is _Ctype.MULTIPART:
                    self._set(_State.BODY, _Ctype.OTHER, _Stype.OTHER, "7bit")
                else:
                    self.state = _State.BODY
            else:
                # No blank line after the headers: Postfix supplies one.
                self.state = _State.BODY
                self.out.append(b"")
        self._body(text)

    def _body(self, text: bytes) -> None:
        if self.stack and text.startswith(b"--"):
            for i in range(len(self.stack) - 1, -1, -1):
                frame = self.stack[i]
                if text[2:].startswith(frame.boundary):
                    del self.stack[i + 1:]
                    if text[2 + len(frame.boundary):].startswith(b"--"):
                        self.stack.pop()
                        self._set(_State.BODY, _Ctype.OTHER, _Stype.OTHER, "7bit")
                    else:
                        self._set(_State.MULTIPART, frame.def_ctype, frame.def_stype, "7bit")
                    break
        if self.domain != "7bit":
            self.out.extend(qp_encode_line(text))
        else:
            self.out.append(text)

    def finish(self) -> None:
        if self.header is not None:
            self._flush_header()


def downgrade(
    content: bytes,
    *,
    nesting_limit: int = MIME_NESTING_LIMIT,
    boundary_limit: int = MIME_BOUNDARY_LENGTH_LIMIT,
) -> tuple[bytes, bool]:
    """The message with 8bit/binary parts converted; also whether anything changed.

    Input lines may end in CRLF or LF; the output uses CRLF throughout.
    """
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    d = _Downgrader(nesting_limit, boundary_limit)
    for raw in lines:
        d.line(raw[:-1] if raw.endswith(b"\r") else raw)
    d.finish()
    if not d.converted:
        return content, False
    return b"".join(line + b"\r\n" for line in d.out), True
