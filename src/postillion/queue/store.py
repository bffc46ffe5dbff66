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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from postillion.errors import QueueWriteError
from postillion.queue import record, safeio
from postillion.queue.envelope import Envelope
from postillion.queue.ids import is_valid_queue_id, make_queue_id

INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
HOLD = "hold"
CORRUPT = "corrupt"
QUEUE_NAMES = (INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT)
QUEUE_DIR_MODE = 0o700
QUEUE_FILE_MODE = 0o600
_ID_ATTEMPTS = 20  # collisions need a second file system or a stuck clock; give up eventually


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

    def commit(self, envelope: Envelope, content: bytes) -> str:
        """Write *envelope* and *content* durably into ``incoming/``; return the queue id.

        The record carries ``queue_id`` even if *envelope* (which is not modified) has none.
        """
        if self._fd is None:
            raise RuntimeError(f"{self.queue_id}: commit after commit or abort")
        fd, self._fd = self._fd, None
        ops = self._store.ops
        final = self._store.path(INCOMING, self.queue_id)
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
