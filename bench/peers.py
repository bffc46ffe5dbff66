#!/usr/bin/env python3
"""Start and stop the three servers the benchmark compares, each on free loopback ports.

Owns: one class per system (postillion, a separate Postfix instance, an aiosmtpd peer) with the
same small surface: ``start()``, ``stop()``, ``submission_port``/``smtp_port``, ``pids()`` (the
whole process tree, for memory and CPU), ``stored()`` (messages that reached durable storage or
the downstream sink) and ``problems()`` (warning/error lines from the system's own log).
Everything lives under one run directory (default /tmp/postillion-bench-*); nothing outside it is
touched except the system user ``alice`` (useradd + chpasswd, for Postfix's PAM) and the
``postfix`` user's membership of group ``sasl`` (needed to open saslauthd's socket: otherwise
AUTH answers 454 4.7.0).
Must not import postillion (it drives the ``postillion`` command like an admin would).
Follows: the Postfix SASL_README/TLS_README submission recipe (master.cf ``submission`` entry),
saslauthd(8) ``-a pam``, smtp-sink(1).

  peers.py up [--run-dir DIR]     start all three, print the endpoints, stop them on Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import (
    PeerError,
    cpu_seconds,
    free_base,
    free_ports,
    memory_kb,
    process_tree,
    run,
    scan_problems,
    stop_process,
    wait_banner,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_PY = REPO / ".venv" / "bin" / "python"
POSTILLION = REPO / ".venv" / "bin" / "postillion"
USER, PASSWORD = "alice", "s3cret-pw"
HOSTNAME = "bench.test"

__all__ = [
    "Aiosmtpd",
    "PeerError",
    "Postfix",
    "Postillion",
    "cpu_seconds",
    "memory_kb",
    "start_all",
    "stop_all",
]

# ---- postillion ------------------------------------------------------------------------------


class Postillion:
    """postillion as an admin runs it: init, user add, postconf -e, start --foreground."""

    name = "postillion"

    def __init__(self, run_dir: Path, workers: int | None = None) -> None:
        self.dir = run_dir / "postillion"
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.submission_port = self.smtp_port = self.smtps_port = 0

    @property
    def cert(self) -> Path:
        return self.dir / "tls" / "cert.pem"

    @property
    def key(self) -> Path:
        return self.dir / "tls" / "key.pem"

    @property
    def maillog(self) -> Path:
        return self.dir / "data" / "maillog"

    @property
    def console(self) -> Path:
        return self.dir.parent / "postillion.console"

    def pil(
        self, *args: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run([str(POSTILLION), "-c", str(self.dir), *args], input=input)

    def start(self) -> None:
        base = free_base()
        self.smtp_port, self.submission_port, self.smtps_port = (
            base + 25,
            base + 587,
            base + 465,
        )
        self.pil("init", "--hostname", HOSTNAME, "--ports", str(base))
        self.pil("user", "add", USER, input=PASSWORD + "\n")
        # Accept-only for now (the figures in README.md): without the queue manager line,
        # accepted mail stays in spool/incoming, where the health check counts it.
        master = self.dir / "master.cf"
        master.write_text("".join(line for line in master.read_text().splitlines(keepends=True)
                                  if not line.startswith("qmgr ")))
        if self.workers:
            self.pil("postconf", "-e", f"postillion_worker_processes={self.workers}")
        self.pil("check")
        with open(self.console, "ab") as out:
            self.proc = subprocess.Popen(
                [str(POSTILLION), "-c", str(self.dir), "start", "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_banner(self.smtp_port)
            wait_banner(self.submission_port)
            wait_banner(self.smtps_port, tls=True)
        except PeerError as e:
            raise PeerError(
                f"postillion: {e}; see {self.console} and {self.maillog}"
            ) from e

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc.pid, group=True)
            self.proc.wait(timeout=5)

    def pids(self) -> list[int]:
        return process_tree([self.proc.pid]) if self.proc else []

    def stored(self) -> int:
        return len(os.listdir(self.dir / "data" / "spool" / "incoming"))

    def problems(self) -> list[str]:
        return scan_problems([self.maillog, self.console])

    def describe(self) -> str:
        workers = self.workers or os.cpu_count()
        return f"postillion (git {git_rev()}, {workers} workers/service)"


def git_rev() -> str:
    p = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "src"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (p.stdout.strip() or "?") + ("+dirty" if dirty.stdout.strip() else "")


# ---- Postfix ---------------------------------------------------------------------------------

POSTFIX_MAIN_CF = """\
# Separate Postfix instance for the benchmark: never touches /etc/postfix.
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {lib}
maillog_file = {log}
maillog_file_prefixes = {run}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {hostname}
mydomain = {hostname}
myorigin = $myhostname
mydestination =
local_transport = error:no local delivery
alias_maps =
alias_database =
biff = no
mynetworks = 127.0.0.0/8
# Everything relays to smtp-sink, so Postfix does its whole job: queue, fsync, deliver.
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
default_destination_concurrency_limit = 50
smtpd_banner = $myhostname ESMTP $mail_name
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {etc}/sasl
smtpd_sasl_authenticated_header = yes
# As `postillion init` writes them.
mua_client_restrictions = permit_sasl_authenticated, reject
mua_helo_restrictions =
mua_sender_restrictions =
"""

# The recipe's submission entry, word for word as `postillion init` writes it; no chroot anywhere
# (the instance lives under /tmp, and postillion does not chroot either).
POSTFIX_MASTER_CF = """\
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_helo_restrictions=$mua_helo_restrictions
  -o smtpd_sender_restrictions=$mua_sender_restrictions
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

SASL_SMTPD_CONF = """\
pwcheck_method: saslauthd
mech_list: plain login
saslauthd_path: {mux}/mux
"""


def ensure_system_user() -> None:
    """alice / s3cret-pw in /etc/shadow for PAM; postfix in group sasl (else AUTH -> 454 4.7.0)."""
    if run(["id", USER], check=False).returncode != 0:
        run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER])
    run(["chpasswd"], input=f"{USER}:{PASSWORD}\n")
    if "sasl" not in run(["id", "-nG", "postfix"]).stdout.split():
        run(["usermod", "-aG", "sasl", "postfix"])


class Postfix:
    """A separate Postfix instance (own config, queue, log, saslauthd) relaying to smtp-sink."""

    name = "postfix"

    def __init__(
        self, run_dir: Path, cert: Path, key: Path, *, saslauthd_cache: bool = True
    ) -> None:
        self.run_dir = run_dir
        self.root = run_dir / "postfix"
        self.etc, self.spool, self.lib = (
            self.root / "etc",
            self.root / "spool",
            self.root / "lib",
        )
        self.mux = run_dir / "saslauthd"
        self.maillog = self.root / "maillog"
        self.src_cert, self.src_key = cert, key
        self.saslauthd_cache = saslauthd_cache
        self.sink: subprocess.Popen[bytes] | None = None
        self.saslauthd_pid = 0
        self.master_pid = 0
        self.submission_port = self.smtp_port = self.sink_port = 0
        self.started = False

    def pf(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["postfix", "-c", str(self.etc), *args], check=check)

    def start(self) -> None:
        if shutil.which("postfix") is None or shutil.which("saslauthd") is None:
            raise PeerError(
                "Postfix or saslauthd missing: apt-get install postfix sasl2-bin smtp-sink"
            )
        ensure_system_user()
        self.sink_port, self.smtp_port, self.submission_port = free_ports(3)
        for d in (self.etc / "sasl", self.etc / "tls", self.spool, self.lib, self.mux):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.src_cert, self.etc / "tls" / "cert.pem")
        shutil.copy(self.src_key, self.etc / "tls" / "key.pem")
        os.chown(self.etc / "tls" / "key.pem", 0, 0)
        os.chmod(self.etc / "tls" / "key.pem", 0o600)
        shutil.chown(self.lib, "postfix", "postfix")
        os.chmod(self.lib, 0o700)
        shutil.chown(self.mux, "root", "sasl")
        os.chmod(self.mux, 0o710)
        (self.etc / "main.cf").write_text(
            POSTFIX_MAIN_CF.format(
                spool=self.spool,
                lib=self.lib,
                log=self.maillog,
                run=self.run_dir,
                hostname=HOSTNAME,
                sink=self.sink_port,
                cert=self.etc / "tls" / "cert.pem",
                key=self.etc / "tls" / "key.pem",
                etc=self.etc,
            )
        )
        (self.etc / "master.cf").write_text(
            POSTFIX_MASTER_CF.format(
                smtp=self.smtp_port, submission=self.submission_port
            )
        )
        (self.etc / "sasl" / "smtpd.conf").write_text(
            SASL_SMTPD_CONF.format(mux=self.mux)
        )
        self.maillog.touch()

        # saslauthd daemonizes and writes its pid file into the socket directory.
        run(
            [
                "saslauthd",
                "-a",
                "pam",
                *(["-c"] if self.saslauthd_cache else []),
                "-m",
                str(self.mux),
                "-n",
                "5",
            ]
        )
        for _ in range(100):
            if (self.mux / "mux").exists() and (self.mux / "saslauthd.pid").exists():
                break
            time.sleep(0.05)
        self.saslauthd_pid = int((self.mux / "saslauthd.pid").read_text().split()[0])
        t = run(
            [
                "testsaslauthd",
                "-f",
                str(self.mux / "mux"),
                "-u",
                USER,
                "-p",
                PASSWORD,
                "-s",
                "smtp",
            ],
            check=False,
        )
        if "OK" not in t.stdout:
            raise PeerError(
                f"saslauthd -a pam does not accept {USER}: {t.stdout}{t.stderr}"
            )

        with open(self.root / "smtp-sink.out", "wb") as out:
            self.sink = subprocess.Popen(
                ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.sink_port}", "1000"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_banner(self.sink_port, timeout=5)

        check = self.pf("check", check=False)
        if check.returncode != 0:
            raise PeerError(f"postfix check failed:\n{check.stdout}{check.stderr}")
        self.pf("start")
        self.started = True
        try:
            wait_banner(self.smtp_port)
            wait_banner(self.submission_port)
        except PeerError as e:
            raise PeerError(f"postfix: {e}; see {self.maillog}") from e
        self.master_pid = int(
            (self.spool / "pid" / "master.pid").read_text().split()[0]
        )

    def queued(self) -> int:
        """Messages still in Postfix's queue (not yet delivered to the sink)."""
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(self.spool / sub):
                n += len(files)
        return n

    def drain(self, timeout: float) -> int:
        """Wait up to *timeout* s for the queue to empty; return what is left."""
        deadline = time.monotonic() + timeout
        while (left := self.queued()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def stop(self) -> None:
        if self.started:
            self.pf("stop", check=False)
            if self.master_pid:
                stop_process(self.master_pid, timeout=15)
        if self.sink is not None and self.sink.poll() is None:
            stop_process(self.sink.pid, group=True)
            self.sink.wait(timeout=5)
        if self.saslauthd_pid:
            stop_process(self.saslauthd_pid, timeout=10)

    def pids(self) -> list[int]:
        # saslauthd is part of what a Postfix submission service costs; smtp-sink is the downstream.
        return process_tree([self.master_pid, self.saslauthd_pid])

    def stored(self) -> int:
        """Messages delivered to smtp-sink (queued, fsync'd, then relayed)."""
        return self.maillog.read_text(errors="replace").count(" status=sent ")

    def problems(self) -> list[str]:
        return scan_problems([self.maillog])

    def describe(self) -> str:
        v = run(
            ["postconf", "-c", str(self.etc), "-h", "mail_version"], check=False
        ).stdout.strip()
        return f"Postfix {v} (queue+fsync, relays to smtp-sink; saslauthd -a pam{' -c' if self.saslauthd_cache else ''})"


# ---- aiosmtpd --------------------------------------------------------------------------------


class Aiosmtpd:
    """aiosmtpd + uvloop (bench/aio_peer.py): STARTTLS+AUTH required, append+fsync, no delivery."""

    name = "aiosmtpd"

    def __init__(self, run_dir: Path, cert: Path, key: Path) -> None:
        self.root = run_dir / "aiosmtpd"
        self.cert, self.key = cert, key
        self.spool = self.root / "spool.mbox"
        self.log = self.root / "aio_peer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.submission_port = self.smtp_port = 0

    def start(self) -> None:
        if (
            run([str(VENV_PY), "-c", "import aiosmtpd, uvloop"], check=False).returncode
            != 0
        ):
            raise PeerError(
                f"aiosmtpd missing in the venv: {REPO}/.venv/bin/pip install aiosmtpd"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.submission_port, self.smtp_port = free_ports(2)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(VENV_PY),
                    str(BENCH_DIR / "aio_peer.py"),
                    "--port",
                    str(self.submission_port),
                    "--plain-port",
                    str(self.smtp_port),
                    "--cert",
                    str(self.cert),
                    "--key",
                    str(self.key),
                    "--spool",
                    str(self.spool),
                    "--hostname",
                    HOSTNAME,
                    "--user",
                    USER,
                    "--password",
                    PASSWORD,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_banner(self.submission_port)
            wait_banner(self.smtp_port)
        except PeerError as e:
            raise PeerError(f"aiosmtpd: {e}; see {self.log}") from e

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc.pid, group=True)
            self.proc.wait(timeout=5)

    def pids(self) -> list[int]:
        return process_tree([self.proc.pid]) if self.proc else []

    def stored(self) -> int:
        n = 0
        try:
            with open(self.spool, "rb") as f:
                n = sum(1 for line in f if line.startswith(b"From "))
        except FileNotFoundError:
            pass
        return n

    def problems(self) -> list[str]:
        return scan_problems([self.log])

    def describe(self) -> str:
        v = run(
            [
                str(VENV_PY),
                "-c",
                "import aiosmtpd, uvloop; print(aiosmtpd.__version__, uvloop.__version__)",
            ],
            check=False,
        ).stdout.split()
        return f"aiosmtpd {v[0] if v else '?'} + uvloop {v[1] if len(v) > 1 else '?'} (append+fsync, no delivery)"


def make_run_dir(path: str | None) -> Path:
    d = Path(path) if path else Path(tempfile.mkdtemp(prefix="postillion-bench-"))
    d.mkdir(parents=True, exist_ok=True)
    # Postfix daemons (user postfix) and saslauthd clients must be able to traverse it.
    os.chmod(d, 0o755)
    return d


def start_all(
    run_dir: Path, workers: int | None = None, saslauthd_cache: bool = True
) -> tuple[Postillion, Postfix, Aiosmtpd]:
    """Start the three; on failure stop whatever did start and re-raise."""
    pil = Postillion(run_dir, workers)
    pfx = Postfix(run_dir, pil.cert, pil.key, saslauthd_cache=saslauthd_cache)
    aio = Aiosmtpd(run_dir, pil.cert, pil.key)
    try:
        pil.start()
        # The same certificate (postillion's RSA key) everywhere: handshake cost must not differ.
        shutil.copy(pil.cert, run_dir / "cert.pem")
        shutil.copy(pil.key, run_dir / "key.pem")
        os.chmod(run_dir / "key.pem", 0o600)
        pfx.src_cert, pfx.src_key = run_dir / "cert.pem", run_dir / "key.pem"
        aio.cert, aio.key = run_dir / "cert.pem", run_dir / "key.pem"
        pfx.start()
        aio.start()
    except BaseException:
        stop_all((pil, pfx, aio))
        raise
    return pil, pfx, aio


def stop_all(peers: tuple[Postillion, Postfix, Aiosmtpd] | list[object]) -> None:
    for p in peers:
        try:
            p.stop()  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 -- one peer failing to stop must not leave the others running
            print(f"bench: stopping {p.name}: {e}", file=sys.stderr)  # type: ignore[attr-defined]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up"])
    ap.add_argument("--run-dir")
    ap.add_argument("--workers", type=int)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print(
            "peers.py: run as root (Postfix instance, useradd, saslauthd)",
            file=sys.stderr,
        )
        return 2
    run_dir = make_run_dir(a.run_dir)
    peers = start_all(run_dir, a.workers)
    info = {
        p.name: {"submission": p.submission_port, "smtp": p.smtp_port, "pids": p.pids()}
        for p in peers
    }
    (run_dir / "peers.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)
    print(f"run dir {run_dir}; Ctrl-C stops all three", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop_all(peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
