"""Our saslauthd and testsaslauthd as drop-ins for Cyrus's (Debian sasl2-bin 2.1.28).

* Both testsaslauthd programs against both daemons (-a shadow, -a pam, a throw-away system
  user): the same stdout, stderr and exit status for success, wrong password, unknown user and
  a missing socket.
* A real private Postfix (postfix_instance.py, ``smtpd_sasl_type = cyrus``, Cyrus
  ``smtpd.conf`` with ``pwcheck_method: saslauthd`` and ``saslauthd_path`` = our mux)
  authenticating against our saslauthd -a userdb and -a shadow: 235 and 535 from Postfix.
* postillion's own saslauthd verifier against our daemon (as tests/interop/test_saslauthd.py
  does against Cyrus's).
* A slow PAM failure (pam_faildelay) does not hold up a fast login; with Cyrus's -n 1 it does.
* -c: the second login comes from the cache; an old password stops working after -t.
* -a rimap against a real private Dovecot IMAP server.
* The run directory: created root:sasl 0710, socket 0777, pid file, a second instance refused.

Needs root (useradd, /etc/shadow, Postfix's master, Dovecot); skipped when a program is missing.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postfix_instance import POSTFIX, PostfixInstance, running_postfix

from postillion.config import Params
from postillion.sasl.exchange import AuthExchange, Verify
from postillion.sasl.saslauthd import encode_request
from postillion.sasl.userdb import UserDB
from postillion.sasl.verifiers import SaslauthdVerifier, make_sasl_server

SASLAUTHD = "/usr/sbin/saslauthd"
TESTSASLAUTHD = "/usr/sbin/testsaslauthd"
DOVECOT = "/usr/sbin/dovecot"
IMAP_BINARY = "/usr/lib/dovecot/imap"
OURS = [sys.executable, "-m", "postillion"]
AUTH_FAILED = "535 5.7.8 Error: authentication failed: authentication failure"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(not Path(SASLAUTHD).exists(), reason=f"{SASLAUTHD} missing (apt install sasl2-bin)"),
    pytest.mark.skipif(not Path(TESTSASLAUTHD).exists(), reason=f"{TESTSASLAUTHD} missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: useradd, /etc/shadow, Postfix"),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[str, str]]:
    """A real local user with a password; deleted afterwards."""
    name = f"ptown{secrets.token_hex(3)}"
    password = f"pw-{secrets.token_urlsafe(9)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    rundir: Path
    log_path: Path

    @property
    def mux(self) -> Path:
        return self.rundir / "mux"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while not (m := rx.search(self.log())):
            assert time.monotonic() < deadline, f"no log line {pattern!r} in:\n{self.log()}"
            time.sleep(0.05)
        return m

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session (Cyrus kills its group)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(kind: str, *args: str, rundir: Path | None = None) -> Daemon:
    """``saslauthd -d ARGS -m RUNDIR``, Cyrus's or ours, in the foreground; waits for the socket."""
    if rundir is None:
        rundir = Path(tempfile.mkdtemp(prefix="so", dir="/tmp"))  # AF_UNIX paths <= 108 bytes
        rundir.chmod(0o755)  # Postfix's smtpd (user postfix) must reach the socket
    log_path = Path(f"{rundir}.log")
    cmd = [SASLAUTHD] if kind == "cyrus" else [*OURS, "saslauthd"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*cmd, "-d", *args, "-m", str(rundir)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    d = Daemon(proc, rundir, log_path)
    deadline = time.monotonic() + 15
    while not d.mux.is_socket():
        if proc.poll() is not None or time.monotonic() > deadline:
            d.stop()
            pytest.fail(f"{kind} saslauthd did not start: {d.log()}")
        time.sleep(0.05)
    if kind == "ours":
        d.wait_for_log(r"listening on socket: ")
    return d


def discard(d: Daemon) -> None:
    d.stop()
    d.log_path.unlink(missing_ok=True)
    shutil.rmtree(d.rundir, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Started daemons to stop after the test."""
    started: list[Daemon] = []
    yield started
    for d in started:
        discard(d)


def run_testsaslauthd(kind: str, *args: str) -> tuple[int, str, str]:
    cmd = [TESTSASLAUTHD] if kind == "cyrus" else [*OURS, "testsaslauthd"]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stdout, done.stderr


# --- testsaslauthd x saslauthd -------------------------------------------------------------

@pytest.fixture(scope="module", params=[(k, m) for k in ("cyrus", "ours") for m in ("shadow", "pam")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def any_daemon(request: pytest.FixtureRequest, account: tuple[str, str]) -> Iterator[tuple[str, Daemon]]:
    kind, mech = request.param
    d = start(kind, "-a", mech, "-n", "2")
    try:
        yield kind, d
    finally:
        discard(d)


OK_LINE = '0: OK "Success."\n'
NO_LINE = '0: NO "authentication failed"\n'


def test_testsaslauthd_outputs_identical(any_daemon: tuple[str, Daemon], account: tuple[str, str]) -> None:
    _kind, d = any_daemon
    name, password = account
    mux = str(d.mux)
    cases = {
        "success": (["-u", name, "-p", password, "-s", "smtp", "-f", mux], (0, OK_LINE, "")),
        "default service imap": (["-u", name, "-p", password, "-f", mux], (0, OK_LINE, "")),
        "wrong password": (["-u", name, "-p", password + "x", "-f", mux], (255, NO_LINE, "")),
        "unknown user": (["-u", "no-such-ptown", "-p", password, "-f", mux], (255, NO_LINE, "")),
        "repeat": (["-u", name, "-p", password, "-R", "2", "-f", mux],
                   (0, '0: OK "Success."\n1: OK "Success."\n', "")),
        "missing socket": (["-u", name, "-p", password, "-f", str(d.rundir / "nothere")],
                           (255, "0: ", "connect() : No such file or directory\n")),
    }
    for label, (args, expected) in cases.items():
        real = run_testsaslauthd("cyrus", *args)
        ours = run_testsaslauthd("ours", *args)
        assert (label, real) == (label, expected)
        assert (label, ours) == (label, real)


def test_testsaslauthd_usage_error_exit_status() -> None:
    real = run_testsaslauthd("cyrus", "-u", "x")
    ours = run_testsaslauthd("ours", "-u", "x")
    assert (real[0], real[1]) == (ours[0], ours[1]) == (1, "")
    # The usage text names argv[0]: /usr/sbin/testsaslauthd there, testsaslauthd here.
    assert ours[2] == real[2].replace(TESTSASLAUTHD, "testsaslauthd")


def test_same_replies_on_the_wire(account: tuple[str, str], daemons: list[Daemon]) -> None:
    """Byte for byte the answers Cyrus's -a shadow gives, including the refusals."""
    name, password = account
    cyrus = start("cyrus", "-a", "shadow", "-n", "1")
    daemons.append(cyrus)
    ours = start("ours", "-a", "shadow")
    daemons.append(ours)
    requests = [encode_request(name, password, "smtp", ""),
                encode_request(name, "wrong", "smtp", ""),
                encode_request("no-such-ptown", "x", "smtp", ""),
                encode_request("", "x", "smtp", ""),
                encode_request(name, "", "smtp", ""),
                encode_request("x" * 300, "x", "smtp", "")]
    assert [ask(ours.mux, r) for r in requests] == [ask(cyrus.mux, r) for r in requests] == [
        b"OK", b"NO Incorrect password", b"NO Invalid username", b"NO NULL login received",
        b"NO NULL password received", b"NO "]
    fields = r"\[user=no-such-ptown\] \[service=smtp\] \[realm=\] \[mech=shadow\] \[reason=Invalid username\]"
    cyrus.wait_for_log(rf"^saslauthd\[\d+\] :auth failure: {fields}$")
    ours.wait_for_log(rf"^saslauthd\[\d+\] :auth failure: {fields}$")


def ask(mux: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(mux))
        s.sendall(request)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    (count,) = struct.unpack("!H", data[:2])
    assert len(data) == 2 + count
    return data[2:]


# --- postillion's verifier against ours ----------------------------------------------------

def test_postillion_verifier_against_ours(account: tuple[str, str], daemons: list[Daemon],
                                          tmp_path: Path) -> None:
    """The same checks tests/interop/test_saslauthd.py makes against Cyrus's daemon."""
    name, password = account
    d = start("ours", "-a", "pam")
    daemons.append(d)
    v = SaslauthdVerifier(d.mux, "smtp", "")

    async def checks() -> list[bool]:
        return [await v.verify(name, password), await v.verify(name, password + "x"),
                await v.verify(name, ""), await v.verify("no-such-ptown", password),
                await v.verify(f"{name}@example.org", password)]

    assert asyncio.run(checks()) == [True, False, False, False, True]
    (tmp_path / "sasl").mkdir()
    (tmp_path / "sasl" / "smtpd.conf").write_text(
        f"pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: {d.mux}\n")
    server = make_sasl_server(Params.from_dict({"cyrus_sasl_config_path": "sasl"}, config_dir=tmp_path))
    ex = AuthExchange("PLAIN", server.mechanisms)
    action = ex.start(base64.b64encode(f"\0{name}\0{password}".encode()).decode())
    assert isinstance(action, Verify)
    ok = ex.verified(asyncio.run(server.verifier.verify(action.authcid, action.password)))
    assert (ok.reply.lines(), ok.username) == (["235 2.7.0 Authentication successful"], name)


# --- concurrency ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "workers", "fast_first"), [("ours", "5", True), ("cyrus", "1", False)])
def test_slow_pam_failure_does_not_block_a_login(kind: str, workers: str, fast_first: bool,
                                                 account: tuple[str, str], daemons: list[Daemon]) -> None:
    """A wrong password makes PAM sleep (pam_unix's fail delay); a right one is quick.  Ours
    answers the second, quick request first; Cyrus with one worker cannot (the control)."""
    name, password = account
    d = start(kind, "-a", "pam", "-n", workers)
    daemons.append(d)

    async def race() -> list[str]:
        order: list[str] = []

        async def one(label: str, pw: str) -> None:
            reader, writer = await asyncio.open_unix_connection(str(d.mux))
            writer.write(encode_request(name, pw, "smtp", ""))
            await writer.drain()
            await reader.readexactly(2)
            order.append(label)
            writer.close()

        slow = asyncio.create_task(one("slow", password + "-wrong"))
        await asyncio.sleep(0.3)  # sequencing only: let the slow request reach PAM first
        fast = asyncio.create_task(one("fast", password))
        await asyncio.gather(slow, fast)
        return order

    assert asyncio.run(race()) == (["fast", "slow"] if fast_first else ["slow", "fast"])


# --- the credential cache ------------------------------------------------------------------

def test_cache_hit_and_expiry(daemons: list[Daemon], tmp_path: Path) -> None:
    db_path = tmp_path / "users.sqlite"
    db = UserDB(db_path)
    db.add("carol", "first-pw")
    d = start("ours", "-a", "userdb", "-O", str(db_path), "-c", "-t", "2")
    daemons.append(d)
    mux = str(d.mux)
    ok = (0, OK_LINE, "")
    no = (255, NO_LINE, "")
    key = r"\[login=carol\] \[service=smtp\] \[realm=\]"
    assert run_testsaslauthd("ours", "-u", "carol", "-p", "first-pw", "-s", "smtp", "-f", mux) == ok
    d.wait_for_log(rf":{key}: not found, update pending\n.*:lookup committed\n"
                   r".*:auth success: \[user=carol\] \[service=smtp\] \[realm=\] \[mech=userdb\]$")
    assert run_testsaslauthd("ours", "-u", "carol", "-p", "first-pw", "-s", "smtp", "-f", mux) == ok
    d.wait_for_log(rf":{key}: found with valid passwd\n"
                   r".*:auth success \(cached\): \[user=carol\] \[service=smtp\] \[realm=\]$")
    db.set_password("carol", "second-pw")
    # As Cyrus: the cached old password still works until the entry is -t seconds old ...
    assert run_testsaslauthd("ours", "-u", "carol", "-p", "first-pw", "-s", "smtp", "-f", mux) == ok
    assert d.log().count("auth success (cached)") == 2
    # ... and then it is asked of the mechanism again, which says no.
    deadline = time.monotonic() + 15
    while (result := run_testsaslauthd("ours", "-u", "carol", "-p", "first-pw", "-s", "smtp",
                                   "-f", mux)) == ok:
        assert time.monotonic() < deadline, "the cached password never expired"
        time.sleep(0.2)
    assert result == no
    d.wait_for_log(rf":{key}: not found, update pending\n.*:auth failure: \[user=carol\] "
                   r"\[service=smtp\] \[realm=\] \[mech=userdb\] \[reason=Unknown\]$")
    assert run_testsaslauthd("ours", "-u", "carol", "-p", "second-pw", "-s", "smtp", "-f", mux) == ok
    assert "first-pw" not in d.log() and "second-pw" not in d.log()


# --- run directory, pid file, second instance --------------------------------------------

def test_run_directory_and_second_instance(daemons: list[Daemon]) -> None:
    base = Path(tempfile.mkdtemp(prefix="so", dir="/tmp"))
    rundir = base / "saslauthd"  # missing: we create it as Debian's package does
    try:
        d = start("ours", "-a", "shadow", rundir=rundir)
        daemons.append(d)
        st = rundir.stat()
        try:
            sasl_gid = grp.getgrnam("sasl").gr_gid
        except KeyError:
            assert stat.S_IMODE(st.st_mode) == 0o755
        else:
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 0, sasl_gid)
        assert stat.S_IMODE(d.mux.lstat().st_mode) == 0o777
        assert (rundir / "saslauthd.pid").read_text() == f"{d.proc.pid}\n"
        second = subprocess.run([*OURS, "saslauthd", "-a", "shadow", "-d", "-m", str(rundir)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert second.returncode == 1
        assert second.stderr.splitlines()[-3:] == [
            (f"saslauthd[{_pid(second.stderr)}] :could not lock pid file {rundir}/saslauthd.pid: "
             "Resource temporarily unavailable"),
            f"saslauthd[{_pid(second.stderr)}] :Cannot start saslauthd",
            (f"saslauthd[{_pid(second.stderr)}] :Another instance of saslauthd is currently running "
             f"(pid {d.proc.pid})"),
        ]
        assert d.mux.is_socket()  # the running one is untouched
        d.stop()
        assert sorted(os.listdir(rundir)) == []  # socket and pid file removed on exit
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pid(text: str) -> str:
    m = re.search(r"saslauthd\[(\d+)\]", text)
    assert m, text
    return m.group(1)


# --- a real Postfix with Cyrus SASL against our saslauthd --------------------------------

# Added to postfix_instance.py's base (every service unchrooted, so smtpd reaches our socket).
MASTER_CF = "127.0.0.1:{port} inet n - n - - smtpd\n"

MAIN_CF = """\
myhostname = pf.example.test
mynetworks = 127.0.0.2/32
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {base}/etc/sasl
smtpd_banner = $myhostname ESMTP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["userdb", "shadow"])
def postfix_on_ours(request: pytest.FixtureRequest, account: tuple[str, str],
                    tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[tuple[PostfixInstance, int, Daemon, str, str]]:
    """A private Postfix on 127.0.0.1:PORT whose Cyrus SASL asks our saslauthd; (Postfix,
    PORT, our daemon, user, password)."""
    if not Path(POSTFIX).exists():
        pytest.skip(f"{POSTFIX} missing (apt install postfix)")
    if request.param == "userdb":
        user, password = "dora", f"pw-{secrets.token_urlsafe(9)}"
        db_path = tmp_path_factory.mktemp("userdb") / "users.sqlite"
        UserDB(db_path).add(user, password)
        d = start("ours", "-a", "userdb", "-O", str(db_path))
    else:
        user, password = account
        d = start("ours", "-a", "shadow")
    port = _free_port()
    smtpd_conf = f"pwcheck_method: saslauthd\nsaslauthd_path: {d.mux}\nmech_list: plain login\n"
    try:
        with running_postfix(MAIN_CF, MASTER_CF.format(port=port),
                             {"sasl/smtpd.conf": smtpd_conf}) as pf:
            yield pf, port, d, user, password
    finally:
        discard(d)


def smtp_auth(port: int, mech: str, user: str, password: str) -> tuple[list[str], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.test")
        offered = c.esmtp_features.get("auth", "").split()
        if mech == "PLAIN":
            reply = c.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())
        else:
            c.docmd("AUTH", "LOGIN " + base64.b64encode(user.encode()).decode())
            reply = c.docmd(base64.b64encode(password.encode()).decode())
    return offered, reply


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_postfix_authenticates_against_ours(
        postfix_on_ours: tuple[PostfixInstance, int, Daemon, str, str], mech: str) -> None:
    pf, port, d, user, password = postfix_on_ours
    offered, reply = smtp_auth(port, mech, user, password)
    assert offered == ["PLAIN", "LOGIN"]
    assert reply == (235, b"2.7.0 Authentication successful")
    offered, reply = smtp_auth(port, mech, user, password + "-wrong")
    assert f"{reply[0]} {reply[1].decode()}" == AUTH_FAILED
    pf.wait_for_log(rf"warning: localhost\[127\.0\.0\.1\]: SASL {mech} authentication failed: "
                    rf"authentication failure, sasl_username={re.escape(user)}$")
    d.wait_for_log(rf":auth success: \[user={re.escape(user)}\] \[service=smtp\] \[realm=\] \[mech=")


# --- rimap against a real Dovecot IMAP server --------------------------------------------

DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_failure_delay = 0
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
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""
MAIL_UID = 5026


@pytest.fixture(scope="module")
def dovecot_imap() -> Iterator[int]:
    if not (Path(DOVECOT).exists() and Path(IMAP_BINARY).exists()):
        pytest.skip(f"{IMAP_BINARY} missing (apt install dovecot-imapd)")
    base = Path(tempfile.mkdtemp(prefix="dvi", dir="/tmp"))
    base.chmod(0o755)
    port = _free_port()
    home = base / "home" / "erin"
    home.mkdir(parents=True)
    os.chown(home, MAIL_UID, MAIL_UID)
    (base / "passwd").write_text(f'erin:{{PLAIN}}se"cr\\et:{MAIL_UID}:{MAIL_UID}::{home}::\n')
    (base / "dovecot.conf").write_text(DOVECOT_CONF.format(base=base, port=port))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(base / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                assert time.monotonic() < deadline, "dovecot did not listen"
                time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_rimap_against_dovecot(dovecot_imap: int, daemons: list[Daemon]) -> None:
    d = start("ours", "-a", "rimap", "-O", f"127.0.0.1/{dovecot_imap}")
    daemons.append(d)
    mux = str(d.mux)
    assert ask(d.mux, encode_request("erin", 'se"cr\\et', "imap", "")) == b"OK remote authentication successful"
    assert ask(d.mux, encode_request("erin", "nope", "imap", "")) == b"NO remote server rejected your credentials"
    assert run_testsaslauthd("ours", "-u", "erin", "-p", 'se"cr\\et', "-f", mux) == (0, OK_LINE, "")
    d.wait_for_log(r":auth failure: \[user=erin\] \[service=imap\] \[realm=\] \[mech=rimap\] "
                   r"\[reason=remote server rejected your credentials\]$")
    # Nothing listening: Cyrus's text for a refused connection.
    dead = start("ours", "-a", "rimap", "-O", f"127.0.0.1:{_free_port()}")
    daemons.append(dead)
    assert ask(dead.mux, encode_request("erin", "x", "imap", "")) == (
        b"NO [ALERT] Remote authentication server refused connection request")
