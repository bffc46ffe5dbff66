"""A deterministic stand-in for ``server/session.py``: answers every engine event without I/O.

Owns: the fixed policy the transcripts in ``tests/transcripts/`` are written against, the mapping
of the main.cf parameters a transcript may set (``!main.cf name = value``) to engine ``Settings``,
and a formatter for the ``disconnect from`` command counters.
Must not import: asyncio, sockets, ``postillion.server``, ``postillion.maillog`` (the engine is
tested on its own; the real log formatter is checked against the same counters elsewhere).
Follows: Postfix 3.7 smtpd(8) replies (docs: postfix-smtpd-replies.md, smtp-auth.md).

Policy: RCPT to ``remote.test`` is relay-denied unless the client authenticated; users are
{alice: secret}; every message is queued as ``QUEUE_ID``; ETRN is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postillion import replies
from postillion.replies import Reply
from postillion.sasl.exchange import AuthExchange, Challenge, Outcome, Verify
from postillion.smtp import (
    SUMMARY_ORDER,
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
    ServerConnection,
    Settings,
    StartTls,
    Vrfy,
)
from postillion.smtp._events import Sentinel

QUEUE_ID = "4AB2C3D4E5"
USERS = {"alice": "secret"}
RELAY_DENIED_DOMAIN = "remote.test"
SERVER_MECHANISMS = ("PLAIN", "LOGIN")  # what our SASL server implements, in EHLO order
DEFAULT_MAINCF = {"myhostname": "mail.example.test"}


# ---------------------------------------------------------------------------- settings
def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v not in ("yes", "no"):
        raise ValueError(f"expected yes or no, got {value!r}")
    return v == "yes"


def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


def _mechanisms(security_options: str) -> tuple[str, ...]:
    # Cyrus semantics for the two mechanisms we have: noplaintext removes both.
    if "noplaintext" in (w.lower() for w in _words(security_options)):
        return ()
    return SERVER_MECHANISMS


def settings_from_maincf(maincf: dict[str, str]) -> Settings:
    """Engine settings for the main.cf parameters a transcript sets (Postfix names and values).

    Mirrors what the server builds from main.cf, so the same transcript can later be replayed
    against a running server configured with the same lines.
    """
    p = {**DEFAULT_MAINCF, **maincf}
    unknown = set(p) - _KNOWN_PARAMS
    if unknown:
        raise ValueError(f"transcript sets unsupported parameters: {sorted(unknown)}")
    level = p.get("smtpd_tls_security_level", "none").strip().lower()
    if level not in ("none", "may", "encrypt"):
        raise ValueError(f"bad smtpd_tls_security_level {level!r}")
    plain_opts = p.get("smtpd_sasl_security_options", "noanonymous")
    tls_opts = p.get("smtpd_sasl_tls_security_options", plain_opts)
    kw: dict[str, object] = {
        "hostname": p["myhostname"],
        "tls_available": level in ("may", "encrypt"),
        "tls_required": level == "encrypt",
        "auth_enabled": _bool(p.get("smtpd_sasl_auth_enable", "no")),
        "auth_tls_only": _bool(p.get("smtpd_tls_auth_only", "no"))
        or level == "encrypt",
        "auth_mechanisms": _mechanisms(plain_opts),
        "auth_mechanisms_tls": _mechanisms(tls_opts),
        "discard_ehlo_keywords": frozenset(
            w.lower() for w in _words(p.get("smtpd_discard_ehlo_keywords", ""))
        ),
    }
    for name, (attr, kind) in _SIMPLE_PARAMS.items():
        if name in p:
            kw[attr] = (
                _bool(p[name])
                if kind is bool
                else (int(p[name]) if kind is int else p[name].strip().lower())
            )
    return Settings(**kw)  # type: ignore[arg-type]


_SIMPLE_PARAMS: dict[str, tuple[str, type]] = {
    "broken_sasl_auth_clients": ("broken_sasl_auth_clients", bool),
    "message_size_limit": ("message_size_limit", int),
    "line_length_limit": ("line_length_limit", int),
    "smtpd_recipient_limit": ("recipient_limit", int),
    "smtpd_recipient_overshoot_limit": ("recipient_overshoot_limit", int),
    "smtpd_soft_error_limit": ("soft_error_limit", int),
    "smtpd_hard_error_limit": ("hard_error_limit", int),
    "smtpd_junk_command_limit": ("junk_command_limit", int),
    "smtpd_helo_required": ("helo_required", bool),
    "disable_vrfy_command": ("disable_vrfy", bool),
    "smtputf8_enable": ("smtputf8_enable", bool),
    "smtpd_forbid_unauth_pipelining": ("forbid_unauth_pipelining", bool),
    "smtpd_forbid_bare_newline": ("forbid_bare_newline", str),
    "smtpd_forbid_bare_newline_reject_code": ("bare_newline_reject_code", int),
    "smtpd_sasl_response_limit": ("sasl_response_limit", int),
}
_KNOWN_PARAMS = {
    "myhostname", "smtpd_tls_security_level", "smtpd_sasl_auth_enable", "smtpd_tls_auth_only",
    "smtpd_sasl_security_options", "smtpd_sasl_tls_security_options",
    "smtpd_discard_ehlo_keywords", *_SIMPLE_PARAMS,
}  # fmt: skip


def banner(settings: Settings) -> str:
    """The default smtpd_banner, ``$myhostname ESMTP $mail_name``."""
    return f"{settings.hostname} ESMTP Postfix"


# ---------------------------------------------------------------------------- counters
def format_stats(counts: dict[str, list[int]]) -> str:
    """The counters of Postfix's ``disconnect from host[ip] ...`` line (postfix-logging.md §3)."""
    parts: list[str] = []
    ok_sum = total_sum = 0
    for name in SUMMARY_ORDER:
        if name not in counts:
            continue
        ok, total = counts[name]
        ok_sum += ok
        total_sum += total
        parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
    # Observed live: a session without commands logs "commands=0/0".
    same = ok_sum == total_sum and total_sum > 0
    parts.append(f"commands={ok_sum}" if same else f"commands={ok_sum}/{total_sum}")
    return " ".join(parts)


# ---------------------------------------------------------------------------- the driver
class DriverError(AssertionError):
    """The engine broke its contract with the driver (an invariant the fuzz tests check)."""


@dataclass
class Driver:
    """Feeds bytes to a ``ServerConnection`` and answers its events with a fixed policy.

    ``output`` accumulates everything the engine sent; ``messages`` the queued contents.
    With ``check=True`` every engine contract the property tests rely on is asserted as it
    happens (one final reply per answered event, nothing after closing, no message without
    an accepted MAIL and RCPT).
    """

    settings: Settings = field(default_factory=Settings)
    tls_active: bool = False
    check: bool = True
    conn: ServerConnection = field(init=False)
    output: bytearray = field(default_factory=bytearray)
    messages: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    handshakes: int = 0
    lost: bool = False
    _auth: AuthExchange | None = None
    _mail_ok: bool = False  # an accepted MAIL since the last message/HELO/handshake
    _rcpt_ok: bool = False  # ... followed by an accepted RCPT
    _closed_at: int | None = None

    def __post_init__(self) -> None:
        self.conn = ServerConnection(self.settings, tls_active=self.tls_active)
        self.conn.send(replies.greeting(banner(self.settings)))
        self._collect()

    # -- feeding
    def feed(self, data: bytes) -> None:
        """``receive_data(data)`` and answer events until the engine needs more (b"" = EOF)."""
        self.conn.receive_data(data)
        self.pump()

    def pump(self) -> None:
        while True:
            ev = self.conn.next_event()
            self._collect()
            if isinstance(ev, Sentinel):  # NEED_DATA or PAUSED
                return
            self.events.append(ev)
            self._handle(ev)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    # -- internals
    def _collect(self) -> None:
        out = self.conn.data_to_send()
        if out and self.check and self._closed_at is not None:
            raise DriverError(f"output after the connection closed: {out!r}")
        self.output += out
        if self.conn.closing and self._closed_at is None:
            self._closed_at = len(self.output)

    def _answer(self, reply: Reply) -> None:
        before = len(self.output)
        was_closed = self.conn.closing
        self.conn.send(reply)
        self._collect()
        if not self.check or was_closed:
            return
        sent = bytes(self.output[before:])
        enhanced = "enhancedstatuscodes" not in self.settings.discard_ehlo_keywords
        expected = reply.encode(enhanced=enhanced)
        limit = replies.too_many_errors(self.settings.hostname).encode(
            enhanced=enhanced
        )
        if sent not in (expected, expected + limit):
            raise DriverError(f"send({reply!s}) wrote {sent!r}")

    def _handle(self, ev: Event) -> None:
        conn = self.conn
        if isinstance(ev, Notice):
            self.notices.append(ev)
            return
        if isinstance(ev, ConnectionLost):
            self.lost = True
            return
        if not isinstance(ev, AuthResponse):
            # An exchange the engine ended itself (500 5.5.6 response too long) is over.
            self._auth = None
        if isinstance(ev, Helo):
            self._answer(conn.ehlo_reply() if ev.extended else conn.helo_reply())
            self._mail_ok = self._rcpt_ok = False
        elif isinstance(ev, MailFrom):
            self._answer(replies.MAIL_OK)
            self._mail_ok, self._rcpt_ok = True, False
        elif isinstance(ev, RcptTo):
            domain = ev.address.rpartition("@")[2].lower()
            if domain == RELAY_DENIED_DOMAIN and not conn.authenticated:
                self._answer(
                    replies.R(554, "5.7.1", f"<{ev.address}>: Relay access denied")
                )
            else:
                self._answer(replies.RCPT_OK)
                self._rcpt_ok = self._mail_ok
        elif isinstance(ev, Vrfy):
            self._answer(replies.vrfy_ok(ev.argument))
        elif isinstance(ev, Etrn):
            self._answer(replies.ETRN_UNAVAILABLE)
        elif isinstance(ev, DataStart):
            self._answer(replies.DATA_GO)
        elif isinstance(ev, MessageComplete):
            if self.check and not (self._mail_ok and self._rcpt_ok):
                raise DriverError("MessageComplete without an accepted MAIL and RCPT")
            self.messages.append(ev.content)
            self._mail_ok = self._rcpt_ok = False
            if ev.chunked:
                self._answer(replies.bdat_queued(len(ev.content), QUEUE_ID))
            else:
                self._answer(replies.queued(QUEUE_ID))
        elif isinstance(ev, StartTls):
            self._answer(replies.STARTTLS_GO)
            if not conn.closing:
                conn.tls_started()  # the simulated handshake always succeeds
                self.handshakes += 1
                self._mail_ok = self._rcpt_ok = False
        elif isinstance(ev, Auth):
            if ev.refusal is not None:
                self._answer(ev.refusal)
                return
            self._auth = AuthExchange(
                ev.mechanism,
                list(conn.auth_mechanisms()),
                response_limit=self.settings.sasl_response_limit,
            )
            self._auth_step(self._auth.start(ev.initial_response))
        elif isinstance(ev, AuthResponse):
            if self._auth is None:
                raise DriverError("AuthResponse without an AUTH exchange")
            self._auth_step(self._auth.respond(ev.line))
        else:  # pragma: no cover - a new event type the driver does not know
            raise DriverError(f"unexpected event {ev!r}")

    def _auth_step(self, action: Challenge | Verify | Outcome) -> None:
        assert self._auth is not None
        if isinstance(action, Verify):
            action = self._auth.verified(USERS.get(action.authcid) == action.password)
        if isinstance(action, Challenge):
            self.conn.send(action.reply)
            self._collect()
            return
        self._auth = None
        self._answer(action.reply)
