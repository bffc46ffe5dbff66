"""The Dovecot authentication (auth-client) protocol as bytes: lines in, values out, no I/O.

Owns: line framing and TAB-escaping, the handshake both ways (``VERSION``/``CPID`` from the
client; ``VERSION``/``MECH``/``SPID``/``CUID``/``COOKIE``/``DONE`` from the server), ``AUTH`` and
``CONT`` requests and the ``OK``/``CONT``/``FAIL`` replies, with Postfix's warning texts for a bad
handshake.  ``sasl.dovecot_client`` and ``sasl.dovecot_server`` do the I/O.
Must not import: asyncio, sockets, config, verifiers.
Follows: Dovecot 2.3 "Dovecot Authentication Protocol" and auth-request-handler.c (what a real
2.3.19 sends, checked live), Postfix 3.7 src/xsasl/xsasl_dovecot_server.c (what Postfix sends
and how it reads replies).

Every line ends with a single LF.  Fields are separated by TAB; optional parameters are either a
bare word (``secured``) or ``name=value``; unknown ones are ignored.  Values are escaped with
``\\x01`` (Dovecot's str_tabescape): ``\\x01`` → ``\\x011``, TAB → ``\\x01t``, CR → ``\\x01r``,
LF → ``\\x01n``, NUL → ``\\x010``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAJOR_VERSION = 1  # AUTH_CLIENT_PROTOCOL_MAJOR_VERSION
CLIENT_MINOR_VERSION = 0  # what Postfix sends (AUTH_PROTOCOL_MINOR_VERSION)
SERVER_MINOR_VERSION = 2  # what Dovecot 2.3 sends
LINE_LIMIT = 16384  # AUTH_CLIENT_MAX_LINE_LENGTH ("GSSAPI can use quite large packets")

# Postfix's warnings (xsasl_dovecot_server.c), logged as "warning: <text>".
VERSION_ERROR = "SASL: Protocol version error"
WRONG_SOCKET = "SASL: Connected to wrong auth socket (auth-master instead of auth-client)"

# MECH flags a Dovecot server may send (mech.h MECH_SEC_*, plus "private").
MECH_FLAGS = frozenset(
    {"anonymous", "plaintext", "dictionary", "active", "forward-secrecy", "mutual-auth", "private"}
)

# Failure codes Dovecot 2.3 puts in FAIL (auth-client-interface.h).
CODE_TEMPFAIL = "temp_fail"
CODE_INVALID_BASE64 = "invalid_base64"

_UNESCAPE = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}
_ESCAPE = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\0": "\x010"}
_NEEDS_ESCAPE = re.compile("[\x00\x01\t\r\n]")
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/=]*")


class ProtocolViolation(ValueError):
    """A line that does not follow the protocol; the message says what was wrong."""


def number(text: str) -> int | None:
    """An unsigned 32-bit decimal (request ids, versions), else None: ``str.isdigit`` alone
    would pass "²" and 5000-digit strings, which ``int()`` then refuses with ValueError."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > 0xFFFFFFFF:
        return None
    return int(text)


def escape(value: str) -> str:
    """TAB-escape one parameter value (Dovecot str_tabescape)."""
    return _NEEDS_ESCAPE.sub(lambda m: _ESCAPE[m.group(0)], value)


def unescape(value: str) -> str:
    """Undo escape(); ``\\x01l`` is accepted as LF too (older documentation)."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\x01":
            nxt = next(chars, "")
            out.append(_UNESCAPE.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def encode_line(*fields: str) -> bytes:
    """Join already-escaped fields with TAB and end the line with LF."""
    return ("\t".join(fields) + "\n").encode("utf-8")


def split_line(line: bytes | str) -> list[str]:
    """A received line (with or without its LF) split at TAB; fields stay escaped."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text.removesuffix("\n").split("\t")


def is_base64(data: str) -> bool:
    """Postfix's is_valid_base64(): only ``A-Za-z0-9+/=`` (an empty string is valid)."""
    return _BASE64_CHARS.fullmatch(data) is not None


@dataclass(frozen=True, slots=True)
class Params:
    """Optional parameters: ``name=value`` pairs (unescaped) and bare flags."""

    values: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, fields: Iterable[str]) -> Params:
        values: dict[str, str] = {}
        flags: set[str] = set()
        for f in fields:
            name, eq, value = f.partition("=")
            if eq:
                values.setdefault(name, unescape(value))
            elif f:
                flags.add(f)
        return cls(values, frozenset(flags))


# --- client → server ---------------------------------------------------------------------


def client_handshake(pid: int) -> bytes:
    """``VERSION 1 0`` and ``CPID``, sent together right after connecting (as Postfix)."""
    return encode_line("VERSION", str(MAJOR_VERSION), str(CLIENT_MINOR_VERSION)) + encode_line(
        "CPID", str(pid)
    )


def auth_request(
    request_id: int,
    mechanism: str,
    *,
    service: str,
    local_addr: str = "",
    client_addr: str = "",
    secured: bool = False,
    resp: str | None = None,
) -> bytes:
    """Postfix's AUTH line: ``service``, ``nologin``, ``lip``, ``rip``, [``secured``], [``resp``].

    ``resp`` is the initial response still base64-encoded (Dovecot wants it last).
    """
    fields = [
        "AUTH",
        str(request_id),
        mechanism,
        f"service={escape(service)}",
        "nologin",
        f"lip={escape(local_addr)}",
        f"rip={escape(client_addr)}",
    ]
    if secured:
        fields.append("secured")
    if resp is not None:
        fields.append(f"resp={resp}")
    return encode_line(*fields)


def cont_request(request_id: int, data: str) -> bytes:
    """``CONT <id> <base64>`` (``data`` may be empty)."""
    return encode_line("CONT", str(request_id), data)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A parsed ``AUTH`` line (server side).  ``resp`` is None when absent, else still base64."""

    id: int
    mechanism: str
    params: Params
    resp: str | None


@dataclass(frozen=True, slots=True)
class ContRequest:
    id: int
    data: str


def parse_request(line: bytes | str) -> AuthRequest | ContRequest | tuple[str, list[str]]:
    """A client line after the handshake: AUTH, CONT, or (command, fields) for anything else.

    Raises ProtocolViolation for a malformed AUTH or CONT (Dovecot drops such a client).
    """
    fields = split_line(line)
    cmd, args = fields[0], fields[1:]
    if cmd == "AUTH":
        if len(args) < 2 or not number(args[0]) or not args[1]:
            raise ProtocolViolation("broken AUTH request")
        rest = args[2:]
        resp: str | None = None
        for i, f in enumerate(rest):
            if f.startswith("resp="):
                if i != len(rest) - 1:
                    raise ProtocolViolation("AUTH parameters after 'resp'")
                resp = f[5:]
                rest = rest[:i]
                break
        return AuthRequest(int(args[0]), args[1], Params.parse(rest), resp)
    if cmd == "CONT":
        if len(args) < 2 or number(args[0]) is None:
            raise ProtocolViolation("broken CONT request")
        return ContRequest(int(args[0]), args[1])
    return cmd, args


# --- server → client ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mech:
    name: str
    flags: frozenset[str] = frozenset()


def server_handshake(
    mechanisms: Iterable[Mech], *, spid: int, cuid: int, cookie: str
) -> bytes:
    """What Dovecot 2.3 sends on a new auth-client connection, in its order."""
    out = encode_line("VERSION", str(MAJOR_VERSION), str(SERVER_MINOR_VERSION))
    for mech in mechanisms:
        out += encode_line("MECH", mech.name, *sorted(mech.flags))
    out += encode_line("SPID", str(spid))
    out += encode_line("CUID", str(cuid))
    out += encode_line("COOKIE", cookie)
    return out + encode_line("DONE")


def ok_reply(request_id: int, user: str) -> bytes:
    return encode_line("OK", str(request_id), f"user={escape(user)}")


def cont_reply(request_id: int, data: str) -> bytes:
    return encode_line("CONT", str(request_id), data)


def fail_reply(
    request_id: int, *, user: str | None = None, code: str | None = None, reason: str | None = None
) -> bytes:
    """``FAIL <id> [user=] [code=] [reason=]`` in Dovecot 2.3's order."""
    fields = ["FAIL", str(request_id)]
    if user is not None:
        fields.append(f"user={escape(user)}")
    if code is not None:
        fields.append(f"code={code}")
    if reason is not None:
        fields.append(f"reason={escape(reason)}")
    return encode_line(*fields)


@dataclass(frozen=True, slots=True)
class AuthReply:
    """``OK``, ``CONT`` or ``FAIL`` for request ``id``.  ``data`` is CONT's base64 text."""

    kind: str
    id: int
    data: str | None = None
    params: Params = field(default_factory=Params)

    @property
    def user(self) -> str | None:
        return self.params.values.get("user")

    @property
    def reason(self) -> str | None:
        return self.params.values.get("reason")

    @property
    def temporary(self) -> bool:
        """A temporary failure: ``code=temp_fail`` (2.3+) or the older bare ``temp`` flag."""
        return self.params.values.get("code") == CODE_TEMPFAIL or "temp" in self.params.flags


def parse_reply(line: bytes | str) -> AuthReply | None:
    """An OK/CONT/FAIL line; None for any other command (Postfix ignores those).

    Raises ProtocolViolation for a reply without a numeric id.
    """
    fields = split_line(line)
    cmd, args = fields[0], fields[1:]
    if cmd not in ("OK", "CONT", "FAIL"):
        return None
    if not args or number(args[0]) is None:
        raise ProtocolViolation("SASL: Protocol error")
    request_id = int(args[0])
    if cmd == "CONT":
        return AuthReply("CONT", request_id, data=args[1] if len(args) > 1 else None)
    return AuthReply(cmd, request_id, params=Params.parse(args[1:]))


class ServerHandshake:
    """Reads the server's handshake a line at a time, as Postfix does.

    ``feed(line)`` returns True once ``DONE`` arrived; ``mechanisms`` then holds the MECH lines
    in order, ``private`` ones left out.  A handshake Postfix would give up on raises
    ProtocolViolation with Postfix's warning text.
    """

    def __init__(self) -> None:
        self.mechanisms: list[Mech] = []
        self.version: tuple[int, int] | None = None
        self.spid: str | None = None
        self._have_mech = False

    def feed(self, line: bytes | str) -> bool:
        fields = split_line(line)
        cmd, args = fields[0], fields[1:]
        if cmd == "VERSION":
            if len(args) < 2 or number(args[0]) is None or number(args[1]) is None:
                raise ProtocolViolation(VERSION_ERROR)
            major = int(args[0])
            if major != MAJOR_VERSION:
                raise ProtocolViolation(
                    f"SASL: Protocol version mismatch ({major} vs. {MAJOR_VERSION})"
                )
            self.version = (major, int(args[1]))
        elif cmd == "MECH" and args:
            self._have_mech = True
            flags = frozenset(f.lower() for f in args[1:] if f.lower() in MECH_FLAGS)
            if "private" not in flags:
                self.mechanisms.append(Mech(args[0], flags))
        elif cmd == "SPID":
            if not self._have_mech:
                raise ProtocolViolation(WRONG_SOCKET)
            self.spid = args[0] if args else ""
        elif cmd == "DONE":
            return True
        return False

    @property
    def mechanism_names(self) -> list[str]:
        return [m.name for m in self.mechanisms]
