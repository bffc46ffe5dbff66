"""Process log sinks for the supervisor and its children: Postfix's line prefix, three destinations.

Owns: where a process's log lines go (stderr under ``start --foreground``, ``maillog_file``,
syslog via /dev/log) and the ``<syslog_name>/<process>[<pid>]: `` prefix with the classic
syslog timestamp (``Nov  5 08:13:40 host``) that pflogsumm and fail2ban expect.
Must not import: config, server.supervisor, anything above ``errors``; it takes plain values.
Follows: Postfix msg_syslog(3) and postlogd(8) (``maillog_file``): the severity is a text prefix
(``warning:``, ``error:``, ``fatal:``, ``panic:``) mapped onto syslog levels like util/msg_syslog.c.

This is deliberately not the mail-event logger (``postillion.maillog``); it only moves finished
lines.  Everything here survives ``os.fork()``: the child calls ``prepare_child()`` before it
closes inherited descriptors, and keeps the descriptors ``fds()`` names.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SYSLOG_SOCKET = "/dev/log"

# util/msg_syslog.c: info → LOG_INFO, warning → LOG_WARNING, error → LOG_ERR, fatal/panic → LOG_CRIT.
_LEVELS = (("warning:", 4), ("error:", 3), ("fatal:", 2), ("panic:", 2))
_INFO = 6
_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}


def syslog_timestamp(when: float | None = None) -> str:
    """``Nov  5 08:13:40``: ctime()'s month, space-padded day and time (what syslogd writes)."""
    return time.ctime(time.time() if when is None else when)[4:19]


def _level(text: str) -> int:
    for prefix, level in _LEVELS:
        if text.startswith(prefix):
            return level
    return _INFO


class LogSinks:
    """The destinations shared by every process of one supervisor."""

    def __init__(
        self,
        *,
        stderr: bool = False,
        maillog_file: Path | None = None,
        syslog: bool = True,
        syslog_also: bool = False,
        facility: str = "mail",
        hostname: str | None = None,
    ) -> None:
        self._stderr = stderr
        self._maillog_file = maillog_file
        self._file_fd: int | None = None
        self._syslog = syslog
        self._syslog_also = syslog_also  # postillion_syslog_enable: syslog even with maillog_file
        self._facility = _FACILITIES.get(facility.strip().lower(), _FACILITIES["mail"])
        self._syslog_sock: socket.socket | None = None
        self._syslog_pid = -1
        self.hostname = hostname or socket.gethostname().split(".")[0]
        if maillog_file is not None:
            self._open_file()

    def _open_file(self) -> None:
        assert self._maillog_file is not None
        self._maillog_file.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND makes each line one atomic append, so workers can share the file.
        self._file_fd = os.open(self._maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @property
    def writes_stderr(self) -> bool:
        return self._stderr

    def reopen(self) -> None:
        """After log rotation (on reload): open ``maillog_file`` again by name."""
        if self._maillog_file is None:
            return
        old = self._file_fd
        self._open_file()
        if old is not None:
            os.close(old)

    def fds(self) -> set[int]:
        """Descriptors a forked child must keep (it may no longer be allowed to open the file)."""
        return {self._file_fd} if self._file_fd is not None else set()

    def prepare_child(self) -> None:
        """In a fresh child, before inherited descriptors are closed: forget the syslog socket
        without closing it, so a later close cannot hit a descriptor number reused by then."""
        if self._syslog_sock is not None:
            self._syslog_sock.detach()
            self._syslog_sock = None

    def close(self) -> None:
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None
        if self._syslog_sock is not None:
            self._syslog_sock.close()
            self._syslog_sock = None

    def emit(self, tag: str, text: str, *, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        now = time.time()
        line = f"{syslog_timestamp(now)} {self.hostname} {tag}[{pid}]: {text}\n"
        if self._stderr:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        if self._file_fd is not None:
            try:
                os.write(self._file_fd, line.encode("utf-8", "replace"))
            except OSError:
                pass
        if self._syslog and (self._file_fd is None or self._syslog_also):
            self._send_syslog(tag, pid, text, now)

    def _send_syslog(self, tag: str, pid: int, text: str, now: float) -> None:
        if self._syslog_pid != os.getpid():
            self._syslog_sock = None
            self._syslog_pid = os.getpid()
        priority = self._facility * 8 + _level(text)
        packet = f"<{priority}>{syslog_timestamp(now)} {tag}[{pid}]: {text}".encode("utf-8", "replace")
        for _attempt in range(2):
            if self._syslog_sock is None:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    s.connect(SYSLOG_SOCKET)
                except OSError:
                    s.close()
                    return  # no syslogd: like syslog(3), drop the line
                self._syslog_sock = s
            try:
                self._syslog_sock.send(packet)
                return
            except OSError:
                self._syslog_sock.close()
                self._syslog_sock = None


@dataclass
class ProcessLog:
    """``log("warning: ...")`` for one program: ``<syslog_name>/<process>[<pid>]: <text>``."""

    sinks: LogSinks
    syslog_name: str
    process: str

    @property
    def tag(self) -> str:
        return f"{self.syslog_name}/{self.process}"

    def __call__(self, text: str) -> None:
        self.sinks.emit(self.tag, text)
