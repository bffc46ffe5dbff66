"""Run a real postillion (supervisor + workers) on 127.0.0.1 for integration tests.

Each server gets its own configuration directory made by `postillion init`, free ports, and
is driven as an admin would: edit main.cf/master.cf, `start --foreground`, read the maillog.
Waiting is done on log lines (never on fixed sleeps).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HOSTNAME = "mail.example.test"
PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postillion(config_dir: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postillion", "-c", str(config_dir), *args],
        input=input,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Server:
    config_dir: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    extra_main: dict[str, str] = field(default_factory=dict)

    @property
    def maillog(self) -> Path:
        return self.config_dir / "data" / "maillog"

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise AssertionError(f"postillion exited ({self.proc.returncode}) while waiting for {pattern!r}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def mark(self) -> int:
        """The current end of the log, to search only what comes after."""
        return len(self.log_text())

    def postconf(self, *settings: str) -> None:
        postillion(self.config_dir, "postconf", "-e", *settings)

    def start(self) -> None:
        start = self.mark()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postillion", "-c", str(self.config_dir), "start", "--foreground"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.wait_for_log(r"daemon started", start=start)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        postillion(self.config_dir, "user", "add", name, input=password + "\n")


def make_server(
    main: dict[str, str] | None = None,
    master: str | None = None,
    workers: int = 1,
) -> Server:
    """A configured (not started) server; `master` may use {smtp} {submission} {smtps} ports."""
    base = Path(tempfile.mkdtemp(prefix="postillion-test-", dir="/tmp"))
    base.chmod(0o755)  # the unprivileged workers must reach the data directory
    config_dir = base / "etc"
    postillion(config_dir, "init", "--hostname", HOSTNAME, "--ports", "0")
    ports = {"smtp": free_port(), "submission": free_port(), "smtps": free_port()}
    master_cf = (config_dir / "master.cf").read_text()
    if master is not None:
        master_cf = master.format(**ports)
    else:
        master_cf = (
            master_cf.replace("127.0.0.1:25 ", f"127.0.0.1:{ports['smtp']} ")
            .replace("127.0.0.1:587 ", f"127.0.0.1:{ports['submission']} ")
            .replace("127.0.0.1:465 ", f"127.0.0.1:{ports['smtps']} ")
        )
    (config_dir / "master.cf").write_text(master_cf)
    settings = {
        "postillion_worker_processes": str(workers),
        "smtpd_error_sleep_time": "0",
        "mynetworks": "127.0.0.1/32",
    }
    settings.update(main or {})
    server = Server(config_dir=config_dir, ports=ports, extra_main=settings)
    server.postconf(*(f"{k}={v}" for k, v in settings.items()))
    return server


def cleanup(server: Server) -> None:
    server.stop()
    shutil.rmtree(server.config_dir.parent, ignore_errors=True)
