"""The Dovecot auth protocol both ways, against the real programs.

1. postillion's smtpd with ``smtpd_sasl_type = dovecot`` against a private Dovecot 2.3
   (``dovecot -F`` under /tmp: passwd-file users with ``{PLAIN}`` and ``{SHA512-CRYPT}``
   passwords, ``auth_mechanisms = plain login``, ``service auth`` with a UNIX
   ``auth-client`` listener and an inet listener): AUTH PLAIN and LOGIN → 235, a wrong
   password → 535, Dovecot stopped → 454 and the connect warning; Dovecot's ``auth_debug``
   log shows the ``lip``/``rip``/``secured`` we send.
2. A private Postfix 3.7 (postfix_instance.py, ``smtpd_sasl_type = dovecot``) against
   ``postillion auth-server`` on TCP and on a UNIX socket: AUTH PLAIN and LOGIN as a
   postillion user → 235, a wrong password → 535 with Postfix's text.

Needs root (Dovecot and Postfix's master); skipped when a program is missing.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from harness import Server, cleanup, client_context, free_port, make_server, postillion
from postfix_instance import POSTFIX, PostfixInstance, running_postfix

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    *(pytest.mark.skipif(not Path(p).exists(), reason=f"{p} missing (apt install {pkg})")
      for p, pkg in ((DOVECOT, "dovecot-core"), (DOVEADM, "dovecot-core"), (POSTFIX, "postfix"))),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: dovecot and Postfix's master"),
    pytest.mark.timeout(180),
]

AUTH_OK = (235, b"2.7.0 Authentication successful")

DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_debug = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


@dataclass
class Dovecot:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.base / "run" / "auth-client"

    def log_text(self) -> str:
        try:
            return (self.base / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.base / "dovecot.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.socket.is_socket() or not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dovecot did not start: {self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the master and its children (the auth process would otherwise go on serving
        connections it already has)."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 10
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)
        self.proc = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _make_dovecot() -> Dovecot:
    base = Path(tempfile.mkdtemp(prefix="ptda", dir="/tmp"))  # short: AF_UNIX paths <= 108
    base.chmod(0o755)  # the unprivileged smtpd workers must reach the socket
    d = Dovecot(base, free_port())
    crypt = subprocess.run([DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", "hunter2"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert crypt.startswith("{SHA512-CRYPT}$6$"), crypt
    (base / "passwd").write_text(f"alice:{{PLAIN}}secret\nbob:{crypt}\n")
    (base / "dovecot.conf").write_text(DOVECOT_CONF.format(base=base, port=d.port))
    d.start()
    return d


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    d = _make_dovecot()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


MASTER = """\
127.0.0.1:{{dvunix}} inet n - n - - smtpd
  -o syslog_name=postfix/dvunix
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=unix:{socket}
127.0.0.1:{{dvinet}} inet n - n - - smtpd
  -o syslog_name=postfix/dvinet
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:{port}
"""


def _postillion_for(d: Dovecot) -> Server:
    srv = make_server(master=MASTER.format(socket=d.socket, port=d.port))
    try:
        # Only the submission services of the default master.cf use these.
        postillion(srv.config_dir, "postconf", "-X", "mua_client_restrictions",
                   "mua_helo_restrictions", "mua_sender_restrictions")
        srv.start()
    except BaseException:
        cleanup(srv)
        raise
    return srv


@pytest.fixture(scope="module")
def server(dovecot: Dovecot) -> Iterator[Server]:
    srv = _postillion_for(dovecot)
    try:
        yield srv
    finally:
        cleanup(srv)


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _login(c: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    code, text = c.docmd("AUTH", "LOGIN")
    assert (code, text) == (334, b"VXNlcm5hbWU6")
    code, text = c.docmd(base64.b64encode(user.encode()).decode())
    assert (code, text) == (334, b"UGFzc3dvcmQ6")
    return c.docmd(base64.b64encode(password.encode()).decode())


@pytest.mark.parametrize("service", ["dvunix", "dvinet"])
def test_plain_and_login_through_dovecot(server: Server, dovecot: Dovecot, service: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports[service], timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert c.docmd("AUTH", f"PLAIN {_plain('alice', 'secret')}") == AUTH_OK
    with smtplib.SMTP("127.0.0.1", server.ports[service], timeout=30) as c:
        c.ehlo("client.example.test")
        assert _login(c, "bob", "hunter2") == AUTH_OK  # SHA512-CRYPT in Dovecot's passwd-file


def test_addresses_and_tls_reach_dovecot(server: Server, dovecot: Dovecot) -> None:
    start = len(dovecot.log_text())
    with smtplib.SMTP("127.0.0.1", server.ports["dvinet"], timeout=30) as c:
        c.starttls(context=client_context())
        c.ehlo("client.example.test")
        assert c.docmd("AUTH", f"PLAIN {_plain('alice', 'secret')}") == AUTH_OK
    deadline = time.monotonic() + 10
    rx = re.compile(r"client in: AUTH\t\d+\tPLAIN\tservice=smtp\tnologin\tlip=127\.0\.0\.1\t"
                    r"rip=127\.0\.0\.1\tsecured\tresp=<hidden>$", re.MULTILINE)
    while not rx.search(dovecot.log_text()[start:]):
        assert time.monotonic() < deadline, dovecot.log_text()[start:]
        time.sleep(0.05)


def test_wrong_password_is_535(server: Server, dovecot: Dovecot) -> None:
    mark = server.mark()
    with smtplib.SMTP("127.0.0.1", server.ports["dvunix"], timeout=60) as c:
        c.ehlo("client.example.test")
        assert c.docmd("AUTH", f"PLAIN {_plain('alice', 'wrong')}") == (
            535, b"5.7.8 Error: authentication failed: (reason unavailable)")
    server.wait_for_log(r"postfix/dvunix/smtpd\[\d+\]: warning: localhost\[127\.0\.0\.1\]: SASL PLAIN "
                        r"authentication failed: \(reason unavailable\), sasl_username=alice$",
                        start=mark)
    assert "passwd-file(alice,127.0.0.1): Password mismatch" in dovecot.log_text()


def test_dovecot_stopped_is_454() -> None:
    d = _make_dovecot()
    srv = _postillion_for(d)
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["dvunix"], timeout=30) as c:
            c.ehlo("client.example.test")
            assert c.docmd("AUTH", f"PLAIN {_plain('alice', 'secret')}") == AUTH_OK
        d.stop()
        mark = srv.mark()
        with smtplib.SMTP("127.0.0.1", srv.ports["dvunix"], timeout=30) as c:
            c.ehlo("client.example.test")
            assert c.docmd("AUTH", f"PLAIN {_plain('alice', 'secret')}") == (
                454, b"4.7.0 Temporary authentication failure: generic failure")
        # The kept connection is gone; the reconnect finds no socket.
        srv.wait_for_log(
            r"postfix/dvunix/smtpd\[\d+\]: warning: SASL: Connect to Dovecot "
            rf"auth socket 'unix:{re.escape(str(d.socket))}' failed: (No such file or directory|"
            r"Connection refused)$", start=mark)
    finally:
        cleanup(srv)
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


# --- a real Postfix against postillion auth-server -------------------------------------------

# Added to postfix_instance.py's base (every service unchrooted, so smtpd reaches the socket).
PF_MASTER_CF = """\
127.0.0.1:{port_inet} inet n - n - - smtpd
  -o syslog_name=postfix/pfinet
  -o smtpd_sasl_path=inet:127.0.0.1:{auth_port}
127.0.0.1:{port_unix} inet n - n - - smtpd
  -o syslog_name=postfix/pfunix
  -o smtpd_sasl_path=unix:{auth_socket}
"""

PF_MAIN_CF = """\
myhostname = pf.example.test
mynetworks = 127.0.0.2/32
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_error_sleep_time = 0
"""


@pytest.fixture(scope="module")
def auth_servers() -> Iterator[tuple[int, Path]]:
    """``postillion auth-server`` on TCP and on a UNIX socket, for user carol."""
    base = Path(tempfile.mkdtemp(prefix="ptas", dir="/tmp"))
    base.chmod(0o755)
    config = base / "etc"
    postillion(config, "init", "--hostname", "mail.example.test", "--ports", "0")
    postillion(config, "user", "add", "carol", input="carol-pw\n")
    port = free_port()
    sock = base / "auth"
    procs = []
    logs = []
    try:
        for listen in (f"inet:127.0.0.1:{port}", f"unix:{sock}"):
            log = base / f"as-{len(procs)}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "postillion", "-c", str(config), "auth-server",
                     "--listen", listen, "--mode", "0666", "--failure-delay", "0"],
                    stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 20
        while not all("listening on" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [log.read_text() for log in logs]
            time.sleep(0.05)
        assert sock.is_socket() and (sock.stat().st_mode & 0o777) == 0o666
        yield port, sock
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=15)
        assert not sock.exists()  # removed on exit
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pf_ports() -> dict[str, int]:
    """The private Postfix's two smtpd ports, by how they reach the auth-server."""
    return {"inet": free_port(), "unix": free_port()}


@pytest.fixture(scope="module")
def postfix(auth_servers: tuple[int, Path], pf_ports: dict[str, int]) -> Iterator[PostfixInstance]:
    auth_port, auth_socket = auth_servers
    master = PF_MASTER_CF.format(port_inet=pf_ports["inet"], port_unix=pf_ports["unix"],
                                 auth_port=auth_port, auth_socket=auth_socket)
    with running_postfix(PF_MAIN_CF, master) as pf:
        yield pf


@pytest.mark.parametrize("which", ["inet", "unix"])
def test_postfix_authenticates_against_postillion(postfix: PostfixInstance, pf_ports: dict[str, int],
                                                  which: str) -> None:
    port = pf_ports[which]
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert c.docmd("AUTH", f"PLAIN {_plain('carol', 'carol-pw')}") == AUTH_OK
        assert c.mail("a@example.net")[0] == 250
        assert c.rcpt("far@example.org")[0] == 250  # relaying: permit_sasl_authenticated
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert _login(c, "carol", "carol-pw") == AUTH_OK
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.test")
        code, text = c.docmd("AUTH", f"PLAIN {_plain('carol', 'wrong')}")
        assert (code, text) == (535, b"5.7.8 Error: authentication failed: (reason unavailable)")
    postfix.wait_for_log(rf"postfix/pf{which}/smtpd\[\d+\]: warning: localhost\[127\.0\.0\.1\]: SASL "
                         r"PLAIN authentication failed: \(reason unavailable\), sasl_username=carol$")


# --- postillion doctor with smtpd_sasl_type = dovecot ----------------------------------------

def _doctor(srv: Server, port: int, user: str, password: str) -> tuple[int, list[str]]:
    done = postillion(srv.config_dir, "doctor", "--port", str(port), "--user", user,
                      "--password-stdin", input=password + "\n", check=False)
    return done.returncode, done.stdout.splitlines()


def test_doctor_checks_dovecot_directly() -> None:
    d = _make_dovecot()
    srv = _postillion_for(d)
    try:
        code, lines = _doctor(srv, srv.ports["dvunix"], "bob", "hunter2")
        assert f"✔ SASL backend (Dovecot auth {d.socket})" in lines
        assert f"✔ Dovecot auth socket ({d.socket} answers)" in lines
        assert "✔ Dovecot mechanisms (PLAIN LOGIN)" in lines
        assert "✔ Dovecot password check (bob)" in lines
        _, lines = _doctor(srv, srv.ports["dvinet"], "bob", "wrong")
        i = lines.index("✘ Dovecot password check")
        assert lines[i + 1:i + 3] == ["    Dovecot refused bob: (reason unavailable)",
                                      "    fix: check bob's password in Dovecot's passdb: "
                                      "`doveadm auth test bob`"]
        d.stop()
        code, lines = _doctor(srv, srv.ports["dvunix"], "bob", "hunter2")
        assert code == 1
        i = lines.index("✘ Dovecot auth socket")
        # dovecot leaves its socket file behind when it stops
        assert lines[i + 1] == (f"    Connect to Dovecot auth socket 'unix:{d.socket}' failed: "
                                "Connection refused")
        assert lines[i + 2].startswith("    fix: start Dovecot (`systemctl start dovecot`); in Dovecot's "
                                       f"conf.d/10-master.conf: service auth {{ unix_listener {d.socket} "
                                       "{ mode = 0660")
        d.socket.unlink()
        _, lines = _doctor(srv, srv.ports["dvunix"], "bob", "hunter2")
        i = lines.index("✘ Dovecot auth socket")
        assert lines[i + 1] == (f"    {d.socket} does not exist: Dovecot is not running, or its "
                                "auth service does not listen there")
    finally:
        cleanup(srv)
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
