"""One SMTP AUTH exchange, from the AUTH command to its final reply, without I/O.

Owns: base64 framing of responses, ``*`` cancellation, the response length limit, building the
mechanism for the AUTH command (with the connection's channel-binding data for SCRAM -PLUS),
and Postfix's exact replies and warning texts for every way an AUTH command can end.
Must not import: asyncio, sockets, verifiers, config, maillog (the session does the I/O, awaits
the verifier and writes the log; this module only says what to send and what to log).
Follows: RFC 4954 section 4, RFC 5802 section 6 (which -PLUS names a connection may use),
Postfix 3.7 smtpd_sasl_glue.c / xsasl_cyrus_server.c behaviour (reply texts observed live, see
docs: 535 for unknown mechanisms and bad base64, not 504/501).

Usage (the session)::

    ex = AuthExchange("PLAIN", offered=["PLAIN", "LOGIN"])
    action = ex.start(initial_response)          # str as on the wire, or None
    while True:
        if isinstance(action, Challenge):        # send action.reply, read one line
            action = ex.respond(line)
        elif isinstance(action, Verify):         # ask the verifier
            try:
                action = ex.verified(await verifier.verify(action.authcid, action.password, ...))
            except AuthBackendError as exc:
                action = ex.backend_failed(exc.detail)
        elif isinstance(action, Lookup):         # SCRAM / CRAM-MD5: fetch the stored secret
            try:
                secret, note = await verifier.lookup_secret(action.authcid, action.scheme)
                action = ex.looked_up(secret, note=note)
            except AuthBackendError as exc:
                action = ex.backend_failed(exc.detail)
        else:                                    # Outcome: send action.reply, log, done
            break

Log texts carry no ``host[ip]: `` prefix (the session adds it) and never a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field

from collections.abc import Mapping
from typing import Protocol

from postillion import replies
from postillion.replies import Reply
from postillion.sasl import mechanisms
from postillion.sasl.crammd5 import CramMd5
from postillion.sasl.mechanisms import (
    Authenticated,
    Credentials,
    Failed,
    Mechanism,
    NeedMore,
    NeedSecret,
    Step,
)
from postillion.sasl.scram import Scram

RESPONSE_LIMIT = 12288  # smtpd_sasl_response_limit default
UNAVAILABLE = "(unavailable)"  # Postfix's sasl_username when the mechanism never learned a name


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """Send ``334 <text>`` (``text`` is base64, possibly empty) and pass the next line to respond()."""

    text: str

    @property
    def reply(self) -> Reply:
        return replies.auth_challenge(self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verify:
    """Check ``password`` for ``authcid``, then call verified() or backend_failed()."""

    authcid: str
    authzid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup:
    """Fetch the stored secret of ``authcid`` for ``scheme`` (``SCRAM-SHA-256``, ``SCRAM-SHA-1``,
    ``CRAM-MD5``), then call looked_up() (or backend_failed())."""

    authcid: str
    authzid: str
    scheme: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The end of the exchange.

    ``username`` is the authenticated name on success, and on failure the name the client tried
    (None if the mechanism never learned one).  ``log_warning`` goes to the log as
    ``warning: host[ip]: <log_warning>``; ``backend_detail`` (backend unreachable, or a user
    without the stored secret the mechanism needs) is logged before it as
    ``warning: SASL authentication failure: <backend_detail>``, like Cyrus's own line.
    """

    reply: Reply
    success: bool
    username: str | None
    log_warning: str | None
    method: str
    backend_detail: str | None = None


Action = Challenge | Verify | Lookup | Outcome


class _SecretMechanism(Mechanism, Protocol):
    def with_secret(self, secret: object | None) -> Step: ...


class _State(enum.Enum):
    NEW = "new"
    CHALLENGED = "challenged"
    VERIFYING = "verifying"
    LOOKING_UP = "looking up"
    DONE = "done"


class AuthExchange:
    """Drives one AUTH command.  ``mechanism`` is the name as the client sent it.

    ``channel_bindings`` maps the channel-binding types this connection can prove (RFC 5929 /
    RFC 9266 names) to their data; without any, no -PLUS mechanism can be used, even if it is
    in ``offered``.  ``hostname`` goes into the CRAM-MD5 challenge.
    """

    def __init__(
        self,
        mechanism: str,
        offered: list[str],
        *,
        response_limit: int = RESPONSE_LIMIT,
        channel_bindings: Mapping[str, bytes] | None = None,
        hostname: str = "localhost",
    ) -> None:
        self.method = mechanism
        self.response_limit = response_limit
        usable = [m.upper() for m in offered]
        if not channel_bindings:
            usable = [m for m in usable if not m.endswith("-PLUS")]
        wanted = mechanism.upper()
        self._mech: Mechanism | None = None
        if wanted in usable:
            if wanted in mechanisms.SCRAM_MECHANISMS:
                self._mech = Scram(
                    wanted,
                    channel_bindings=channel_bindings,
                    plus_offered=f"{wanted}-PLUS" in usable,
                )
            elif wanted == mechanisms.CRAM_MD5:
                self._mech = CramMd5(hostname)
            else:
                self._mech = mechanisms.new_mechanism(wanted)
        self._state = _State.NEW
        self._username: str | None = None
        self._note: str | None = None

    def start(self, initial_response: str | None) -> Action:
        """Begin; ``initial_response`` is the AUTH command's second argument (base64 or "=")."""
        self._expect(_State.NEW)
        if self._mech is None:
            return self._failed(mechanisms.NO_MECHANISM)
        if initial_response is None:
            return self._next(self._mech.start(None))
        data = _decode(initial_response)
        if data is None:
            return self._failed(mechanisms.BAD_PROTOCOL)
        return self._next(self._mech.start(data))

    def respond(self, line: str) -> Action:
        """The client's answer to a Challenge, without CRLF."""
        self._expect(_State.CHALLENGED)
        assert self._mech is not None
        if len(line.encode("utf-8", "surrogatepass")) > self.response_limit:
            return self._end(replies.SASL_RESPONSE_LIMIT, log_warning=None)
        if line == "*":
            return self._end(
                replies.AUTH_ABORTED,
                log_warning=f"SASL {_printable(self.method)} authentication aborted",
            )
        data = _decode(line)
        if data is None:
            return self._failed(mechanisms.BAD_PROTOCOL)
        return self._next(self._mech.step(data))

    def verified(self, ok: bool, *, reason: str | None = None) -> Outcome:
        """The verifier's answer to Verify; ``reason`` replaces Cyrus's "authentication
        failure" when the backend gave its own (AuthRejected)."""
        self._expect(_State.VERIFYING)
        if not ok:
            return self._failed(reason or mechanisms.AUTH_FAILURE)
        self._state = _State.DONE
        return Outcome(
            reply=replies.AUTH_OK,
            success=True,
            username=self._username,
            log_warning=None,
            method=self.method,
        )

    def looked_up(self, secret: object | None, *, note: str | None = None) -> Action:
        """The answer to Lookup: the stored secret, or None for an unknown user or one without
        a secret for this scheme.  ``note`` (why there is none) is logged if the exchange fails."""
        self._expect(_State.LOOKING_UP)
        mech: _SecretMechanism = self._mech  # type: ignore[assignment]
        self._note = note
        return self._next(mech.with_secret(secret))

    def backend_failed(self, detail: str) -> Outcome:
        """The verifier raised AuthBackendError(detail): a temporary failure."""
        if self._state is not _State.LOOKING_UP:
            self._expect(_State.VERIFYING)
        return self._failed(
            mechanisms.GENERIC_FAILURE,
            reply=replies.auth_temp_failure(mechanisms.GENERIC_FAILURE),
            backend_detail=detail,
        )

    # --- internals -----------------------------------------------------------------------

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            raise RuntimeError(f"AuthExchange: call not allowed in state {self._state.value}")

    def _next(self, step: Step) -> Action:
        if isinstance(step, NeedMore):
            self._state = _State.CHALLENGED
            return Challenge(text=base64.b64encode(step.challenge).decode("ascii"))
        if isinstance(step, Credentials):
            self._state = _State.VERIFYING
            self._username = step.authcid
            return Verify(authcid=step.authcid, authzid=step.authzid, password=step.password)
        if isinstance(step, NeedSecret):
            self._state = _State.LOOKING_UP
            self._username = step.authcid
            return Lookup(authcid=step.authcid, authzid=step.authzid, scheme=step.scheme)
        if isinstance(step, Authenticated):
            self._state = _State.DONE
            self._username = step.authcid
            return Outcome(
                reply=replies.AUTH_OK,
                success=True,
                username=step.authcid,
                log_warning=None,
                method=self.method,
            )
        assert isinstance(step, Failed)
        self._username = step.username
        return self._failed(step.reason, backend_detail=self._note)

    def _failed(
        self, reason: str, *, reply: Reply | None = None, backend_detail: str | None = None
    ) -> Outcome:
        name = _printable(self._username) if self._username is not None else UNAVAILABLE
        return self._end(
            reply or replies.auth_failed(reason),
            log_warning=(
                f"SASL {_printable(self.method)} authentication failed: {reason}, "
                f"sasl_username={name}"
            ),
            backend_detail=backend_detail,
        )

    def _end(
        self, reply: Reply, *, log_warning: str | None, backend_detail: str | None = None
    ) -> Outcome:
        self._state = _State.DONE
        return Outcome(
            reply=reply,
            success=False,
            username=self._username,
            log_warning=log_warning,
            method=self.method,
            backend_detail=backend_detail,
        )


def _decode(text: str) -> bytes | None:
    """Strict base64 (as Cyrus sasl_decode64); ``=`` is the RFC 4954 empty response."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _printable(text: str) -> str:
    """Client-supplied text made safe for one log line (Postfix printable(): controls → '?')."""
    return "".join(
        "?" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 else c
        for c in text
    )
