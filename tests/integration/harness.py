"""Run a real postillion (supervisor + workers) on 127.0.0.1 for integration tests.

Each server gets its own configuration directory made by `postillion init`, free ports, and
is driven as an admin would: edit main.cf/master.cf, `start --foreground`, read the maillog.
Waiting is done on log lines (never on fixed sleeps).  `Wire` is a raw SMTP client over a real
socket for what smtplib cannot send (pipelined groups, BDAT, STARTTLS injection, smuggling).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from postillion.queue.envelope import Envelope
from postillion.queue.record import decode

HOSTNAME = "mail.example.test"
PASSWORD = "s3cret-pw"
DEFAULT_SERVICES = ("smtp", "submission", "smtps")
# `Nov 25 08:13:40 host postfix/submission/smtpd[17362]: ...` → `postfix/submission/smtpd: ...`
_PREFIX = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ (\S+?)\[\d+\]:")


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
    def console(self) -> Path:
        return self.config_dir.parent / "console.log"

    @property
    def maillog(self) -> Path:
        return self.config_dir / "data" / "maillog"

    @property
    def incoming(self) -> Path:
        return self.config_dir / "data" / "spool" / "incoming"

    @property
    def status_file(self) -> Path:
        return self.config_dir / "data" / "run" / "status.json"

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since(self, start: int) -> str:
        return self.log_text()[start:]

    def log_lines(self, start: int = 0) -> list[str]:
        """The log lines after `start` as `postfix/submission/smtpd: message`: without the
        syslog time, host and pid, so tests can compare whole lines exactly."""
        return [_PREFIX.sub(r"\1:", line) for line in self.log_since(start).splitlines()]

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                out = self.console.read_text(errors="replace") if self.console.exists() else ""
                raise AssertionError(f"postillion exited ({self.proc.returncode}) while waiting for {pattern!r}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def wait_for_disconnect(self, start: int, service: str = "postfix", timeout: float = 20.0) -> str:
        """The `disconnect from ...` summary of the first session of `service` (its syslog
        name, e.g. postfix/submission) that ended after `start`."""
        m = self.wait_for_log(rf"^.* {re.escape(service)}/smtpd\[\d+\]: (disconnect from .*)$",
                              timeout=timeout, start=start)
        return m.group(1)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every session in the log has ended, so a later mark sees only new ones."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if text.count("]: connect from ") == text.count("]: disconnect from "):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions still open after {timeout}s:\n{text[-3000:]}")
            time.sleep(0.05)

    def mark(self) -> int:
        """The current end of the log, to search only what comes after."""
        return len(self.log_text())

    def postconf(self, *settings: str) -> None:
        postillion(self.config_dir, "postconf", "-e", *settings)

    def start(self) -> None:
        start = self.mark()
        # Its own process group, so a test can kill -9 supervisor and workers together.
        # The console goes to a file: --foreground copies every log line there, and a pipe
        # nobody reads would fill up and block the whole mail system.
        with self.console.open("ab") as console:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "postillion", "-c", str(self.config_dir), "start", "--foreground"],
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_for_log(r"daemon started", start=start)
        self.wait_for_workers()

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def worker_pids(self, service: str | None = None) -> list[int]:
        return [
            int(w["pid"])
            for w in self.status().get("workers", [])
            if not w.get("retiring") and (service is None or w["service"] == service)
        ]

    def wait_for_workers(self, timeout: float = 20.0, exclude: set[int] = frozenset()) -> list[int]:
        """Wait until every worker slot has a live process (none of `exclude`); their pids."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.status()
            workers = [w for w in data.get("workers", []) if not w.get("retiring")]
            pids = [int(w["pid"]) for w in workers]
            want = len(data.get("listeners", [])) * int(self.extra_main.get("postillion_worker_processes", "1"))
            if pids and len(pids) >= want and not set(pids) & exclude:
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(f"workers did not come up: {data}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_all()
        self.proc = None

    def kill_all(self) -> None:
        """kill -9 the supervisor and every worker (the whole process group)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        postillion(self.config_dir, "user", "add", name, input=password + "\n")

    def queue_ids(self) -> set[str]:
        try:
            return {p.name for p in self.incoming.iterdir() if not p.name.startswith(".")}
        except FileNotFoundError:
            return set()

    def read_queue(self, queue_id: str) -> tuple[Envelope, bytes]:
        return decode((self.incoming / queue_id).read_bytes())


def _template_ports(master: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(master) if name]


def make_server(
    main: dict[str, str] | None = None,
    master: str | None = None,
    workers: int = 1,
    qmgr: bool = False,
) -> Server:
    """A configured (not started) server; `master` may use {smtp} {submission} {smtps} ports,
    or any other {name}, which gets a free port of its own.  Without `qmgr` the queue manager
    line (and the local service's) is left out, so accepted mail stays in incoming/ for the
    test to inspect."""
    base = Path(tempfile.mkdtemp(prefix="postillion-test-", dir="/tmp"))
    base.chmod(0o755)  # the unprivileged workers must reach the data directory
    config_dir = base / "etc"
    postillion(config_dir, "init", "--hostname", HOSTNAME, "--ports", "0")
    names = set(DEFAULT_SERVICES) | set(_template_ports(master or ""))
    ports = {name: free_port() for name in sorted(names)}
    master_cf = (config_dir / "master.cf").read_text()
    if master is not None:
        master_cf = master.format(**ports)
    else:
        master_cf = (
            master_cf.replace("127.0.0.1:25 ", f"127.0.0.1:{ports['smtp']} ")
            .replace("127.0.0.1:587 ", f"127.0.0.1:{ports['submission']} ")
            .replace("127.0.0.1:465 ", f"127.0.0.1:{ports['smtps']} ")
        )
    if not qmgr:  # the local delivery service only serves the queue manager: both go
        master_cf = "".join(line for line in master_cf.splitlines(keepends=True)
                            if not line.startswith(("qmgr ", "local ")))
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


class Wire:
    """A raw SMTP client on a real socket: bytes out exactly as given, replies read line by line.

    Reading never reads ahead of what the server has sent, and `starttls` refuses to start
    while unread bytes are buffered, so STARTTLS tests see exactly what arrived when."""

    def __init__(self, port: int, *, source: str | None = None, tls: bool = False, timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        if tls:
            self.sock = client_context().wrap_socket(self.sock)
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; unread {self.buf!r}")
        self.buf += chunk

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def reply(self) -> str:
        """One whole (possibly multi-line) reply, lines joined with "\\n"."""
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self) -> str:
        answer = self.cmd("STARTTLS")
        if answer.startswith("220"):
            self.starttls_handshake()
        return answer

    def starttls_handshake(self) -> None:
        """The TLS handshake after a 220 to STARTTLS has been read."""
        assert self.buf == b"", f"bytes after the 220: {self.buf!r}"
        self.sock = client_context().wrap_socket(self.sock)

    def nothing_more(self, wait: float = 0.5) -> bytes:
        """What else arrives within `wait` seconds (b"" when the server is quiet)."""
        self.sock.settimeout(wait)
        try:
            self._fill()
        except TimeoutError:
            pass
        except ConnectionError:
            pass
        finally:
            self.sock.settimeout(10.0)
        extra, self.buf = self.buf, b""
        return extra

    def closed(self, wait: float = 5.0) -> bool:
        """True when the server has closed the connection (after what is buffered)."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ehlo_lines(reply: str) -> list[str]:
    """`250-x\\n250 y` → ["x", "y"]."""
    return [line[4:] for line in reply.split("\n")]
