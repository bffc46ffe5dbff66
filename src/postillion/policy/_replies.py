"""Building policy reject replies the way Postfix smtpd_check_reject() does.

Owns: the reply classes ("Client host", ...), dsn_split() and smtpd_dsn_fix(), and the
final touches on every policy reply: code sanity, 510-character limit, printable text,
soft_bounce, and making the enhanced code's class digit agree with the reply code.
Must not import: anything above ``replies``.
Follows: Postfix smtpd/smtpd_check.c smtpd_check_reject(), smtpd/smtpd_dsn_fix.c,
global/dsn_split.c.
"""

from __future__ import annotations

import re

from postillion.replies import Reply

CLIENT = "Client host"
HELO = "Helo command"
SENDER = "Sender address"
RECIPIENT = "Recipient address"
DATA = "Data command"

_DSN = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:[ \t]+|$)")
_LIMIT = 510  # smtpd_check_reject() truncates "code dsn text" to 510 characters

# smtpd_dsn_fix.c: last digit of an x.1.y code -> (sender code, recipient code)
_DSN_MAP = {
    "1": ("4.1.0", "4.1.1"),
    "2": ("4.1.8", "4.1.2"),
    "3": ("4.1.7", "4.1.3"),
    "4": ("4.1.0", "4.1.4"),
    "5": ("4.1.0", "4.1.5"),
    "6": ("4.1.0", "4.1.6"),
    "7": ("4.1.7", "4.1.3"),
    "8": ("4.1.8", "4.1.2"),
}


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """``"5.7.9 go away"`` -> ``("5.7.9", "go away")``; no leading code -> ``(default, text)``."""
    text = text.strip()
    m = _DSN.match(text)
    if m:
        return m.group(1), text[m.end():]
    return default, text


def dsn_fix(dsn: str, reply_class: str) -> str:
    """Turn an address status (x.1.y) into the one that fits what is rejected."""
    if len(dsn) >= 5 and dsn[1:4] == ".1.":
        if reply_class == SENDER:
            return _DSN_MAP.get(dsn[4:], ("4.1.0", "4.1.0"))[0]
        if reply_class == RECIPIENT:
            return _DSN_MAP.get(dsn[4:], ("4.1.0", "4.1.0"))[1]
        return "4.0.0"
    return dsn


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def policy_reply(code: int, dsn: str, text: str, *, soft_bounce: bool) -> Reply:
    """The reply smtpd_check_reject() would send for ``code dsn text``."""
    if not 400 <= code <= 599 or not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", dsn):
        code, dsn, text = 450, "4.7.1", "Service unavailable"
    text = _printable(text)[: _LIMIT - len(f"{code} {dsn} ")]
    if soft_bounce and code >= 500:
        code -= 100
    # The reply code wins over the enhanced code's class digit.
    dsn = str(code)[0] + dsn[1:]
    return Reply(code=code, enhanced=dsn, text=text)


def reject_text(reply_name: str, reply_class: str, reason: str) -> str:
    return f"<{reply_name}>: {reply_class} rejected: {reason}"
