"""Our LMTP agent against a real Dovecot LMTP server (Debian dovecot-core + dovecot-lmtpd).

Runs a private ``dovecot -F`` with its own configuration under /tmp: ``protocols = lmtp``, a
UNIX listener and an inet listener on 127.0.0.1, a passwd-file userdb, and
``mail_location = maildir:~/Maildir`` with homes under the same directory.  Checks the file
Dovecot wrote and the per-recipient 5.1.1 for an unknown user.  Needs root (Dovecot switches
to the mail user's uid); skipped when Dovecot or its LMTP server is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.delivery import DeliveryRequest
from postillion.delivery.lmtp import LmtpAgent
from postillion.queue.envelope import Envelope, Recipient

DOVECOT = "/usr/sbin/dovecot"
LMTP_BINARY = "/usr/lib/dovecot/lmtp"
MAIL_UID = 5025  # not in /etc/passwd: Dovecot takes uid/gid from the passwd-file

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(not Path(DOVECOT).exists(), reason=f"{DOVECOT} missing (apt install dovecot-core)"),
    pytest.mark.skipif(not Path(LMTP_BINARY).exists(),
                       reason=f"{LMTP_BINARY} missing (apt install dovecot-lmtpd)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: dovecot switches to the mail uid"),
]

CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = 100
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {base}/passwd
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


@dataclass
class Dovecot:
    base: Path
    port: int

    @property
    def socket(self) -> Path:
        return self.base / "run" / "lmtp"

    def maildir(self, user: str) -> Path:
        return self.base / "home" / user / "Maildir"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(d: Dovecot, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (d.base / "dovecot.log").read_text() if (d.base / "dovecot.log").exists() else ""
            pytest.fail(f"dovecot exited with {proc.returncode}: "
                        f"{proc.stderr.read().decode() if proc.stderr else ''} {log}")
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=1) as s:
                if s.recv(100).startswith(b"220 ") and d.socket.exists():
                    return
        except OSError:
            time.sleep(0.05)  # polling a port the server is about to open
    pytest.fail("dovecot did not start listening within 20 s")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    base = Path(tempfile.mkdtemp(prefix="ptdv", dir="/tmp"))  # short: AF_UNIX paths <= 108
    base.chmod(0o755)
    d = Dovecot(base, _free_port())
    home = base / "home" / "bob"
    home.mkdir(parents=True)
    (base / "home").chmod(0o755)
    os.chown(home, MAIL_UID, MAIL_UID)
    (base / "passwd").write_text(f"bob:{{PLAIN}}secret:{MAIL_UID}:{MAIL_UID}::{home}::\n")
    conf = base / "dovecot.conf"
    conf.write_text(CONFIG.format(base=base, port=d.port))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_ready(d, proc)
        yield d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


CONTENT = (b"From: alice@example.org\r\nTo: bob@example.test\r\nSubject: lmtp interop\r\n"
           b"Message-ID: <lmtp-1@example.org>\r\n\r\nfirst line\r\n.starts with a dot\r\n")


def _deliver(nexthop: str, *addresses: str):
    rcpts = [Recipient(address=a) for a in addresses]
    req = DeliveryRequest(queue_id="4DOVE", envelope=Envelope(sender="alice@example.org",
                                                              recipients=rcpts),
                          content=CONTENT, recipients=list(enumerate(rcpts)), transport="lmtp",
                          nexthop=nexthop)
    agent = LmtpAgent(Params.from_dict({"myhostname": "mx.test", "mydomain": "test"}))
    return asyncio.run(agent.deliver(req))


def _messages(d: Dovecot, user: str) -> list[bytes]:
    new = d.maildir(user) / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


def test_unix_socket_delivery_and_unknown_user(dovecot: Dovecot) -> None:
    before = len(_messages(dovecot, "bob"))
    sent, unknown = _deliver(f"unix:{dovecot.socket}", "bob", "nobody")
    relay = f"mx.test[{dovecot.socket}]"
    assert (sent.rcpt, sent.status, sent.dsn, sent.relay) == (0, "sent", "2.0.0", relay)
    assert sent.text.startswith("250 2.0.0 <bob> ") and sent.text.endswith(" Saved")
    assert (unknown.rcpt, unknown.status, unknown.dsn, unknown.relay, unknown.text) == (
        1, "bounced", "5.1.1", relay,
        (f"host {relay} said: 550 5.1.1 <nobody> User doesn't exist: nobody "
        "(in reply to RCPT TO command)"))
    messages = _messages(dovecot, "bob")
    assert len(messages) == before + 1
    delivered = messages[-1]
    # Dovecot adds Return-Path and its own Received; the message itself arrives unstuffed.
    assert delivered.startswith(b"Return-Path: <alice@example.org>\n")
    assert delivered.endswith(b"Subject: lmtp interop\nMessage-ID: <lmtp-1@example.org>\n\n"
                              b"first line\n.starts with a dot\n")
    assert b"Delivered-To: bob\n" in delivered
    owner = next((dovecot.maildir("bob") / "new").iterdir()).stat()
    assert (owner.st_uid, owner.st_gid) == (MAIL_UID, MAIL_UID)


def test_inet_delivery(dovecot: Dovecot) -> None:
    before = len(_messages(dovecot, "bob"))
    [result] = _deliver(f"inet:127.0.0.1:{dovecot.port}", "bob")
    assert (result.status, result.dsn, result.relay) == (
        "sent", "2.0.0", f"127.0.0.1[127.0.0.1]:{dovecot.port}")
    assert result.conn_time > 0 and result.xfer_time > 0
    assert len(_messages(dovecot, "bob")) == before + 1


def test_all_unknown_sends_no_data(dovecot: Dovecot) -> None:
    [result] = _deliver(f"127.0.0.1:{dovecot.port}", "ghost")
    assert (result.status, result.dsn) == ("bounced", "5.1.1")
    assert result.text.endswith("550 5.1.1 <ghost> User doesn't exist: ghost "
                                "(in reply to RCPT TO command)")
