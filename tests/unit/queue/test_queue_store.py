"""QueueStore: layout, commit protocol, failure injection at every step, concurrent ids."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from queue_fileops import FailingOps

from postillion.errors import QueueWriteError
from postillion.queue import safeio
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.ids import SHORT_ID_RE, is_long_queue_id
from postillion.queue.store import QUEUE_NAMES, QueueStore

CONTENT = b"Subject: t\r\n\r\nhello\r\n"
ENV = Envelope(sender="alice@example.test", recipients=[Recipient(address="x@remote.test")])


def make_store(tmp_path: Path, **kw) -> QueueStore:
    store = QueueStore(tmp_path / "q", **kw)
    store.ensure_layout()
    return store


def all_files(store: QueueStore) -> list[str]:
    return sorted(
        f"{q}/{name}" for q in QUEUE_NAMES for name in os.listdir(store.queue_directory / q)
    )


def test_layout_is_created_with_mode_0700(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (store.queue_directory / "hold").chmod(0o755)
    store.ensure_layout()
    for name in QUEUE_NAMES:
        st = (store.queue_directory / name).stat()
        assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 == 0o700


def test_commit_then_read_back(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    pending = store.begin()
    qid = pending.queue_id
    assert SHORT_ID_RE.fullmatch(qid)
    assert store.list() == []  # not visible before commit
    assert pending.commit(ENV, CONTENT) == qid
    assert store.list("incoming") == [qid]
    assert all_files(store) == [f"incoming/{qid}"]
    env, content = store.read(qid)
    assert content == CONTENT
    assert env.queue_id == qid and env.sender == "alice@example.test"
    assert ENV.queue_id is None  # the caller's envelope is not modified
    st = (store.queue_directory / "incoming" / qid).stat()
    assert st.st_mode & 0o777 == 0o600


def test_queue_id_encodes_the_file_inode(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    pending = store.begin()
    inode = os.stat(pending.tmp_path).st_ino
    assert pending.queue_id.endswith(f"{inode:X}")
    pending.commit(ENV, CONTENT)
    assert os.stat(store.queue_directory / "incoming" / pending.queue_id).st_ino == inode


def test_long_queue_ids(tmp_path: Path) -> None:
    store = make_store(tmp_path, long_queue_ids=True)
    with store.begin() as pending:
        assert is_long_queue_id(pending.queue_id)
        pending.commit(ENV, CONTENT)
    assert store.list() == [pending.queue_id]


def test_abort_and_context_manager_leave_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    p = store.begin()
    p.abort()
    p.abort()
    with store.begin():
        pass
    with pytest.raises(RuntimeError), store.begin():
        raise RuntimeError("client went away")
    assert all_files(store) == []


def test_commit_twice_is_an_error(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    p = store.begin()
    p.commit(ENV, CONTENT)
    with pytest.raises(RuntimeError):
        p.commit(ENV, CONTENT)


def test_commit_fsyncs_file_and_directory(tmp_path: Path) -> None:
    ops = FailingOps()
    store = make_store(tmp_path, ops=ops)
    store.begin().commit(ENV, CONTENT)
    assert ops.calls == Counter(
        open=1, fstat=1, write=1, fsync=1, close=1, rename=1, fsync_dir=1
    )


@pytest.mark.parametrize("step", ["write", "fsync", "close", "rename", "fsync_dir"])
def test_failure_at_each_commit_step_leaves_nothing(tmp_path: Path, step: str) -> None:
    ops = FailingOps(fail=(step, 1))
    store = make_store(tmp_path, ops=ops)
    pending = store.begin()
    with pytest.raises(QueueWriteError) as info:
        pending.commit(ENV, CONTENT)
    assert isinstance(info.value.__cause__, OSError)
    assert f"injected failure in {step}" in str(info.value)
    assert all_files(store) == []
    assert store.list() == []
    pending.abort()  # harmless after a failed commit
    # the store still works after the failure
    ops.fail = None
    qid = store.begin().commit(ENV, CONTENT)
    assert store.list() == [qid]


@pytest.mark.parametrize("step", ["open", "fstat"])
def test_failure_in_begin_raises_queue_write_error(tmp_path: Path, step: str) -> None:
    store = make_store(tmp_path, ops=FailingOps(fail=(step, 1)))
    with pytest.raises(QueueWriteError):
        store.begin()
    assert all_files(store) == []


def test_begin_without_layout_is_a_queue_write_error(tmp_path: Path) -> None:
    with pytest.raises(QueueWriteError):
        QueueStore(tmp_path / "missing").begin()


def test_colliding_id_is_retried(tmp_path: Path) -> None:
    # A fixed clock and a pre-existing file with the id the first inode would give.
    store = make_store(tmp_path, clock_ns=lambda: 1_000)
    probe = store.begin()
    taken = probe.queue_id
    probe.commit(ENV, CONTENT)
    (store.queue_directory / "incoming" / taken).rename(store.queue_directory / "deferred" / taken)
    p = store.begin()
    assert p.queue_id != taken
    p.abort()


def test_short_write_is_completed(tmp_path: Path) -> None:
    class OneByte(safeio.FileOps):
        def write(self, fd, data):  # type: ignore[override]
            return super().write(fd, data[:1])

    store = make_store(tmp_path, ops=OneByte())
    qid = store.begin().commit(ENV, CONTENT)
    assert store.read(qid)[1] == CONTENT


def test_temp_files_and_junk_are_not_listed(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    (store.queue_directory / "incoming" / ".tmp.1.abc").write_bytes(b"x")
    (store.queue_directory / "incoming" / "README").write_bytes(b"x")
    assert store.list() == []


def test_read_missing_and_bad_ids(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.read("ABCDEF123")
    with pytest.raises(ValueError):
        store.read("../../etc/passwd")
    with pytest.raises(ValueError):
        store.list("maildrop")


def test_damaged_file_names_its_queue_and_id(tmp_path: Path) -> None:
    from postillion.queue.record import QueueRecordError

    store = make_store(tmp_path)
    (store.queue_directory / "deferred" / "ABCDEF123").write_bytes(b"garbage")
    with pytest.raises(QueueRecordError, match=r"^deferred/ABCDEF123: not a postillion queue file"):
        store.read("ABCDEF123")


def _worker(queue_directory: str, n: int, out: multiprocessing.Queue) -> None:
    store = QueueStore(Path(queue_directory))
    pendings = [store.begin() for _ in range(n)]  # all held open at once
    out.put([p.commit(ENV, CONTENT) for p in pendings])


@pytest.mark.timeout(60)
def test_concurrent_begin_from_several_processes_gives_unique_ids(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(store.queue_directory), 40, out)) for _ in range(6)]
    for p in procs:
        p.start()
    ids = [qid for _ in procs for qid in out.get(timeout=30)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(ids) == 240
    assert len(set(ids)) == 240
    assert store.list() == sorted(ids)


def test_write_atomic_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "file"
    safeio.write_atomic(target, b"one")
    safeio.write_atomic(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    for step in ("open", "write", "fsync", "close", "rename"):
        with pytest.raises(OSError, match=step):
            safeio.write_atomic(target, b"three", ops=FailingOps(fail=(step, 1)))
        assert target.read_bytes() == b"two"
        assert sorted(os.listdir(tmp_path)) == ["file"]
