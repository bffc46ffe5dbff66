"""The Postfix mail-submission recipe, walked on postillion with real saslauthd, PAM and openssl.

The recipe an admin follows for Postfix (ports 587 and 465): a ``submission`` entry in master.cf
with ``-o`` overrides, ``smtpd_sasl_type = cyrus`` (``postconf -a``), a Cyrus ``smtpd.conf`` with
``pwcheck_method: saslauthd``, a running ``saslauthd -a pam`` checked with ``testsaslauthd``, the
worker user in group ``sasl`` (Debian's ``/var/run/saslauthd`` is root:sasl 0710), and a test
with ``openssl s_client -starttls smtp``.  Every step below is what the admin types, on a private
copy: a throw-away system user, saslauthd on its own run directory, postillion on free ports.

Also: the same flow with ``saslauthd -a shadow``, with the embedded user store
(``pwcheck_method: auxprop``, ``auxprop_plugin: postillion``), and implicit TLS (465-style,
``smtpd_tls_wrappermode = yes``).  docs/recipe.md is the same walk written for people.

Needs root (useradd, group sasl, saslauthd reading /etc/shadow) and openssl; the saslauthd tests
need sasl2-bin.  Each is skipped with the reason otherwise.  Waits on log lines, never on sleeps.
Log formats: Postfix 3.7 (``connect from``, ``Anonymous TLS connection established``,
``client=..., sasl_method=..., sasl_username=...``, ``disconnect from ... commands=``).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SASLAUTHD = "/usr/sbin/saslauthd"
TESTSASLAUTHD = "/usr/sbin/testsaslauthd"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
HOSTNAME = "mail.example.test"
MAIL_OWNER = "postillion"  # what `postillion init` creates and the workers run as
SASL_GROUP = "sasl"  # Debian's group for /var/run/saslauthd (root:sasl 0710)
CLIENT = "localhost[127.0.0.1]"
REPLY_TIMEOUT = 60.0  # pam_faildelay makes a wrong password take ~2 s; leave plenty of room

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: useradd, group sasl, saslauthd")
needs_openssl = pytest.mark.skipif(not os.path.exists(OPENSSL),
                                   reason="openssl missing (apt install openssl)")
needs_saslauthd = pytest.mark.skipif(
    not (Path(SASLAUTHD).exists() and Path(TESTSASLAUTHD).exists()),
    reason=f"{SASLAUTHD} or {TESTSASLAUTHD} missing (apt install sasl2-bin)",
)
pytestmark = [pytest.mark.interop, pytest.mark.root, needs_root, needs_openssl]


# ------------------------------------------------------------------------------------ programs


def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def postillion(config_dir: Path, *args: str, input: str | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "postillion", "-c", str(config_dir), *args, input=input, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, ready: Callable[[], object], timeout: float = 30.0,
               alive: Callable[[], str | None] = lambda: None) -> object:
    """Poll ``ready()`` until it returns something true; ``alive()`` names why to give up early."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        dead = alive()
        if dead is not None:
            raise AssertionError(f"{dead} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def cleanups() -> Iterator[contextlib.ExitStack]:
    """Undo everything a test set up (users, groups, processes, files), even when it fails."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def account(cleanups: contextlib.ExitStack) -> tuple[str, str]:
    """Step 1: a real local user with a password (useradd + chpasswd); deleted afterwards."""
    name = f"ptrcp{secrets.token_hex(3)}"
    password = f"Pw-{secrets.token_urlsafe(9)}"
    run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
    cleanups.callback(run, "userdel", name, check=False)
    run("chpasswd", input=f"{name}:{password}\n")
    return name, password


@dataclass
class SaslGroup:
    """Membership of mail_owner in group ``sasl``, restored to what it was at the end."""

    gid: int

    @staticmethod
    def is_member() -> bool:
        return MAIL_OWNER in grp.getgrnam(SASL_GROUP).gr_mem

    def add_mail_owner(self) -> None:
        if shutil.which("adduser"):
            run("adduser", MAIL_OWNER, SASL_GROUP)  # what Debian's README.Debian tells admins to type
        else:
            run("gpasswd", "-a", MAIL_OWNER, SASL_GROUP)
        assert self.is_member()

    def remove_mail_owner(self) -> None:
        if self.is_member():
            run("gpasswd", "-d", MAIL_OWNER, SASL_GROUP)


@pytest.fixture
def sasl_group(cleanups: contextlib.ExitStack) -> SaslGroup:
    """Group ``sasl`` (as sasl2-bin creates it) without mail_owner in it, to start from scratch."""
    try:
        grp.getgrnam(SASL_GROUP)
    except KeyError:
        run("groupadd", "--system", SASL_GROUP)
        cleanups.callback(run, "groupdel", SASL_GROUP, check=False)
    # The account `postillion init` creates; kept afterwards like any package's system user.
    try:
        owner = pwd.getpwnam(MAIL_OWNER)
    except KeyError:
        run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_OWNER)
        owner = pwd.getpwnam(MAIL_OWNER)
    assert owner.pw_gid != grp.getgrnam(SASL_GROUP).gr_gid, "mail_owner's primary group is sasl"
    group = SaslGroup(grp.getgrnam(SASL_GROUP).gr_gid)
    was_member = group.is_member()
    cleanups.callback(group.add_mail_owner if was_member else group.remove_mail_owner)
    group.remove_mail_owner()
    return group


@dataclass
class Saslauthd:
    proc: subprocess.Popen[bytes]
    rundir: Path
    log: Path

    @property
    def mux(self) -> Path:
        return self.rundir / "mux"


@pytest.fixture
def start_saslauthd(cleanups: contextlib.ExitStack, sasl_group: SaslGroup) -> Callable[[str], Saslauthd]:
    """Step 2: ``saslauthd -a MECH -m RUNDIR -n 2 -d`` on a run directory laid out like Debian's."""

    def start(mech: str) -> Saslauthd:
        # Short path: sockaddr_un holds 108 bytes.  root:sasl 0710, as /var/run/saslauthd.
        rundir = Path(tempfile.mkdtemp(prefix="sa", dir="/tmp"))
        cleanups.callback(shutil.rmtree, rundir, ignore_errors=True)
        os.chown(rundir, 0, sasl_group.gid)
        rundir.chmod(0o710)
        log = Path(f"{rundir}.log")
        cleanups.callback(log.unlink, missing_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [SASLAUTHD, "-a", mech, "-m", str(rundir), "-n", "2", "-d"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the master and its children
            )
        cleanups.callback(_stop_group, proc)
        daemon = Saslauthd(proc, rundir, log)
        wait_until(
            f"saslauthd -a {mech} to listen on {daemon.mux}",
            lambda: f"listening on socket: {daemon.mux}" in log.read_text(errors="replace"),
            alive=lambda: None if proc.poll() is None
            else f"saslauthd exited {proc.returncode}: {log.read_text(errors='replace')}",
        )
        return daemon

    return start


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_testsaslauthd(daemon: Saslauthd, user: str, password: str) -> tuple[int, str]:
    """Step 3: the check the recipe asks for before touching the mail server."""
    done = run(TESTSASLAUTHD, "-u", user, "-p", password, "-s", "smtp", "-f", str(daemon.mux), check=False)
    return done.returncode, done.stdout


# ------------------------------------------------------------------------------------ postillion

SUBMISSION_ENTRY = """\
{name} inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_helo_restrictions=$mua_helo_restrictions
  -o smtpd_sender_restrictions=$mua_sender_restrictions
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
"""

SMTPS_ENTRY = """\
{name} inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_helo_restrictions=$mua_helo_restrictions
  -o smtpd_sender_restrictions=$mua_sender_restrictions
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
"""

SUBMISSION_OVERRIDES = [
    "milter_macro_daemon_name = ORIGINATING",
    "smtpd_client_restrictions = $mua_client_restrictions",
    "smtpd_helo_restrictions = $mua_helo_restrictions",
    "smtpd_recipient_restrictions = permit_sasl_authenticated,reject",
    "smtpd_sasl_auth_enable = yes",
    "smtpd_sender_restrictions = $mua_sender_restrictions",
    "smtpd_tls_security_level = encrypt",
    "syslog_name = postfix/submission",
]

SASLAUTHD_CONF = """\
pwcheck_method: saslauthd
mech_list: plain login
saslauthd_path: {mux}
"""


@dataclass
class Postillion:
    config_dir: Path
    submission: int
    smtps: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def maillog(self) -> Path:
        return self.config_dir / "data" / "maillog"

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        return len(self.log_text())

    def wait_for_log(self, pattern: str, start: int = 0, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        found = wait_until(
            f"a log line matching {pattern!r}",
            lambda: rx.search(self.log_text(), start),
            timeout,
            alive=self._dead,
        )
        assert isinstance(found, re.Match)
        return found

    def _dead(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        return f"postillion exited {self.proc.returncode}:\n{out}\nlog:\n{self.log_text()[-3000:]}"

    def start(self) -> None:
        start = self.mark()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postillion", "-c", str(self.config_dir), "start", "--foreground"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.wait_for_log(r"postfix/master\[\d+\]: daemon started -- ", start)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reload(self) -> None:
        """``postillion reload``, then wait until only new workers (fresh groups) serve."""
        before = re.search(r" generation (\d+) ", self.status())
        assert before is not None
        start = self.mark()
        postillion(self.config_dir, "reload")
        self.wait_for_log(r"postfix/master\[\d+\]: reload -- ", start)
        wanted = f" generation {int(before[1]) + 1} "

        def only_new_workers() -> bool:
            table = self.status()
            return wanted in table and "(stopping)" not in table

        wait_until("the old workers to stop", only_new_workers, alive=self._dead)

    def status(self) -> str:
        return postillion(self.config_dir, "status").stdout

    def queue_file(self, queue_id: str) -> list[Path]:
        return [p for p in (self.config_dir / "data" / "spool").rglob(queue_id) if p.is_file()]


@pytest.fixture
def make_postillion(cleanups: contextlib.ExitStack) -> Callable[[str | None], Postillion]:
    """Step 4: ``postillion init``, then master.cf and sasl/smtpd.conf edited by hand.

    ``smtpd_conf`` None keeps what init wrote (the embedded user store)."""

    def make(smtpd_conf: str | None) -> Postillion:
        base = Path(tempfile.mkdtemp(prefix="postillion-recipe-", dir="/tmp"))
        cleanups.callback(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)  # mail_owner must reach data/ below it
        config_dir = base / "etc"
        postillion(config_dir, "init", "--hostname", HOSTNAME, "--ports", "0")
        server = Postillion(config_dir, submission=free_port(), smtps=free_port())
        cleanups.callback(server.stop)
        # Keep init's `smtp` line; the submission and smtps entries are the admin's, typed in.
        master_cf = (config_dir / "master.cf").read_text()
        smtp_line = re.search(r"^127\.0\.0\.1:25 .*\n", master_cf, re.MULTILINE)
        assert smtp_line is not None, master_cf
        master_cf = master_cf[: smtp_line.start()].rstrip("\n") + "\n"
        master_cf += SUBMISSION_ENTRY.format(name=f"127.0.0.1:{server.submission}")
        master_cf += SMTPS_ENTRY.format(name=f"127.0.0.1:{server.smtps}")
        (config_dir / "master.cf").write_text(master_cf)
        if smtpd_conf is not None:
            (config_dir / "sasl" / "smtpd.conf").write_text(smtpd_conf)
        return server

    return make


# ------------------------------------------------------------------------------------ openssl


class OpensslClient:
    """``openssl s_client ... -crlf -quiet`` as a line-by-line SMTP client.

    With ``-starttls smtp`` openssl itself reads the greeting, sends its own EHLO and STARTTLS,
    and hands over after the handshake, so the first reply we read is to our own EHLO.
    """

    def __init__(self, port: int, *, starttls: bool) -> None:
        args = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-crlf", "-quiet"]
        if starttls:
            args[2:2] = ["-starttls", "smtp"]
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")  # -crlf turns it into CRLF
        self.proc.stdin.flush()

    def reply(self) -> list[str]:
        """One whole reply: lines up to the one with a space after the code."""
        got: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"no reply within {REPLY_TIMEOUT}s; so far {got}; {self._stderr()}") from None
            if line is None:
                raise AssertionError(f"openssl s_client ended; so far {got}; {self._stderr()}")
            got.append(line)
            if re.match(r"\d{3}( |$)", line):
                return got

    def command(self, line: str) -> list[str]:
        self.send(line)
        return self.reply()

    def close(self) -> int:
        """Wait for openssl to end (the server closed after QUIT); its exit code."""
        try:
            return self.proc.wait(timeout=REPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"openssl s_client still running after QUIT; {self._stderr()}") from None
        finally:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            self.stderr.close()

    def _stderr(self) -> str:
        self.stderr.seek(0)
        return "stderr: " + self.stderr.read().decode(errors="replace")


def auth_plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def ehlo_after_tls(server: Postillion) -> list[str]:
    """The EHLO reply after STARTTLS; AUTH lists smtpd.conf's mech_list (init's has SCRAM, the
    saslauthd ones PLAIN LOGIN)."""
    conf = (server.config_dir / "sasl" / "smtpd.conf").read_text()
    mechs = re.search(r"^mech_list: (.*)$", conf, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return [
        f"250-{HOSTNAME}",
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-VRFY",
        "250-ETRN",
        f"250-AUTH {mechs.upper()}",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-DSN",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]


def submit(server: Postillion, client: OpensslClient, user: str, password: str) -> str:
    """EHLO, AUTH PLAIN, one message, QUIT; the queue id."""
    assert client.command("EHLO client.example.test") == ehlo_after_tls(server)
    assert client.command(auth_plain(user, password)) == ["235 2.7.0 Authentication successful"]
    assert client.command(f"MAIL FROM:<{user}@{HOSTNAME}>") == ["250 2.1.0 Ok"]
    assert client.command("RCPT TO:<friend@remote.test>") == ["250 2.1.5 Ok"]
    assert client.command("DATA") == ["354 End data with <CR><LF>.<CR><LF>"]
    for line in (f"From: <{user}@{HOSTNAME}>", "To: <friend@remote.test>", "Subject: recipe", "",
                 "Sent through the submission recipe."):
        client.send(line)
    queued = client.command(".")
    assert len(queued) == 1 and re.fullmatch(r"250 2\.0\.0 Ok: queued as [0-9A-F]{6,}", queued[0]), queued
    assert client.command("QUIT") == ["221 2.0.0 Bye"]
    client.close()
    return queued[0].rsplit(" ", 1)[1]


# ------------------------------------------------------------------------------------ log checks

LOG_LINE = re.compile(
    r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ (?P<ident>\S+)\[(?P<pid>\d+)\]: (?P<text>.*)$", re.MULTILINE
)
TLS_LINE = re.escape(f"Anonymous TLS connection established from {CLIENT}: ") + (
    r"TLSv1\.3 with cipher TLS_\w+ \(\d+/\d+ bits\)( key-exchange .*)?"
)


def session_log(server: Postillion, syslog_name: str, start: int) -> list[str]:
    """The texts that one smtpd process logged for the session that began after ``start``."""
    server.wait_for_log(rf"{re.escape(syslog_name)}/smtpd\[\d+\]: disconnect from ", start)
    lines = list(LOG_LINE.finditer(server.log_text(), start))
    first = next(m for m in lines
                 if m["ident"] == f"{syslog_name}/smtpd" and m["text"].startswith("connect from"))
    texts = [m["text"] for m in lines if m["ident"] == first["ident"] and m["pid"] == first["pid"]]
    end = next(i for i, t in enumerate(texts) if t.startswith("disconnect from "))
    return texts[: end + 1]


def assert_session(texts: list[str], expected: list[str]) -> None:
    """Each logged text must match the pattern at its place, and nothing else may be logged."""
    assert len(texts) == len(expected), "\n".join(texts)
    for text, pattern in zip(texts, expected):
        assert re.fullmatch(pattern, text), f"{text!r} !~ {pattern!r}"


def successful_session(user: str, queue_id: str, *, starttls: bool = True) -> list[str]:
    counts = "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8" if starttls else (
        "ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6")
    return [
        re.escape(f"connect from {CLIENT}"),
        TLS_LINE,
        re.escape(f"{queue_id}: client={CLIENT}, sasl_method=PLAIN, sasl_username={user}"),
        re.escape(f"disconnect from {CLIENT} {counts}"),
    ]


def wrong_password_session(user: str) -> list[str]:
    return [
        re.escape(f"connect from {CLIENT}"),
        TLS_LINE,
        re.escape(f"warning: {CLIENT}: SASL PLAIN authentication failed: authentication failure, "
                  f"sasl_username={user}"),
        re.escape(f"disconnect from {CLIENT} ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5"),
    ]


def check_wrong_password(server: Postillion, user: str, password: str) -> None:
    start = server.mark()
    client = OpensslClient(server.submission, starttls=True)
    assert client.command("EHLO client.example.test") == ehlo_after_tls(server)
    assert client.command(auth_plain(user, password + "x")) == [
        "535 5.7.8 Error: authentication failed: authentication failure"]
    assert client.command("QUIT") == ["221 2.0.0 Bye"]
    client.close()
    assert_session(session_log(server, "postfix/submission", start), wrong_password_session(user))


def check_submission(server: Postillion, user: str, password: str) -> None:
    """Step 5 and 6: the recipe's openssl test and the log lines it must leave."""
    start = server.mark()
    queue_id = submit(server, OpensslClient(server.submission, starttls=True), user, password)
    assert_session(session_log(server, "postfix/submission", start), successful_session(user, queue_id))
    assert len(server.queue_file(queue_id)) == 1
    check_wrong_password(server, user, password)


# ------------------------------------------------------------------------------------ the tests


@needs_saslauthd
def test_recipe_saslauthd_pam_step_by_step(
    account: tuple[str, str], sasl_group: SaslGroup,
    start_saslauthd: Callable[[str], Saslauthd], make_postillion: Callable[[str | None], Postillion],
) -> None:
    user, password = account  # step 1

    # Step 2: saslauthd -a pam, on a run directory only root and group sasl may enter.
    daemon = start_saslauthd("pam")
    st = daemon.rundir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, sasl_group.gid, 0o710)

    # Step 3: PAM service "smtp" (no /etc/pam.d/smtp: "other", i.e. pam_unix) knows the user.
    assert run_testsaslauthd(daemon, user, password) == (0, '0: OK "Success."\n')
    code, out = run_testsaslauthd(daemon, user, password + "x")
    assert (code != 0, out) == (True, '0: NO "authentication failed"\n')

    # Step 4: configuration, the Postfix way.
    server = make_postillion(SASLAUTHD_CONF.format(mux=daemon.mux))
    assert postillion(server.config_dir, "postconf", "-a").stdout == "cyrus\ndovecot\n"
    assert postillion(server.config_dir, "postconf", "smtpd_sasl_type", "smtpd_sasl_path").stdout == (
        "smtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\n")
    overrides = postillion(server.config_dir, "postconf", "-P").stdout.splitlines()
    name = f"127.0.0.1:{server.submission}/inet"
    assert [line for line in overrides if line.startswith(name + "/")] == [
        f"{name}/{setting}" for setting in SUBMISSION_OVERRIDES]
    checked = postillion(server.config_dir, "check")
    assert (checked.returncode, checked.stdout) == (0, f"postillion: {server.config_dir}: configuration ok\n")

    # Step 5, first without `adduser postillion sasl`: the worker cannot reach the socket.
    server.start()
    start = server.mark()
    client = OpensslClient(server.submission, starttls=True)
    assert client.command("EHLO client.example.test") == ehlo_after_tls(server)
    assert client.command(auth_plain(user, password)) == [
        "454 4.7.0 Temporary authentication failure: generic failure"]
    assert client.command("QUIT") == ["221 2.0.0 Bye"]
    client.close()
    uid = pwd.getpwnam(MAIL_OWNER).pw_uid
    assert_session(session_log(server, "postfix/submission", start), [
        re.escape(f"connect from {CLIENT}"),
        TLS_LINE,
        re.escape(f"warning: SASL authentication failure: cannot connect to saslauthd server {daemon.mux}: "
                  f"Permission denied (the user postillion runs as, uid {uid}, must be able to reach "
                  f"the socket: e.g. adduser {MAIL_OWNER} {SASL_GROUP})"),
        re.escape(f"warning: {CLIENT}: SASL PLAIN authentication failed: generic failure, "
                  f"sasl_username={user}"),
        re.escape(f"disconnect from {CLIENT} ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5"),
    ])

    # The fix the warning names, then a reload so that new workers pick up the group.
    sasl_group.add_mail_owner()
    server.reload()

    # Steps 5 and 6: 235, a queued message, 535 for a wrong password, and the log lines.
    check_submission(server, user, password)


@needs_saslauthd
def test_recipe_saslauthd_shadow(
    account: tuple[str, str], sasl_group: SaslGroup,
    start_saslauthd: Callable[[str], Saslauthd], make_postillion: Callable[[str | None], Postillion],
) -> None:
    user, password = account
    daemon = start_saslauthd("shadow")
    assert run_testsaslauthd(daemon, user, password) == (0, '0: OK "Success."\n')
    sasl_group.add_mail_owner()
    server = make_postillion(SASLAUTHD_CONF.format(mux=daemon.mux))
    assert postillion(server.config_dir, "check").returncode == 0
    server.start()
    check_submission(server, user, password)


def test_recipe_embedded_user_store(make_postillion: Callable[[str | None], Postillion]) -> None:
    """No saslauthd: init's smtpd.conf (auxprop + postillion) and `postillion user add`."""
    server = make_postillion(None)
    assert (server.config_dir / "sasl" / "smtpd.conf").read_text().splitlines()[-3:] == [
        "pwcheck_method: auxprop", "auxprop_plugin: postillion",
        "mech_list: SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN"]
    user, password = "alice", f"Pw-{secrets.token_urlsafe(9)}"
    postillion(server.config_dir, "user", "add", user, input=password + "\n")
    assert postillion(server.config_dir, "check").returncode == 0
    # Switching to dovecot while smtpd_sasl_path still names the Cyrus application "smtpd" is the
    # classic half-done migration: `check` says where it looked for Dovecot's socket.
    postillion(server.config_dir, "postconf", "-e", "smtpd_sasl_type=dovecot")
    warned = postillion(server.config_dir, "check", check=False)
    lineno = next(i for i, line in enumerate((server.config_dir / "main.cf").read_text().splitlines(), 1)
                  if line.startswith("smtpd_sasl_path"))
    spool = server.config_dir / "data" / "spool"
    assert warned.returncode == 0
    assert warned.stderr.startswith(
        f"postillion: warning: main.cf:{lineno}: smtpd_sasl_path: Dovecot auth socket "
        f"{spool}/smtpd: does not exist (is Dovecot running, with an auth unix_listener there?); ")
    postillion(server.config_dir, "postconf", "-e", "smtpd_sasl_type=cyrus")
    assert postillion(server.config_dir, "check").returncode == 0
    server.start()
    check_submission(server, user, password)


@needs_saslauthd
def test_recipe_implicit_tls_465(
    account: tuple[str, str], sasl_group: SaslGroup,
    start_saslauthd: Callable[[str], Saslauthd], make_postillion: Callable[[str | None], Postillion],
) -> None:
    """The 465 half of the recipe: smtpd_tls_wrappermode = yes and s_client without -starttls."""
    user, password = account
    daemon = start_saslauthd("pam")
    sasl_group.add_mail_owner()
    server = make_postillion(SASLAUTHD_CONF.format(mux=daemon.mux))
    overrides = postillion(server.config_dir, "postconf", "-P").stdout.splitlines()
    assert f"127.0.0.1:{server.smtps}/inet/smtpd_tls_wrappermode = yes" in overrides
    server.start()
    start = server.mark()
    client = OpensslClient(server.smtps, starttls=False)
    assert client.reply() == [f"220 {HOSTNAME} ESMTP Postfix"]  # smtpd_banner, sent inside TLS
    queue_id = submit(server, client, user, password)
    assert_session(session_log(server, "postfix/smtps", start),
                   successful_session(user, queue_id, starttls=False))
