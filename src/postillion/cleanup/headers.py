"""Missing-header fixups done by cleanup: Message-Id:, Date: and From:, on raw bytes.

Owns: finding the end of the header section of a message as received (CRLF lines, folded
headers), adding ``Message-Id: <YYYYmmddHHMMSS.QUEUEID@myhostname>``, ``Date:`` and
``From: sender`` when they are missing, and reporting the message id for cleanup's
``message-id=`` log line.  Also ``mail_date``, the RFC 5322 date Postfix writes.
Must not import: server, queue, maillog (pure functions on bytes).
Follows: Postfix cleanup(8) ``cleanup_message.c`` (cleanup_header_done_callback: missing headers
go at the end of the header section; the Message-Id time stamp is UTC), ``global/mail_date.c``,
``global/quote_822_local.c``; RFC 5322 section 2.2 (header fields, folding) and 3.3 (date).
Not done (yet): Resent-* variants, ``undisclosed_recipients_header``, full names in From:.
"""

from __future__ import annotations

import datetime
import re

# RFC 5322 field name: printable US-ASCII except colon; Postfix tolerates space before ':'.
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
MAILER_DAEMON = "MAILER-DAEMON"  # MAIL_ADDR_MAIL_DAEMON: From: for the null sender


def mail_date(now: datetime.datetime) -> str:
    """``Wed, 25 Nov 2026 08:13:53 +0000 (UTC)``: English names, space-padded day (``%e``),
    numeric offset, zone name in parentheses when known.  A naive *now* is local time."""
    if now.tzinfo is None:
        now = now.astimezone()
    offset = now.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    text = (
        f"{_DAYS[now.weekday()]}, {now.day:2d} {_MONTHS[now.month - 1]} {now.year:04d} "
        f"{now:%H:%M:%S} {sign}{hh:02d}{mm:02d}"
    )
    zone = now.tzname()
    if zone and re.fullmatch(r"[A-Za-z][A-Za-z0-9+-]*", zone):
        text += f" ({zone})"
    return text


def quote_822_local(address: str) -> str:
    """``quote_822_local``: quote the local part when it is not a dot-atom."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or _ATOM.match(local) or (local.startswith('"') and local.endswith('"')):
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{quoted}@{domain}" if at else quoted


def split_headers(content: bytes) -> tuple[list[bytes], int, bool]:
    """The header fields of *content* and where the header section ends.

    Returns (fields, end, has_separator): each field with its folded continuation lines and
    line endings, the offset just past the last header line, and whether an empty line
    follows (``end`` then points at that empty line).
    """
    fields: list[bytes] = []
    pos = 0
    n = len(content)
    while pos < n:
        eol = content.find(b"\n", pos)
        stop = n if eol < 0 else eol + 1
        line = content[pos:stop]
        if line in (b"\r\n", b"\n"):
            return fields, pos, True
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD.match(line):
            fields.append(line)
        else:
            return fields, pos, False  # the body starts without an empty line
        pos = stop
    return fields, pos, False


def field_name(field: bytes) -> str:
    m = _FIELD.match(field)
    return m.group(1).decode("ascii").lower() if m else ""


def field_value(field: bytes) -> str:
    """The unfolded value, without the name and surrounding white space."""
    value = field.split(b":", 1)[1]
    value = re.sub(rb"\r?\n(?=[ \t])", b"", value)
    return value.strip().decode("utf-8", "replace")


def add_missing_headers(
    content: bytes,
    *,
    queue_id: str,
    myhostname: str,
    sender: str,
    now: datetime.datetime,
    add_from: bool,
    add_missing: bool = True,
) -> tuple[bytes, str]:
    """Add Message-Id:, Date: (and From: if *add_from*) when missing; return (content, msgid).

    *msgid* is the Message-ID header value as found (``<a@b>``, unfolded) or as added, or
    ``""`` when there is none and *add_missing* is false (the caller's
    ``local_header_rewrite_clients`` / ``always_add_missing_headers`` decision).  The body is
    never touched; new headers go at the end of the header section, before the empty line.
    """
    fields, end, has_separator = split_headers(content)
    names = {field_name(f) for f in fields}
    msgid = next((field_value(f) for f in fields if field_name(f) == "message-id"), "")
    if not add_missing:
        return content, msgid

    # SMTP content has CRLF lines; follow a bare-LF message (local submission) if given one.
    eol = b"\n" if b"\n" in content and b"\r\n" not in content else b"\r\n"
    added: list[str] = []
    if "message-id" not in names:
        stamp = now.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%S")
        msgid = f"<{stamp}.{queue_id}@{myhostname}>"
        added.append(f"Message-Id: {msgid}")
    if "date" not in names:
        added.append(f"Date: {mail_date(now)}")
    if add_from and "from" not in names:
        added.append(f"From: {quote_822_local(sender) if sender else MAILER_DAEMON}")
    if not added:
        return content, msgid

    block = b"".join(h.encode("utf-8") + eol for h in added)
    head, rest = content[:end], content[end:]
    if head and not head.endswith(b"\n"):
        head += eol  # last header line had no line ending (message without body)
    if rest and not has_separator:
        block += eol  # a body line followed the headers directly: give it its empty line
    return head + block + rest, msgid
