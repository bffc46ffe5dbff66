"""add_missing_headers: Message-Id:, Date:, From: added at the end of the header section."""

from __future__ import annotations

import datetime

from postillion.cleanup.headers import add_missing_headers, mail_date, split_headers

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 25, 8, 13, 40, tzinfo=UTC)
KW = dict(queue_id="C9DD9160197", myhostname="mail.example.test", sender="alice@example.test", now=NOW)


def test_adds_all_three_before_the_empty_line_and_keeps_the_body() -> None:
    msg = b"Subject: hi\r\nTo: x@remote.test\r\n\r\nFrom: not a header\r\nDate: body\r\n"
    out, msgid = add_missing_headers(msg, add_from=True, **KW)
    assert out == (
        b"Subject: hi\r\nTo: x@remote.test\r\n"
        b"Message-Id: <20261125081340.C9DD9160197@mail.example.test>\r\n"
        b"Date: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"
        b"From: alice@example.test\r\n"
        b"\r\nFrom: not a header\r\nDate: body\r\n"
    )
    assert msgid == "<20261125081340.C9DD9160197@mail.example.test>"


def test_existing_headers_are_found_case_insensitively_and_unfolded() -> None:
    msg = b"message-ID:\r\n <t2@example.test>\r\nDATE: Tue, 1 Jan 2026 00:00:00 +0000\r\nfrom: a@b\r\n\r\nbody\r\n"
    out, msgid = add_missing_headers(msg, add_from=True, **KW)
    assert out == msg
    assert msgid == "<t2@example.test>"


def test_from_only_when_asked() -> None:
    msg = b"Message-ID: <m@x>\r\nDate: d\r\n\r\n"
    assert add_missing_headers(msg, add_from=False, **KW) == (msg, "<m@x>")
    out, _ = add_missing_headers(msg, add_from=True, **KW)
    assert out == b"Message-ID: <m@x>\r\nDate: d\r\nFrom: alice@example.test\r\n\r\n"


def test_null_sender_gets_mailer_daemon() -> None:
    msg = b"Message-ID: <m@x>\r\nDate: d\r\n\r\n"
    out, _ = add_missing_headers(msg, add_from=True, **{**KW, "sender": ""})
    assert b"From: MAILER-DAEMON\r\n\r\n" in out


def test_add_missing_false_only_reports() -> None:
    msg = b"Subject: x\r\n\r\nbody\r\n"
    assert add_missing_headers(msg, add_from=True, add_missing=False, **KW) == (msg, "")


def test_message_without_empty_line_gets_one_before_the_body() -> None:
    msg = b"Subject: x\r\nthis is body text\r\n"
    out, _ = add_missing_headers(msg, add_from=False, **KW)
    assert out == (
        b"Subject: x\r\n"
        b"Message-Id: <20261125081340.C9DD9160197@mail.example.test>\r\n"
        b"Date: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"
        b"\r\nthis is body text\r\n"
    )


def test_message_without_headers_and_empty_message() -> None:
    out, _ = add_missing_headers(b"just a body\r\n", add_from=False, **KW)
    assert out.startswith(b"Message-Id: <")
    assert out.endswith(b"(UTC)\r\n\r\njust a body\r\n")
    out, _ = add_missing_headers(b"", add_from=False, **KW)
    assert out == (
        b"Message-Id: <20261125081340.C9DD9160197@mail.example.test>\r\n"
        b"Date: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"
    )


def test_last_header_without_line_ending() -> None:
    out, _ = add_missing_headers(b"Message-ID: <m@x>", add_from=False, **KW)
    assert out == b"Message-ID: <m@x>\r\nDate: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"


def test_continuation_in_body_is_not_a_header() -> None:
    msg = b"Subject: a\r\n\tcontinued\r\n\r\n\tindented body\r\nMessage-ID: <body@x>\r\n"
    fields, end, sep = split_headers(msg)
    assert fields == [b"Subject: a\r\n\tcontinued\r\n"]
    assert (msg[end:end + 2], sep) == (b"\r\n", True)
    _, msgid = add_missing_headers(msg, add_from=False, add_missing=False, **KW)
    assert msgid == ""


def test_message_id_stamp_is_utc() -> None:
    cet = datetime.timezone(datetime.timedelta(hours=1), "CET")
    out, msgid = add_missing_headers(b"\r\n", add_from=False, **{**KW, "now": NOW.astimezone(cet)})
    assert msgid == "<20261125081340.C9DD9160197@mail.example.test>"
    assert b"Date: Wed, 25 Nov 2026 09:13:40 +0100 (CET)\r\n" in out


def test_bare_lf_message_keeps_lf() -> None:
    out, _ = add_missing_headers(b"Message-ID: <m@x>\nDate: d\n\nbody\n", add_from=True, **KW)
    assert out == b"Message-ID: <m@x>\nDate: d\nFrom: alice@example.test\n\nbody\n"


def test_mail_date() -> None:
    assert mail_date(datetime.datetime(2024, 3, 19, 2, 52, 29, tzinfo=UTC)) == "Tue, 19 Mar 2024 02:52:29 +0000 (UTC)"
    minus = datetime.timezone(datetime.timedelta(hours=-5), "EST")
    assert mail_date(datetime.datetime(2022, 3, 1, 2, 1, 0, tzinfo=minus)) == "Tue,  1 Mar 2022 02:01:00 -0500 (EST)"
    odd = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    assert mail_date(datetime.datetime(2022, 3, 1, 2, 1, 0, tzinfo=odd)) == "Tue,  1 Mar 2022 02:01:00 +0530"
