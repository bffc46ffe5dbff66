"""Delivery status notifications: bounces, delay warnings and success reports, Postfix style.

Owns: building the complete RFC 5322 message (CRLF bytes, ready to queue) for each kind of
notice that Postfix's bounce(8)/defer(8)/trace(8) daemons post, byte for byte as Postfix 3.7
queues it after cleanup (the ``Received: by``, ``Date:`` and ``Message-Id:`` cleanup adds
are included); and the rules for who gets a notice: ``notify_wanted`` (RFC 3461 NOTIFY),
``should_bounce``, ``postmaster_notice_wanted`` (``notify_classes``) and ``notice_targets``.
Must not import: queue (beyond the ``Envelope``/``Recipient`` types), delivery, server,
maillog (pure functions: no I/O, no clock; the caller passes ``now`` and the new queue id).
Follows: RFC 3464 (message/delivery-status), RFC 6522 (multipart/report), RFC 3461 (NOTIFY,
RET, ENVID, ORCPT), RFC 3834 (Auto-Submitted), RFC 6533 (message/global-delivery-status);
Postfix ``bounce/bounce_notify_util.c``, ``bounce_notify_service.c``,
``bounce_warn_service.c``, ``bounce_trace_service.c``, ``bounce_templates.c`` (the built-in
templates that ``postconf -t`` prints), ``util/line_wrap.c``; bounce(5), postconf(5)
``notify_classes``, ``bounce_size_limit``, ``double_bounce_sender``.
Checked against: Postfix 3.7.11 output captured from its queue (see the golden tests).
Not done (yet): ``bounce_template_file``, ``enable_threaded_bounces`` (References:),
VERP, the "(expanded from <...>)" form for alias-expanded recipients, address verification
reports.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from postillion.cleanup.headers import mail_date, quote_822_local

if TYPE_CHECKING:  # plain data; annotations only, so importing this module loads no queue code
    from postillion.queue.envelope import Envelope, Recipient

BOUNCE_SIZE_LIMIT = 50000  # bounce_size_limit default: larger originals go back as headers only
DOUBLE_BOUNCE_SENDER = "double-bounce"  # double_bounce_sender default
POSTMASTER = "postmaster"  # bounce_notice_recipient / 2bounce_ / delay_notice_recipient default
MAILER_DAEMON = "MAILER-DAEMON"  # MAIL_ADDR_MAIL_DAEMON
NOTIFY_CLASSES = ("resource", "software")  # notify_classes default

KINDS = ("failure", "delay", "success")

# util/line_wrap.c as bounce_print_wrap() calls it: 79 columns, continuation indent 4.
_WRAP_LENGTH = 79
_WRAP_INDENT = 4

# bounce_templates.c built-in texts (Postfix 3.7 ``postconf -t``); $myhostname is expanded.
_FROM_PHRASE = "Mail Delivery System"  # From: Mail Delivery System <MAILER-DAEMON>
_SUBJECTS = {
    "failure": ("Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail"),
    "delay": ("Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail"),
    "success": ("Successful Mail Delivery Report", "Successful Mail Delivery Report"),
}
_ASSISTANCE = (
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can",
    "delete your own text from the attached returned message.",
    "",
    "                   The mail system",
)
_FAILURE_TEXT = (
    "This is the mail system at host $myhostname.",
    "",
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients. It's attached below.",
    "",
    *_ASSISTANCE,
)
_DELAY_TEXT = (
    "This is the mail system at host $myhostname.",
    "",
    "####################################################################",
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
    "####################################################################",
    "",
    "Your message could not be delivered for more than $delay_warning_time_hours hour(s).",
    "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
    "",
    *_ASSISTANCE,
)
_SUCCESS_TEXT = (
    "This is the mail system at host $myhostname.",
    "",
    "Your message was successfully delivered to the destination(s)",
    "listed below. If the message was delivered to mailbox you will",
    "receive no further notifications. Otherwise you may still receive",
    "notifications of mail delivery errors from other systems.",
    "",
    "                   The mail system",
)

# smtp(8)'s reason text for a server reply: "host mx.example[192.0.2.1] said: 550 ... (in
# reply to RCPT TO command)"; the reply itself is the RFC 3464 smtp diagnostic.
_SAID = re.compile(r"^host (?P<host>[^\s\[]+)\[[^\]]*\] said: (?P<reply>.*?)"
                   r"(?: \(in reply to .* command\))?$", re.DOTALL)
_REPLY = re.compile(r"^[245]\d\d[ -]")
_RELAY_HOST = re.compile(r"^(?P<host>[^\s\[]+)\[[^\]]*\](?::\d+)?$")
# RFC 3464 diagnostic-type / X-$mail_name must be an atom: bounce_mail_alloc()'s translit().
_NON_ATOM = str.maketrans({c: "-" for c in " \t\r\n()<>@,;:\\\".[]"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StatusLike(Protocol):
    """What a notice needs from one delivery outcome (``queue.record.RecipientStatus``).

    ``status`` is ``bounced``/``expired`` (failure), ``deferred`` (delay),
    ``sent``/``delivered`` (success); ``text`` is the log text after ``status=``.
    """

    @property
    def status(self) -> str: ...
    @property
    def dsn(self) -> str: ...
    @property
    def relay(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def time(self) -> float: ...


Outcome: TypeAlias = "tuple[Recipient, StatusLike]"


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeTarget:
    """One notice to post: its envelope sender and recipient, and which form it takes.

    ``postmaster_copy`` selects the postmaster form (no boiler-plate text, Postmaster
    subject, Auto-Submitted: auto-generated); the sender of those is ``double_bounce_sender``.
    """

    sender: str
    recipient: str
    postmaster_copy: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    """One recipient line pair: the human-readable reason and the RFC 3464 fields."""

    recipient: Recipient
    action: str
    status: str
    reason: str
    remote_mta: str | None
    diagnostic: tuple[str, str]


# ---------------------------------------------------------------------------- rules


def notify_wanted(recipient: Recipient, kind: str) -> bool:
    """Whether the sender asked for a *kind* notice about *recipient* (RFC 3461 NOTIFY).

    Without NOTIFY, Postfix reports failures and delays but not successes; NOTIFY=NEVER
    turns everything off.
    """
    if kind not in KINDS:
        raise ValueError(f"bad notice kind {kind!r}")
    if recipient.notify is None:
        return kind != "success"
    return kind.upper() in recipient.notify


def is_double_bounce_address(address: str, *, myorigin: str,
                             double_bounce_sender: str = DOUBLE_BOUNCE_SENDER) -> bool:
    """Whether *address* is the sender of postmaster notices (never notified: no loops)."""
    local, _, domain = address.rpartition("@")
    if not _:
        local, domain = address, myorigin
    return local.lower() == double_bounce_sender.lower() and domain.lower() == myorigin.lower()


def should_bounce(envelope: Envelope, *, myorigin: str = "",
                  double_bounce_sender: str = DOUBLE_BOUNCE_SENDER) -> bool:
    """Whether notices about *envelope* go to its sender.

    Never for the null sender (no bounce of a bounce: that is a double bounce, for
    postmaster only) nor for the double-bounce sender (Postfix discards those:
    "undeliverable postmaster notification discarded").
    """
    if envelope.sender == "":
        return False
    return not is_double_bounce_address(envelope.sender, myorigin=myorigin,
                                        double_bounce_sender=double_bounce_sender)


def double_bounce(envelope: Envelope) -> bool:
    """Whether a failure notice for *envelope* is a double bounce (its sender is ``<>``)."""
    return envelope.sender == ""


def postmaster_notice_wanted(envelope: Envelope, kind: str, notify_classes: Iterable[str], *,
                             myorigin: str = "",
                             double_bounce_sender: str = DOUBLE_BOUNCE_SENDER) -> bool:
    """Whether postmaster gets a copy of a *kind* notice (postconf(5) ``notify_classes``).

    ``bounce`` sends postmaster a copy of every sender bounce; a double bounce (failed mail
    from ``<>``) goes to postmaster with ``bounce`` or ``2bounce``; ``delay`` copies delay
    warnings.  Nothing is ever sent about mail from the double-bounce sender, and success
    reports have no postmaster copy.
    """
    classes = {c.lower() for c in notify_classes}
    if kind == "success":
        return False
    if envelope.sender and is_double_bounce_address(
            envelope.sender, myorigin=myorigin, double_bounce_sender=double_bounce_sender):
        return False
    if kind == "failure":
        if envelope.sender == "":
            return bool(classes & {"bounce", "2bounce"})
        return "bounce" in classes
    if kind == "delay":
        return "delay" in classes
    raise ValueError(f"bad notice kind {kind!r}")


def notice_targets(envelope: Envelope, kind: str, *, myorigin: str,
                   notify_classes: Iterable[str] = NOTIFY_CLASSES,
                   bounce_notice_recipient: str = POSTMASTER,
                   double_bounce_notice_recipient: str = POSTMASTER,
                   delay_notice_recipient: str = POSTMASTER,
                   double_bounce_sender: str = DOUBLE_BOUNCE_SENDER) -> list[NoticeTarget]:
    """Every notice Postfix would post for a *kind* event on *envelope*, in Postfix's order.

    The sender notice comes from ``<>``; postmaster notices from ``double_bounce_sender``
    (``2bounce_notice_recipient`` is *double_bounce_notice_recipient*).  The caller still
    filters recipients with ``notify_wanted`` (the builders do it) and skips a notice that
    ends up with no recipients (the builders return None).
    """
    if kind not in KINDS:
        raise ValueError(f"bad notice kind {kind!r}")
    pm_sender = qualify(double_bounce_sender, myorigin)
    out: list[NoticeTarget] = []
    if should_bounce(envelope, myorigin=myorigin, double_bounce_sender=double_bounce_sender):
        out.append(NoticeTarget(sender="", recipient=envelope.sender, postmaster_copy=False))
    if postmaster_notice_wanted(envelope, kind, notify_classes, myorigin=myorigin,
                                double_bounce_sender=double_bounce_sender):
        if kind == "delay":
            to = delay_notice_recipient
        elif envelope.sender == "":
            to = double_bounce_notice_recipient
        else:
            to = bounce_notice_recipient
        out.append(NoticeTarget(sender=pm_sender, recipient=qualify(to, myorigin),
                                postmaster_copy=True))
    return out


def qualify(address: str, myorigin: str) -> str:
    """``append_at_myorigin``: cleanup's completion of an address without a domain."""
    return address if "@" in address or not myorigin else f"{address}@{myorigin}"


# ---------------------------------------------------------------------------- builders


def non_delivery_report(*, envelope: Envelope, content: bytes, failed: Sequence[Outcome],
                        queue_id: str, bounce_id: str, myhostname: str,
                        myorigin: str | None = None, mail_name: str = "Postfix",
                        now: datetime.datetime, ret: str | None = None,
                        postmaster_copy: bool = False, to: str | None = None,
                        bounce_size_limit: int = BOUNCE_SIZE_LIMIT,
                        smtputf8_enable: bool = True) -> bytes | None:
    """The "Undelivered Mail Returned to Sender" message (or its postmaster copy).

    *queue_id* is the original message's id, *bounce_id* the id the notice will be queued
    under (cleanup's Received: and Message-Id: use it).  The sender notice lists the
    recipients whose NOTIFY asks for failures and returns the message as RET says (FULL by
    default); the postmaster copy lists every recipient and returns the headers, except for
    a double bounce (null sender), which returns the full message.  Above
    *bounce_size_limit* bytes (0: no limit) only the headers go back.  *to* overrides the
    notice recipient (default: the sender, or ``postmaster``).  None when no recipient
    qualifies, as Postfix cancels such a notice.
    """
    if postmaster_copy:
        ret_mode = "FULL" if envelope.sender == "" else "HDRS"
    else:
        ret_mode = ret or envelope.ret or "FULL"
    return _notice("failure", envelope=envelope, content=content, outcomes=failed,
                   queue_id=queue_id, bounce_id=bounce_id, myhostname=myhostname,
                   myorigin=myorigin, mail_name=mail_name, now=now, ret=ret_mode,
                   postmaster_copy=postmaster_copy, to=to,
                   bounce_size_limit=bounce_size_limit, smtputf8_enable=smtputf8_enable)


def delay_warning(*, envelope: Envelope, content: bytes, delayed: Sequence[Outcome],
                  queue_id: str, bounce_id: str, myhostname: str,
                  myorigin: str | None = None, mail_name: str = "Postfix",
                  now: datetime.datetime, delay_warning_time: float,
                  maximal_queue_lifetime: float, postmaster_copy: bool = False,
                  to: str | None = None, bounce_size_limit: int = BOUNCE_SIZE_LIMIT,
                  smtputf8_enable: bool = True) -> bytes | None:
    """The "Delayed Mail (still being retried)" warning (or its postmaster copy).

    Times are in seconds; the text shows them in whole hours and days as Postfix's template
    does, and Will-Retry-Until is the arrival time plus *maximal_queue_lifetime*.  Only
    headers go back, except postmaster's copy about mail from ``<>`` (full message).
    """
    ret_mode = "FULL" if postmaster_copy and envelope.sender == "" else "HDRS"
    return _notice("delay", envelope=envelope, content=content, outcomes=delayed,
                   queue_id=queue_id, bounce_id=bounce_id, myhostname=myhostname,
                   myorigin=myorigin, mail_name=mail_name, now=now, ret=ret_mode,
                   postmaster_copy=postmaster_copy, to=to,
                   bounce_size_limit=bounce_size_limit, smtputf8_enable=smtputf8_enable,
                   delay_warning_time=delay_warning_time,
                   maximal_queue_lifetime=maximal_queue_lifetime)


def success_notification(*, envelope: Envelope, content: bytes, delivered: Sequence[Outcome],
                         queue_id: str, bounce_id: str, myhostname: str,
                         myorigin: str | None = None, mail_name: str = "Postfix",
                         now: datetime.datetime, to: str | None = None,
                         smtputf8_enable: bool = True) -> bytes | None:
    """The "Successful Mail Delivery Report" for recipients with NOTIFY=SUCCESS.

    Action is ``relayed`` for a hand-off to an SMTP server (it got no NOTIFY from us, so it
    will not report) and ``delivered`` otherwise (see ``success_action``).  Headers only.
    None for mail from ``<>`` (Postfix never reports on a bounce) or when no recipient
    asked for it.
    """
    if envelope.sender == "":
        return None
    return _notice("success", envelope=envelope, content=content, outcomes=delivered,
                   queue_id=queue_id, bounce_id=bounce_id, myhostname=myhostname,
                   myorigin=myorigin, mail_name=mail_name, now=now, ret="HDRS",
                   postmaster_copy=False, to=to, bounce_size_limit=BOUNCE_SIZE_LIMIT,
                   smtputf8_enable=smtputf8_enable)


def postmaster_copy(*, envelope: Envelope, content: bytes, failed: Sequence[Outcome],
                    queue_id: str, bounce_id: str, myhostname: str,
                    myorigin: str | None = None, mail_name: str = "Postfix",
                    now: datetime.datetime, to: str = POSTMASTER,
                    bounce_size_limit: int = BOUNCE_SIZE_LIMIT,
                    smtputf8_enable: bool = True) -> bytes | None:
    """"Postmaster Copy: Undelivered Mail" (``notify_classes = bounce``, or a double bounce)."""
    return non_delivery_report(envelope=envelope, content=content, failed=failed,
                               queue_id=queue_id, bounce_id=bounce_id, myhostname=myhostname,
                               myorigin=myorigin, mail_name=mail_name, now=now,
                               postmaster_copy=True, to=to,
                               bounce_size_limit=bounce_size_limit,
                               smtputf8_enable=smtputf8_enable)


def success_action(status: StatusLike) -> str:
    """RFC 3464 Action of a successful delivery: ``relayed`` to an SMTP host, else ``delivered``.

    A status recorded as ``delivered`` (local, virtual, LMTP: final delivery) is always
    ``delivered``; ``sent`` to a ``host[addr]:port`` relay is ``relayed``.
    """
    if status.status == "delivered":
        return "delivered"
    return "relayed" if _RELAY_HOST.match(status.relay) else "delivered"


def mime_boundary(queue_id: str, now: datetime.datetime, myhostname: str) -> str:
    """``queue_id.time/myhostname``, as bounce_mail_alloc() computes it."""
    return f"{queue_id}.{int(now.timestamp())}/{myhostname}"


def line_wrap(text: str, length: int = _WRAP_LENGTH, indent: int = _WRAP_INDENT) -> list[str]:
    """Postfix ``line_wrap()``: break at blanks before *length* columns, indent the rest.

    A word longer than the line stays whole; trailing blanks of each line are dropped.
    """
    lines: list[str] = []
    curr_len, curr_indent = length, 0
    start = 0
    word: int | None = 0
    while word is not None:
        space = _next_blank(text, word)
        if word > start and space - start > curr_len:
            lines.append(" " * curr_indent + text[start:word].rstrip(" \t"))
            while word < len(text) and text[word] in " \t":
                word += 1
            if start == 0:
                curr_indent += indent
                curr_len -= indent
            start = word
        word = space + 1 if space < len(text) else None
    lines.append(" " * curr_indent + text[start:].rstrip(" \t"))
    return lines


# ---------------------------------------------------------------------------- internals


def _next_blank(text: str, pos: int) -> int:
    blanks = [i for i in (text.find(" ", pos), text.find("\t", pos)) if i >= 0]
    return min(blanks) if blanks else len(text)


def _printable(text: str) -> str:
    """bounce_log_read()'s masking: control characters become '?' (no header injection)."""
    return _CONTROL.sub("?", text)


def _entry(kind: str, recipient: Recipient, status: StatusLike, mail_name: str) -> _Entry:
    text = _printable(status.text)
    reason, remote, diag = text, None, (f"X-{mail_name}", text)
    said = _SAID.match(text)
    relay = _RELAY_HOST.match(status.relay)
    if said:
        remote = said["host"]
        diag = ("smtp", said["reply"])
    elif relay and _REPLY.match(text):
        remote = relay["host"]
        diag = ("smtp", text)
        if kind == "success":
            # smtp_rcpt_done()'s reason for a delivery report.
            reason = f"delivery via {status.relay}: {text}"
    if kind == "failure":
        action = "failed"
    elif kind == "delay":
        action = "delayed"
    else:
        action = success_action(status)
    return _Entry(recipient, action, status.dsn, reason, remote, diag)


def _quote(address: str) -> str:
    """quote_822_local(), treating UTF-8 as atom text (RFC 6532 allows it in dot-atoms)."""
    if address.isascii():
        return quote_822_local(address)
    masked = "".join(c if c.isascii() else "a" for c in address)
    return address if quote_822_local(masked) == masked else quote_822_local(address)


def _address_type(address: str, smtputf8: bool) -> str:
    return "utf-8" if smtputf8 and not address.isascii() else "rfc822"


def _date(timestamp: float, now: datetime.datetime) -> str:
    """mail_date() of a POSIX time, in the time zone of *now* (local time when naive)."""
    if now.tzinfo is None:
        return mail_date(datetime.datetime.fromtimestamp(int(timestamp)).astimezone())
    return mail_date(datetime.datetime.fromtimestamp(int(timestamp), tz=now.tzinfo))


def _content_lines(content: bytes, headers_only: bool) -> list[bytes]:
    """The original as lines without line endings; only the header block if *headers_only*."""
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    if not headers_only:
        return lines
    out: list[bytes] = []
    for ln in lines:
        # bounce_original(): IS_HEADER = continuation line or "name:".
        if ln[:1] in (b" ", b"\t") or re.match(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:", ln):
            out.append(ln)
        else:
            break
    return out


def _notice(kind: str, *, envelope: Envelope, content: bytes, outcomes: Sequence[Outcome],
            queue_id: str, bounce_id: str, myhostname: str, myorigin: str | None,
            mail_name: str, now: datetime.datetime, ret: str, postmaster_copy: bool,
            to: str | None, bounce_size_limit: int, smtputf8_enable: bool,
            delay_warning_time: float = 0.0, maximal_queue_lifetime: float = 0.0) -> bytes | None:
    if ret not in ("FULL", "HDRS"):
        raise ValueError(f"bad RET value {ret!r}")
    origin = myorigin or myhostname
    name = mail_name.translate(_NON_ATOM)
    chosen = outcomes if postmaster_copy else [
        (r, s) for r, s in outcomes if notify_wanted(r, kind)]
    if not chosen:
        return None
    entries = [_entry(kind, r, s, name) for r, s in chosen]

    if to is None:
        to = POSTMASTER if postmaster_copy else envelope.sender
    to = qualify(_quote(to), origin)
    sender = _quote(envelope.sender) if envelope.sender else f"{MAILER_DAEMON}@{myhostname}"
    smtputf8 = envelope.smtputf8
    # bounce_mail_alloc(): smtputf8_enable forces 8bit, else the original's encoding.
    encoding = "8bit" if smtputf8_enable or envelope.body_type != "7BIT" else "7bit"
    eight = encoding != "7bit"
    boundary = mime_boundary(queue_id, now, myhostname)
    headers_only = ret == "HDRS" or (bounce_size_limit > 0 and len(content) > bounce_size_limit)
    subject = _SUBJECTS[kind][1 if postmaster_copy else 0]

    out: list[str | bytes] = [
        # What cleanup(8) adds to a message posted by the bounce daemon.
        f"Received: by {myhostname} ({mail_name})",
        f"\tid {bounce_id}; {mail_date(now)}",
        f"Date: {mail_date(now)}",
        # What bounce_header() writes.
        f"From: {_FROM_PHRASE} <{MAILER_DAEMON}@{origin}>",
        f"Subject: {subject}",
        f"To: {to}",
        f"Auto-Submitted: {'auto-generated' if postmaster_copy else 'auto-replied'}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {encoding}",
        f"Message-Id: <{now.astimezone(datetime.UTC):%Y%m%d%H%M%S}.{bounce_id}@{myhostname}>",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={'utf-8' if eight else 'us-ascii'}",
    ]
    if eight:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out.append("")
    if not postmaster_copy:
        template = {"failure": _FAILURE_TEXT, "delay": _DELAY_TEXT, "success": _SUCCESS_TEXT}[kind]
        values = {
            "$myhostname": myhostname,
            "$delay_warning_time_hours": str(int(delay_warning_time) // 3600),
            "$maximal_queue_lifetime_days": str(int(maximal_queue_lifetime) // 86400),
        }
        for line in template:
            for key, value in values.items():
                line = line.replace(key, value)
            out.append(line)
    for e in entries:
        out.append("")
        out.extend(line_wrap(f"<{e.recipient.address}>: {e.reason}"))

    # bounce_header_dsn(): the per-message fields.
    out += ["", f"--{boundary}", "Content-Description: Delivery report",
            f"Content-Type: message/{'global-' if smtputf8 else ''}delivery-status"]
    if eight and smtputf8:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out += ["", f"Reporting-MTA: dns; {myhostname}"]
    if envelope.envid:
        out.append(f"Original-Envelope-Id: {envelope.envid}")
    out.append(f"X-{name}-Queue-ID: {queue_id}")
    out.append(f"X-{name}-Sender: {_address_type(sender, smtputf8)}; {sender}")
    if envelope.arrival_time > 0:
        out.append(f"Arrival-Date: {_date(envelope.arrival_time, now)}")

    # bounce_recipient_dsn(): the per-recipient fields.
    for e in entries:
        rcpt = e.recipient
        out += ["", f"Final-Recipient: {_address_type(rcpt.address, smtputf8)}; {rcpt.address}"]
        # smtpd(8) records ORCPT=rfc822;<address> when the client sent none, and Postfix
        # always reports it (bounce_notify_util.c explains why).
        out.append(f"Original-Recipient: {rcpt.orcpt or 'rfc822;' + rcpt.address}")
        out.append(f"Action: {e.action}")
        out.append(f"Status: {e.status}")
        if e.remote_mta:
            out.extend(line_wrap(f"Remote-MTA: dns; {e.remote_mta}"))
        out.extend(line_wrap(f"Diagnostic-Code: {e.diagnostic[0]}; {e.diagnostic[1]}"))
        if kind == "delay":
            until = envelope.arrival_time + maximal_queue_lifetime
            out.append(f"Will-Retry-Until: {_date(until, now)}")

    # bounce_original(): the returned message or its headers.
    undelivered = "Undelivered " if kind != "success" else ""
    out += ["", f"--{boundary}",
            f"Content-Description: {undelivered}{'Message Headers' if headers_only else 'Message'}"]
    if smtputf8:
        out.append(f"Content-Type: message/{'global-headers' if headers_only else 'global'}")
    else:
        out.append(f"Content-Type: {'text/rfc822-headers' if headers_only else 'message/rfc822'}")
    if eight:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out += ["", f"Return-Path: <{sender}>"]
    out.extend(_content_lines(content, headers_only))
    out += ["", f"--{boundary}--"]
    return b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\r\n" for ln in out)


__all__ = [
    "BOUNCE_SIZE_LIMIT", "DOUBLE_BOUNCE_SENDER", "KINDS", "MAILER_DAEMON", "NOTIFY_CLASSES",
    "POSTMASTER", "NoticeTarget", "Outcome", "StatusLike", "delay_warning", "double_bounce",
    "is_double_bounce_address", "line_wrap", "mime_boundary", "non_delivery_report",
    "notice_targets", "notify_wanted", "postmaster_copy", "postmaster_notice_wanted",
    "qualify", "should_bounce", "success_action", "success_notification",
]
