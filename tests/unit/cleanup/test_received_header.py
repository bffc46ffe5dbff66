"""Received: header bytes, compared with live Postfix 3.7 output."""

from __future__ import annotations

import datetime

from postillion.cleanup.received import received_header

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 25, 8, 13, 53, tzinfo=UTC)
TLS13 = (
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
    "server-signature RSA-PSS (2048 bits) server-digest SHA256"
)


def hdr(**kw) -> bytes:
    base = dict(
        helo="client.example.test", client_name="localhost", client_addr="127.0.0.1",
        tls_description=None, tls_received_header=False, sasl_username=None,
        myhostname="mail.example.test", protocol="ESMTP", queue_id="8EEC4160045",
        single_recipient="x@remote.test", now=NOW,
    )
    base.update(kw)
    return received_header(**base)


def test_live_postfix_tls_and_sasl_header() -> None:
    got = hdr(tls_description=TLS13, tls_received_header=True, sasl_username="alice", protocol="ESMTPSA")
    assert got == (
        b"Received: from client.example.test (localhost [127.0.0.1])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
        b"\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
        b"\t(No client certificate requested)\r\n"
        b"\t(Authenticated sender: alice)\r\n"
        b"\tby mail.example.test (Postfix) with ESMTPSA id 8EEC4160045\r\n"
        b"\tfor <x@remote.test>; Wed, 25 Nov 2026 08:13:53 +0000 (UTC)\r\n"
    )


def test_tls_without_key_exchange_details() -> None:
    got = hdr(tls_description="TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
              tls_received_header=True, protocol="ESMTPS")
    assert got == (
        b"Received: from client.example.test (localhost [127.0.0.1])\r\n"
        b"\t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n"
        b"\t(No client certificate requested)\r\n"
        b"\tby mail.example.test (Postfix) with ESMTPS id 8EEC4160045\r\n"
        b"\tfor <x@remote.test>; Wed, 25 Nov 2026 08:13:53 +0000 (UTC)\r\n"
    )


def test_tls_is_not_mentioned_without_smtpd_tls_received_header() -> None:
    got = hdr(tls_description=TLS13, tls_received_header=False, protocol="ESMTPS")
    assert b"using" not in got and b"certificate" not in got
    assert b"\tby mail.example.test (Postfix) with ESMTPS id 8EEC4160045\r\n" in got


def test_several_recipients_put_the_date_on_its_own_line() -> None:
    got = hdr(single_recipient=None, client_name=None, helo="h", client_addr="192.0.2.1",
              mail_name="Postillion", protocol="SMTP")
    assert got == (
        b"Received: from h (unknown [192.0.2.1])\r\n"
        b"\tby mail.example.test (Postillion) with SMTP id 8EEC4160045;\r\n"
        b"\tWed, 25 Nov 2026 08:13:53 +0000 (UTC)\r\n"
    )


def test_no_helo_uses_the_client_name_and_ipv6_gets_its_tag() -> None:
    got = hdr(helo=None, client_name="localhost", client_addr="::1")
    assert got.startswith(b"Received: from localhost (localhost [IPv6:::1])\r\n")


def test_single_digit_day_is_space_padded_and_local_zone_named() -> None:
    cet = datetime.timezone(datetime.timedelta(hours=2), "CEST")
    got = hdr(now=datetime.datetime(2025, 9, 1, 22, 16, 51, tzinfo=cet))
    assert got.endswith(b"\tfor <x@remote.test>; Mon,  1 Sep 2025 22:16:51 +0200 (CEST)\r\n")


def test_hostile_client_text_cannot_break_the_header() -> None:
    got = hdr(helo="evil)\r\nX-Injected: 1 (", sasl_username="bob (admin)",
              single_recipient='we"ird user@example.test')
    assert got.count(b"\r\n") == 4
    assert b"Received: from evil\\)??X-Injected: 1 \\( (localhost [127.0.0.1])\r\n" in got
    assert b"\t(Authenticated sender: bob \\(admin\\))\r\n" in got
    assert b'\tfor <"we\\"ird user"@example.test>; ' in got
