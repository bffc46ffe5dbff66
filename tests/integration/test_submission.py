"""Mail submission against the real running server, driven by real clients: swaks, openssl
s_client and smtplib.

Every test compares the whole reply sequence and the whole log of its session with what
Postfix 3.7 sends and logs (docs: postfix-smtpd-replies, postfix-logging, smtp-auth), and
reads the queue file the 250 reply promised.  All tests share the default server of
conftest.py (`postillion init` configuration, mynetworks = 127.0.0.1/32, user alice).
"""

from __future__ import annotations

import base64
import re
import smtplib
import subprocess

import pytest
from harness import HOSTNAME, PASSWORD, Server, Wire, client_context

HELO = "client.example.test"
BANNER = f"220 {HOSTNAME} ESMTP Postfix"
EHLO_PLAIN = [  # Postfix 3.7, STARTTLS offered, no AUTH before TLS
    f"250-{HOSTNAME}", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ETRN",
    "250-STARTTLS", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
    "250 CHUNKING",
]
EHLO_TLS_AUTH = [
    f"250-{HOSTNAME}", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ETRN",
    "250-AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
    "250 CHUNKING",
]
TLS_LINE = re.compile(
    r"Anonymous TLS connection established from localhost\[127\.0\.0\.1\]: "
    r"TLSv1\.3 with cipher TLS_(AES_256_GCM_SHA384 \(256/256|AES_128_GCM_SHA256 \(128/128|"
    r"CHACHA20_POLY1305_SHA256 \(256/256) bits\)"
)
DATE = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ \d]\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}( \(\w+\))?"
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-F]{6,})$")


def plain(user: str = "alice", password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def run_swaks(port: int, *args: str, source: str | None = None) -> tuple[int, list[str]]:
    """swaks' exit status and the server's replies (one entry per line) as swaks saw them."""
    argv = ["swaks", "--server", f"127.0.0.1:{port}", "--ehlo", HELO, "--timeout", "15", *args]
    if source:
        argv += ["--local-interface", source]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    replies = [m.group(1) for m in re.finditer(r"^<[-~*]{1,2}\s+(\d{3}[ -].*)$", proc.stdout, re.MULTILINE)]
    assert replies, proc.stdout + proc.stderr
    return proc.returncode, replies


def queued_id(reply: str) -> str:
    m = QUEUED.match(reply)
    assert m, reply
    return m.group(1)


def received_re(queue_id: str, *, helo: str, client: str, protocol: str, rcpt: str,
                auth: str | None) -> str:
    auth_line = rf"\t\(Authenticated sender: {auth}\)\r\n" if auth else ""
    return (
        rf"Received: from {re.escape(helo)} \({re.escape(client)}\)\r\n"
        + auth_line
        + rf"\tby {HOSTNAME} \(Postfix\) with {protocol} id {queue_id}\r\n"
        rf"\tfor <{re.escape(rcpt)}>; {DATE}\r\n"
    )


def message_id_re(queue_id: str) -> str:
    return rf"<\d{{14}}\.{queue_id}@{re.escape(HOSTNAME)}>"


# ----------------------------------------------------------------------------------- swaks


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_submission_starttls_auth(mta: Server, swaks: str, mech: str) -> None:
    mark = mta.mark()
    before = mta.queue_ids()
    rc, replies = run_swaks(
        mta.ports["submission"], "--tls", "--auth", mech, "--auth-user", "alice",
        "--auth-password", PASSWORD, "--from", "alice@mail.example.test", "--to", "bob@example.org",
        "--data", "From: alice@mail.example.test\nSubject: via swaks\n\nhello",
    )
    queue_id = queued_id(replies[-2])
    auth = ["235 2.7.0 Authentication successful"]
    if mech == "LOGIN":
        auth = ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", *auth]
    assert (rc, replies) == (0, [
        BANNER, *EHLO_PLAIN, "220 2.0.0 Ready to start TLS", *EHLO_TLS_AUTH, *auth,
        "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
        f"250 2.0.0 Ok: queued as {queue_id}", "221 2.0.0 Bye",
    ])
    assert mta.queue_ids() - before == {queue_id}

    envelope, content = mta.read_queue(queue_id)
    assert (envelope.sender, [r.address for r in envelope.recipients]) == ("alice@mail.example.test", ["bob@example.org"])
    assert (envelope.protocol, envelope.sasl_method, envelope.sasl_username) == ("ESMTPSA", mech, "alice")
    assert (envelope.helo_name, envelope.client_addr, envelope.client_name) == (HELO, "127.0.0.1", "localhost")
    # Received first, the client's headers untouched, then what cleanup adds for a submission
    # client: Message-Id and Date (From was given), before the empty line.
    expected = (
        received_re(queue_id, helo=HELO, client="localhost [127.0.0.1]", protocol="ESMTPSA",
                    rcpt="bob@example.org", auth="alice")
        + r"From: alice@mail\.example\.test\r\nSubject: via swaks\r\n"
        + rf"Message-Id: {message_id_re(queue_id)}\r\nDate: {DATE}\r\n\r\nhello\r\n"
    )
    assert re.fullmatch(expected.encode(), content), content

    mta.wait_for_disconnect(mark, "postfix/submission")
    msgid = re.search(rb"Message-Id: (<.*>)", content).group(1).decode()
    lines = mta.log_lines(mark)
    assert lines[0] == "postfix/submission/smtpd: connect from localhost[127.0.0.1]"
    assert TLS_LINE.fullmatch(lines[1].split(": ", 1)[1]), lines[1]
    assert lines[2:] == [
        f"postfix/submission/smtpd: {queue_id}: client=localhost[127.0.0.1], sasl_method={mech}, sasl_username=alice",
        f"postfix/cleanup: {queue_id}: message-id={msgid}",
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
    ]


def test_swaks_wrong_password(mta: Server, swaks: str) -> None:
    mark = mta.mark()
    before = mta.queue_ids()
    rc, replies = run_swaks(
        mta.ports["submission"], "--tls", "--auth", "PLAIN", "--auth-user", "alice",
        "--auth-password", "wrong", "--from", "alice@mail.example.test", "--to", "bob@example.org",
    )
    assert (rc, replies) == (28, [
        BANNER, *EHLO_PLAIN, "220 2.0.0 Ready to start TLS", *EHLO_TLS_AUTH,
        "535 5.7.8 Error: authentication failed: authentication failure", "221 2.0.0 Bye",
    ])
    assert mta.queue_ids() == before
    mta.wait_for_disconnect(mark, "postfix/submission")
    lines = mta.log_lines(mark)
    assert [lines[0], *lines[2:]] == [
        "postfix/submission/smtpd: connect from localhost[127.0.0.1]",
        "postfix/submission/smtpd: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice",
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5",
    ]


def test_swaks_relay_without_auth_on_submission(mta: Server, swaks: str) -> None:
    """The submission recipe's $mua_client_restrictions (permit_sasl_authenticated, reject)
    reject at RCPT time (smtpd_delay_reject = yes)."""
    mark = mta.mark()
    rc, replies = run_swaks(mta.ports["submission"], "--tls", "--from", "alice@mail.example.test",
                            "--to", "x@example.org")
    assert (rc, replies) == (24, [
        BANNER, *EHLO_PLAIN, "220 2.0.0 Ready to start TLS", *EHLO_TLS_AUTH, "250 2.1.0 Ok",
        "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied", "221 2.0.0 Bye",
    ])
    mta.wait_for_disconnect(mark, "postfix/submission")
    lines = mta.log_lines(mark)
    assert [lines[0], *lines[2:]] == [
        "postfix/submission/smtpd: connect from localhost[127.0.0.1]",
        ("postfix/submission/smtpd: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 "
         "<localhost[127.0.0.1]>: Client host rejected: Access denied; from=<alice@mail.example.test> "
         f"to=<x@example.org> proto=ESMTP helo=<{HELO}>"),
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 mail=1 rcpt=0/1 quit=1 commands=5/6",
    ]


def test_swaks_relay_from_outside_mynetworks_on_port_25(mta: Server, swaks: str) -> None:
    """127.0.0.2 is not in mynetworks: smtpd_relay_restrictions' defer_unauth_destination."""
    mark = mta.mark()
    rc, replies = run_swaks(mta.ports["smtp"], "--from", "a@example.net", "--to", "x@example.org",
                            source="127.0.0.2")
    assert (rc, replies) == (24, [
        BANNER, *EHLO_PLAIN, "250 2.1.0 Ok", "454 4.7.1 <x@example.org>: Relay access denied",
        "221 2.0.0 Bye",
    ])
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from unknown[127.0.0.2]",
        ("postfix/smtpd: NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 454 4.7.1 <x@example.org>: "
         f"Relay access denied; from=<a@example.net> to=<x@example.org> proto=ESMTP helo=<{HELO}>"),
        "postfix/smtpd: disconnect from unknown[127.0.0.2] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
    ]


def test_swaks_local_recipient_from_outside(mta: Server, swaks: str) -> None:
    """$myhostname is in mydestination: root (in /etc/passwd) is accepted from anywhere."""
    mark = mta.mark()
    rc, replies = run_swaks(mta.ports["smtp"], "--from", "a@example.net", "--to", f"root@{HOSTNAME}",
                            "--data", "Subject: to root\n\nhi", source="127.0.0.2")
    queue_id = queued_id(replies[-2])
    assert (rc, replies) == (0, [
        BANNER, *EHLO_PLAIN, "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
        f"250 2.0.0 Ok: queued as {queue_id}", "221 2.0.0 Bye",
    ])
    envelope, content = mta.read_queue(queue_id)
    assert (envelope.protocol, envelope.sasl_username, envelope.client_addr) == ("ESMTP", None, "127.0.0.2")
    assert envelope.client_name is None  # no confirmed reverse name (smtpd logs it as "unknown")
    # Not a submission client: nothing is added to the message (Postfix's
    # local_header_rewrite_clients does not match 127.0.0.2).
    expected = received_re(queue_id, helo=HELO, client="unknown [127.0.0.2]", protocol="ESMTP",
                           rcpt=f"root@{HOSTNAME}", auth=None) + r"Subject: to root\r\n\r\nhi\r\n"
    assert re.fullmatch(expected.encode(), content), content
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from unknown[127.0.0.2]",
        f"postfix/smtpd: {queue_id}: client=unknown[127.0.0.2]",
        f"postfix/cleanup: {queue_id}: message-id=<>",
        "postfix/smtpd: disconnect from unknown[127.0.0.2] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    ]


def test_swaks_unknown_local_recipient_from_outside(mta: Server, swaks: str) -> None:
    mark = mta.mark()
    rcpt = f"no-such-user-x9@{HOSTNAME}"
    rc, replies = run_swaks(mta.ports["smtp"], "--from", "a@example.net", "--to", rcpt, source="127.0.0.2")
    reject = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table"
    assert (rc, replies) == (24, [BANNER, *EHLO_PLAIN, "250 2.1.0 Ok", reject, "221 2.0.0 Bye"])
    mta.wait_for_disconnect(mark)
    assert mta.log_lines(mark) == [
        "postfix/smtpd: connect from unknown[127.0.0.2]",
        (f"postfix/smtpd: NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {reject}; "
         f"from=<a@example.net> to=<{rcpt}> proto=ESMTP helo=<{HELO}>"),
        "postfix/smtpd: disconnect from unknown[127.0.0.2] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
    ]


# ----------------------------------------------------------------------------------- raw


def test_auth_before_starttls_on_submission(mta: Server) -> None:
    mark = mta.mark()
    with Wire(mta.ports["submission"]) as w:
        assert w.reply() == BANNER
        assert w.cmd(f"EHLO {HELO}") == "\n".join(EHLO_PLAIN)
        assert w.cmd(f"AUTH PLAIN {plain()}") == "530 5.7.0 Must issue a STARTTLS command first"
        assert w.cmd("MAIL FROM:<alice@mail.example.test>") == "530 5.7.0 Must issue a STARTTLS command first"
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    mta.wait_for_disconnect(mark, "postfix/submission")
    assert mta.log_lines(mark) == [
        "postfix/submission/smtpd: connect from localhost[127.0.0.1]",
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 auth=0/1 mail=0/1 quit=1 commands=2/4",
    ]


# ----------------------------------------------------------------------------------- openssl


class SClient:
    """openssl s_client -starttls smtp, one command line at a time through its stdin."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
             "-quiet", "-crlf", "-name", HELO],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def reply(self) -> str:
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline().rstrip("\r\n")]
        while lines[-1][3:4] == "-":
            lines.append(self.proc.stdout.readline().rstrip("\r\n"))
        return "\n".join(lines)

    def cmd(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_openssl_s_client_submission(mta: Server, openssl: str) -> None:
    mark = mta.mark()
    before = mta.queue_ids()
    c = SClient(mta.ports["submission"])
    try:
        # s_client has done EHLO and STARTTLS itself and prints nothing before our EHLO.
        assert c.cmd(f"EHLO {HELO}") == "\n".join(EHLO_TLS_AUTH)
        assert c.cmd(f"AUTH PLAIN {plain()}") == "235 2.7.0 Authentication successful"
        assert c.cmd("MAIL FROM:<alice@mail.example.test>") == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        queue_id = queued_id(c.cmd("Subject: s_client\n\nbody\n."))
        assert c.cmd("QUIT") == "221 2.0.0 Bye"
    finally:
        c.close()
    assert mta.queue_ids() - before == {queue_id}
    mta.wait_for_disconnect(mark, "postfix/submission")
    lines = mta.log_lines(mark)
    msgid = mta.read_queue(queue_id)[1].split(b"Message-Id: ")[1].split(b"\r\n")[0].decode()
    assert re.fullmatch(message_id_re(queue_id), msgid)
    assert lines[0] == "postfix/submission/smtpd: connect from localhost[127.0.0.1]"
    assert TLS_LINE.fullmatch(lines[1].split(": ", 1)[1]), lines[1]
    assert lines[2:] == [
        f"postfix/submission/smtpd: {queue_id}: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
        f"postfix/cleanup: {queue_id}: message-id={msgid}",
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
    ]


# ----------------------------------------------------------------------------------- smtplib


def test_smtplib_starttls_login(mta: Server) -> None:
    mark = mta.mark()
    with smtplib.SMTP("127.0.0.1", mta.ports["submission"], local_hostname=HELO, timeout=10) as s:
        assert s.starttls(context=client_context()) == (220, b"2.0.0 Ready to start TLS")
        s.ehlo(HELO)
        assert s.esmtp_features["auth"] == " SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN"
        assert s.login("alice", PASSWORD) == (235, b"2.7.0 Authentication successful")
        assert s.mail("alice@mail.example.test") == (250, b"2.1.0 Ok")
        assert s.rcpt("carol@example.org") == (250, b"2.1.5 Ok")
        code, text = s.data(b"Subject: smtplib\r\nMessage-Id: <m1@client.example.test>\r\n"
                            b"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\n\r\nbody\r\n")
        queue_id = queued_id(f"{code} {text.decode()}")
    envelope, content = mta.read_queue(queue_id)
    assert (envelope.protocol, envelope.sasl_method, envelope.sasl_username) == ("ESMTPSA", "PLAIN", "alice")
    # Message-Id and Date given: cleanup adds only the missing From: (the envelope sender).
    expected = received_re(queue_id, helo=HELO, client="localhost [127.0.0.1]", protocol="ESMTPSA",
                           rcpt="carol@example.org", auth="alice") + (
        r"Subject: smtplib\r\nMessage-Id: <m1@client\.example\.test>\r\n"
        r"Date: Wed, 25 Nov 2026 08:00:00 \+0000\r\nFrom: alice@mail\.example\.test\r\n\r\nbody\r\n")
    assert re.fullmatch(expected.encode(), content), content
    mta.wait_for_disconnect(mark, "postfix/submission")
    lines = mta.log_lines(mark)
    assert [lines[0], *lines[2:]] == [
        "postfix/submission/smtpd: connect from localhost[127.0.0.1]",
        f"postfix/submission/smtpd: {queue_id}: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
        f"postfix/cleanup: {queue_id}: message-id=<m1@client.example.test>",
        "postfix/submission/smtpd: disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8",
    ]


def test_smtplib_smtps_implicit_tls(mta: Server) -> None:
    mark = mta.mark()
    with smtplib.SMTP_SSL("127.0.0.1", mta.ports["smtps"], local_hostname=HELO,
                          context=client_context(), timeout=10) as s:
        code, text = s.ehlo(HELO)
        # Implicit TLS: no STARTTLS, AUTH from the start.
        assert (code, text.decode().split("\n")) == (250, [line[4:] for line in EHLO_TLS_AUTH])
        assert s.login("alice", PASSWORD) == (235, b"2.7.0 Authentication successful")
        refused = s.sendmail("alice@mail.example.test", ["dave@example.org"], b"Subject: smtps\r\n\r\nx\r\n")
        assert refused == {}
    mta.wait_for_disconnect(mark, "postfix/smtps")
    lines = mta.log_lines(mark)
    queue_id = lines[2].split(": ")[1]
    envelope, _content = mta.read_queue(queue_id)
    assert (envelope.protocol, envelope.sasl_username, envelope.service) == ("ESMTPSA", "alice", f"127.0.0.1:{mta.ports['smtps']}")
    assert lines[0] == "postfix/smtps/smtpd: connect from localhost[127.0.0.1]"
    assert TLS_LINE.fullmatch(lines[1].split(": ", 1)[1]), lines[1]
    assert lines[2:] == [
        f"postfix/smtps/smtpd: {queue_id}: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=alice",
        f"postfix/cleanup: {queue_id}: message-id=<{lines[3].split('<')[1]}",
        "postfix/smtps/smtpd: disconnect from localhost[127.0.0.1] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
    ]
    assert re.fullmatch(rf"postfix/cleanup: {queue_id}: message-id={message_id_re(queue_id)}", lines[3])


def test_smtps_rejects_plaintext_client(mta: Server) -> None:
    """A client that speaks SMTP to the implicit-TLS port gets no greeting and is cut off."""
    mark = mta.mark()
    with Wire(mta.ports["smtps"]) as w:
        w.send("EHLO x\r\n")
        assert w.closed()
        assert w.buf == b""
    # its failed handshake is logged after the fact; let it land before the next test's mark
    mta.wait_for_disconnect(mark, "postfix/smtps", timeout=5)


def test_smtps_failed_handshake_is_logged(mta: Server) -> None:
    mark = mta.mark()
    with Wire(mta.ports["smtps"]) as w:
        w.send("EHLO x\r\n")
        assert w.closed()
    mta.wait_for_disconnect(mark, "postfix/smtps", timeout=3)
    lines = mta.log_lines(mark)
    assert [lines[0], *lines[2:]] == [
        "postfix/smtps/smtpd: connect from localhost[127.0.0.1]",
        "postfix/smtps/smtpd: lost connection after CONNECT from localhost[127.0.0.1]",
        "postfix/smtps/smtpd: disconnect from localhost[127.0.0.1] commands=0/0",
    ]
    assert lines[1].startswith("postfix/smtps/smtpd: SSL_accept error from localhost[127.0.0.1]: ")


def test_log_lines_carry_myhostname_like_postlogd(mta: Server) -> None:
    # "Nov 25 08:13:40 mail postfix/submission/smtpd[17362]: ..." with myhostname = mail.example.test
    first = mta.log_text().splitlines()[0]
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d mail postfix/master\[\d+\]: .*", first), first
