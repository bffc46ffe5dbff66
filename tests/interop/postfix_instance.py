"""A private, throw-away Postfix for interop tests: its own config_directory, queue_directory,
data_directory and maillog_file under one /tmp directory, loopback only.

Owns: writing main.cf/master.cf and any other files the instance reads (a Cyrus
sasl/smtpd.conf, a TLS key pair, maps), ``postfix start``/``stop`` and waiting for the master to
go, and running Postfix's admin programs (postqueue, postsuper, postcat, sendmail) against that
instance.  Must not import: postillion (this is the oracle side); used by test_mailq_postfix.py,
test_postfix_relayhost.py, test_own_saslauthd.py and test_dovecot_auth.py.
Follows: Postfix MULTI_INSTANCE_README ("-c config_directory"), postfix(1), postqueue(1),
postsuper(1), postcat(1), sendmail(1); Postfix 3.7 as packaged by Debian.

Needs root: Postfix's master runs as root and its daemons as user postfix.  Every service runs
unchrooted (column 5 = n) so nothing has to be copied into a chroot, and an smtpd can reach a
private saslauthd or Dovecot auth socket under /tmp.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTSUPER = "/usr/sbin/postsuper"
SENDMAIL = "/usr/sbin/sendmail"
POSTCAT = "/usr/sbin/postcat"
PROGRAMS = (POSTFIX, POSTQUEUE, POSTSUPER, SENDMAIL)

# The services a queue-only instance needs: mail comes in through sendmail/postdrop/pickup.
BASE_MASTER_CF = """\
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

BASE_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_transport = error:no local delivery
alias_maps =
alias_database =
smtp_tls_security_level = none
"""


@dataclass
class PostfixInstance:
    base: Path

    @property
    def config(self) -> Path:
        return self.base / "etc"

    def log_text(self) -> str:
        try:
            return (self.base / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while not (m := rx.search(self.log_text())):
            assert time.monotonic() < deadline, \
                f"no Postfix log line {pattern!r}:\n{self.log_text()[-3000:]}"
            time.sleep(0.05)
        return m

    def run(self, program: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([program, "-c", str(self.config), *args], input=input,
                              capture_output=True, text=True, check=False, timeout=30)

    def postqueue(self, *args: str) -> str:
        done = self.run(POSTQUEUE, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def postcat(self, queue_id: str) -> str:
        """``postcat -q ID``: the queue file of one message, records and content."""
        done = self.run(POSTCAT, "-q", queue_id)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def sendmail(self, sender: str, recipients: list[str], message: str) -> str:
        """Queue one message (``sendmail -f sender -- rcpt...``); its queue id, from the log."""
        mark = len(self.log_text())
        done = subprocess.run([SENDMAIL, "-C", str(self.config), "-f", sender, "--", *recipients],
                              input=message, capture_output=True, text=True, check=False, timeout=30)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 20
        rx = re.compile(r"postfix/pickup\[\d+\]: (\w+): uid=\d+ from=<(.*)>$", re.MULTILINE)
        while True:
            for m in rx.finditer(self.log_text(), mark):
                return m.group(1)
            assert time.monotonic() < deadline, self.log_text()[-2000:]
            time.sleep(0.05)

    def on_tty(self, program: str, *args: str) -> tuple[int, str]:
        """Run an admin program with stderr on a terminal, as an operator sees it: Postfix's
        postsuper reports to stderr only when it is a tty (msg_vstream_init)."""
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([program, "-c", str(self.config), *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=slave)
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                ready, _, _ = select.select([master], [], [], 30)
                if not ready:
                    break
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            code = proc.wait(timeout=30)
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
        return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (a zombie counts: the daemonized master's parent is init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@contextmanager
def running_postfix(main_cf: str = "", master_cf: str = "",
                    files: Mapping[str, str | bytes] | None = None) -> Iterator[PostfixInstance]:
    """Start a private Postfix with BASE_MAIN_CF + ``main_cf`` and BASE_MASTER_CF +
    ``master_cf`` (``{base}`` is replaced in main_cf); stop it and remove everything after.

    ``files`` maps paths relative to the config directory (``{base}/etc``) to contents, written
    before ``postfix start``, e.g. ``{"sasl/smtpd.conf": ...}`` for ``cyrus_sasl_config_path =
    {base}/etc/sasl``.  A name ending in ``key.pem`` is written 0600, as a private key should be."""
    base = Path(tempfile.mkdtemp(prefix="pf", dir="/tmp"))
    base.chmod(0o755)  # Postfix's daemons run as user postfix and chdir to the queue directory
    pf = PostfixInstance(base=base)
    pf.config.mkdir()
    (base / "spool").mkdir()
    (base / "data").mkdir()
    shutil.chown(base / "data", "postfix", "postfix")
    (pf.config / "main.cf").write_text((BASE_MAIN_CF + main_cf).replace("{base}", str(base)))
    (pf.config / "master.cf").write_text(BASE_MASTER_CF + master_cf)
    for name, content in (files or {}).items():
        path = pf.config / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        path.chmod(0o600 if name.endswith("key.pem") else 0o644)
    started = pf.run(POSTFIX, "start")
    pid_file = base / "spool" / "pid" / "master.pid"
    try:
        # Without a terminal the postfix command reports to syslog only, so show its log too.
        assert started.returncode == 0, f"postfix start failed: {started.stderr}\n{pf.log_text()}"
        pf.wait_for_log(r"postfix/master\[\d+\]: daemon started")
        yield pf
    finally:
        pf.run(POSTFIX, "stop")
        try:
            pid = int(pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and not _wait_gone(pid, 15):
            os.kill(pid, signal.SIGKILL)  # the master; its children exit when it is gone
        shutil.rmtree(base, ignore_errors=True)
