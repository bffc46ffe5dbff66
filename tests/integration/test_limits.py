"""Limits on a real running server: message size, idle timeout, the AUTH rate limit (anvil),
the error tarpit and the hard error limit.

One server for the module; each limit lives on its own master.cf service (`-o` overrides), so
the tests do not disturb each other and anvil counts per service as Postfix does.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, PASSWORD, Server, Wire, cleanup, make_server, postillion

HELO = "client.example.test"
BANNER = f"220 {HOSTNAME} ESMTP Postfix"

MASTER = """\
127.0.0.1:{small} inet n - n - - smtpd
  -o syslog_name=postfix/small
  -o message_size_limit=1000
127.0.0.1:{slow} inet n - n - - smtpd
  -o syslog_name=postfix/slow
  -o smtpd_timeout=2s
127.0.0.1:{authrate} inet n - n - - smtpd
  -o syslog_name=postfix/authrate
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_auth_rate_limit=2
127.0.0.1:{tarpit} inet n - n - - smtpd
  -o syslog_name=postfix/tarpit
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_error_sleep_time=1s
127.0.0.1:{hard} inet n - n - - smtpd
  -o syslog_name=postfix/hard
  -o smtpd_hard_error_limit=3
127.0.0.1:{noauth} inet n - n - - smtpd
  -o syslog_name=postfix/noauth
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_exceptions_networks=127.0.0.2
"""


def plain(password: str) -> str:
    return base64.b64encode(f"\0alice\0{password}".encode()).decode()


@pytest.fixture(scope="module")
def limits() -> Iterator[Server]:
    # Empty exceptions: loopback is rate limited too (the default is $mynetworks).
    server = make_server(main={"smtpd_client_event_limit_exceptions": ""}, master=MASTER)
    # This master.cf does not use the submission recipe's $mua_* lists.
    postillion(server.config_dir, "postconf", "-X", "mua_client_restrictions",
               "mua_helo_restrictions", "mua_sender_restrictions")
    server.add_user("alice")
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


@pytest.fixture
def srv(limits: Server) -> Server:
    limits.settle()
    return limits


def open_session(srv: Server, service: str) -> Wire:
    w = Wire(srv.ports[service])
    assert w.reply() == BANNER
    assert w.cmd(f"EHLO {HELO}").startswith(f"250-{HOSTNAME}\n")
    return w


def test_message_size_limit(srv: Server) -> None:
    mark = srv.mark()
    before = srv.queue_ids()
    with Wire(srv.ports["small"]) as w:
        assert w.reply() == BANNER
        assert "250-SIZE 1000" in w.cmd(f"EHLO {HELO}").split("\n")
        # Declared too big: refused at MAIL.
        assert w.cmd("MAIL FROM:<a@example.net> SIZE=1001") == "552 5.3.4 Message size exceeds fixed limit"
        # Not declared: refused after the data, and nothing is queued.
        assert w.cmd("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
        assert w.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        assert w.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        w.send(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 20 + b".\r\n")
        assert w.reply() == "552 5.3.4 Message size exceeds fixed limit"
        # The session goes on.
        assert w.cmd("MAIL FROM:<a@example.net> SIZE=100") == "250 2.1.0 Ok"
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    assert srv.queue_ids() == before
    srv.wait_for_disconnect(mark, "postfix/small")
    lines = srv.log_lines(mark)
    queue_id = lines[2].split(":")[1].strip()
    assert re.fullmatch(r"[0-9A-F]{6,}", queue_id), lines
    assert lines == [
        "postfix/small/smtpd: connect from localhost[127.0.0.1]",
        ("postfix/small/smtpd: NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 552 5.3.4 Message size "
         f"exceeds fixed limit; from=<a@example.net> proto=ESMTP helo=<{HELO}>"),
        f"postfix/small/smtpd: {queue_id}: client=localhost[127.0.0.1]",
        "postfix/small/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=2/3 rcpt=1 data=0/1 quit=1 commands=5/7",
    ]


def test_idle_timeout(srv: Server) -> None:
    """Two sessions at once, idle after EHLO and in the middle of DATA: both get the 421."""
    mark = srv.mark()
    with Wire(srv.ports["slow"]) as idle, Wire(srv.ports["slow"]) as in_data:
        assert idle.reply() == BANNER
        assert in_data.reply() == BANNER
        assert idle.cmd(f"EHLO {HELO}").endswith("250 CHUNKING")
        assert in_data.cmd(f"EHLO {HELO}").endswith("250 CHUNKING")
        assert in_data.cmd("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
        assert in_data.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        assert in_data.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        in_data.send("Subject: x\r\n")  # 12 bytes, then silence
        started = time.monotonic()
        timeout = f"421 4.4.2 {HOSTNAME} Error: timeout exceeded"
        assert idle.reply() == timeout
        assert in_data.reply() == timeout
        assert time.monotonic() - started >= 1.5
        assert idle.closed() and in_data.closed()
    srv.wait_for_log(r"disconnect from .*\n(.*\n)*.*disconnect from ", start=mark)
    lines = sorted(srv.log_lines(mark))
    queue_id = next(line.split(": ")[1] for line in lines if "client=" in line)
    assert lines == sorted([
        "postfix/slow/smtpd: connect from localhost[127.0.0.1]",
        "postfix/slow/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/slow/smtpd: {queue_id}: client=localhost[127.0.0.1]",
        "postfix/slow/smtpd: timeout after EHLO from localhost[127.0.0.1]",
        "postfix/slow/smtpd: timeout after DATA (12 bytes) from localhost[127.0.0.1]",
        "postfix/slow/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 commands=1",
        "postfix/slow/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
    ])


def test_auth_rate_limit_across_connections(srv: Server) -> None:
    mark = srv.mark()
    service = f"127.0.0.1:{srv.ports['authrate']}"
    too_many = "450 4.7.1 Error: too many AUTH commands from 127.0.0.1"
    with open_session(srv, "authrate") as w:
        failed = "535 5.7.8 Error: authentication failed: authentication failure"
        assert w.cmd(f"AUTH PLAIN {plain('wrong1')}") == failed
        assert w.cmd(f"AUTH PLAIN {plain('wrong2')}") == failed
        # The third within the minute is refused before the password is even looked at.
        assert w.cmd(f"AUTH PLAIN {plain(PASSWORD)}") == too_many
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    with open_session(srv, "authrate") as w:
        assert w.cmd(f"AUTH PLAIN {plain(PASSWORD)}") == too_many
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    srv.wait_for_log(r"disconnect from .*\n(.*\n)*.*disconnect from ", start=mark)
    sasl_failed = ("postfix/authrate/smtpd: warning: localhost[127.0.0.1]: SASL PLAIN authentication "
                   "failed: authentication failure, sasl_username=alice")
    assert srv.log_lines(mark) == [
        "postfix/authrate/smtpd: connect from localhost[127.0.0.1]",
        sasl_failed,
        sasl_failed,
        f"postfix/authrate/smtpd: warning: AUTH command rate limit exceeded: 3 from localhost[127.0.0.1] for service {service}",
        "postfix/authrate/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 auth=0/3 quit=1 commands=2/5",
        "postfix/authrate/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/authrate/smtpd: warning: AUTH command rate limit exceeded: 4 from localhost[127.0.0.1] for service {service}",
        "postfix/authrate/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 auth=0/1 quit=1 commands=2/3",
    ]


def test_failed_auth_is_delayed_by_error_sleep_time(srv: Server) -> None:
    mark = srv.mark()
    with open_session(srv, "tarpit") as w:
        started = time.monotonic()
        reply = w.cmd(f"AUTH PLAIN {plain('wrong')}")
        elapsed = time.monotonic() - started
        assert reply == "535 5.7.8 Error: authentication failed: authentication failure"
        assert elapsed >= 0.9, elapsed
        assert w.cmd(f"AUTH PLAIN {plain(PASSWORD)}") == "235 2.7.0 Authentication successful"
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    srv.wait_for_disconnect(mark, "postfix/tarpit")
    assert srv.log_lines(mark) == [
        "postfix/tarpit/smtpd: connect from localhost[127.0.0.1]",
        ("postfix/tarpit/smtpd: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: "
         "authentication failure, sasl_username=alice"),
        "postfix/tarpit/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 auth=1/2 quit=1 commands=3/4",
    ]


def test_hard_error_limit(srv: Server) -> None:
    mark = srv.mark()
    with open_session(srv, "hard") as w:
        assert w.cmd("FOO") == "500 5.5.2 Error: command not recognized"
        assert w.cmd("BAR") == "500 5.5.2 Error: command not recognized"
        # The third error reaches the limit: its reply, then the 421 without another command.
        assert w.cmd("BAZ") == "500 5.5.2 Error: command not recognized"
        assert w.reply() == f"421 4.7.0 {HOSTNAME} Error: too many errors"
        assert w.closed()
    srv.wait_for_disconnect(mark, "postfix/hard")
    assert srv.log_lines(mark) == [
        "postfix/hard/smtpd: connect from localhost[127.0.0.1]",
        "postfix/hard/smtpd: too many errors after UNKNOWN from localhost[127.0.0.1]",
        "postfix/hard/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 unknown=0/3 commands=1/4",
    ]


def test_sasl_exceptions_networks_hide_auth(srv: Server) -> None:
    """smtpd_sasl_exceptions_networks: those clients are neither offered nor allowed AUTH."""
    ehlo = "EHLO " + HELO
    with Wire(srv.ports["noauth"], source="127.0.0.2") as w:
        assert w.reply() == BANNER
        assert [line[4:] for line in w.cmd(ehlo).splitlines()][4:6] == ["ETRN", "STARTTLS"]
        assert "AUTH" not in w.cmd(ehlo)
        assert w.cmd(f"AUTH PLAIN {plain(PASSWORD)}") == "503 5.5.1 Error: authentication not enabled"
    with Wire(srv.ports["noauth"], source="127.0.0.1") as w:
        assert w.reply() == BANNER
        assert [line[4:] for line in w.cmd(ehlo).splitlines()][4:7] == ["ETRN", "STARTTLS", "AUTH SCRAM-SHA-256 PLAIN LOGIN"]
        assert w.cmd(f"AUTH PLAIN {plain(PASSWORD)}") == "235 2.7.0 Authentication successful"
