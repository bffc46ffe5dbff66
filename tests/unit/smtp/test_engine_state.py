"""Engine state the transcripts cannot show: notices for the log, tarpit, last command."""

from __future__ import annotations

from driver import Driver, settings_from_maincf

from postillion.smtp import Notice


def notices(d: Driver) -> list[tuple[str, str, str]]:
    return [(n.kind, n.command, n.detail) for n in d.notices]


def test_soft_error_limit_turns_on_the_tarpit() -> None:
    d = Driver(settings_from_maincf({"smtpd_soft_error_limit": "2"}))
    d.feed(b"FOO\r\n")
    assert (d.conn.error_count, d.conn.tarpit) == (1, False)
    d.feed(b"BAR\r\n")
    assert (d.conn.error_count, d.conn.tarpit) == (2, True)


def test_a_queued_message_resets_the_error_count() -> None:
    d = Driver(settings_from_maincf({}))
    d.feed(b"HELO c\r\n")
    d.feed(b"FOO\r\n")
    d.feed(b"MAIL FROM:<a@example.test>\r\n")
    d.feed(b"RCPT TO:<b@example.test>\r\n")
    d.feed(b"DATA\r\n")
    assert d.conn.error_count == 1
    d.feed(b"x\r\n.\r\n")
    assert (d.conn.error_count, d.conn.last_command) == (0, "END-OF-MESSAGE")


def test_last_command_names_the_phase_for_lost_connection_lines() -> None:
    d = Driver(settings_from_maincf({}))
    d.feed(b"EHLO c\r\n")
    assert d.conn.last_command == "EHLO"
    d.feed(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
    d.feed(b"partial")
    assert d.conn.last_command == "DATA"
    d.feed(b"")
    assert d.lost and d.conn.closing


def test_improper_pipelining_is_reported_with_the_rest_of_the_input() -> None:
    d = Driver(settings_from_maincf({}))
    d.feed(b"HELO c\r\nMAIL FROM:<a@b.test>\r\n")
    assert notices(d) == [("improper_pipelining", "HELO", "MAIL FROM:<a@b.test>\r\n")]
    assert d.text().endswith("554 5.5.0 Error: SMTP protocol synchronization\r\n")


def test_plaintext_after_starttls_is_counted_and_dropped() -> None:
    d = Driver(settings_from_maincf({"smtpd_tls_security_level": "may"}))
    d.feed(b"EHLO c\r\n")
    d.feed(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert ("discarded_after_starttls", "STARTTLS", "25") in notices(d)
    assert d.conn.tls_active and not d.conn.in_transaction and d.conn.helo_name is None


def test_notices_for_a_hostile_client() -> None:
    d = Driver(settings_from_maincf({"smtpd_hard_error_limit": "2"}))
    d.feed(b"NOOP " + b"x" * 3000 + b"\r\n")
    d.feed(b"FOO\r\n")
    assert notices(d) == [
        ("command_too_long", "UNKNOWN", ""),
        ("too_many_errors", "UNKNOWN", ""),
    ]
    d = Driver(settings_from_maincf({}))
    d.feed(b"Subject: hi\r\n")
    assert notices(d) == [("non_smtp_command", "SUBJECT:", "Subject: hi")]
    assert all(isinstance(n, Notice) for n in d.notices)


def test_bare_lf_in_strict_mode_is_reported() -> None:
    d = Driver(settings_from_maincf({"smtpd_forbid_bare_newline": "strict"}))
    d.feed(b"HELO c\n")
    assert notices(d) == [("bare_lf", "CONNECT", "")]
    assert d.conn.closing


def test_ehlo_and_helo_replies_come_from_the_settings() -> None:
    d = Driver(
        settings_from_maincf({"myhostname": "mx.test", "message_size_limit": "0"})
    )
    assert d.conn.helo_reply().lines() == ["250 mx.test"]
    assert d.conn.ehlo_reply().lines()[:3] == [
        "250-mx.test",
        "250-PIPELINING",
        "250-SIZE",
    ]
