"""Run-time state of a running supervisor: the locked pid file and the JSON status files.

Owns: the layout of ``$data_directory/run`` —

    run/master.pid               supervisor pid; flock()ed for the supervisor's whole life
    run/status.json              supervisor: pid, generation, listeners, workers (root-owned)
    run/anvil                    the anvil UNIX socket (mail_owner, 0600)
    run/workers/worker-<pid>.json  one per worker, written by the (unprivileged) worker itself

— atomic JSON writes and reading it all back for ``postillion status``.  Worker files live in
their own mail_owner-writable directory so that a compromised worker can never replace
master.pid, which ``postillion stop`` signals as root.
Must not import: config, server.supervisor, cli (it works on paths).
Follows: Postfix master(8), whose ``$queue_directory/pid/master.pid`` is locked while master
runs, so "is it running" is a lock test, not a guess based on a possibly reused pid.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_SUBDIR = "run"
# Postfix master writes the pid right-aligned in a field of 4 * sizeof(unsigned long).
_PID_WIDTH = 32


@dataclass(frozen=True)
class RunPaths:
    """Where one instance keeps its run-time files."""

    run_dir: Path

    @classmethod
    def for_data_directory(cls, data_directory: Path | str) -> RunPaths:
        return cls(Path(data_directory) / RUN_SUBDIR)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "master.pid"

    @property
    def status_file(self) -> Path:
        return self.run_dir / "status.json"

    @property
    def anvil_socket(self) -> Path:
        return self.run_dir / "anvil"

    @property
    def workers_dir(self) -> Path:
        return self.run_dir / "workers"

    def worker_status(self, pid: int) -> Path:
        return self.workers_dir / f"worker-{pid}.json"

    def create(self, *, owner_uid: int | None = None, owner_gid: int | None = None) -> None:
        """Make run/ (root, 0755) and run/workers/ (owned by mail_owner when given)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        self.workers_dir.mkdir(exist_ok=True)
        os.chmod(self.workers_dir, 0o755)
        if owner_uid is not None:
            os.chown(self.workers_dir, owner_uid, owner_gid if owner_gid is not None else -1)


class AlreadyRunningError(Exception):
    """Another live supervisor holds the pid file lock."""


class PidFile:
    """master.pid, created and locked by the supervisor and unlinked when it exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # Retry when we locked a file that a stopping supervisor unlinked meanwhile.
        for _attempt in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunningError(str(self.path)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid():>{_PID_WIDTH}}\n".encode())
            os.fsync(fd)
            self._fd = fd
            return
        raise AlreadyRunningError(str(self.path))

    def fileno(self) -> int | None:
        return self._fd

    def release(self) -> None:
        """Unlink while still locked, then unlock by closing."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def read_running_pid(path: Path) -> int | None:
    """The pid of the live supervisor holding ``path`` locked, else None (absent or stale)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # locked: the supervisor lives
        else:
            return None  # nobody holds it: a stale file left by a crash
        # The lock is taken just before the pid is written; wait out that short window.
        for _attempt in range(50):
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.01)
        return None
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file beside ``path`` and rename it over, so readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``, or None when it is missing or not (yet) valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
