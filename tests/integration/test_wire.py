"""What only a raw socket can send: BDAT/CHUNKING, a pipelined MAIL/RCPT/DATA group, STARTTLS
with injected plaintext (CVE-2011-0411), and SMTP smuggling (`<LF>.<CR><LF>`).

All on port 25 from 127.0.0.1 (in mynetworks, so relaying is permitted) of the shared default
server; each test checks the exact replies, the queue and the whole log of its session.
"""

from __future__ import annotations

import re

import pytest
from harness import HOSTNAME, Server, Wire

HELO = "client.example.test"
BANNER = f"220 {HOSTNAME} ESMTP Postfix"
QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{6,})")
RECEIVED = re.compile(
    rb"Received: from client\.example\.test \(localhost \[127\.0\.0\.1\]\)\r\n"
    rb"\tby mail\.example\.test \(Postfix\) with (ESMTPS?) id ([0-9A-F]+)\r\n"
    rb"\tfor <[^>]+>; [^\r]+\r\n"
)


def session(mta: Server) -> Wire:
    w = Wire(mta.ports["smtp"])
    assert w.reply() == BANNER
    assert w.cmd(f"EHLO {HELO}").endswith("\n250 CHUNKING")
    return w


def body_after_received(content: bytes, queue_id: str, protocol: bytes = b"ESMTP") -> bytes:
    m = RECEIVED.match(content)
    assert m and m.group(1) == protocol and m.group(2) == queue_id.encode(), content
    return content[m.end():]


def test_bdat_chunks(mta: Server) -> None:
    mark = mta.mark()
    before = mta.queue_ids()
    chunk1 = b"Subject: chunked\r\n\r\nfirst "
    chunk2 = b"line\r\n.\r\nnot the end\r\n"  # no dot-stuffing or end marker in BDAT
    with session(mta) as w:
        assert w.cmd("MAIL FROM:<a@example.net> BODY=8BITMIME") == "250 2.1.0 Ok"
        assert w.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        w.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
        assert w.reply() == f"250 2.0.0 Ok: {len(chunk1)} bytes"
        w.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
        m = re.fullmatch(r"250 2\.0\.0 Ok: (\d+) bytes queued as ([0-9A-F]+)", w.reply())
        assert m and int(m.group(1)) == len(chunk1) + len(chunk2)
        queue_id = m.group(2)
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    assert mta.queue_ids() - before == {queue_id}
    envelope, content = mta.read_queue(queue_id)
    assert envelope.body_type == "8BITMIME"
    assert body_after_received(content, queue_id) == chunk1 + chunk2
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/smtpd: {queue_id}: client=localhost[127.0.0.1]",
        f"postfix/cleanup: {queue_id}: message-id=<>",
        "postfix/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 bdat=2 quit=1 commands=6",
    ]


def test_pipelined_transaction(mta: Server) -> None:
    """RFC 2920: MAIL, RCPT, RCPT, DATA in one write; then the message, `.` and QUIT in one."""
    mark = mta.mark()
    with session(mta) as w:
        w.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
        assert [w.reply() for _ in range(4)] == [
            "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
        ]
        w.send("Subject: pipelined\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")
        m = QUEUED.fullmatch(w.reply())
        assert m
        assert w.reply() == "221 2.0.0 Bye"
        assert w.closed()
    queue_id = m.group(1)
    envelope, content = mta.read_queue(queue_id)
    assert [r.address for r in envelope.recipients] == ["b@example.org", "c@example.org"]
    # Two recipients: no "for <...>", so Postfix puts the date on its own line; the stuffed
    # dot is removed.
    assert re.fullmatch(
        rb"Received: from client\.example\.test \(localhost \[127\.0\.0\.1\]\)\r\n"
        rb"\tby mail\.example\.test \(Postfix\) with ESMTP id " + queue_id.encode()
        + rb";\r\n\t[^\r]+\r\nSubject: pipelined\r\n\r\n\.leading dot\r\n", content), content
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/smtpd: {queue_id}: client=localhost[127.0.0.1]",
        f"postfix/cleanup: {queue_id}: message-id=<>",
        "postfix/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6",
    ]


def test_starttls_discards_injected_plaintext(mta: Server) -> None:
    """`STARTTLS\\r\\nRSET\\r\\n` in one write: the RSET must never be answered, before or
    after the handshake (CVE-2011-0411)."""
    mark = mta.mark()
    with session(mta) as w:
        w.send("STARTTLS\r\nRSET\r\n")
        assert w.line() == "220 2.0.0 Ready to start TLS"
        assert w.buf == b""  # nothing after the 220 in plaintext
        w.starttls_handshake()
        # The first thing under TLS is the answer to our EHLO, not a 250 for the RSET.
        reply = w.cmd(f"EHLO {HELO}")
        assert reply.split("\n")[:2] == [f"250-{HOSTNAME}", "250-PIPELINING"]
        assert "STARTTLS" not in reply
        assert w.nothing_more() == b""
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    mta.wait_for_disconnect(mark)
    # Postfix discards the plaintext silently; postillion also flags the client in Postfix's
    # "improper command pipelining" format (which fail2ban's postfix filter knows).
    lines = mta.log_lines(mark)
    assert lines[2].startswith("postfix/smtpd: Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher ")
    assert lines[:2] + lines[3:] == [
        "postfix/smtpd: connect from localhost[127.0.0.1]",
        "postfix/smtpd: improper command pipelining after STARTTLS from localhost[127.0.0.1]: RSET\\r\\n",
        "postfix/smtpd: localhost[127.0.0.1]: discarded 6 bytes of plaintext sent after STARTTLS",
        # The RSET is neither executed nor counted.
        "postfix/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 quit=1 commands=4",
    ]


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n"],
                         ids=["LF.CRLF", "CRLF.LF", "LF.LF", "CR.CRLF"])
def test_smtp_smuggling(mta: Server, fake_end: bytes) -> None:
    """Only <CR><LF>.<CR><LF> ends DATA: a smuggled second transaction stays message text."""
    mark = mta.mark()
    before = mta.queue_ids()
    smuggled = (b"MAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    with session(mta) as w:
        assert w.cmd("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
        assert w.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        assert w.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        w.send(b"Subject: innocent\r\n\r\nhello" + fake_end + smuggled + b".\r\n")
        m = QUEUED.fullmatch(w.reply())
        assert m, "no queued reply"
        assert w.nothing_more() == b""  # no replies to the smuggled commands
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    queue_id = m.group(1)
    assert mta.queue_ids() - before == {queue_id}
    envelope, content = mta.read_queue(queue_id)
    assert [r.address for r in envelope.recipients] == ["b@example.org"]
    body = body_after_received(content, queue_id)
    assert body.startswith(b"Subject: innocent\r\n\r\nhello")
    assert b"MAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n" in body
    assert body.endswith(b"evil\r\n")
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/smtpd: {queue_id}: client=localhost[127.0.0.1]",
        f"postfix/cleanup: {queue_id}: message-id=<>",
        "postfix/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    ]


@pytest.mark.parametrize("command, answer, summary", [
    ("AUTH LOGIN", "334 VXNlcm5hbWU6", "auth=0/1 commands=1/2"),
    ("MAIL FROM:<alice@mail.example.test>", "250 2.1.0 Ok", "mail=1 commands=2"),
], ids=["in-AUTH", "after-MAIL"])
def test_lost_connection_counts_the_interrupted_command(mta: Server, command: str, answer: str,
                                                        summary: str) -> None:
    """The brute-force bot pattern: a client that hangs up in the middle of AUTH is logged
    `lost connection after AUTH` and the unfinished AUTH counts as failed (Postfix counts a
    command when it starts); a command that completed counts as it ended."""
    mark = mta.mark()
    with Wire(mta.ports["smtps"], tls=True) as w:
        assert w.reply() == BANNER
        assert w.cmd(f"EHLO {HELO}").endswith("250 CHUNKING")
        assert w.cmd(command) == answer
    last = command.split()[0]
    mta.wait_for_disconnect(mark, "postfix/smtps")
    lines = mta.log_lines(mark)
    assert lines[1].startswith("postfix/smtps/smtpd: Anonymous TLS connection established from ")
    assert [lines[0], *lines[2:]] == [
        "postfix/smtps/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/smtps/smtpd: lost connection after {last} from localhost[127.0.0.1]",
        f"postfix/smtps/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 {summary}",
    ]
