"""`postillion sendmail` end to end: root and an unprivileged user submit through the maildrop,
pickup (in the queue manager process) queues the mail, and it is relayed to a second
postillion, which keeps what it receives in incoming/ for the test to read.

Checked at the peer: the envelope sender (the login name or -f, qualified with $myorigin), the
recipients (-t with Bcc: removed), and the headers pickup adds (Received: with the uid,
Message-Id:, Date:, From: with the full name); in the relay's log: Postfix's pickup and
cleanup lines.  A symlink an unprivileged user plants in the maildrop is moved aside with a
warning and does not stop the mail behind it.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOSTNAME, Server, cleanup, make_server

PEER_HOST = "peer.example.test"
USER = "nobody"


@pytest.fixture(scope="module")
def peer() -> Iterator[Server]:
    server = make_server(main={"myhostname": PEER_HOST, "mynetworks": "127.0.0.0/8",
                               "local_header_rewrite_clients": "permit_sasl_authenticated"})
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


@pytest.fixture(scope="module")
def relay(peer: Server) -> Iterator[Server]:
    server = make_server(qmgr=True, main={
        "relayhost": f"[127.0.0.1]:{peer.ports['smtp']}",
        "local_header_rewrite_clients": "permit_sasl_authenticated",
    })
    server.start()
    deadline = time.monotonic() + 20
    while not maildrop(server).is_dir():  # pickup makes it when the queue manager starts
        assert time.monotonic() < deadline, "no maildrop directory"
        time.sleep(0.05)
    try:
        yield server
    finally:
        cleanup(server)


def maildrop(srv: Server) -> Path:
    return srv.config_dir / "data" / "spool" / "maildrop"


def as_user(user: str | None) -> dict[str, object]:
    if user is None:
        return {}
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def sendmail(srv: Server, args: list[str], data: bytes, user: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"}  # no $NAME: GECOS decides
    return subprocess.run(
        [sys.executable, "-m", "postillion", "-c", str(srv.config_dir), "sendmail", *args],
        input=data, capture_output=True, check=False, env=env, cwd="/", timeout=60, **as_user(user),  # type: ignore[arg-type]
    )


def delivered(relay: Server, peer: Server, mark: int, uid: int, log_sender: str) -> tuple[str, str, bytes, object]:
    """Wait for the pickup → cleanup → smtp lines of the next message; the peer's copy."""
    qid = relay.wait_for_log(rf"postfix/pickup\[\d+\]: (\w+): uid={uid} from=<{re.escape(log_sender)}>$",
                             start=mark).group(1)
    msgid = relay.wait_for_log(rf"postfix/cleanup\[\d+\]: {qid}: message-id=(<[^>]+>)$", start=mark).group(1)
    line = relay.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=.*status=sent .*queued as (\w+)\)$",
                              start=mark, timeout=30)
    relay.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", start=mark)
    env, content = peer.read_queue(line.group(1))
    return qid, msgid, content, env


def test_root_submission_is_picked_up_and_relayed(relay: Server, peer: Server) -> None:
    mark = relay.mark()
    proc = sendmail(relay, ["-F", "Root Admin", "x@example.org"], b"Subject: from root\n\nhello\n.\nnot sent\n")
    assert (proc.returncode, proc.stderr) == (0, b"")
    qid, msgid, content, env = delivered(relay, peer, mark, 0, "root")
    assert (env.sender, [r.address for r in env.recipients]) == (f"root@{HOSTNAME}", ["x@example.org"])
    assert re.search(
        rf"\r\nReceived: by {HOSTNAME} \(Postfix, from userid 0\)\r\n\tid {qid}; [^\r]+\r\n"
        rf"Subject: from root\r\nMessage-Id: {re.escape(msgid)}\r\nDate: [^\r]+\r\n"
        rf"From: Root Admin <root@{HOSTNAME}>\r\n\r\nhello\r\n$".encode(), content), content
    assert os.listdir(maildrop(relay)) == []


def test_unprivileged_user_with_t_i_and_bcc(relay: Server, peer: Server) -> None:
    pw = pwd.getpwnam(USER)
    mark = relay.mark()
    msg = (b"To: Someone <to@example.org>\nBcc: hidden@example.net\nSubject: local user\n\n"
           b"line one\n.\nafter the dot\n")
    proc = sendmail(relay, ["-t", "-i"], msg, user=USER)
    assert (proc.returncode, proc.stderr) == (0, b"")
    qid, msgid, content, env = delivered(relay, peer, mark, pw.pw_uid, USER)
    assert env.sender == f"{USER}@{HOSTNAME}"
    assert sorted(r.address for r in env.recipients) == ["hidden@example.net", "to@example.org"]
    assert b"Bcc:" not in content and b"hidden@example.net" not in content
    assert f"Received: by {HOSTNAME} (Postfix, from userid {pw.pw_uid})\r\n\tid {qid}; ".encode() in content
    full_name = pw.pw_gecos.split(",")[0]
    from_line = f"From: {full_name} <{USER}@{HOSTNAME}>" if full_name else f"From: {USER}@{HOSTNAME}"
    assert f"Message-Id: {msgid}\r\n".encode() in content and f"{from_line}\r\n".encode() in content
    assert content.endswith(b"\r\n\r\nline one\r\n.\r\nafter the dot\r\n")


def test_unprivileged_sender_option_and_a_planted_symlink(relay: Server, peer: Server) -> None:
    pw = pwd.getpwnam(USER)
    mark = relay.mark()
    trap = "e" * 32
    planted = subprocess.run(["ln", "-s", "/etc/shadow", str(maildrop(relay) / trap)], check=False, cwd="/", **as_user(USER))  # type: ignore[call-overload]
    assert planted.returncode == 0
    proc = sendmail(relay, ["-f", "list-owner@example.net", "y@example.org"], b"Subject: with -f\n\nhi\n", user=USER)
    assert (proc.returncode, proc.stderr) == (0, b"")
    relay.wait_for_log(
        rf"postfix/pickup\[\d+\]: warning: maildrop/{trap}: uid={pw.pw_uid}: not a regular file; "
        rf"moved to corrupt/maildrop.{trap}$", start=mark)
    _, _, content, env = delivered(relay, peer, mark, pw.pw_uid, "list-owner@example.net")
    assert (env.sender, [r.address for r in env.recipients]) == ("list-owner@example.net", ["y@example.org"])
    # the full name comes from the user's GECOS field even with -f, as in Postfix
    full_name = pw.pw_gecos.split(",")[0]
    assert f"From: {full_name} <list-owner@example.net>\r\n".encode() in content
    assert os.listdir(maildrop(relay)) == []


def test_an_unprivileged_user_cannot_list_the_maildrop_and_usage_errors(relay: Server) -> None:
    listing = subprocess.run(["ls", str(maildrop(relay))], check=False, cwd="/", capture_output=True, **as_user(USER))  # type: ignore[call-overload]
    assert listing.returncode != 0 and b"Permission denied" in listing.stderr
    proc = sendmail(relay, [], b"no recipients\n", user=USER)
    assert (proc.returncode, proc.stderr) == (
        64, b"sendmail: fatal: Recipient addresses must be specified on the command line or via the -t option\n")


def test_bs_smtp_on_stdin_as_an_unprivileged_user(relay: Server, peer: Server) -> None:
    """sendmail -bs: the SMTP dialogue on a pipe (LF line ends, as programs write them); every
    message becomes a maildrop file whose name is the queue id of the 250 reply."""
    pw = pwd.getpwnam(USER)
    mark = relay.mark()
    dialogue = (b"EHLO client.example\n"
                b"MAIL FROM:<bs-sender@example.net>\n"
                b"RCPT TO:<z@example.org>\n"
                b"DATA\n"
                b"Subject: via -bs\n\n..dot stuffed\nbody\n.\n"
                b"QUIT\n")
    proc = sendmail(relay, ["-bs"], dialogue, user=USER)
    assert (proc.returncode, proc.stderr) == (0, b"")
    replies = proc.stdout.decode().split("\r\n")
    drop_name = re.fullmatch(r"250 2\.0\.0 Ok: queued as (\w+)", replies[-3]).group(1)  # type: ignore[union-attr]
    assert replies[0] == f"220 {HOSTNAME} ESMTP Postfix"
    assert replies[1] == f"250-{HOSTNAME}"
    assert "250-AUTH" not in replies and "250-STARTTLS" not in replies
    assert replies[-6:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                            f"250 2.0.0 Ok: queued as {drop_name}", "221 2.0.0 Bye", ""]
    _, _, content, env = delivered(relay, peer, mark, pw.pw_uid, "bs-sender@example.net")
    assert (env.sender, [r.address for r in env.recipients]) == ("bs-sender@example.net", ["z@example.org"])
    assert b"Subject: via -bs\r\n" in content and content.endswith(b"\r\n\r\n.dot stuffed\r\nbody\r\n")
