"""Bounce, delay and success notices (cleanup.bounce) against Postfix 3.7.11's own output.

The golden messages below were captured from a real Postfix 3.7.11 (Debian 12) queue:
``postcat -q`` of the notices its bounce daemon posted (and, for the postmaster notices, the
bytes its smtp client sent), with the same queue ids, times and delivery results as the
inputs here.  LF in the constants stands for CRLF on the wire.
"""

from __future__ import annotations

import datetime
import email
import email.policy
from email.message import EmailMessage, Message
from typing import cast

import pytest

from postillion.cleanup import bounce
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import RecipientStatus

UTC = datetime.UTC
T1 = 1795599017  # Wed, 25 Nov 2026 09:30:17 +0000: arrival and notice time, first message
T2 = 1795599081  # 09:31:21: second and third messages
HOST = "mx.example.net"
NOTIFY_ALL = ("SUCCESS", "FAILURE", "DELAY")
ORCPT = "rfc822;Gone@Remote.test"

CONTENT_1 = (
    "Received: from client.example.org (localhost [127.0.0.1])\n"
    "\tby mx.example.net (Postfix) with ESMTP id 93E7B214030;\n"
    "\tWed, 25 Nov 2026 09:30:17 +0000 (UTC)\n"
    "From: Alice <alice@example.org>\n"
    "To: gone@remote.test\n"
    "Subject: test one\n"
    "Message-ID: <m1@example.org>\n"
    "Date: Wed, 25 Nov 2026 08:00:00 +0000\n"
    "\n"
    "Hello there.\n"
    "Second line.\n"
).replace("\n", "\r\n").encode()


def content_2(queue_id: str, rcpt: str, subject: str) -> bytes:
    return (
        "Received: from [127.0.0.1] (localhost [127.0.0.1])\n"
        f"\tby mx.example.net (Postfix) with ESMTP id {queue_id}\n"
        f"\tfor <{rcpt}>; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)\n"
        "From: Bob <bob@example.org>\n"
        "To: nouser@mx.example.net\n"
        f"Subject: {subject}\n"
        "Message-ID: <m2@example.org>\n"
        "Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)\n"
        "\n"
        "body line with café\n"
    ).replace("\n", "\r\n").encode()


def at(ts: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=UTC)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def status(rcpt: int, st: str, dsn: str, relay: str, text: str) -> RecipientStatus:
    return RecipientStatus(rcpt=rcpt, status=st, dsn=dsn, relay=relay, text=text, time=T1)


RELAY = "127.0.0.1[127.0.0.1]:10026"
NOUSER = status(1, "bounced", "5.1.1", "local", 'unknown user: "nouser"')
GONE = status(0, "bounced", "5.1.1", RELAY,
              "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <gone@remote.test>: Recipient address "
              "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)")
SLOW = status(3, "deferred", "4.2.0", RELAY,
              "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <slow@remote.test>: Recipient address "
              "rejected: Greylisted, see http://postgrey.schweikert.ch/help/remote.test.html "
              "(in reply to RCPT TO command)")
OK = status(2, "sent", "2.0.0", RELAY, "250 2.0.0 Ok: queued as FAKE1")


def envelope_1() -> Envelope:
    """MAIL FROM:<alice@example.org> RET=HDRS ENVID=QQ314159, every RCPT with NOTIFY and ORCPT."""
    rcpts = [Recipient(address=a, orcpt=ORCPT, notify=NOTIFY_ALL)
             for a in ("gone@remote.test", "nouser@mx.example.net", "ok@remote.test",
                       "slow@remote.test")]
    return Envelope(sender="alice@example.org", recipients=rcpts, ret="HDRS", envid="QQ314159",
                    arrival_time=float(T1), queue_id="93E7B214030")


def envelope_2(sender: str, rcpt: str) -> Envelope:
    return Envelope(sender=sender, recipients=[Recipient(address=rcpt)], arrival_time=float(T2))


def common(**kw: object) -> dict[str, object]:
    return {"myhostname": HOST, **kw}


def text_of(part: EmailMessage) -> str:
    """A text part's content; 8bit parts keep their CRLF in the email package."""
    return str(part.get_content()).replace("\r\n", "\n")


def parts(msg: EmailMessage) -> list[EmailMessage]:
    return [cast(EmailMessage, p) for p in msg.iter_parts()]


def blocks(report: EmailMessage) -> list[Message]:
    """The field blocks of a message/delivery-status part (per-message first)."""
    return cast(list[Message], report.get_payload())


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def failure_1(**kw: object) -> bytes | None:
    env = envelope_1()
    args: dict[str, object] = {
        "envelope": env, "content": CONTENT_1,
        "failed": [(env.recipients[1], NOUSER), (env.recipients[0], GONE)],
        "queue_id": "93E7B214030", "bounce_id": "9DBAE21403B", "now": at(T1)}
    args.update(kw)
    return bounce.non_delivery_report(**common(**args))  # type: ignore[arg-type]


# ---------------------------------------------------------------- Postfix 3.7.11 output

FAILURE_1 = '''\
Received: by mx.example.net (Postfix)
\tid 9DBAE21403B; Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Undelivered Mail Returned to Sender
To: alice@example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="93E7B214030.1795599017/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093017.9DBAE21403B@mx.example.net>

This is a MIME-encapsulated message.

--93E7B214030.1795599017/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nouser@mx.example.net>: unknown user: "nouser"

<gone@remote.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1
    <gone@remote.test>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--93E7B214030.1795599017/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Original-Envelope-Id: QQ314159
X-Postfix-Queue-ID: 93E7B214030
X-Postfix-Sender: rfc822; alice@example.org
Arrival-Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)

Final-Recipient: rfc822; nouser@mx.example.net
Original-Recipient: rfc822;Gone@Remote.test
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "nouser"

Final-Recipient: rfc822; gone@remote.test
Original-Recipient: rfc822;Gone@Remote.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: smtp; 550 5.1.1 <gone@remote.test>: Recipient address
    rejected: User unknown in virtual mailbox table

--93E7B214030.1795599017/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <alice@example.org>
Received: from client.example.org (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 93E7B214030;
\tWed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Alice <alice@example.org>
To: gone@remote.test
Subject: test one
Message-ID: <m1@example.org>
Date: Wed, 25 Nov 2026 08:00:00 +0000

--93E7B214030.1795599017/mx.example.net--
'''

SUCCESS_1 = '''\
Received: by mx.example.net (Postfix)
\tid 9E61421403C; Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Successful Mail Delivery Report
To: alice@example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="93E7B214030.1795599017/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093017.9E61421403C@mx.example.net>

This is a MIME-encapsulated message.

--93E7B214030.1795599017/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.net.

Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system

<ok@remote.test>: delivery via 127.0.0.1[127.0.0.1]:10026: 250 2.0.0 Ok: queued
    as FAKE1

--93E7B214030.1795599017/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Original-Envelope-Id: QQ314159
X-Postfix-Queue-ID: 93E7B214030
X-Postfix-Sender: rfc822; alice@example.org
Arrival-Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)

Final-Recipient: rfc822; ok@remote.test
Original-Recipient: rfc822;Gone@Remote.test
Action: relayed
Status: 2.0.0
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as FAKE1

--93E7B214030.1795599017/mx.example.net
Content-Description: Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <alice@example.org>
Received: from client.example.org (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 93E7B214030;
\tWed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Alice <alice@example.org>
To: gone@remote.test
Subject: test one
Message-ID: <m1@example.org>
Date: Wed, 25 Nov 2026 08:00:00 +0000

--93E7B214030.1795599017/mx.example.net--
'''

DELAY_1 = '''\
Received: by mx.example.net (Postfix)
\tid 9F06F21403F; Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Delayed Mail (still being retried)
To: alice@example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="93E7B214030.1795599017/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093017.9F06F21403F@mx.example.net>

This is a MIME-encapsulated message.

--93E7B214030.1795599017/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.net.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 0 hour(s).
It will be retried until it is 5 day(s) old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<slow@remote.test>: host 127.0.0.1[127.0.0.1] said: 450 4.2.0
    <slow@remote.test>: Recipient address rejected: Greylisted, see
    http://postgrey.schweikert.ch/help/remote.test.html (in reply to RCPT TO
    command)

--93E7B214030.1795599017/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Original-Envelope-Id: QQ314159
X-Postfix-Queue-ID: 93E7B214030
X-Postfix-Sender: rfc822; alice@example.org
Arrival-Date: Wed, 25 Nov 2026 09:30:17 +0000 (UTC)

Final-Recipient: rfc822; slow@remote.test
Original-Recipient: rfc822;Gone@Remote.test
Action: delayed
Status: 4.2.0
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: smtp; 450 4.2.0 <slow@remote.test>: Recipient address
    rejected: Greylisted, see
    http://postgrey.schweikert.ch/help/remote.test.html
Will-Retry-Until: Mon, 30 Nov 2026 09:30:17 +0000 (UTC)

--93E7B214030.1795599017/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <alice@example.org>
Received: from client.example.org (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 93E7B214030;
\tWed, 25 Nov 2026 09:30:17 +0000 (UTC)
From: Alice <alice@example.org>
To: gone@remote.test
Subject: test one
Message-ID: <m1@example.org>
Date: Wed, 25 Nov 2026 08:00:00 +0000

--93E7B214030.1795599017/mx.example.net--
'''

FAILURE_2 = '''\
Received: by mx.example.net (Postfix)
\tid 894EB2144C3; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Undelivered Mail Returned to Sender
To: bob@example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="840C32144C1.1795599081/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093121.894EB2144C3@mx.example.net>

This is a MIME-encapsulated message.

--840C32144C1.1795599081/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nouser@mx.example.net>: unknown user: "nouser"

--840C32144C1.1795599081/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 840C32144C1
X-Postfix-Sender: rfc822; bob@example.org
Arrival-Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

Final-Recipient: rfc822; nouser@mx.example.net
Original-Recipient: rfc822;nouser@mx.example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "nouser"

--840C32144C1.1795599081/mx.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <bob@example.org>
Received: from [127.0.0.1] (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 840C32144C1
\tfor <nouser@mx.example.net>; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Bob <bob@example.org>
To: nouser@mx.example.net
Subject: test two
Message-ID: <m2@example.org>
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

body line with café

--840C32144C1.1795599081/mx.example.net--
'''

POSTMASTER_2 = '''\
Received: by mx.example.net (Postfix)
\tid 89B822144C4; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Postmaster Copy: Undelivered Mail
To: postmaster@mx.example.net
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="840C32144C1.1795599081/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093121.89B822144C4@mx.example.net>

This is a MIME-encapsulated message.

--840C32144C1.1795599081/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit


<nouser@mx.example.net>: unknown user: "nouser"

--840C32144C1.1795599081/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 840C32144C1
X-Postfix-Sender: rfc822; bob@example.org
Arrival-Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

Final-Recipient: rfc822; nouser@mx.example.net
Original-Recipient: rfc822;nouser@mx.example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "nouser"

--840C32144C1.1795599081/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <bob@example.org>
Received: from [127.0.0.1] (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 840C32144C1
\tfor <nouser@mx.example.net>; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Bob <bob@example.org>
To: nouser@mx.example.net
Subject: test two
Message-ID: <m2@example.org>
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

--840C32144C1.1795599081/mx.example.net--
'''

DOUBLE_2 = '''\
Received: by mx.example.net (Postfix)
\tid 8AE5C2144C1; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Postmaster Copy: Undelivered Mail
To: postmaster@mx.example.net
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="84A902144C2.1795599081/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20261125093121.8AE5C2144C1@mx.example.net>

This is a MIME-encapsulated message.

--84A902144C2.1795599081/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit


<nouser2@mx.example.net>: unknown user: "nouser2"

--84A902144C2.1795599081/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 84A902144C2
X-Postfix-Sender: rfc822; MAILER-DAEMON@mx.example.net
Arrival-Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

Final-Recipient: rfc822; nouser2@mx.example.net
Original-Recipient: rfc822;nouser2@mx.example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: X-Postfix; unknown user: "nouser2"

--84A902144C2.1795599081/mx.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <MAILER-DAEMON@mx.example.net>
Received: from [127.0.0.1] (localhost [127.0.0.1])
\tby mx.example.net (Postfix) with ESMTP id 84A902144C2
\tfor <nouser2@mx.example.net>; Wed, 25 Nov 2026 09:31:21 +0000 (UTC)
From: Bob <bob@example.org>
To: nouser@mx.example.net
Subject: test three
Message-ID: <m2@example.org>
Date: Wed, 25 Nov 2026 09:31:21 +0000 (UTC)

body line with café

--84A902144C2.1795599081/mx.example.net--
'''


# ---------------------------------------------------------------- golden: Postfix 3.7.11 bytes


def success_1() -> bytes | None:
    env = envelope_1()
    return bounce.success_notification(
        envelope=env, content=CONTENT_1, delivered=[(env.recipients[2], OK)],
        queue_id="93E7B214030", bounce_id="9E61421403C", now=at(T1), myhostname=HOST)


def delay_1(**kw: object) -> bytes | None:
    env = envelope_1()
    args: dict[str, object] = {
        "envelope": env, "content": CONTENT_1, "delayed": [(env.recipients[3], SLOW)],
        "queue_id": "93E7B214030", "bounce_id": "9F06F21403F", "now": at(T1),
        "myhostname": HOST, "delay_warning_time": 1, "maximal_queue_lifetime": 5 * 86400}
    args.update(kw)
    return bounce.delay_warning(**args)  # type: ignore[arg-type]


NOUSER_2 = status(0, "bounced", "5.1.1", "local", 'unknown user: "nouser"')
NOUSER2_2 = status(0, "bounced", "5.1.1", "local", 'unknown user: "nouser2"')


def test_failure_matches_postfix_byte_for_byte() -> None:
    assert failure_1() == crlf(FAILURE_1)


def test_success_report_matches_postfix_byte_for_byte() -> None:
    assert success_1() == crlf(SUCCESS_1)


def test_delay_warning_matches_postfix_byte_for_byte() -> None:
    assert delay_1() == crlf(DELAY_1)


def test_full_return_without_ret_matches_postfix() -> None:
    env = envelope_2("bob@example.org", "nouser@mx.example.net")
    got = bounce.non_delivery_report(
        envelope=env, content=content_2("840C32144C1", "nouser@mx.example.net", "test two"),
        failed=[(env.recipients[0], NOUSER_2)], queue_id="840C32144C1",
        bounce_id="894EB2144C3", now=at(T2), myhostname=HOST)
    assert got == crlf(FAILURE_2)


def test_postmaster_copy_matches_postfix() -> None:
    env = envelope_2("bob@example.org", "nouser@mx.example.net")
    got = bounce.postmaster_copy(
        envelope=env, content=content_2("840C32144C1", "nouser@mx.example.net", "test two"),
        failed=[(env.recipients[0], NOUSER_2)], queue_id="840C32144C1",
        bounce_id="89B822144C4", now=at(T2), myhostname=HOST)
    assert got == crlf(POSTMASTER_2)


def test_double_bounce_matches_postfix() -> None:
    env = envelope_2("", "nouser2@mx.example.net")
    got = bounce.postmaster_copy(
        envelope=env, content=content_2("84A902144C2", "nouser2@mx.example.net", "test three"),
        failed=[(env.recipients[0], NOUSER2_2)], queue_id="84A902144C2",
        bounce_id="8AE5C2144C1", now=at(T2), myhostname=HOST)
    assert got == crlf(DOUBLE_2)


# ---------------------------------------------------------------- structure, parsed back


def test_failure_parses_as_multipart_report() -> None:
    data = failure_1()
    assert data is not None
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.get_boundary() == "93E7B214030.1795599017/mx.example.net"
    assert str(msg["From"]) == "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "alice@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-Id"] == "<20261125093017.9DBAE21403B@mx.example.net>"
    text, report, original = parts(msg)
    assert [p.get_content_type() for p in (text, report, original)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert text["Content-Description"] == "Notification"
    assert "<nouser@mx.example.net>: unknown user: \"nouser\"" in text_of(text)
    per_message, *per_rcpt = blocks(report)
    assert dict(per_message.items()) == {
        "Reporting-MTA": "dns; mx.example.net",
        "Original-Envelope-Id": "QQ314159",
        "X-Postfix-Queue-ID": "93E7B214030",
        "X-Postfix-Sender": "rfc822; alice@example.org",
        "Arrival-Date": "Wed, 25 Nov 2026 09:30:17 +0000 (UTC)",
    }
    assert [dict(b.items()) for b in per_rcpt] == [
        {"Final-Recipient": "rfc822; nouser@mx.example.net",
         "Original-Recipient": ORCPT,
         "Action": "failed",
         "Status": "5.1.1",
         "Diagnostic-Code": 'X-Postfix; unknown user: "nouser"'},
        {"Final-Recipient": "rfc822; gone@remote.test",
         "Original-Recipient": ORCPT,
         "Action": "failed",
         "Status": "5.1.1",
         "Remote-MTA": "dns; 127.0.0.1",
         # Folded by line_wrap(); the parser unfolds by dropping the CRLF only.
         "Diagnostic-Code": "smtp; 550 5.1.1 <gone@remote.test>: Recipient address"
                            "    rejected: User unknown in virtual mailbox table"},
    ]
    assert text_of(original).startswith("Return-Path: <alice@example.org>\n")
    assert "Hello there." not in text_of(original)


def test_ret_full_is_the_default_and_returns_the_body() -> None:
    env = envelope_1()
    env.ret = None
    data = failure_1(envelope=env, failed=[(env.recipients[1], NOUSER)])
    assert data is not None
    original = parts(parse(data))[2]
    assert original.get_content_type() == "message/rfc822"
    assert original["Content-Description"] == "Undelivered Message"
    inner = original.get_content()
    assert inner["Subject"] == "test one"
    assert inner["Return-Path"] == "<alice@example.org>"
    assert text_of(inner) == "Hello there.\nSecond line.\n"


def test_large_message_goes_back_as_headers_only() -> None:
    env = envelope_1()
    env.ret = "FULL"
    big = CONTENT_1 + b"x" * 50000 + b"\r\n"
    data = failure_1(envelope=env, content=big)
    assert data is not None
    original = parts(parse(data))[2]
    assert original.get_content_type() == "text/rfc822-headers"
    assert original["Content-Description"] == "Undelivered Message Headers"
    assert b"xxxx" not in data
    unlimited = failure_1(envelope=env, content=big, bounce_size_limit=0)
    assert unlimited is not None and b"x" * 50000 in unlimited


def test_null_sender_is_reported_as_mailer_daemon() -> None:
    env = envelope_2("", "nouser2@mx.example.net")
    data = bounce.postmaster_copy(envelope=env, content=b"Subject: x\r\n\r\nbody\r\n",
                                  failed=[(env.recipients[0], NOUSER2_2)], queue_id="ABC",
                                  bounce_id="DEF", now=at(T2), myhostname=HOST,
                                  myorigin="example.net")
    assert data is not None
    msg = parse(data)
    assert msg["To"] == "postmaster@example.net"
    assert str(msg["From"]) == "Mail Delivery System <MAILER-DAEMON@example.net>"
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["Auto-Submitted"] == "auto-generated"
    report = blocks(parts(msg)[1])[0]
    assert report["X-Postfix-Sender"] == "rfc822; MAILER-DAEMON@mx.example.net"


def test_postmaster_copy_has_no_boilerplate_and_lists_everyone() -> None:
    env = envelope_1()
    never = Recipient(address="nouser@mx.example.net", notify=("NEVER",))
    data = bounce.postmaster_copy(envelope=env, content=CONTENT_1, failed=[(never, NOUSER)],
                                  queue_id="93E7B214030", bounce_id="X1", now=at(T1),
                                  myhostname=HOST)
    assert data is not None
    text = text_of(next(iter(parts(parse(data)))))
    assert text == '\n<nouser@mx.example.net>: unknown user: "nouser"\n'
    # The sender asked for nothing: no sender notice at all.
    assert failure_1(failed=[(never, NOUSER)]) is None


def test_delay_fields_and_text() -> None:
    data = delay_1(delay_warning_time=4 * 3600, maximal_queue_lifetime=3 * 86400)
    assert data is not None
    msg = parse(data)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    text, report, original = parts(msg)
    assert "Your message could not be delivered for more than 4 hour(s).\n" \
           "It will be retried until it is 3 day(s) old.\n" in text_of(text)
    rcpt = blocks(report)[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.2.0"
    assert rcpt["Will-Retry-Until"] == "Sat, 28 Nov 2026 09:30:17 +0000 (UTC)"
    assert original.get_content_type() == "text/rfc822-headers"
    pm = delay_1(postmaster_copy=True)
    assert pm is not None and parse(pm)["Subject"] == "Postmaster Warning: Delayed Mail"


def test_success_actions() -> None:
    data = success_1()
    assert data is not None
    rcpt = blocks(parts(parse(data))[1])[1]
    assert rcpt["Action"] == "relayed"
    assert rcpt["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as FAKE1"
    local = status(2, "sent", "2.0.0", "local", "delivered to maildir")
    assert bounce.success_action(local) == "delivered"
    assert bounce.success_action(OK) == "relayed"
    lmtp = status(2, "delivered", "2.0.0", "mail.example[private/dovecot-lmtp]", "250 2.0.0 Ok")
    assert bounce.success_action(lmtp) == "delivered"
    env = envelope_1()
    plain = Recipient(address="ok@remote.test")  # no NOTIFY: no success report
    assert bounce.success_notification(envelope=env, content=CONTENT_1, delivered=[(plain, OK)],
                                       queue_id="Q", bounce_id="B", now=at(T1),
                                       myhostname=HOST) is None
    env.sender = ""
    assert bounce.success_notification(envelope=env, content=CONTENT_1,
                                       delivered=[(env.recipients[2], OK)], queue_id="Q",
                                       bounce_id="B", now=at(T1), myhostname=HOST) is None


def test_smtputf8_uses_global_types() -> None:
    env = Envelope(sender="ålice@example.org", smtputf8=True, arrival_time=float(T1),
                   recipients=[Recipient(address="björn@example.net")])
    st = status(0, "bounced", "5.1.1", "local", 'unknown user: "björn"')
    data = bounce.non_delivery_report(envelope=env, content=b"Subject: x\r\n\r\nhi\r\n",
                                      failed=[(env.recipients[0], st)], queue_id="Q1",
                                      bounce_id="B1", now=at(T1), myhostname=HOST)
    assert data is not None
    assert b"Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n" in data
    assert b"Final-Recipient: utf-8; bj\xc3\xb6rn@example.net\r\n" in data
    assert b"X-Postfix-Sender: utf-8; \xc3\xa5lice@example.org\r\n" in data
    assert b"Content-Type: message/global\r\n" in data
    assert b"To: \xc3\xa5lice@example.org\r\n" in data


def test_seven_bit_when_smtputf8_is_off() -> None:
    data = failure_1(smtputf8_enable=False)
    assert data is not None
    assert b"Content-Transfer-Encoding: 7bit\r\nMessage-Id:" in data
    assert b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" in data
    assert data.count(b"Content-Transfer-Encoding") == 1


def test_mail_name_and_control_characters() -> None:
    evil = status(1, "bounced", "5.1.1", "local", "bad\r\nX-Injected: yes")
    env = envelope_1()
    data = failure_1(failed=[(env.recipients[1], evil)], mail_name="My Mail")
    assert data is not None
    assert b"\r\nX-Injected" not in data
    assert b"Diagnostic-Code: X-My-Mail; bad??X-Injected: yes\r\n" in data
    assert b"X-My-Mail-Queue-ID: 93E7B214030\r\n" in data
    assert b"Received: by mx.example.net (My Mail)\r\n" in data


def test_mime_boundary_is_queue_id_time_host() -> None:
    assert bounce.mime_boundary("93E7B214030", at(T1), HOST) == \
        "93E7B214030.1795599017/mx.example.net"


def test_line_wrap_like_postfix() -> None:
    assert bounce.line_wrap("short") == ["short"]
    assert bounce.line_wrap("aaa bbb ccc", length=7) == ["aaa bbb", "    ccc"]
    long_word = "x" * 100
    assert bounce.line_wrap(f"Remote-MTA: {long_word}") == ["Remote-MTA:", "    " + long_word]


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize(("notify", "failure", "delay", "success"), [
    (None, True, True, False),
    (("NEVER",), False, False, False),
    (("SUCCESS",), False, False, True),
    (("FAILURE",), True, False, False),
    (("DELAY", "FAILURE"), True, True, False),
    (("SUCCESS", "FAILURE", "DELAY"), True, True, True),
])
def test_notify_wanted(notify: tuple[str, ...] | None, failure: bool, delay: bool,
                       success: bool) -> None:
    r = Recipient(address="x@example.org", notify=notify)
    assert [bounce.notify_wanted(r, k) for k in ("failure", "delay", "success")] == [
        failure, delay, success]


def test_notify_wanted_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        bounce.notify_wanted(Recipient(address="x@example.org"), "expired")


def test_should_bounce() -> None:
    assert bounce.should_bounce(Envelope(sender="a@example.org"), myorigin=HOST)
    assert not bounce.should_bounce(Envelope(sender=""), myorigin=HOST)
    assert not bounce.should_bounce(Envelope(sender="double-bounce@mx.example.net"), myorigin=HOST)
    assert not bounce.should_bounce(Envelope(sender="Double-Bounce@MX.example.net"), myorigin=HOST)
    assert bounce.should_bounce(Envelope(sender="double-bounce@elsewhere.example"), myorigin=HOST)
    assert bounce.double_bounce(Envelope(sender=""))
    assert not bounce.double_bounce(Envelope(sender="a@example.org"))


@pytest.mark.parametrize(("sender", "kind", "classes", "wanted"), [
    ("a@example.org", "failure", ["resource", "software"], False),  # Postfix default
    ("a@example.org", "failure", ["bounce"], True),
    ("a@example.org", "failure", ["2bounce"], False),
    ("", "failure", ["2bounce"], True),
    ("", "failure", ["bounce"], True),
    ("", "failure", ["resource", "software"], False),
    ("a@example.org", "delay", ["delay"], True),
    ("a@example.org", "delay", ["bounce"], False),
    ("a@example.org", "success", ["bounce", "delay", "2bounce"], False),
    ("double-bounce@mx.example.net", "failure", ["bounce", "2bounce"], False),
])
def test_postmaster_notice_wanted(sender: str, kind: str, classes: list[str], wanted: bool) -> None:
    env = Envelope(sender=sender)
    assert bounce.postmaster_notice_wanted(env, kind, classes, myorigin=HOST) is wanted


def test_notice_targets() -> None:
    T = bounce.NoticeTarget
    env = Envelope(sender="a@example.org")
    assert bounce.notice_targets(env, "failure", myorigin=HOST) == [
        T(sender="", recipient="a@example.org", postmaster_copy=False)]
    assert bounce.notice_targets(env, "failure", myorigin=HOST,
                                 notify_classes=["bounce"], bounce_notice_recipient="pm") == [
        T(sender="", recipient="a@example.org", postmaster_copy=False),
        T(sender="double-bounce@mx.example.net", recipient="pm@mx.example.net",
          postmaster_copy=True)]
    assert bounce.notice_targets(Envelope(sender=""), "failure", myorigin=HOST,
                                 notify_classes=["2bounce"],
                                 double_bounce_notice_recipient="admin@example.org") == [
        T(sender="double-bounce@mx.example.net", recipient="admin@example.org",
          postmaster_copy=True)]
    assert bounce.notice_targets(Envelope(sender=""), "failure", myorigin=HOST) == []
    assert bounce.notice_targets(env, "delay", myorigin=HOST, notify_classes=["delay"],
                                 delay_notice_recipient="late") == [
        T(sender="", recipient="a@example.org", postmaster_copy=False),
        T(sender="double-bounce@mx.example.net", recipient="late@mx.example.net",
          postmaster_copy=True)]
