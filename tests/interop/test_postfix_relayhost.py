"""Our smtp agent through a real Postfix relayhost that requires STARTTLS and AUTH.

Runs a private Postfix instance (Debian postfix 3.7, postfix_instance.py) with its own
configuration, queue and data directories under /tmp, never /etc/postfix: one smtpd on
127.0.0.1:PORT with ``smtpd_tls_security_level = encrypt`` and ``smtpd_sasl_auth_enable =
yes`` (Cyrus SASL, ``pwcheck_method: saslauthd``), relaying only for authenticated clients, and
keeping what it accepts (``defer_transports = smtp``) so the test reads it back with
``postqueue -p`` and ``postcat -q``.  Its saslauthd is a private ``saslauthd -a pam`` on its own run directory, for a
throw-away system user.  postillion A is set up as an admin would for a smarthost:
``relayhost = [127.0.0.1]:PORT``, ``smtp_tls_security_level = encrypt``,
``smtp_sasl_auth_enable = yes``, ``smtp_sasl_password_maps = texthash:...``,
``smtp_sasl_tls_security_options = noanonymous``.

Checked: delivery (A's ``status=sent (250 2.0.0 Ok: queued as ID)``), Postfix's side of it (the
TLS session, ``sasl_method=PLAIN, sasl_username=...``, the message in its queue), and a wrong
password (A defers with Postfix's exact 535 text).  Needs root (useradd, Postfix's master runs
as root, saslauthd reads /etc/shadow through PAM); skipped when a program is missing.
Log formats: Postfix 3.7.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from harness import Server, cleanup, free_port, make_server
from postfix_instance import (
    POSTCAT,
    POSTFIX,
    POSTQUEUE,
    PostfixInstance,
    running_postfix,
)

from postillion.certs import make_self_signed

SASLAUTHD = "/usr/sbin/saslauthd"
TESTSASLAUTHD = "/usr/sbin/testsaslauthd"
RELAY_HOST = "relay.example.test"
AUTH_FAILED = "535 5.7.8 Error: authentication failed: authentication failure"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    *(pytest.mark.skipif(not Path(p).exists(), reason=f"{p} missing (apt install {pkg})")
      for p, pkg in ((POSTFIX, "postfix"), (POSTQUEUE, "postfix"), (POSTCAT, "postfix"),
                     (SASLAUTHD, "sasl2-bin"), (TESTSASLAUTHD, "sasl2-bin"))),
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: useradd, Postfix's master, saslauthd reading /etc/shadow"),
    pytest.mark.timeout(120),
]

# Added to postfix_instance.py's base; its services are all unchrooted (column 5 = n): a
# chrooted smtpd could not reach the private saslauthd socket.
MASTER_CF = "127.0.0.1:{port} inet n - n - - smtpd\n"

MAIN_CF = f"""\
myhostname = {RELAY_HOST}
mydomain = example.test
# 127.0.0.1 is not in mynetworks: relaying is allowed only because A authenticates.
mynetworks = 127.0.0.2/32
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_tls_cert_file = {{base}}/etc/cert.pem
smtpd_tls_key_file = {{base}}/etc/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_loglevel = 1
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {{base}}/etc/sasl
# Keep what is accepted, for postqueue -p and postcat -q.
defer_transports = smtp
smtpd_banner = $myhostname ESMTP $mail_name
"""

SMTPD_CONF = """\
pwcheck_method: saslauthd
mech_list: PLAIN LOGIN
saslauthd_path: {mux}
"""


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[str, str]]:
    """A real local user with a password, for saslauthd -a pam; deleted afterwards."""
    name = f"ptrelay{secrets.token_hex(3)}"
    password = f"pw-{secrets.token_urlsafe(9)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def mux(account: tuple[str, str]) -> Iterator[Path]:
    """A private ``saslauthd -a pam``; its socket path.  The run directory is 0755, so
    Postfix's smtpd (user postfix) reaches the socket without joining group sasl."""
    rundir = Path(tempfile.mkdtemp(prefix="sa", dir="/tmp"))  # short: AF_UNIX paths ≤ 108 bytes
    rundir.chmod(0o755)
    log = open(f"{rundir}.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen([SASLAUTHD, "-a", "pam", "-d", "-n", "1", "-m", str(rundir)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    socket_path = rundir / "mux"
    try:
        deadline = time.monotonic() + 10
        while not socket_path.is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"saslauthd did not start: {Path(log.name).read_text()}")
            time.sleep(0.05)
        name, password = account
        check = subprocess.run([TESTSASLAUTHD, "-u", name, "-p", password, "-s", "smtp",
                                "-f", str(socket_path)], check=False, capture_output=True, text=True,
                               timeout=30)
        assert check.stdout == '0: OK "Success."\n', check.stdout + check.stderr
        yield socket_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the master and its worker
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        os.unlink(log.name)
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture(scope="module")
def relay_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def postfix(mux: Path, relay_port: int) -> Iterator[PostfixInstance]:
    with tempfile.TemporaryDirectory() as keys:
        make_self_signed(RELAY_HOST, Path(keys) / "cert.pem", Path(keys) / "key.pem")
        files = {name: (Path(keys) / name).read_bytes() for name in ("cert.pem", "key.pem")}
    files["sasl/smtpd.conf"] = SMTPD_CONF.format(mux=mux).encode()
    with running_postfix(MAIN_CF, MASTER_CF.format(port=relay_port), files) as pf:
        yield pf


def make_client(relay_port: int, user: str, password: str) -> Server:
    srv = make_server(qmgr=True, main={
        "relayhost": f"[127.0.0.1]:{relay_port}",
        "smtp_tls_security_level": "encrypt",
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": "texthash:sasl_passwd",
        "smtp_sasl_tls_security_options": "noanonymous",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
    })
    try:
        # Postfix's lookup key for a relayhost: the nexthop as written, "[host]:port".
        (srv.config_dir / "sasl_passwd").write_text(f"[127.0.0.1]:{relay_port} {user}:{password}\n")
        srv.start()
    except BaseException:
        cleanup(srv)
        raise
    return srv


def submit(srv: Server, msgid: str) -> str:
    """One message into A over SMTP; A's queue id."""
    body = (f"From: a@example.net\r\nTo: far@example.org\r\nSubject: via the relayhost\r\n"
            f"Message-Id: <{msgid}>\r\n\r\nhello through Postfix\r\n").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
        c.ehlo("client.example.test")
        assert c.mail("a@example.net")[0] == 250
        assert c.rcpt("far@example.org")[0] == 250
        code, text = c.data(body)
    m = re.fullmatch(r"2\.0\.0 Ok: queued as (\w+)", text.decode())
    assert code == 250 and m, (code, text)
    return m.group(1)


@pytest.fixture
def client(postfix: PostfixInstance, relay_port: int, account: tuple[str, str]) -> Iterator[Server]:
    srv = make_client(relay_port, *account)
    try:
        yield srv
    finally:
        cleanup(srv)


@pytest.fixture
def client_wrong_password(postfix: PostfixInstance, relay_port: int,
                          account: tuple[str, str]) -> Iterator[Server]:
    srv = make_client(relay_port, account[0], account[1] + "-wrong")
    try:
        yield srv
    finally:
        cleanup(srv)


def test_delivered_over_tls_with_auth(client: Server, postfix: PostfixInstance, relay_port: int,
                                      account: tuple[str, str]) -> None:
    user = account[0]
    msgid = f"relayhost-{secrets.token_hex(4)}@client.example.test"
    qid = submit(client, msgid)
    line = client.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<far@example.org>.*", timeout=30).group(0)
    port = relay_port
    m = re.fullmatch(
        rf"postfix/smtp\[\d+\]: {qid}: to=<far@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, "
        r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
        r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)",
        line,
    )
    assert m, line
    pf_id = m.group(1)
    client.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed")

    # Postfix's side: a TLS session, then AUTH PLAIN as our user, then this message.
    postfix.wait_for_log(r"postfix/smtpd\[\d+\]: Anonymous TLS connection established from "
                         r"localhost\[127\.0\.0\.1\]: TLSv1\.[23] with cipher \S+")
    postfix.wait_for_log(rf"postfix/smtpd\[\d+\]: {pf_id}: client=localhost\[127\.0\.0\.1\], "
                         rf"sasl_method=PLAIN, sasl_username={user}$")
    postfix.wait_for_log(rf"postfix/cleanup\[\d+\]: {pf_id}: message-id=<{re.escape(msgid)}>$")
    postfix.wait_for_log(rf"postfix/qmgr\[\d+\]: {pf_id}: from=<a@example\.net>, size=\d+, nrcpt=1 "
                         r"\(queue active\)$")

    # ... and the message waits in its queue (defer_transports = smtp), as sent.
    waiting = re.compile(rf"^{pf_id}\s+\d+ .* a@example\.net\n\s+\(deferred transport\)\n"
                         r"\s+far@example\.org$", re.MULTILINE)
    deadline = time.monotonic() + 20
    while not waiting.search(listing := postfix.postqueue("-p")):
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)
    content = postfix.postcat(pf_id)
    assert f"Message-Id: <{msgid}>" in content
    assert "Subject: via the relayhost" in content
    assert re.search(rf"\(Postfix\) with ESMTP id {qid}\b", content), content  # A's Received:
    assert "sender: a@example.net" in content
    assert re.search(r"^recipient: far@example\.org$", content, re.MULTILINE), content
    # Postfix's own Received: records the authenticated, encrypted hop.
    assert re.search(rf"with ESMTPSA id {pf_id}", content), content


def test_wrong_password_is_deferred_with_postfix_text(client_wrong_password: Server,
                                                      postfix: PostfixInstance, relay_port: int,
                                                      account: tuple[str, str]) -> None:
    srv = client_wrong_password
    qid = submit(srv, f"wrongpw-{secrets.token_hex(4)}@client.example.test")
    line = srv.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<far@example.org>.*", timeout=30).group(0)
    port = relay_port
    assert re.fullmatch(
        rf"postfix/smtp\[\d+\]: {qid}: to=<far@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, "
        r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=4\.7\.8, status=deferred "
        rf"\(SASL authentication failed; server 127\.0\.0\.1\[127\.0\.0\.1\] said: {re.escape(AUTH_FAILED)}\)",
        line,
    ), line
    # Postfix saw the same failure for our user.
    postfix.wait_for_log(r"postfix/smtpd\[\d+\]: warning: localhost\[127\.0\.0\.1\]: "
                         rf"SASL PLAIN authentication failed: authentication failure, sasl_username={account[0]}$")
