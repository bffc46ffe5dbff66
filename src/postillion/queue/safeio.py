"""Durable file writes: temporary file → write → fsync → close → rename → fsync(directory).

Owns: the one way postillion makes a file appear atomically and durably, and the ``FileOps``
seam through which every system call of that sequence passes, so tests can count the calls and
make any one of them fail.
Must not import: anything from postillion (plain OS plumbing).
Follows: chasquid ``internal/safeio``; Postfix ``global/mail_queue.c`` (create, fsync, rename).

Failure semantics: every function here either completes the whole sequence or raises the
``OSError`` of the failing step after removing what it created, so a reader never sees a
partial file under the final name (a crash between rename and fsync(dir) may lose the rename,
never expose a half-written file).  Callers wrap the OSError in their own error
(``QueueWriteError``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEMP_PREFIX = ".tmp."  # temporary files start with a dot so directory listings skip them


class FileOps:
    """The system calls used for durable writes.  Subclass to count calls or inject failures."""

    def open(self, path: Path, flags: int, mode: int) -> int:
        return os.open(path, flags, mode)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS_FILE_OPS = FileOps()


def create_temp(directory: Path, *, mode: int = 0o600, ops: FileOps = OS_FILE_OPS) -> tuple[Path, int]:
    """Create a new, exclusively owned (O_EXCL) temporary file in *directory*."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    while True:
        path = directory / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
        try:
            return path, ops.open(path, flags, mode)
        except FileExistsError:
            continue  # a stale temp file with the same random name: pick another


def write_all(fd: int, data: bytes, *, ops: FileOps = OS_FILE_OPS) -> None:
    """Write all of *data*, looping over short writes."""
    view = memoryview(data)
    while view:
        n = ops.write(fd, view)
        if n <= 0:
            raise OSError("short write")
        view = view[n:]


def discard(fd: int | None, path: Path, *, ops: FileOps = OS_FILE_OPS) -> None:
    """Best-effort cleanup after a failure: close *fd* (if open) and remove *path*."""
    if fd is not None:
        try:
            ops.close(fd)
        except OSError:
            pass
    try:
        ops.unlink(path)
    except OSError:
        pass


def publish(
    fd: int, tmp_path: Path, final_path: Path, *, withdraw: bool = True, ops: FileOps = OS_FILE_OPS
) -> None:
    """fsync and close *fd*, rename *tmp_path* to *final_path*, fsync the directory.

    On failure the step's OSError propagates and the temporary file is gone; if only the final
    fsync(dir) failed, the complete file is removed again when *withdraw* is true (the queue:
    the client is told to retry, so keeping it would make a duplicate).  *fd* is closed in
    every case.
    """
    open_fd: int | None = fd
    try:
        ops.fsync(fd)
        open_fd = None  # close() releases the fd even when it fails (POSIX), so never retry it
        ops.close(fd)
        ops.rename(tmp_path, final_path)
    except OSError:
        discard(open_fd, tmp_path, ops=ops)
        raise
    try:
        ops.fsync_dir(final_path.parent)
    except OSError:
        if withdraw:
            discard(None, final_path, ops=ops)
        raise


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, ops: FileOps = OS_FILE_OPS) -> None:
    """Make *path* hold exactly *data*, durably, or raise OSError leaving *path* as it was.

    An existing *path* is replaced atomically.  When only the final fsync(dir) fails, *path*
    already holds the complete new data (it may not survive a crash); the OSError still
    propagates.
    """
    tmp_path, fd = create_temp(path.parent, mode=mode, ops=ops)
    try:
        write_all(fd, data, ops=ops)
    except OSError:
        discard(fd, tmp_path, ops=ops)
        raise
    publish(fd, tmp_path, path, withdraw=False, ops=ops)
