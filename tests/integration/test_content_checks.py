"""header_checks / body_checks / always_bcc at queue time, through a real server and smtplib.

The server has no queue manager, so accepted mail stays where cleanup put it (incoming/ or
hold/) for the test to read.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, Server, cleanup, make_server, postillion

from postillion.queue.record import decode

HEADER_CHECKS = r"""/^Subject: reject me/      REJECT
/^Subject: reject text/    REJECT 5.7.0 no thanks
/^Subject: hold me/        HOLD held for review
/^Subject: discard me/     DISCARD
/^Subject: (tag me)/       REPLACE Subject: [tagged] $1
/^X-Drop:/                 IGNORE
/^Subject: redirect me/    REDIRECT boss@example.org
/^From:/                   PREPEND X-Checked: yes
"""
BODY_CHECKS = "/^bad body/ REJECT 5.7.1 body rejected\n/^warn body/ WARN looked at it\n"
RCPT = f"root@{HOSTNAME}"
TAIL = (f"from localhost[127.0.0.1]; from=<a@example.net> to=<{RCPT}> proto=ESMTP "
        f"helo=<client.example>")


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = make_server({"header_checks": "regexp:header_checks", "body_checks": "pcre:body_checks",
                          "always_bcc": "archive@example.org"})
    (server.config_dir / "header_checks").write_text(HEADER_CHECKS)
    (server.config_dir / "body_checks").write_text(BODY_CHECKS)
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


def send(srv: Server, subject: str, body: str = "hello\r\n", extra: str = "") -> tuple[str, int]:
    msg = f"Subject: {subject}\r\nFrom: a@example.net\r\n{extra}\r\n{body}".encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="client.example", timeout=10) as c:
        c.ehlo()
        c.mail("a@example.net")
        c.rcpt(RCPT)
        code, text = c.data(msg)
    return text.decode(), code


def queued(srv: Server, reply: str, queue: str = "incoming") -> tuple[object, bytes]:
    queue_id = reply.rsplit(" ", 1)[1]
    return decode((srv.config_dir / "data" / "spool" / queue / queue_id).read_bytes())


def test_reject_default_and_text(srv: Server) -> None:
    start = srv.mark()
    assert send(srv, "reject me") == ("5.7.1 message content rejected", 550)
    assert send(srv, "reject text") == ("5.7.0 no thanks", 550)
    srv.settle()
    lines = [line for line in srv.log_lines(start) if line.startswith("postfix/cleanup:")]
    assert [line.split(": ", 2)[2] for line in lines] == [
        f"reject: header Subject: reject me {TAIL}: 5.7.1 message content rejected",
        f"reject: header Subject: reject text {TAIL}: 5.7.0 no thanks",
    ]
    assert srv.queue_ids() == set()  # nothing was queued for either


def test_body_reject(srv: Server) -> None:
    assert send(srv, "ok", body="bad body here\r\n") == ("5.7.1 body rejected", 550)


def test_hold_lands_in_hold_and_queue_shows_bang(srv: Server) -> None:
    start = srv.mark()
    reply, code = send(srv, "hold me")
    assert code == 250
    queue_id = reply.rsplit(" ", 1)[1]
    assert (srv.config_dir / "data" / "spool" / "hold" / queue_id).exists()
    assert queue_id not in srv.queue_ids()
    listing = postillion(srv.config_dir, "queue").stdout
    assert f"{queue_id}!" in listing
    srv.wait_for_log(rf"postfix/cleanup\[\d+\]: {queue_id}: hold: header Subject: hold me "
                     rf".*: held for review$", start=start)


def test_discard_keeps_nothing(srv: Server) -> None:
    start = srv.mark()
    before = srv.queue_ids()
    reply, code = send(srv, "discard me")
    assert code == 250 and reply.startswith("2.0.0 Ok: queued as ")
    queue_id = reply.rsplit(" ", 1)[1]
    assert srv.queue_ids() == before
    assert not any((srv.config_dir / "data" / "spool" / q / queue_id).exists()
                   for q in ("incoming", "hold", "active", "deferred"))
    srv.wait_for_log(rf"{queue_id}: discard: header Subject: discard me {re.escape(TAIL)}$",
                     start=start)


def test_replace_ignore_prepend_and_always_bcc(srv: Server) -> None:
    start = srv.mark()
    reply, code = send(srv, "tag me", extra="X-Drop: secret\r\n", body="warn body\r\n")
    assert code == 250
    env, content = queued(srv, reply)
    headers = content.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nSubject: [tagged] tag me\r\nX-Checked: yes\r\nFrom: a@example.net\r\n" in headers
    assert b"X-Drop" not in content
    assert [(r.address, r.notify) for r in env.recipients] == [
        (RCPT, None), ("archive@example.org", ("NEVER",))]
    srv.wait_for_log(r"warning: body warn body .*: looked at it$", start=start)


def test_redirect_replaces_recipients(srv: Server) -> None:
    reply, code = send(srv, "redirect me")
    assert code == 250
    env, _ = queued(srv, reply)
    assert [r.address for r in env.recipients] == ["boss@example.org", "archive@example.org"]


def test_sendmail_reject_bounces_to_the_sender() -> None:
    """Local mail cannot get a 5xx: pickup's cleanup bounces it, as Postfix does for pickup."""
    import os
    import subprocess
    import sys
    import time

    from harness import free_port

    server = make_server({"header_checks": "regexp:header_checks",
                          "relayhost": f"[127.0.0.1]:{free_port()}"}, qmgr=True)  # nobody listens
    (server.config_dir / "header_checks").write_text(HEADER_CHECKS)
    server.start()
    try:
        maildrop = server.config_dir / "data" / "spool" / "maildrop"
        deadline = time.monotonic() + 20
        while not maildrop.is_dir():
            assert time.monotonic() < deadline, "no maildrop directory"
            time.sleep(0.05)
        start = server.mark()
        done = subprocess.run(
            [sys.executable, "-m", "postillion", "-c", str(server.config_dir), "sendmail",
             "-f", "someone@example.net", "boss@example.org"],
            input=b"Subject: reject me\nFrom: someone@example.net\n\nhello\n",
            capture_output=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=60)
        assert done.returncode == 0, done.stderr
        found = server.wait_for_log(r"postfix/bounce\[\d+\]: (\w+): sender non-delivery "
                                    r"notification: (\w+)$", start=start)
        old_id, new_id = found.groups()
        lines = server.log_lines(start)
        assert (f"postfix/cleanup: {old_id}: reject: header Subject: reject me from local; "
                "from=<someone@example.net> to=<boss@example.org>: 5.7.1 message content rejected"
                ) in [re.sub(r"\[\d+\]", "", x) for x in lines]
        # the notice waits for the (absent) relayhost: read it from the queue
        deadline = time.monotonic() + 20
        spool = server.config_dir / "data" / "spool"
        while not any((spool / q / new_id).exists() for q in ("incoming", "active", "deferred")):
            assert time.monotonic() < deadline, "notice not queued"
            time.sleep(0.05)
        path = next(spool / q / new_id for q in ("incoming", "active", "deferred")
                    if (spool / q / new_id).exists())
        envelope, content = decode(path.read_bytes())
        assert envelope.sender == ""
        assert [r.address for r in envelope.recipients] == ["someone@example.net"]
        assert b"Content-Type: message/delivery-status" in content
        assert b"Final-Recipient: rfc822; boss@example.org" in content
        assert b"Status: 5.7.1" in content
        assert b"Diagnostic-Code: X-Postfix; message content rejected" in content
    finally:
        cleanup(server)


def test_skipped_rule_is_logged_by_cleanup() -> None:
    """A rule the table skips is logged as Postfix's cleanup does when it opens the map: once
    per process that inspects mail, not once per message."""
    server = make_server({"header_checks": "regexp:header_checks"})
    (server.config_dir / "header_checks").write_text("/^Subject: (.*)/ WARN $2\n/^Subject: reject me/ REJECT\n")
    server.start()
    try:
        start = server.mark()
        for _ in range(4):
            assert send(server, "ok")[1] == 250
        assert send(server, "reject me") == ("5.7.1 message content rejected", 550)
        server.settle()
        expected = (f"warning: regexp map {server.config_dir / 'header_checks'}, line 1: "
                    'out of range replacement index "2": skipping this rule')
        logged = [x for x in server.log_lines(start) if x.endswith(expected)]
        assert logged and all(re.match(r"postfix/cleanup(\[\d+\])?: ", x) for x in logged)
        assert len(logged) == 1  # one smtpd worker (the harness default): logged once
    finally:
        cleanup(server)
