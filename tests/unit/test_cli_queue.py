"""``postillion queue|flush|show|delete|hold|release|requeue``: Postfix's exact output formats
(showq_compat.c, showq_json.c, postcat.c, postsuper.c) and the queue changes they make."""

from __future__ import annotations

import io
import os
import pwd
import re
import socket
import time
from pathlib import Path

import pytest

from postillion.queue import wakeup

from postillion.cli import queue as cli
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import RecipientStatus, encode, encode_status
from postillion.queue.store import QueueStore

R1 = "connect to mx.a.test[192.0.2.1]:25: Connection refused"  # 54 characters
RCPT_PAD = " " * 41  # "%-11s %7s %-20s " with empty strings
ACTIVE_ID, INCOMING_ID, DEFERRED_ID, HOLD_ID = "1A2B3C4D5E", "4D5E6F7A8B", "2B3C4D5E6F", "3C4D5E6F7A"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def status(rcpt: int, st: str, text: str) -> RecipientStatus:
    return RecipientStatus(rcpt=rcpt, status=st, dsn="4.4.1" if st == "deferred" else "2.0.0",
                           relay="none", text=text, time=1764060000.0)


def put(store: QueueStore, queue: str, qid: str, env: Envelope, size: int,
        statuses: list[RecipientStatus] = (), mtime: float | None = None) -> None:
    """A queue file with a chosen id (so the expected output can be written literally)."""
    env.queue_id = qid
    content = b"Subject: x\r\n\r\n" + b"y" * (size - 16) + b"\r\n"
    assert len(content) == size
    path = store.path(queue, qid)
    path.write_bytes(encode(env, content) + b"".join(encode_status(s) for s in statuses))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/data\n"
    )
    (tmp_path / "data" / "run").mkdir(parents=True)
    QueueStore(tmp_path / "spool").ensure_layout()
    return tmp_path


@pytest.fixture
def store(config: Path) -> QueueStore:
    store = QueueStore(config / "spool")
    put(store, "active", ACTIVE_ID,
        Envelope(sender="alice@example.test", recipients=[Recipient(address="bob@remote.test")],
                 arrival_time=1764058420.9), 1500)
    put(store, "incoming", INCOMING_ID,
        Envelope(sender="carol@example.test", recipients=[Recipient(address="dave@remote.test")]),
        20, mtime=1764058420.0)  # no arrival time recorded: showq falls back to the mtime
    put(store, "deferred", DEFERRED_ID,
        Envelope(sender="", arrival_time=1764062461.0, recipients=[
            Recipient(address="x@a.test"), Recipient(address="y@a.test"),
            Recipient(address="z@b.test"), Recipient(address="w@c.test")]),
        2600, [status(0, "deferred", R1), status(1, "deferred", R1), status(2, "sent", "250 Ok")],
        mtime=1764062761.0)
    put(store, "hold", HOLD_ID,
        Envelope(sender="john doe@example.test", arrival_time=1700000000.0,
                 recipients=[Recipient(address="ctl\x07x@example.test")]), 100)
    return store


def run(config: Path, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(config, list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


MAILQ = (
    "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
    "1A2B3C4D5E*    1500 Tue Nov 25 08:13:40  alice@example.test\n"
    f"{RCPT_PAD}bob@remote.test\n"
    "\n"
    "4D5E6F7A8B       20 Tue Nov 25 08:13:40  carol@example.test\n"
    f"{RCPT_PAD}dave@remote.test\n"
    "\n"
    "2B3C4D5E6F     2600 Tue Nov 25 09:21:01  MAILER-DAEMON\n"
    f"{' ' * 22}(connect to mx.a.test[192.0.2.1]:25: Connection refused)\n"
    f"{RCPT_PAD}x@a.test\n"
    f"{RCPT_PAD}y@a.test\n"
    f"{' ' * 58}(reason unavailable)\n"
    f"{RCPT_PAD}w@c.test\n"
    "\n"
    '3C4D5E6F7A!     100 Tue Nov 14 22:13:20  "john doe"@example.test\n'
    f'{RCPT_PAD}"ctl?x"@example.test\n'
    "\n"
    "-- 4 Kbytes in 4 Requests.\n"
)


def test_queue_listing_is_postqueue_p(config: Path, store: QueueStore) -> None:
    assert run(config, "queue") == (0, MAILQ, "")
    assert run(config, "queue", "-p") == (0, MAILQ, "")


def test_maildrop_is_listed_first_as_a_live_postfix_does(config: Path) -> None:
    """Mail sendmail dropped but pickup has not taken yet: file name, file size, the sender
    as given (or the owner's login, unqualified), the file's time; queue_name maildrop."""
    from postillion.queue import maildrop

    directory = maildrop.ensure_maildrop(config / "spool")
    name = maildrop.write_drop(directory, maildrop.encode_drop(maildrop.DropFile(
        recipients=("x@example.org",), content=b"Subject: t\r\n\r\nhi\r\n")))
    os.utime(directory / name, (1795606696, 1795606696))
    size = (directory / name).stat().st_size
    login = pwd.getpwuid(os.getuid()).pw_name
    code, out, err = run(config, "queue")
    assert (code, err) == (0, "")
    assert out.splitlines()[:3] == [
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
        f"{name} {size:>7} {time.asctime(time.localtime(1795606696))[:-5]:20.20} {login}",
        "                                         x@example.org",
    ]
    assert run(config, "queue", "-j")[1] == (
        f'{{"queue_name": "maildrop", "queue_id": "{name}", "arrival_time": 1795606696, '
        f'"message_size": {size}, "forced_expire": false, "sender": "{login}", '
        '"recipients": [{"address": "x@example.org"}]}\n')


def test_empty_queue(config: Path) -> None:
    assert run(config, "queue") == (0, "Mail queue is empty\n", "")
    assert run(config, "queue", "-j") == (0, "", "")


def test_one_request_and_long_queue_ids(config: Path) -> None:
    (config / "main.cf").write_text((config / "main.cf").read_text() + "enable_long_queue_ids = yes\n")
    store = QueueStore(config / "spool")
    put(store, "deferred", "4jZC9w0SM3zBrKl",
        Envelope(sender="a@example.test", arrival_time=1764058420.0,
                 recipients=[Recipient(address="b@example.test")]),
        2048, [status(0, "deferred", "host mx.example.test[192.0.2.9] said: 451 4.3.0 try again")])
    assert run(config, "queue")[1] == (
        "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
        "4jZC9w0SM3zBrKl       2048 Tue Nov 25 08:13:40 a@example.test\n"
        f"{' ' * 19}(host mx.example.test[192.0.2.9] said: 451 4.3.0 try again)\n"
        f"{' ' * 47}b@example.test\n"
        "\n"
        "-- 2 Kbytes in 1 Request.\n"
    )


def test_long_reason_is_not_padded(config: Path) -> None:
    store = QueueStore(config / "spool")
    reason = "r" * 80
    put(store, "deferred", "ABCDEF0123",
        Envelope(sender="a@example.test", arrival_time=1764058420.0,
                 recipients=[Recipient(address="b@example.test")]),
        100, [status(0, "deferred", reason)])
    assert f"\n({reason})\n" in run(config, "queue")[1]


def test_queue_json_is_postqueue_j(config: Path, store: QueueStore) -> None:
    rc, out, err = run(config, "queue", "-j")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        ('{"queue_name": "active", "queue_id": "1A2B3C4D5E", "arrival_time": 1764058420, '
         '"message_size": 1500, "forced_expire": false, "sender": "alice@example.test", '
         '"recipients": [{"address": "bob@remote.test"}]}'),
        ('{"queue_name": "incoming", "queue_id": "4D5E6F7A8B", "arrival_time": 1764058420, '
         '"message_size": 20, "forced_expire": false, "sender": "carol@example.test", '
         '"recipients": [{"address": "dave@remote.test"}]}'),
        ('{"queue_name": "deferred", "queue_id": "2B3C4D5E6F", "arrival_time": 1764062461, '
         '"message_size": 2600, "forced_expire": false, "sender": "MAILER-DAEMON", '
         '"recipients": [{"address": "x@a.test", "delay_reason": '
         '"connect to mx.a.test[192.0.2.1]:25: Connection refused"}, '
         '{"address": "y@a.test", "delay_reason": '
         '"connect to mx.a.test[192.0.2.1]:25: Connection refused"}, {"address": "w@c.test"}]}'),
        ('{"queue_name": "hold", "queue_id": "3C4D5E6F7A", "arrival_time": 1700000000, '
         '"message_size": 100, "forced_expire": false, "sender": "\\"john doe\\"@example.test", '
         '"recipients": [{"address": "\\"ctl?x\\"@example.test"}]}'),
    ]
    assert out.endswith("}\n")


def test_json_quoting_of_reasons() -> None:
    assert cli._json_quote('a"b\\c\td\x01') == 'a\\"b\\\\c\\td\\u0001'


def test_damaged_file_is_skipped_with_a_warning(config: Path, store: QueueStore) -> None:
    store.path("deferred", "ABCDEF0123").write_bytes(b"junk")
    rc, out, err = run(config, "queue")
    assert (rc, out) == (0, MAILQ)
    assert err == "postqueue: warning: deferred/ABCDEF0123: not a postillion queue file (bad first line)\n"


def test_delete_one_and_all(config: Path, store: QueueStore) -> None:
    assert run(config, "delete", DEFERRED_ID) == (
        0, "", f"postsuper: {DEFERRED_ID}: removed\npostsuper: Deleted: 1 message\n"
    )
    assert store.locate(DEFERRED_ID) is None
    assert run(config, "delete", DEFERRED_ID) == (0, "", "postsuper: Deleted: 0 messages\n")
    assert run(config, "delete", "ALL", "hold") == (0, "", "postsuper: Deleted: 1 message\n")
    assert store.locate(HOLD_ID) is None
    assert run(config, "delete", "ALL") == (0, "", "postsuper: Deleted: 2 messages\n")
    assert run(config, "queue")[1] == "Mail queue is empty\n"


def test_postsuper_lines_go_to_the_mail_log_too(config: Path, store: QueueStore) -> None:
    with (config / "main.cf").open("a") as f:
        f.write(f"maillog_file = {config}/maillog\nmyhostname = mx.example.test\n")
    assert run(config, "hold", DEFERRED_ID)[0] == 0
    lines = (config / "maillog").read_text().splitlines()
    assert [re.sub(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d ", "", line) for line in lines] == [
        f"mx postfix/postsuper[{os.getpid()}]: {DEFERRED_ID}: placed on hold",
        f"mx postfix/postsuper[{os.getpid()}]: Placed on hold: 1 message",
    ]


def test_delete_from_stdin_and_bad_ids(config: Path, store: QueueStore) -> None:
    rc, out, err = run(config, "delete", "-", stdin=f"{ACTIVE_ID}\n../etc\n{HOLD_ID}\n")
    assert (rc, out) == (0, "")
    assert err == (
        f"postsuper: {ACTIVE_ID}: removed\n"
        "postsuper: warning: invalid mail queue id: ../etc\n"
        f"postsuper: {HOLD_ID}: removed\n"
        "postsuper: Deleted: 2 messages\n"
    )
    assert run(config, "delete", "ALL", "maildrop") == (
        1, "", "postsuper: fatal: invalid directory name: maildrop\n"
    )


def test_hold_release_requeue(config: Path, store: QueueStore) -> None:
    assert run(config, "hold", DEFERRED_ID) == (
        0, "", f"postsuper: {DEFERRED_ID}: placed on hold\npostsuper: Placed on hold: 1 message\n"
    )
    assert store.locate(DEFERRED_ID) == "hold"
    assert run(config, "hold", DEFERRED_ID) == (0, "", "postsuper: Placed on hold: 0 messages\n")
    assert run(config, "release", "ALL") == (0, "", "postsuper: Released from hold: 2 messages\n")
    assert store.locate(DEFERRED_ID) == store.locate(HOLD_ID) == "deferred"
    assert store.next_attempt("deferred", DEFERRED_ID) == 1764062761.0  # release keeps it
    assert run(config, "release", HOLD_ID) == (0, "", "postsuper: Released from hold: 0 messages\n")
    before = time.time()
    assert run(config, "requeue", DEFERRED_ID) == (
        0, "", f"postsuper: {DEFERRED_ID}: requeued\npostsuper: Requeued: 1 message\n"
    )
    assert store.locate(DEFERRED_ID) == "incoming"
    assert store.next_attempt("incoming", DEFERRED_ID) >= before
    # the recipient that is done stays done, the deferral history stays
    assert store.load("incoming", DEFERRED_ID).pending() == [0, 1, 3]
    assert run(config, "hold", "ALL") == (0, "", "postsuper: Placed on hold: 4 messages\n")
    assert run(config, "requeue", "ALL") == (0, "", "postsuper: Requeued: 4 messages\n")
    assert store.list("incoming") == sorted([ACTIVE_ID, INCOMING_ID, DEFERRED_ID, HOLD_ID])


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become nobody")
def test_postsuper_commands_are_for_root_only(config: Path, store: QueueStore) -> None:
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes nobody and runs the command in-process
        try:
            os.close(r)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out, err = io.StringIO(), io.StringIO()
            rc = cli.main(config, ["delete", "ALL"], stdout=out, stderr=err)
            os.write(w, f"{rc}|{out.getvalue()}|{err.getvalue()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    assert result == "1||postsuper: fatal: use of this command is reserved for the superuser\n"
    assert store.locate(ACTIVE_ID) == "active"


def test_show_is_postcat_q(config: Path) -> None:
    store = QueueStore(config / "spool")
    env = Envelope(
        sender="alice@example.test",
        recipients=[Recipient(address="bob@remote.test", orcpt="rfc822;bob@remote.test",
                              notify=("SUCCESS", "FAILURE")),
                    Recipient(address="carol@remote.test")],
        ret="HDRS", envid="QQ314159", body_type="8BITMIME", arrival_time=1764058420.5,
        client_name="client.example.test", client_addr="192.0.2.10", client_port=40000,
        helo_name="client.example.test", protocol="ESMTPSA", sasl_method="PLAIN",
        sasl_username="alice",
    )
    put(store, "deferred", "ABCDEF0123", env, 40, [status(1, "sent", "250 Ok")])
    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding="utf-8")
    err = io.StringIO()
    assert cli.main(config, ["show", "ABCDEF0123"], stdout=out, stderr=err) == 0
    out.flush()
    offset = len(encode(env, b""))
    assert err.getvalue() == ""
    assert buf.getvalue().decode() == (
        "*** ENVELOPE RECORDS deferred/ABCDEF0123 ***\n"
        f"message_size:              40 {offset:>15}               2               0"
        "              40               0\n"
        "message_arrival_time: Tue Nov 25 08:13:40 2025\n"
        "create_time: Tue Nov 25 08:13:40 2025\n"
        "sender: alice@example.test\n"
        "named_attribute: log_client_name=client.example.test\n"
        "named_attribute: log_client_address=192.0.2.10\n"
        "named_attribute: log_client_port=40000\n"
        "named_attribute: log_message_origin=client.example.test[192.0.2.10]\n"
        "named_attribute: log_helo_name=client.example.test\n"
        "named_attribute: log_protocol_name=ESMTPSA\n"
        "named_attribute: client_name=client.example.test\n"
        "named_attribute: reverse_client_name=client.example.test\n"
        "named_attribute: client_address=192.0.2.10\n"
        "named_attribute: client_port=40000\n"
        "named_attribute: helo_name=client.example.test\n"
        "named_attribute: protocol_name=ESMTPSA\n"
        "named_attribute: sasl_method=PLAIN\n"
        "named_attribute: sasl_username=alice\n"
        "named_attribute: envelope_id=QQ314159\n"
        "named_attribute: ret_flags=2\n"
        "named_attribute: dsn_orig_rcpt=rfc822;bob@remote.test\n"
        "named_attribute: notify_flags=10\n"
        "original_recipient: bob@remote.test\n"
        "recipient: bob@remote.test\n"
        "original_recipient: carol@remote.test\n"
        "done_recipient: carol@remote.test\n"
        "*** MESSAGE CONTENTS deferred/ABCDEF0123 ***\n"
        "Subject: x\n"
        "\n"
        "yyyyyyyyyyyyyyyyyyyyyyyy\n"
        "*** HEADER EXTRACTED deferred/ABCDEF0123 ***\n"
        "named_attribute: encoding=8bit\n"
        "*** MESSAGE FILE END deferred/ABCDEF0123 ***\n"
    )


def test_show_missing_and_damaged(config: Path, store: QueueStore) -> None:
    assert run(config, "show", "ABCDEF0123") == (
        1, "", "postcat: fatal: open queue file ABCDEF0123: No such file or directory\n"
    )
    assert run(config, "show", "../../x") == (
        1, "", "postcat: fatal: open queue file ../../x: No such file or directory\n"
    )
    store.path("corrupt", "ABCDEF0123").write_bytes(b"junk")
    rc, out, err = run(config, "show", "ABCDEF0123")
    assert (rc, out) == (1, "")
    assert err.startswith("postcat: warning: corrupt/ABCDEF0123: input is not a valid queue file\n")


def test_flush_makes_deferred_mail_due_and_wakes_qmgr(config: Path, store: QueueStore) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as qmgr:
        path = wakeup.socket_path(store.queue_directory)
        path.parent.mkdir(exist_ok=True)
        qmgr.bind(str(path))
        qmgr.settimeout(5)
        assert cli.flush(config, now=lambda: 1764070000.0) == 0
        assert qmgr.recv(64) == b"F"
    assert store.next_attempt("deferred", DEFERRED_ID) == 1764070000.0
    assert store.next_attempt("active", ACTIVE_ID) != 1764070000.0  # only deferred mail
    assert run(config, "flush") == (0, "", "")  # no listener any more: still silent


def test_wake_qmgr_without_a_queue_manager(config: Path) -> None:
    assert cli.wake_qmgr(config) is False  # no socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        path = wakeup.socket_path(cli.open_store(cli._params(config)).queue_directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        s.bind(str(path))
    assert cli.wake_qmgr(config) is False  # a stale socket that nobody reads


def test_usage_errors(config: Path) -> None:
    rc, out, err = run(config, "delete")
    assert (rc, out) == (2, "")
    assert err.startswith("postillion: delete: expected a queue id, ALL or -\nusage: ")
    assert run(config, "queue", "-x")[0] == 2
    assert run(config, "frobnicate")[0] == 2


def test_quote_822_local() -> None:
    assert cli.quote_822_local("a.b+c@example.test") == "a.b+c@example.test"
    assert cli.quote_822_local("j\u00f6rg@example.test") == "j\u00f6rg@example.test"
    assert cli.quote_822_local("a b@example.test") == '"a b"@example.test'
    assert cli.quote_822_local(".a@example.test") == '".a"@example.test'
    assert cli.quote_822_local('a"b@x@example.test') == '"a\\"b@x"@example.test'
    assert cli.quote_822_local("postmaster") == "postmaster"
