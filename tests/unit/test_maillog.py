"""maillog: Postfix's exact log texts (live Postfix 3.7 lines, docs/reference)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postillion import replies
from postillion.maillog import (
    CommandCounters,
    MailLog,
    MemorySink,
    TeeSink,
    client_id,
    escape_bytes,
    printable,
)

C = "localhost[127.0.0.1]"


def make(syslog_name: str = "postfix/submission") -> tuple[MailLog, MemorySink]:
    sink = MemorySink()
    return MailLog(syslog_name, "smtpd", sink=sink, pid=17362), sink


def counters(*cmds: tuple[str, bool]) -> CommandCounters:
    c = CommandCounters()
    for name, ok in cmds:
        c.record(name, ok)
    return c


def test_connect_line_with_tag_and_pid() -> None:
    log, sink = make()
    log.connect(C)
    assert sink.lines == ["postfix/submission/smtpd[17362]: connect from localhost[127.0.0.1]"]


def test_client_id() -> None:
    assert client_id("localhost", "127.0.0.1") == "localhost[127.0.0.1]"
    assert client_id(None, "192.0.2.1") == "unknown[192.0.2.1]"
    assert client_id("c.example", "192.0.2.1", 4711) == "c.example[192.0.2.1]"
    assert client_id("c.example", "192.0.2.1", 4711, port_logging=True) == "c.example[192.0.2.1]:4711"
    assert client_id("::1", "::1") == "::1[::1]"


@pytest.mark.parametrize(
    ("cmds", "summary"),
    [
        (
            [("EHLO", True), ("STARTTLS", True), ("EHLO", True), ("AUTH", True), ("MAIL", True),
             ("RCPT", True), ("DATA", True), ("QUIT", True)],
            "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
        ),
        (
            [("EHLO", True), ("STARTTLS", True), ("EHLO", True)] + [("AUTH", False)] * 5
            + [("MAIL", True), ("MAIL", False), ("MAIL", True), ("MAIL", False)]
            + [("RCPT", False)] * 2 + [("DATA", False), ("RSET", True), ("BOGUS", False)],
            "ehlo=2 starttls=1 auth=0/5 mail=2/4 rcpt=0/2 data=0/1 rset=1 unknown=0/1 commands=6/17",
        ),
        (
            [("HELO", True), ("AUTH", False), ("AUTH", False), ("MAIL", True), ("RCPT", False),
             ("NOOP", True), ("VRFY", False), ("ETRN", False), ("QUIT", True), ("GET", False)],
            "helo=1 auth=0/2 mail=1 rcpt=0/1 noop=1 vrfy=0/1 etrn=0/1 quit=1 unknown=0/1 commands=4/10",
        ),
        ([("ehlo", True), ("auth", False)], "ehlo=1 auth=0/1 commands=1/2"),
        ([], "commands=0/0"),
    ],
)
def test_disconnect_summary_matches_live_postfix(cmds, summary: str) -> None:
    log, sink = make()
    log.disconnect(C, counters(*cmds))
    assert sink.texts() == [f"disconnect from localhost[127.0.0.1] {summary}"]


def test_counter_order_is_the_command_table_order() -> None:
    c = counters(("QUIT", True), ("HELP", True), ("BDAT", True), ("XCLIENT", True), ("XFORWARD", True))
    assert c.summary() == "xclient=1 xforward=1 bdat=1 quit=1 help=1 commands=5"
    assert c.counts("bdat") == (1, 1)


def test_tls_established() -> None:
    log, sink = make()
    log.tls_established(C, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
    assert sink.texts() == [
        "Anonymous TLS connection established from localhost[127.0.0.1]: "
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    ]


def test_queued_client() -> None:
    log, sink = make()
    log.queued_client("4jZC9w0SM3zBrKl", C, "PLAIN", "alice")
    log.queued_client("C9DD9160197", "c.example[192.0.2.1]")
    log.queued_client("C9DD9160197", C, "PLAIN", "alice", "bob@example.test")
    assert sink.texts() == [
        "4jZC9w0SM3zBrKl: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
        "C9DD9160197: client=c.example[192.0.2.1]",
        "C9DD9160197: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice, "
        "sasl_sender=bob@example.test",
    ]


def test_reject_lines() -> None:
    log, sink = make()
    relay = replies.Reply(code=554, enhanced="5.7.1", text="<x@remote.test>: Relay access denied")
    log.reject(None, "RCPT", C, relay, sender="alice@example.test", recipient="x@remote.test",
               proto="ESMTP", helo="c")
    log.reject(None, "MAIL", C, replies.SIZE_EXCEEDED, sender="alice@example.test", proto="ESMTP",
               helo="client.example.test")
    log.reject("C9DD9160197", "RCPT", C, "450 4.1.1 <y>: Recipient address rejected: x",
               sender="", recipient="y", proto="SMTP", helo="h")
    assert sink.texts() == [
        "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <x@remote.test>: Relay access "
        "denied; from=<alice@example.test> to=<x@remote.test> proto=ESMTP helo=<c>",
        "NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 552 5.3.4 Message size exceeds fixed "
        "limit; from=<alice@example.test> proto=ESMTP helo=<client.example.test>",
        "C9DD9160197: reject: RCPT from localhost[127.0.0.1]: 450 4.1.1 <y>: Recipient address "
        "rejected: x; from=<> to=<y> proto=SMTP helo=<h>",
    ]


def test_reject_of_multiline_reply_logs_first_line() -> None:
    log, sink = make()
    reply = replies.Reply(code=550, enhanced="5.7.1", text="first", more=("second",))
    log.reject(None, "CONNECT", C, reply)
    assert sink.texts() == ["NOQUEUE: reject: CONNECT from localhost[127.0.0.1]: 550 5.7.1 first;"]


def test_sasl_warnings() -> None:
    log, sink = make()
    log.sasl_auth_failed(C, "PLAIN", "authentication failure", "alice")
    log.sasl_auth_failed(C, "FOO", "no mechanism available", None)
    log.sasl_failed(C, "SASL PLAIN authentication failed: bad protocol / cancel, sasl_username=(unavailable)")
    log.sasl_aborted(C, "LOGIN")
    log.sasl_backend_failure("cannot connect to saslauthd server: Permission denied")
    assert sink.texts() == [
        "warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice",
        "warning: localhost[127.0.0.1]: SASL FOO authentication failed: no mechanism available, sasl_username=(unavailable)",
        "warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: bad protocol / cancel, sasl_username=(unavailable)",
        "warning: localhost[127.0.0.1]: SASL LOGIN authentication aborted",
        "warning: SASL authentication failure: cannot connect to saslauthd server: Permission denied",
    ]


def test_abnormal_session_ends() -> None:
    log, sink = make()
    log.lost_connection(C, "AUTH")
    log.lost_connection(C, "CONNECT")
    log.lost_connection(C, "DATA", 12)
    log.timeout(C, "BDAT")
    log.too_many_errors(C, "DATA")
    assert sink.texts() == [
        "lost connection after AUTH from localhost[127.0.0.1]",
        "lost connection after CONNECT from localhost[127.0.0.1]",
        "lost connection after DATA (12 bytes) from localhost[127.0.0.1]",
        "timeout after BDAT from localhost[127.0.0.1]",
        "too many errors after DATA from localhost[127.0.0.1]",
    ]


def test_improper_pipelining_is_escaped_and_truncated() -> None:
    log, sink = make()
    log.improper_pipelining(C, "HELO", b"MAIL FROM:<a@b.test>\r\n")
    log.improper_pipelining(C, "DATA", b"x" * 150)
    log.improper_pipelining(C, "EHLO", b"a\\b\x00\xff\t")
    assert sink.texts() == [
        "improper command pipelining after HELO from localhost[127.0.0.1]: MAIL FROM:<a@b.test>\\r\\n",
        "improper command pipelining after DATA from localhost[127.0.0.1]: " + "x" * 100,
        "improper command pipelining after EHLO from localhost[127.0.0.1]: a\\\\b\\000\\377\\t",
    ]


def test_non_smtp_command() -> None:
    log, sink = make()
    log.non_smtp_command(C, "Subject: hi")
    log.non_smtp_command(C, b"GET / HTTP/1.0\x1b[31m" + b"y" * 200)
    assert sink.texts() == [
        "warning: non-SMTP command from localhost[127.0.0.1]: Subject: hi",
        "warning: non-SMTP command from localhost[127.0.0.1]: GET / HTTP/1.0?[31m" + "y" * 81,
    ]


def test_message_id_is_logged_by_cleanup_under_the_main_syslog_name() -> None:
    log, sink = make()
    log.message_id("4jZC9w0SM3zBrKl", "<t2@example.test>")
    log.message_id("4jZC9w0SM3zBrKl", "")
    assert sink.lines == [
        "postfix/cleanup[17362]: 4jZC9w0SM3zBrKl: message-id=<t2@example.test>",
        "postfix/cleanup[17362]: 4jZC9w0SM3zBrKl: message-id=<>",
    ]


def test_severities_and_line_safety() -> None:
    log, sink = make("postfix")
    log.info("daemon started")
    log.warning("w")
    log.error("e")
    log.fatal("f")
    log.info("two\r\nlines")
    assert sink.lines == [
        "postfix/smtpd[17362]: daemon started",
        "postfix/smtpd[17362]: warning: w",
        "postfix/smtpd[17362]: error: e",
        "postfix/smtpd[17362]: fatal: f",
        "postfix/smtpd[17362]: two\\r\\nlines",
    ]


def test_panic_logs_exception_and_traceback() -> None:
    log, sink = make()
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log.panic("unexpected error in session", exc)
    texts = sink.texts()
    assert texts[0] == "panic: unexpected error in session: ValueError: boom"
    assert texts[1] == "panic: Traceback (most recent call last):"
    assert texts[-1] == "panic: ValueError: boom"
    assert all(t.startswith("panic: ") for t in texts)


def test_limit_exceeded() -> None:
    log, sink = make()
    log.limit_exceeded("Connection rate", 3, C, "127.0.0.1:2527")
    assert sink.texts() == [
        "warning: Connection rate limit exceeded: 3 from localhost[127.0.0.1] for service 127.0.0.1:2527"
    ]


def test_helpers() -> None:
    assert escape_bytes(b"\x07\x08\x0b\x0c") == "\\a\\b\\v\\f"
    assert printable("j\u00f6rg\x7f\x01") == "j\u00f6rg??"
    assert printable(b"\xff") == "?"
    assert printable("x" * 600) == "x" * 512


def test_tee_sink_and_file_output_format(tmp_path: Path) -> None:
    from postillion.server.proclog import LogSinks

    logfile = tmp_path / "maillog"
    file_sinks = LogSinks(maillog_file=logfile, syslog=False, hostname="mail")
    memory = MemorySink()
    log = MailLog("postfix/submission", sink=TeeSink(file_sinks, memory), pid=17362)
    log.connect(C)
    log.connect("b[192.0.2.2]")
    file_sinks.close()
    lines = logfile.read_text().splitlines()
    prefix = r"[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d mail postfix/submission/smtpd\[17362\]: "
    assert re.fullmatch(prefix + re.escape("connect from localhost[127.0.0.1]"), lines[0])
    assert re.fullmatch(prefix + re.escape("connect from b[192.0.2.2]"), lines[1])
    assert len(lines) == 2 and len(memory.lines) == 2
