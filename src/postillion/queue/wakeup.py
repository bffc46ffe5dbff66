"""Waking the queue manager, and keeping it single.

Owns: ``$queue_directory/public/qmgr`` (a UNIX datagram socket smtpd and `postillion flush`
poke, where Postfix has its public/qmgr fifo) and ``$queue_directory/pid/qmgr.lock``, which lets
only one queue manager work on the queue at a time.  Both live in the queue directory because
mail_owner owns it: the queue manager runs unprivileged.
Must not import: anything above ``errors`` (smtpd imports this on every message).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path

def socket_path(queue_directory: Path) -> Path:
    return queue_directory / "public" / "qmgr"


def lock_path(queue_directory: Path) -> Path:
    return queue_directory / "pid" / "qmgr.lock"


class WakeSocket:
    """``$data_directory/run/qmgr``: smtpd (and `postillion flush`) send one datagram to say
    "look now"; the queue manager also scans on its own every second, so a lost one costs
    at most a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def open(self, on_wake: Callable[[bytes], None]) -> None:
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.setblocking(False)
        self.sock = sock
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(64)
                except (BlockingIOError, InterruptedError):
                    return
                on_wake(data)

        loop.add_reader(sock.fileno(), readable)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


def wake_qmgr(path: Path, message: bytes = b"W") -> bool:
    """Tell the queue manager to look now.  False, and nothing else, when nobody listens
    (no socket, a stale one: ECONNREFUSED) or its buffer is full (EAGAIN: it is awake anyway)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            s.sendto(message, str(path))
        except OSError:
            return False
    return True


async def acquire_lock(path: Path, stop: asyncio.Event) -> int | None:
    """One queue manager at a time: after a reload the new one waits for the old one to finish
    its deliveries (they share the queue)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    while not stop.is_set():
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            await asyncio.sleep(0.2)
    os.close(fd)
    return None
