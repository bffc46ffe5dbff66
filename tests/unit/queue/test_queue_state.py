"""QueueStore state changes after the commit: move, append_status, remove, load, next attempt
times, quarantine; a failure injected at every step leaves the message in exactly one queue."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from queue_fileops import FailingOps

from postillion.errors import QueueWriteError
from postillion.queue import safeio
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import (
    QueueRecordError,
    RecipientStatus,
    encode,
    encode_status,
)
from postillion.queue.store import QUEUE_NAMES, QueueEntry, QueueStore

CONTENT = b"Subject: t\r\n\r\nhello\r\n"
ENV = Envelope(
    sender="alice@example.test",
    recipients=[Recipient(address="x@remote.test"), Recipient(address="y@remote.test"),
                Recipient(address="z@remote.test")],
    arrival_time=1764058420.0,
)
DEFER_X = RecipientStatus(rcpt=0, status="deferred", dsn="4.4.1", relay="none",
                          text="connect to mx.remote.test[192.0.2.1]:25: Connection refused",
                          time=1764058430.0)
SENT_Y = RecipientStatus(rcpt=1, status="sent", dsn="2.0.0", relay="mx.remote.test[192.0.2.1]:25",
                         text="250 2.0.0 Ok", time=1764058431.0)
SENT_X = RecipientStatus(rcpt=0, status="sent", dsn="2.0.0", relay="mx.remote.test[192.0.2.1]:25",
                         text="250 2.0.0 Ok", time=1764058500.0)


def setup(tmp_path: Path, ops: safeio.FileOps = safeio.OS_FILE_OPS) -> tuple[QueueStore, str]:
    store = QueueStore(tmp_path / "q")
    store.ensure_layout()
    qid = store.begin().commit(ENV, CONTENT)
    store.ops = ops
    return store, qid


def where(store: QueueStore, qid: str) -> list[str]:
    """Every queue holding *qid* (must always be exactly one while the message exists)."""
    return [q for q in QUEUE_NAMES if (store.queue_directory / q / qid).exists()]


def test_load_returns_entry_with_statuses(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    entry = store.load("incoming", qid)
    assert isinstance(entry, QueueEntry)
    assert (entry.queue_id, entry.queue, entry.content, entry.statuses) == (qid, "incoming", CONTENT, [])
    assert entry.envelope.queue_id == qid and entry.size == len(CONTENT)
    assert entry.pending() == [0, 1, 2]
    with pytest.raises(FileNotFoundError):
        store.load("deferred", qid)


def test_append_status_and_pending(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    store.append_status("incoming", qid, DEFER_X)
    store.append_status("incoming", qid, SENT_Y)
    entry = store.load("incoming", qid)
    assert entry.statuses == [DEFER_X, SENT_Y]
    assert entry.pending() == [0, 2]
    assert entry.last_deferral(0) == DEFER_X
    assert entry.last_deferral(1) is None and entry.last_deferral(2) is None
    assert entry.final_status(1) == SENT_Y and not entry.is_done(0)
    store.append_status("incoming", qid, SENT_X)
    entry = store.load("incoming", qid)
    assert entry.pending() == [2]
    assert entry.last_deferral(0) == DEFER_X  # still the reason shown for the history
    data = store.path("incoming", qid).read_bytes()
    assert data == (encode(_with_id(qid), CONTENT) + encode_status(DEFER_X)
                    + encode_status(SENT_Y) + encode_status(SENT_X))


def _with_id(qid: str) -> Envelope:
    return replace(ENV, queue_id=qid)


def test_append_status_keeps_the_next_attempt_time(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    store.set_next_attempt("incoming", qid, 2_000_000_000.25)
    store.append_status("incoming", qid, DEFER_X)
    assert store.next_attempt("incoming", qid) == 2_000_000_000.25


def test_append_status_counts_its_syscalls(tmp_path: Path) -> None:
    ops = FailingOps()
    store, qid = setup(tmp_path, ops)
    store.append_status("incoming", qid, DEFER_X)
    assert ops.calls == Counter(open=1, fstat=1, write=1, fsync=1, close=1)


def test_torn_line_from_a_crash_is_cut_off_by_the_next_append(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    store.append_status("incoming", qid, DEFER_X)
    path = store.path("incoming", qid)
    with open(path, "ab") as f:
        f.write(encode_status(SENT_Y)[:17])  # what kill -9 in the middle of a write leaves
    assert store.load("incoming", qid).statuses == [DEFER_X]
    store.append_status("incoming", qid, SENT_X)
    assert store.load("incoming", qid).statuses == [DEFER_X, SENT_X]
    assert path.read_bytes().endswith(encode_status(DEFER_X) + encode_status(SENT_X))


def test_content_without_final_newline_gets_a_clean_trailer(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "q")
    store.ensure_layout()
    qid = store.begin().commit(ENV, b"no newline at the end")
    store.append_status("incoming", qid, SENT_Y)
    entry = store.load("incoming", qid)
    assert entry.content == b"no newline at the end" and entry.statuses == [SENT_Y]


def test_version_1_file_is_upgraded_on_first_append(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    path = store.path("incoming", qid)
    path.write_bytes(path.read_bytes().replace(b"POSTILLION-QUEUE 2\n", b"POSTILLION-QUEUE 1\n", 1))
    store.set_next_attempt("incoming", qid, 1_900_000_000.0)
    inode = path.stat().st_ino
    store.append_status("incoming", qid, SENT_Y)
    assert path.read_bytes().startswith(b"POSTILLION-QUEUE 2\n")
    assert store.load("incoming", qid).statuses == [SENT_Y]
    assert store.next_attempt("incoming", qid) == 1_900_000_000.0
    assert path.stat().st_ino != inode  # rewritten by rename, never in place
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(path.parent)) == [qid]


def test_append_to_damaged_file_raises_record_error(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    store.path("incoming", qid).write_bytes(b"garbage\n")
    with pytest.raises(QueueRecordError, match=rf"^incoming/{qid}: not a postillion queue file"):
        store.append_status("incoming", qid, SENT_Y)
    store.path("incoming", qid).write_bytes(encode(ENV, CONTENT)[:-4])
    with pytest.raises(QueueRecordError, match=rf"^incoming/{qid}: truncated queue file"):
        store.append_status("incoming", qid, SENT_Y)


@pytest.mark.parametrize("step", ["open", "fstat", "write", "fsync", "close"])
def test_failed_append_leaves_a_readable_message_in_its_queue(tmp_path: Path, step: str) -> None:
    ops = FailingOps()
    store, qid = setup(tmp_path, ops)
    store.append_status("incoming", qid, DEFER_X)
    ops.fail = (step, ops.calls[step] + 1)
    with pytest.raises(QueueWriteError) as info:
        store.append_status("incoming", qid, SENT_Y)
    assert isinstance(info.value.__cause__, OSError)
    assert where(store, qid) == ["incoming"]
    statuses = store.load("incoming", qid).statuses
    # The line is either absent (failed before or in the write) or complete (failed after).
    assert statuses == ([DEFER_X] if step in ("open", "fstat", "write") else [DEFER_X, SENT_Y])
    ops.fail = None
    store.append_status("incoming", qid, SENT_X)
    assert store.load("incoming", qid).statuses[-1] == SENT_X
    assert sorted(os.listdir(store.queue_directory / "incoming")) == [qid]


def test_short_write_then_failure_is_cut_off(tmp_path: Path) -> None:
    class HalfThenFail(FailingOps):
        def write(self, fd, data):  # type: ignore[override]
            if self.calls["write"] == 0:
                self.calls["write"] += 1
                return safeio.FileOps.write(self, fd, data[:9])
            raise OSError(28, "No space left on device")

    store, qid = setup(tmp_path, HalfThenFail())
    with pytest.raises(QueueWriteError, match="No space left on device"):
        store.append_status("incoming", qid, SENT_Y)
    assert store.path("incoming", qid).read_bytes() == encode(_with_id(qid), CONTENT)


def test_short_writes_are_completed(tmp_path: Path) -> None:
    store, qid = setup(tmp_path, FailingOps(short=3))
    store.append_status("incoming", qid, SENT_Y)
    assert store.load("incoming", qid).statuses == [SENT_Y]


def test_move_through_the_queues(tmp_path: Path) -> None:
    ops = FailingOps()
    store, qid = setup(tmp_path, ops)
    store.move(qid, "incoming", "active")
    assert ops.calls == Counter(rename=1, fsync_dir=2)
    store.move(qid, "active", "deferred")
    store.move(qid, "deferred", "hold")
    assert where(store, qid) == ["hold"] and store.locate(qid) == "hold"
    assert store.load("hold", qid).content == CONTENT
    with pytest.raises(FileNotFoundError):
        store.move(qid, "deferred", "active")
    with pytest.raises(ValueError):
        store.move(qid, "hold", "hold")
    assert where(store, qid) == ["hold"]


def test_move_refuses_to_replace_a_file_with_the_same_id(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    (store.queue_directory / "deferred" / qid).write_bytes(b"other copy")
    with pytest.raises(QueueWriteError, match=f"deferred/{qid} exists"):
        store.move(qid, "incoming", "deferred")
    assert (store.queue_directory / "deferred" / qid).read_bytes() == b"other copy"
    assert store.load("incoming", qid).content == CONTENT


@pytest.mark.parametrize("fail", [("rename", 1), ("fsync_dir", 1), ("fsync_dir", 2)])
def test_failed_move_leaves_the_message_in_exactly_one_queue(
    tmp_path: Path, fail: tuple[str, int]
) -> None:
    store, qid = setup(tmp_path, FailingOps(fail=fail))
    with pytest.raises(QueueWriteError) as info:
        store.move(qid, "incoming", "active")
    assert isinstance(info.value.__cause__, OSError)
    expected = "incoming" if fail[0] == "rename" else "active"  # the rename is the switch
    assert where(store, qid) == [expected]
    assert store.load(expected, qid).content == CONTENT


def test_remove(tmp_path: Path) -> None:
    ops = FailingOps()
    store, qid = setup(tmp_path, ops)
    store.remove("incoming", qid)
    assert ops.calls == Counter(unlink=1, fsync_dir=1)
    assert where(store, qid) == []
    with pytest.raises(FileNotFoundError):
        store.remove("incoming", qid)


@pytest.mark.parametrize("fail", [("unlink", 1), ("fsync_dir", 1)])
def test_failed_remove_raises_queue_write_error(tmp_path: Path, fail: tuple[str, int]) -> None:
    store, qid = setup(tmp_path, FailingOps(fail=fail))
    with pytest.raises(QueueWriteError):
        store.remove("incoming", qid)
    assert where(store, qid) == ([] if fail[0] == "fsync_dir" else ["incoming"])


def test_next_attempt_is_the_mtime(tmp_path: Path) -> None:
    ops = FailingOps()
    store, qid = setup(tmp_path, ops)
    store.set_next_attempt("incoming", qid, 1_800_000_000.5)
    assert store.next_attempt("incoming", qid) == 1_800_000_000.5
    assert os.stat(store.path("incoming", qid)).st_mtime == 1_800_000_000.5
    assert ops.calls == Counter(open=1, fsync=1, close=1)
    store.move(qid, "incoming", "deferred")  # rename keeps the time
    assert store.next_attempt("deferred", qid) == 1_800_000_000.5
    with pytest.raises(FileNotFoundError):
        store.set_next_attempt("incoming", qid, 0.0)
    with pytest.raises(FileNotFoundError):
        store.next_attempt("incoming", qid)
    ops.fail = ("fsync", ops.calls["fsync"] + 1)
    with pytest.raises(QueueWriteError):
        store.set_next_attempt("deferred", qid, 1.0)


def test_quarantine_moves_to_corrupt(tmp_path: Path) -> None:
    store, qid = setup(tmp_path)
    store.path("incoming", qid).write_bytes(b"damaged")
    with pytest.raises(QueueRecordError):
        store.load("incoming", qid)
    store.quarantine("incoming", qid)
    assert where(store, qid) == ["corrupt"]
    assert store.list("corrupt") == [qid]
