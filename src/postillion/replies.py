"""SMTP replies: the Reply value and the table of every fixed reply text postillion sends.

Owns: reply texts and enhanced status codes (Postfix's wording, see docs/compatibility.md).
Must not import: anything above ``errors``.

Texts that depend on the session (host names, addresses) are built by the small
functions at the bottom, so no other module writes a reply text of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from postillion.errors import PostillionError

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One SMTP reply, possibly multi-line.

    ``enhanced`` is the RFC 3463 code without the text (``"2.1.0"``) or ``""``.
    ``more`` holds the text of the lines after the first (EHLO keywords).
    ``close`` means the server hangs up after sending it (421, 221, 521).
    """

    code: int
    text: str
    enhanced: str = ""
    more: tuple[str, ...] = field(default=())
    close: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"bad SMTP reply code {self.code}")
        if self.enhanced and not _ENHANCED.match(self.enhanced):
            raise ValueError(f"bad enhanced status code {self.enhanced!r}")
        for t in (self.text, *self.more):
            if "\r" in t or "\n" in t:
                raise ValueError("reply text must not contain CR or LF")

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def positive(self) -> bool:
        return self.code < 400

    def lines(self, *, enhanced: bool = True) -> list[str]:
        """Reply lines without CRLF: ``["250-a", "250 b"]``."""
        first = self.text
        if enhanced and self.enhanced:
            first = f"{self.enhanced} {first}" if first else self.enhanced
        texts = [first, *self.more]
        out = []
        for i, t in enumerate(texts):
            sep = "-" if i < len(texts) - 1 else " "
            out.append(f"{self.code}{sep}{t}")
        return out

    def encode(self, *, enhanced: bool = True) -> bytes:
        return "".join(line + "\r\n" for line in self.lines(enhanced=enhanced)).encode(
            "utf-8", "replace"
        )

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def with_close(self) -> Reply:
        return replace(self, close=True)

    def softened(self) -> Reply:
        """The 4xx version of a 5xx reply (``soft_bounce``); other replies as they are."""
        if not self.permanent:
            return self
        enh = "4" + self.enhanced[1:] if self.enhanced else ""
        return replace(self, code=self.code - 100, enhanced=enh)


def parse_reply_text(text: str, *, default_code: int, default_enhanced: str) -> Reply:
    """Parse an access-table style result such as ``"550 5.7.1 go away"`` or ``"go away"``."""
    m = re.match(r"^([245]\d\d)(?:\s+([245]\.\d{1,3}\.\d{1,3}))?(?:\s+(.*))?$", text.strip())
    if m:
        code = int(m.group(1))
        enh = m.group(2) or (f"{code // 100}{default_enhanced[1:]}" if default_enhanced else "")
        return Reply(code=code, enhanced=enh, text=m.group(3) or "")
    return Reply(code=default_code, enhanced=default_enhanced, text=text.strip())


def R(code: int, enhanced: str, text: str, *, close: bool = False) -> Reply:
    return Reply(code=code, enhanced=enhanced, text=text, close=close)


# --- the fixed texts (Postfix 3.7 smtpd wording) -------------------------------------------
OK = R(250, "2.0.0", "Ok")
MAIL_OK = R(250, "2.1.0", "Ok")
RCPT_OK = R(250, "2.1.5", "Ok")
DATA_GO = R(354, "", "End data with <CR><LF>.<CR><LF>")
BYE = R(221, "2.0.0", "Bye", close=True)
STARTTLS_GO = R(220, "2.0.0", "Ready to start TLS")
AUTH_OK = R(235, "2.7.0", "Authentication successful")

NOT_RECOGNIZED = R(500, "5.5.2", "Error: command not recognized")
BAD_SYNTAX = R(500, "5.5.2", "Error: bad syntax")
BAD_UTF8 = R(500, "5.5.2", "Error: bad UTF-8 syntax")
NOT_IMPLEMENTED = R(502, "5.5.1", "Error: command not implemented")
HELO_SYNTAX = R(501, "", "Syntax: HELO hostname")
EHLO_SYNTAX = R(501, "", "Syntax: EHLO hostname")
SEND_HELO_FIRST = R(503, "5.5.1", "Error: send HELO/EHLO first")
MAIL_SYNTAX = R(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = R(501, "5.5.4", "Syntax: RCPT TO:<address>")
NESTED_MAIL = R(503, "5.5.1", "Error: nested MAIL command")
MAIL_AFTER_BDAT = R(503, "5.5.1", "Error: MAIL after BDAT")
BAD_SENDER = R(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = R(501, "5.1.3", "Bad recipient address syntax")
SIZE_EXCEEDED = R(552, "5.3.4", "Message size exceeds fixed limit")
BAD_SIZE = R(501, "5.5.4", "Bad message size syntax")
MULTIPLE_AUTH_PARAM = R(503, "5.5.4", "Error: multiple AUTH= options")
NEED_MAIL = R(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = R(503, "5.5.1", "Error: need RCPT command")
NO_VALID_RCPT = R(554, "5.5.1", "Error: no valid recipients")
TOO_MANY_RCPT = R(452, "4.5.3", "Error: too many recipients")
DATA_SYNTAX = R(501, "5.5.4", "Syntax: DATA")
DATA_AFTER_BDAT = R(503, "5.5.1", "Error: DATA after BDAT")
BDAT_SYNTAX = R(521, "5.5.4", "Syntax: BDAT count [LAST]", close=True)
RSET_SYNTAX = R(501, "5.5.4", "Syntax: RSET")
NOOP_OK = OK
VRFY_DISABLED = R(502, "5.5.1", "VRFY command is disabled")
VRFY_SYNTAX = R(501, "5.5.4", "Syntax: VRFY address")
ETRN_IN_TRANSACTION = R(503, "", "Error: MAIL transaction in progress")
ETRN_SYNTAX = R(500, "", "Syntax: ETRN domain")
ETRN_UNAVAILABLE = R(458, "", "Unable to queue messages")
STARTTLS_SYNTAX = R(501, "5.5.4", "Syntax: STARTTLS")
TLS_ACTIVE = R(554, "5.5.1", "Error: TLS already active")
TLS_UNAVAILABLE = R(454, "4.7.0", "TLS not available due to local problem")
MUST_STARTTLS = R(530, "5.7.0", "Must issue a STARTTLS command first")
SYNC_ERROR = R(554, "5.5.0", "Error: SMTP protocol synchronization", close=True)
NON_SMTP = R(221, "2.7.0", "Error: I can break rules, too. Goodbye.", close=True)
HELP = R(214, "2.0.0", "Commands: AUTH BDAT DATA EHLO ETRN HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY")

AUTH_SYNTAX = R(501, "5.5.4", "Syntax: AUTH mechanism")
AUTH_NOT_ENABLED = R(503, "5.5.1", "Error: authentication not enabled")
AUTH_IN_TRANSACTION = R(503, "5.5.1", "Error: MAIL transaction in progress")
ALREADY_AUTHENTICATED = R(503, "5.5.1", "Error: already authenticated")
AUTH_ABORTED = R(501, "5.7.0", "Authentication aborted")
SASL_RESPONSE_LIMIT = R(500, "5.5.6", "SASL response limit exceeded")
AUTH_ENCRYPTION_REQUIRED = R(504, "5.5.4", "Encryption required for requested authentication mechanism")

TEMP_LOOKUP_FAILURE = R(451, "4.3.0", "Temporary lookup failure")
QUEUE_WRITE_ERROR = R(451, "4.3.0", "Error: queue file write error")
CONFIG_ERROR = R(451, "4.3.5", "Server configuration error")
INTERNAL_ERROR = R(451, "4.3.0", "Error: internal error")
INSUFFICIENT_STORAGE = R(452, "4.3.1", "Insufficient system storage")


def greeting(banner: str) -> Reply:
    return R(220, "", banner)


def helo_ok(myhostname: str) -> Reply:
    return R(250, "", myhostname)


def ehlo_ok(myhostname: str, keywords: list[str]) -> Reply:
    return Reply(code=250, text=myhostname, more=tuple(keywords))


def queued(queue_id: str) -> Reply:
    return R(250, "2.0.0", f"Ok: queued as {queue_id}")


def bdat_ok(nbytes: int) -> Reply:
    return R(250, "2.0.0", f"Ok: {nbytes} bytes")


def bdat_queued(nbytes: int, queue_id: str) -> Reply:
    return R(250, "2.0.0", f"Ok: {nbytes} bytes queued as {queue_id}")


def unsupported_option(param: str) -> Reply:
    return R(555, "5.5.4", f"Unsupported option: {param}")


def vrfy_ok(arg: str) -> Reply:
    return R(252, "2.0.0", arg)


def timeout(myhostname: str) -> Reply:
    return R(421, "4.4.2", f"{myhostname} Error: timeout exceeded", close=True)


def too_many_errors(myhostname: str) -> Reply:
    return R(421, "4.7.0", f"{myhostname} Error: too many errors", close=True)


def command_too_long(myhostname: str) -> Reply:
    return R(500, "5.5.2", f"{myhostname} Error: command too long")


def bare_lf(myhostname: str, code: int = 550) -> Reply:
    return R(code, f"{code // 100}.5.2", f"{myhostname} Error: bare <LF> received", close=True)


def too_many_connections(myhostname: str, ip: str) -> Reply:
    return R(421, "4.7.0", f"{myhostname} Error: too many connections from {ip}", close=True)


def too_many_auth(ip: str) -> Reply:
    return R(450, "4.7.1", f"Error: too many AUTH commands from {ip}")


def shutting_down(myhostname: str) -> Reply:
    return R(421, "4.3.2", f"{myhostname} Service shutting down, closing transmission channel", close=True)


def auth_failed(reason: str = "authentication failure") -> Reply:
    return R(535, "5.7.8", f"Error: authentication failed: {reason}")


def auth_temp_failure(reason: str = "") -> Reply:
    text = "Temporary authentication failure"
    return R(454, "4.7.0", f"{text}: {reason}" if reason else text)


def auth_challenge(b64: str) -> Reply:
    return R(334, "", b64)


def reply_for(exc: BaseException) -> Reply:
    """The client-visible reply for an exception reaching the session boundary.

    The detail stays in the log; clients get Postfix's generic texts.
    """
    from postillion import errors

    if isinstance(exc, errors.TableLookupError):
        return TEMP_LOOKUP_FAILURE
    if isinstance(exc, errors.QueueWriteError):
        return QUEUE_WRITE_ERROR
    if isinstance(exc, errors.AuthBackendError):
        return auth_temp_failure("generic failure")
    if isinstance(exc, errors.ConfigError):
        return CONFIG_ERROR
    if isinstance(exc, PostillionError) and exc.temporary:
        return INTERNAL_ERROR
    return INTERNAL_ERROR
