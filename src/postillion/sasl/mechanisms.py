"""Sans-IO SASL server mechanisms: PLAIN and LOGIN, and the step values every mechanism returns.

Owns: parsing the decoded client messages of PLAIN and LOGIN, the ``Step`` values (shared with
``sasl.scram`` and ``sasl.crammd5``), the list of mechanism names postillion knows, and the Cyrus
SASL reason texts that Postfix puts after ``authentication failed:``.
Must not import: asyncio, sockets, base64 framing (that is ``sasl.exchange``), verifiers.
Follows: RFC 4616 (PLAIN), draft-murchison-sasl-login (LOGIN), Cyrus SASL 2.1.28 plain.c/login.c
(limits and which failures are "bad protocol"), Postfix 3.7 smtpd_sasl_glue.c.

A mechanism is fed decoded bytes and answers with one of these values: ``NeedMore`` (send this
challenge), ``Credentials`` (ask a verifier to check a plaintext password), ``NeedSecret`` (look
up the stored secret for a user and pass it to the mechanism's ``with_secret``),
``Authenticated`` (the mechanism itself proved who the client is) or ``Failed`` (a Cyrus reason
text).  Mechanisms never see the password store, so the same code serves every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Cyrus sasl_errstring() texts: Postfix replies "535 5.7.8 Error: authentication failed: <text>".
BAD_PROTOCOL = "bad protocol / cancel"  # SASL_BADPROT
AUTH_FAILURE = "authentication failure"  # SASL_BADAUTH; SASL_NOUSER is mapped to it for privacy
NEED_MORE_STEPS = "another step is needed in authentication"  # SASL_CONTINUE
NO_MECHANISM = "no mechanism available"  # SASL_NOMECH
GENERIC_FAILURE = "generic failure"  # SASL_FAIL (backend unreachable), answered with 454

LOGIN_FIELD_LIMIT = 1024  # Cyrus login.c refuses a longer user name or password with SASL_BADPROT

USERNAME_PROMPT = b"Username:"
PASSWORD_PROMPT = b"Password:"


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedMore:
    """Send ``challenge`` (raw bytes; the exchange base64-encodes it) and wait for a response."""

    challenge: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The client has said who it is; a verifier must check the password."""

    authcid: str
    authzid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The exchange failed inside the mechanism; ``username`` is what it learned, if anything."""

    reason: str
    username: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedSecret:
    """Look up the stored secret of ``authcid`` for ``scheme`` (``SCRAM-SHA-256``, ``SCRAM-SHA-1``
    or ``CRAM-MD5``) and pass it, or None, to the mechanism's ``with_secret``."""

    authcid: str
    authzid: str
    scheme: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """The mechanism has checked the client's proof itself: the exchange succeeded."""

    authcid: str
    authzid: str


Step = NeedMore | Credentials | NeedSecret | Authenticated | Failed


class Mechanism(Protocol):
    """One server-side mechanism instance, used for one AUTH command."""

    name: str

    def start(self, data: bytes | None) -> Step:
        """``data`` is the decoded initial response, or None when the client sent none."""
        ...

    def step(self, data: bytes) -> Step:
        """``data`` is the decoded response to the last challenge."""
        ...


class Plain:
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``, UTF-8."""

    name = "PLAIN"

    def start(self, data: bytes | None) -> Step:
        if data is None:
            return NeedMore(challenge=b"")
        return self.step(data)

    def step(self, data: bytes) -> Step:
        if not data:
            # What Cyrus answers to an empty PLAIN message (observed: "AUTH PLAIN =").
            return Failed(reason=NEED_MORE_STEPS)
        return parse_plain(data)


def parse_plain(data: bytes) -> Credentials | Failed:
    """Split a PLAIN message; only an authzid equal to the authcid (or empty) is accepted."""
    if data.count(b"\0") != 2:
        return Failed(reason=BAD_PROTOCOL)
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in data.split(b"\0"))
    except UnicodeDecodeError:
        return Failed(reason=BAD_PROTOCOL)
    if not authcid:
        return Failed(reason=AUTH_FAILURE)
    if authzid and authzid != authcid:
        # Nobody may act for another user: there is no proxy-authorization policy (yet).
        return Failed(reason=AUTH_FAILURE, username=authcid)
    return Credentials(authcid=authcid, authzid=authzid, password=password)


class Login:
    """The LOGIN mechanism: prompt ``Username:``, then ``Password:``.

    A non-empty initial response is the user name, which skips the first prompt; an empty one
    (``AUTH LOGIN =``) gets the prompt, as in Cyrus login.c.
    """

    name = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, data: bytes | None) -> Step:
        if not data:
            return NeedMore(challenge=USERNAME_PROMPT)
        return self.step(data)

    def step(self, data: bytes) -> Step:
        text = _login_field(data)
        if text is None:
            return Failed(reason=BAD_PROTOCOL, username=self._username)
        if self._username is None:
            self._username = text
            return NeedMore(challenge=PASSWORD_PROMPT)
        if not self._username:
            return Failed(reason=AUTH_FAILURE)
        return Credentials(authcid=self._username, authzid="", password=text)


def _login_field(data: bytes) -> str | None:
    if len(data) > LOGIN_FIELD_LIMIT or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


_MECHANISMS: dict[str, type[Plain] | type[Login]] = {"PLAIN": Plain, "LOGIN": Login}

# Mechanisms that check a plaintext password: any verifier (saslauthd too) can serve them.
PLAINTEXT_MECHANISMS: tuple[str, ...] = tuple(_MECHANISMS)
# Mechanisms that need a stored secret (sasl.scram, sasl.crammd5): only the user database.
SCRAM_MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1",
)
CRAM_MD5 = "CRAM-MD5"
SECRET_MECHANISMS: tuple[str, ...] = (*SCRAM_MECHANISMS, CRAM_MD5)
# Everything postillion implements, strongest first (Cyrus's order when mech_list is unset).
SUPPORTED_MECHANISMS: tuple[str, ...] = (*SECRET_MECHANISMS, *PLAINTEXT_MECHANISMS)


def new_mechanism(name: str) -> Mechanism | None:
    """A fresh PLAIN or LOGIN instance for ``name`` (case-insensitive), or None.  The
    secret-based mechanisms need connection data and are built by ``sasl.exchange``."""
    cls = _MECHANISMS.get(name.upper())
    return cls() if cls is not None else None
