"""The durable mail queue: one file per message in incoming/ active/ deferred/ hold/ corrupt/.

Owns: the queue directory layout, queue id allocation (``begin``) and the commit protocol that
must finish before smtpd may answer ``250 2.0.0 Ok: queued as ID``.
Must not import: server, smtp, cli (queue sits below them; see docs/design.md).
Follows: Postfix ``global/mail_queue.c`` (``mail_queue_enter``: the id comes from the new
file's inode), ``global/mail_stream.c`` (fsync before the reply) and qmgr(8) queue names.

Failure semantics (read this before changing anything):

* ``begin()`` creates an O_EXCL temporary file in ``incoming/`` and derives the queue id from
  its inode and the current time.  The id is unique among all messages in the store because
  the inode stays allocated to this message until it is removed; an id that is nevertheless
  in use (queue dirs on another file system, clock games) is detected and another file is made.
* ``commit()`` writes the record, fsyncs the file, renames it to ``incoming/<id>`` and fsyncs
  the directory.  Any failure raises ``QueueWriteError`` (chained from the OSError) and leaves
  neither the temporary file nor ``incoming/<id>`` behind: the client gets 451 and retries, so
  nothing must be delivered from this attempt.
* A ``PendingMessage`` that is never committed (client vanished, RSET, reject) is removed by
  ``abort()`` or by leaving its ``with`` block.  Temporary files left by a crash start with a
  dot and are never listed as messages.

State changes after the commit (the queue manager's and postsuper's):

* ``move()`` is one ``rename()`` (the message is in exactly one queue before and after it,
  whatever happens), then fsync of the destination and the source directory.  An error
  before the rename leaves the message where it was; an error in a directory fsync raises
  ``QueueWriteError`` with the message already in the destination (``locate()`` tells).  A
  message that vanished (another process moved or deleted it) raises ``FileNotFoundError``.
* ``append_status()`` writes one ``S {json}\\n`` line with a single ``write()`` on an
  ``O_APPEND`` descriptor, restores the file times (so appending never changes the next
  attempt time) and fsyncs the file.  A failed write is cut off again; a line torn by a crash
  is ignored by readers and cut off by the next append.  Appends to one file must come from
  one process at a time (the queue manager owns the files it is delivering).
* ``remove()`` unlinks and fsyncs the directory; ``quarantine()`` is a move to ``corrupt/``.
* ``set_next_attempt()`` stores the time in the file's mtime, as Postfix's qmgr does, and
  fsyncs the file; ``next_attempt()`` reads it back.
"""

from __future__ import annotations

import contextlib

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from postillion.errors import QueueWriteError
from postillion.queue import record, safeio
from postillion.queue.envelope import Envelope
from postillion.queue.ids import is_valid_queue_id, make_queue_id
from postillion.queue.record import QueueRecordError, RecipientStatus

INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
HOLD = "hold"
CORRUPT = "corrupt"
QUEUE_NAMES = (INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT)
QUEUE_DIR_MODE = 0o700
QUEUE_FILE_MODE = 0o600
_ID_ATTEMPTS = 20  # collisions need a second file system or a stuck clock; give up eventually
_HEAD_CHUNK = 65536  # read the header this much at a time to find where the trailer starts
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _to_ns(t: float) -> int:
    # Split first: t * 1e9 as one float would round away the sub-microsecond digits.
    sec = int(t // 1)
    return sec * 1_000_000_000 + round((t - sec) * 1_000_000_000)


def _from_ns(ns: int) -> float:
    sec, rest = divmod(ns, 1_000_000_000)
    return sec + rest / 1_000_000_000


@dataclass(slots=True, kw_only=True)
class QueueEntry:
    """One message as loaded from its queue file, with its delivery statuses in file order."""

    queue_id: str
    queue: str
    envelope: Envelope
    content: bytes
    statuses: list[RecipientStatus]

    @property
    def size(self) -> int:
        """The content size in bytes (what mailq and ``postqueue -j`` call message_size)."""
        return len(self.content)

    def final_status(self, rcpt: int) -> RecipientStatus | None:
        """The first final status of recipient *rcpt* (it is done from then on), or None."""
        for s in self.statuses:
            if s.rcpt == rcpt and s.final:
                return s
        return None

    def is_done(self, rcpt: int) -> bool:
        return self.final_status(rcpt) is not None

    def pending(self) -> list[int]:
        """Indexes of the recipients that have no final status yet, in envelope order."""
        done = {s.rcpt for s in self.statuses if s.final}
        return [i for i in range(len(self.envelope.recipients)) if i not in done]

    def last_deferral(self, rcpt: int) -> RecipientStatus | None:
        """The last "deferred" status of recipient *rcpt* (the reason mailq shows), or None."""
        for s in reversed(self.statuses):
            if s.rcpt == rcpt and s.status == "deferred":
                return s
        return None

    def delay_warned(self, rcpt: int) -> bool:
        """Whether the delay warning for recipient *rcpt* has gone out."""
        return any(s.rcpt == rcpt and s.status == "delayed" for s in self.statuses)


class PendingMessage:
    """A queue file being written: it has a queue id but is not yet visible in the queue."""

    def __init__(self, store: QueueStore, queue_id: str, tmp_path: Path, fd: int) -> None:
        self._store = store
        self.queue_id = queue_id
        self.tmp_path = tmp_path
        self._fd: int | None = fd
        self.committed = False

    @property
    def finished(self) -> bool:
        return self._fd is None

    def commit(self, envelope: Envelope, content: bytes, *, queue: str = INCOMING) -> str:
        """Write *envelope* and *content* durably into ``incoming/`` (or *queue*: ``hold/`` for a
        header_checks HOLD, so that no queue scan sees it first); return the queue id.

        The record carries ``queue_id`` even if *envelope* (which is not modified) has none.
        """
        if self._fd is None:
            raise RuntimeError(f"{self.queue_id}: commit after commit or abort")
        fd, self._fd = self._fd, None
        ops = self._store.ops
        final = self._store.path(queue, self.queue_id)
        data = record.encode(replace(envelope, queue_id=self.queue_id), content)
        try:
            safeio.write_all(fd, data, ops=ops)
        except OSError as exc:
            safeio.discard(fd, self.tmp_path, ops=ops)
            raise QueueWriteError(f"{self.queue_id}: write queue file: {exc}") from exc
        try:
            safeio.publish(fd, self.tmp_path, final, withdraw=True, ops=ops)
        except OSError as exc:
            raise QueueWriteError(f"{self.queue_id}: commit queue file: {exc}") from exc
        if final.parent != self.tmp_path.parent:
            # The message is durable in its final place already; this only keeps the temporary
            # name from coming back after a crash (a leftover the next start removes anyway), so
            # a failure here must not make the client retry and duplicate the message.
            with contextlib.suppress(OSError):
                ops.fsync_dir(self.tmp_path.parent)
        self.committed = True
        return self.queue_id

    def abort(self) -> None:
        """Remove the temporary file; harmless after commit or a previous abort."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        safeio.discard(fd, self.tmp_path, ops=self._store.ops)

    def __enter__(self) -> PendingMessage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class QueueStore:
    """The queue under *queue_directory* (Postfix's ``queue_directory``)."""

    def __init__(
        self,
        queue_directory: Path,
        *,
        long_queue_ids: bool = False,
        ops: safeio.FileOps = safeio.OS_FILE_OPS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.queue_directory = Path(queue_directory)
        self.long_queue_ids = long_queue_ids  # enable_long_queue_ids
        self.ops = ops
        self._clock_ns = clock_ns

    def ensure_layout(self) -> None:
        """Create the queue directories (mode 0700), tightening the mode of existing ones."""
        try:
            self.queue_directory.mkdir(mode=QUEUE_DIR_MODE, parents=True, exist_ok=True)
            for name in QUEUE_NAMES:
                d = self.queue_directory / name
                d.mkdir(mode=QUEUE_DIR_MODE, exist_ok=True)
                if d.stat().st_mode & 0o777 != QUEUE_DIR_MODE:
                    d.chmod(QUEUE_DIR_MODE)
        except OSError as exc:
            raise QueueWriteError(f"create queue directory {self.queue_directory}: {exc}") from exc

    def path(self, queue: str, queue_id: str) -> Path:
        if queue not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {queue!r}")
        if not is_valid_queue_id(queue_id):
            raise ValueError(f"bad queue id {queue_id!r}")
        return self.queue_directory / queue / queue_id

    def begin(self) -> PendingMessage:
        """Allocate a queue id by creating an exclusive temporary file in ``incoming/``."""
        incoming = self.queue_directory / INCOMING
        for _ in range(_ID_ATTEMPTS):
            try:
                tmp_path, fd = safeio.create_temp(incoming, mode=QUEUE_FILE_MODE, ops=self.ops)
            except OSError as exc:
                raise QueueWriteError(f"create file {incoming}/: {exc}") from exc
            try:
                inode = self.ops.fstat(fd).st_ino
            except OSError as exc:
                safeio.discard(fd, tmp_path, ops=self.ops)
                raise QueueWriteError(f"fstat {tmp_path}: {exc}") from exc
            queue_id = make_queue_id(self._clock_ns(), inode, long=self.long_queue_ids)
            if self.locate(queue_id) is None:
                return PendingMessage(self, queue_id, tmp_path, fd)
            safeio.discard(fd, tmp_path, ops=self.ops)
        raise QueueWriteError(f"cannot allocate a unique queue id in {incoming}")

    def locate(self, queue_id: str) -> str | None:
        """The name of the queue holding *queue_id*, or None."""
        for queue in QUEUE_NAMES:
            if os.path.lexists(self.path(queue, queue_id)):
                return queue
        return None

    def list(self, queue: str = INCOMING) -> list[str]:
        """The queue ids in *queue*, sorted; temporary files are not messages and are skipped."""
        if queue not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {queue!r}")
        try:
            names = os.listdir(self.queue_directory / queue)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_valid_queue_id(n))

    def read(self, queue_id: str) -> tuple[Envelope, bytes]:
        """Load a message from whichever queue holds it.

        FileNotFoundError if no queue has it; ``record.QueueRecordError`` if the file is damaged.
        """
        queue = self.locate(queue_id)
        if queue is None:
            raise FileNotFoundError(f"queue id {queue_id} not found in {self.queue_directory}")
        data = self.path(queue, queue_id).read_bytes()
        try:
            return record.decode(data)
        except record.QueueRecordError as exc:
            raise record.QueueRecordError(f"{queue}/{queue_id}: {exc}") from exc

    # --- state changes after the commit (see the module docstring) ----------------------

    def load(self, queue: str, queue_id: str) -> QueueEntry:
        """Read and decode *queue*/*queue_id*.

        FileNotFoundError when it is not there; QueueRecordError (naming queue/id) when damaged.
        """
        data = self.path(queue, queue_id).read_bytes()
        try:
            envelope, content, statuses = record.decode_entry(data)
        except QueueRecordError as exc:
            raise QueueRecordError(f"{queue}/{queue_id}: {exc}") from exc
        return QueueEntry(queue_id=queue_id, queue=queue, envelope=envelope, content=content,
                          statuses=statuses)

    def move(self, queue_id: str, src: str, dst: str) -> None:
        """Move a message from queue *src* to queue *dst* durably (rename, fsync both dirs)."""
        if src == dst:
            raise ValueError(f"{queue_id}: move from {src} to itself")
        old, new = self.path(src, queue_id), self.path(dst, queue_id)
        # rename() would silently replace a file with the same id; ids come from inodes, so
        # this means two copies of one message: keep both and let a human decide.
        if not os.path.lexists(old):
            raise FileNotFoundError(errno.ENOENT, "no such queue file", str(old))
        if os.path.lexists(new):
            raise QueueWriteError(f"{queue_id}: move {src} to {dst}: {dst}/{queue_id} exists")
        try:
            self.ops.rename(old, new)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: move {src} to {dst}: {exc}") from exc
        try:
            self.ops.fsync_dir(new.parent)
            self.ops.fsync_dir(old.parent)
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: moved {src} to {dst}, but: {exc}") from exc

    def quarantine(self, queue: str, queue_id: str) -> None:
        """Move a damaged message to ``corrupt/`` (the caller logs why)."""
        self.move(queue_id, queue, CORRUPT)

    def remove(self, queue: str, queue_id: str) -> None:
        """Delete a message durably; FileNotFoundError if it is not there."""
        path = self.path(queue, queue_id)
        try:
            self.ops.unlink(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: remove from {queue}: {exc}") from exc
        try:
            self.ops.fsync_dir(path.parent)
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: removed from {queue}, but: {exc}") from exc

    def append_status(self, queue: str, queue_id: str, s: RecipientStatus) -> None:
        """Append one recipient status to the message's trailer and fsync it.

        A version 1 file is first rewritten (atomically) as version 2.
        """
        path = self.path(queue, queue_id)
        line = record.encode_status(s)
        try:
            fd = self.ops.open(path, os.O_RDWR | os.O_APPEND | _O_CLOEXEC | _O_NOFOLLOW, 0)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: open {queue}/{queue_id}: {exc}") from exc
        open_fd: int | None = fd
        try:
            st = self.ops.fstat(fd)
            end = self._trailer_end(fd, st.st_size, queue, queue_id)
            if end is None:  # version 1: no trailer allowed, upgrade first
                self.ops.close(fd)
                open_fd = None
                self._upgrade(path, st)
                fd = self.ops.open(path, os.O_RDWR | os.O_APPEND | _O_CLOEXEC | _O_NOFOLLOW, 0)
                open_fd = fd
                st = self.ops.fstat(fd)
                end = st.st_size
            if end != st.st_size:
                os.ftruncate(fd, end)  # a line torn by a crash: never let it prefix ours
            try:
                safeio.write_all(fd, line, ops=self.ops)
            except OSError:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    pass  # readers ignore a torn last line; the next append cuts it off
                raise
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))  # keep next_attempt
            self.ops.fsync(fd)
            open_fd = None  # close() releases the fd even when it fails
            self.ops.close(fd)
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: append status to {queue}/{queue_id}: {exc}") from exc
        finally:
            if open_fd is not None:
                try:
                    self.ops.close(open_fd)
                except OSError:
                    pass

    def set_next_attempt(self, queue: str, queue_id: str, when: float) -> None:
        """Record the next delivery attempt time as the file's mtime (and atime), fsync'd."""
        path = self.path(queue, queue_id)
        ns = _to_ns(when)
        try:
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
            fd = self.ops.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW, 0)
            try:
                self.ops.fsync(fd)
            finally:
                self.ops.close(fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise QueueWriteError(f"{queue_id}: set next attempt time: {exc}") from exc

    def next_attempt(self, queue: str, queue_id: str) -> float:
        """The next delivery attempt time (the file's mtime); FileNotFoundError if gone."""
        return _from_ns(os.stat(self.path(queue, queue_id), follow_symlinks=False).st_mtime_ns)

    def _trailer_end(self, fd: int, size: int, queue: str, queue_id: str) -> int | None:
        """Where the next status line goes: after the last complete line of the trailer.

        None for a version 1 file (it must be upgraded before it gets a trailer).
        """
        head = b""
        start = None
        while start is None:
            chunk = os.pread(fd, _HEAD_CHUNK, len(head))
            head += chunk
            try:
                if record.version_of(head) == 1:
                    return None
                start = record.content_end(head)
            except QueueRecordError as exc:
                raise QueueRecordError(f"{queue}/{queue_id}: {exc}") from exc
            if start is None and not chunk:
                raise QueueRecordError(f"{queue}/{queue_id}: truncated queue file")
        if size < start:
            raise QueueRecordError(f"{queue}/{queue_id}: truncated queue file")
        trailer = os.pread(fd, size - start, start)
        return start + trailer.rfind(b"\n") + 1

    def _upgrade(self, path: Path, st: os.stat_result) -> None:
        envelope, content = record.decode(path.read_bytes())
        safeio.write_atomic(path, record.encode(envelope, content), mode=QUEUE_FILE_MODE,
                            ops=self.ops)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
