"""mbox rendering and appending (Postfix mail_copy.c MAIL_COPY_MBOX), and command statuses."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from postillion.delivery.local import command_status
from postillion.delivery.mbox import (
    Locking,
    MboxError,
    append,
    command_input,
    mbox_message,
    run_as,
    set_eugid,
)

NOW = time.mktime((2025, 1, 2, 3, 4, 5, 0, 0, -1))
FAST = Locking(attempts=1, delay=0.01)
CONTENT = b"Subject: x\r\n\r\nFrom me\r\n>From you\r\nFrom\r\n"


def test_mbox_message_exact_bytes() -> None:
    assert mbox_message(CONTENT, sender="a@example.org", original="root@mx.test",
                        delivered="alice@mx.test", now=NOW) == (
        b"From a@example.org  Thu Jan  2 03:04:05 2025\n"
        b"Return-Path: <a@example.org>\nX-Original-To: root@mx.test\n"
        b"Delivered-To: alice@mx.test\n"
        b"Subject: x\n\n>From me\n>From you\nFrom\n\n")


def test_null_sender_is_mailer_daemon_and_quoted_local_part() -> None:
    msg = mbox_message(b"x\r\n", sender="", original=None, delivered="a b@mx.test", now=NOW)
    assert msg == (b"From MAILER-DAEMON  Thu Jan  2 03:04:05 2025\nReturn-Path: <>\n"
                   b'Delivered-To: "a b"@mx.test\nx\n\n')


def test_command_input_is_not_quoted() -> None:
    assert command_input(CONTENT, sender="a@b", original="p@mx", delivered="p@mx", now=NOW) == (
        b"From a@b  Thu Jan  2 03:04:05 2025\nReturn-Path: <a@b>\nX-Original-To: p@mx\n"
        b"Delivered-To: p@mx\nSubject: x\n\nFrom me\n>From you\nFrom\n")


def test_append_creates_0600_and_appends(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    append(str(box), b"one\n\n")
    append(str(box), b"two\n\n")
    assert box.read_bytes() == b"one\n\ntwo\n\n"
    assert stat.S_IMODE(box.stat().st_mode) == 0o600
    assert not (tmp_path / "alice.lock").exists()


def test_held_dotlock_defers(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    (tmp_path / "alice.lock").write_text("")
    with pytest.raises(MboxError) as info:
        append(str(box), b"x\n", locking=Locking(attempts=2, delay=0.01))
    assert (info.value.dsn, info.value.text) == (
        "4.2.0", f"unable to create lock file {box}.lock: File exists")
    old = time.time() - 1000  # stale: removed, then delivery goes ahead
    os.utime(tmp_path / "alice.lock", (old, old))
    append(str(box), b"x\n", locking=Locking(attempts=2, delay=0.01))
    assert box.read_bytes() == b"x\n"


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(MboxError) as info:
        append(str(tmp_path), b"x\n", locking=Locking(methods=("fcntl",)))
    assert info.value.dsn == "5.2.0"
    assert info.value.text == "cannot open file: Is a directory"
    append("/dev/null", b"x\n", locking=Locking(methods=("fcntl",)), regular_only=False)


@pytest.mark.parametrize(("code", "output", "expected"), [
    (0, b"", ("sent", "2.0.0", "delivered to command: cmd")),
    (75, b"", ("deferred", "4.3.0", "temporary failure")),
    (75, b"busy\tnow\n", ("deferred", "4.3.0", "temporary failure. Command output: busy now ")),
    (67, b"", ("bounced", "5.1.1", "user unknown")),
    (1, b"oops\n", ("bounced", "5.3.0", 'Command died with status 1: "cmd". Command output: oops ')),
    (1, b"4.2.2 mailbox full", ("deferred", "4.2.2", "mailbox full")),
    (-9, b"", ("deferred", "4.3.0", 'Command died with signal 9: "cmd"')),
])
def test_command_status_follows_pipe_command(code: int, output: bytes,
                                             expected: tuple[str, str, str]) -> None:
    o = command_status("cmd", code, output)
    assert (o.status, o.dsn, o.text) == expected


# --------------------------------------------------------------- review fixes: safe_open etc.


def _ids_after_set_eugid(uid: int, gid: int) -> list[object]:
    set_eugid(uid, gid)
    return [os.getresuid(), os.getegid(), os.getgroups()]


@pytest.mark.root
def test_set_eugid_leaves_no_supplementary_groups() -> None:
    os.setgroups([0, 4])  # root's groups must not follow the recipient's effective ids
    try:
        assert asyncio.run(run_as(_ids_after_set_eugid, 1001, 1002)) == [
            [0, 1001, 0], 1002, [1002]]
    finally:
        os.setgroups([0])


def test_hard_linked_mailbox_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_bytes(b"secret\n")
    os.link(target, tmp_path / "alice")
    with pytest.raises(MboxError) as info:
        append(str(tmp_path / "alice"), b"x\n", locking=FAST)
    assert (info.value.dsn, info.value.text) == ("5.2.0", "file has 2 hard links")
    assert target.read_bytes() == b"secret\n"


def test_symlinked_mailbox_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_bytes(b"secret\n")
    (tmp_path / "alice").symlink_to(target)
    with pytest.raises(MboxError) as info:
        append(str(tmp_path / "alice"), b"x\n", locking=FAST)
    assert (info.value.dsn, info.value.text) == (
        "5.2.0", "cannot open file: Too many levels of symbolic links")
    assert target.read_bytes() == b"secret\n"


def test_mailbox_owned_by_someone_else_defers(tmp_path: Path) -> None:
    box = tmp_path / "alice"
    box.write_bytes(b"")
    with pytest.raises(MboxError) as info:
        append(str(box), b"x\n", locking=FAST, owner_uid=os.getuid() + 1)
    assert (info.value.dsn, info.value.text) == (
        "4.2.0", f"destination {box} is not owned by recipient")
    assert box.read_bytes() == b""
    append(str(box), b"x\n", locking=FAST, owner_uid=os.getuid())
    assert box.read_bytes() == b"x\n"


def test_executable_file_is_refused_for_file_deliveries(tmp_path: Path) -> None:
    path = tmp_path / "script"
    path.write_bytes(b"#!/bin/sh\n")
    path.chmod(0o700)
    with pytest.raises(MboxError) as info:
        append(str(path), b"x\n", locking=FAST, regular_only=False, refuse_executable=True)
    assert (info.value.dsn, info.value.text) == ("5.7.1", "file is executable")
    assert path.read_bytes() == b"#!/bin/sh\n"


def test_fifo_is_not_dotlocked_and_a_fifo_without_reader_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(MboxError) as info:  # no reader: fails at once (O_NONBLOCK)
        append(str(fifo), b"x\n", locking=FAST, regular_only=False)
    assert (info.value.dsn, info.value.text) == ("5.2.0",
                                                 "cannot open file: No such device or address")
    (tmp_path / "pipe.lock").write_text("")  # mbox_open.c: never dotlock a non-file
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert append(str(fifo), b"x\n", locking=FAST, regular_only=False) == []
        assert os.read(reader, 100).endswith(b"x\n")
    finally:
        os.close(reader)


def test_dotlock_may_fail_for_files_warns_and_delivers(tmp_path: Path) -> None:
    path = tmp_path / ("m" * 252)  # the name fits, NAME.lock does not
    with pytest.raises(MboxError) as info:
        append(str(path), b"x\n", locking=FAST)
    assert (info.value.dsn, info.value.text) == (
        "5.2.0", f"unable to create lock file {path}.lock: File name too long")
    assert append(str(path), b"x\n", locking=FAST, dotlock_may_fail=True) == [
        f"unable to create lock file {path}.lock: File name too long"]
    assert path.read_bytes() == b"x\n"
