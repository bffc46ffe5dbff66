"""mbox rendering and appending (Postfix mail_copy.c MAIL_COPY_MBOX), and command statuses."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from postillion.delivery.local import command_status
from postillion.delivery.mbox import Locking, MboxError, append, command_input, mbox_message

NOW = time.mktime((2025, 1, 2, 3, 4, 5, 0, 0, -1))
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
