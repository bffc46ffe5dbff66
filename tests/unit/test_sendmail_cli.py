"""`postillion sendmail` and pickup without a server: Postfix's option handling and fatal texts,
the message as read from stdin (dot, From_, line ends), -t, the drop file format, the message
pickup builds (Received:, Message-Id:, Date:, From: with the full name, Bcc: removed), and
pickup against hostile maildrop files in a real queue directory."""

from __future__ import annotations

import datetime
import io
import json
import os
import pwd
import stat
import time
from pathlib import Path

import pytest

from postillion.cli import sendmail as sm
from postillion.maillog import MemorySink, QueueLog
from postillion.queue import maildrop as md
from postillion.queue.envelope import Recipient
from postillion.queue.record import decode
from postillion.queue.store import CORRUPT, INCOMING, QueueStore

UTC = datetime.UTC
POSTED = datetime.datetime(2026, 11, 25, 8, 13, 40, tzinfo=UTC)
SETTINGS = md.PickupSettings(myhostname="mail.example.test", myorigin="example.test")
QID = "C9DD9160197"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


# --- options -------------------------------------------------------------------------------


def test_common_mua_invocations() -> None:
    o = sm.parse_args(["-t", "-i", "-f", "bounce@example.test", "-F", "Alice Smith", "-bm", "--", "x@a.test"])
    assert (o.extract, o.dot_ends, o.sender, o.full_name, o.mode, o.recipients) == (
        True, False, "bounce@example.test", "Alice Smith", "enqueue", ["x@a.test"])
    o = sm.parse_args(["-oi", "-fme", "-FBob", "a@x", "b@y"])
    assert (o.dot_ends, o.sender, o.full_name, o.recipients) == (False, "me", "Bob", ["a@x", "b@y"])
    o = sm.parse_args(["-ti"])  # grouped flags
    assert (o.extract, o.dot_ends, o.recipients) == (True, False, [])
    assert sm.parse_args(["a@x"]).dot_ends is True


def test_options_stop_at_the_first_recipient() -> None:
    # getopt with "+": what follows a recipient is a recipient, even "-t"
    o = sm.parse_args(["a@x", "-t"])
    assert (o.extract, o.recipients) == (False, ["a@x", "-t"])


def test_ignored_options_consume_their_argument() -> None:
    o = sm.parse_args(["-oem", "-L", "tag", "-h", "30", "-v", "-U", "-oA/etc/aliases", "a@x"])
    assert (o.mode, o.recipients) == ("enqueue", ["a@x"])


@pytest.mark.parametrize("argv, text", [
    (["-z"], "usage: sendmail [options]"),
    (["-f"], "usage: sendmail [options]"),
    (["-n", "a@x"], "-n option not supported"),
    (["-bd"], "unsupported: -bd"),
    (["-bv", "a@x"], "unsupported: -bv"),
    (["-B", "9BIT", "a@x"], "-B option needs 8BITMIME or 7BIT"),
    (["-oA", "a@x"], "-oA requires pathname"),
    (["-qX"], "-qX is not implemented"),
    (["-bp", "a@x"], "display queue mode requires no recipient"),
    (["-q", "a@x"], "flush queue mode requires no recipient"),
    (["-t", "-bp"], "-t can be used only in delivery mode"),
])
def test_refused_options_have_postfix_texts(argv: list[str], text: str) -> None:
    with pytest.raises(sm.SendmailError) as info:
        sm.parse_args(argv)
    assert (info.value.status, info.value.text) == (sm.EX_USAGE, text)


def test_getopt_complaint_comes_before_the_usage_line(tmp_path: Path) -> None:
    err = io.StringIO()
    assert sm.main(tmp_path, ["-z"], stdin=io.BytesIO(b""), stderr=err, env={}) == 64
    assert err.getvalue() == "sendmail: invalid option -- 'z'\nsendmail: fatal: usage: sendmail [options]\n"


def test_modes_dsn_and_config_options() -> None:
    assert sm.parse_args(["-bp"]).mode == "mailq"
    assert sm.parse_args(["-q"]).mode == "flush"
    assert sm.parse_args(["-q30m"]).exit_now is True
    assert sm.parse_args(["-bh"]).mode == "ignore"
    o = sm.parse_args(["-N", "success,delay", "-V", "env-1", "-B", "8BITMIME", "-C", "/etc/x/main.cf", "a@x"])
    assert (o.notify, o.envid, o.body_type, o.config_dir) == (("SUCCESS", "DELAY"), "env-1", "8BITMIME", Path("/etc/x"))
    o = sm.parse_args(["-N", "never,success", "a@x"])
    assert (o.notify, o.warnings) == (None, ["bad -N option value -- ignored"])


# --- reading the message ------------------------------------------------------------------


def lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def test_a_single_dot_ends_input_unless_i() -> None:
    data = b"Subject: s\n\nbody\n.\nafter\n"
    assert sm.read_message(lines(data)) == b"Subject: s\r\n\r\nbody\r\n"
    assert sm.read_message(lines(data), dot_ends=False) == b"Subject: s\r\n\r\nbody\r\n.\r\nafter\r\n"
    assert sm.read_message(lines(b"a\n..\n. \n")) == b"a\r\n..\r\n. \r\n"  # only a lone dot


def test_leading_from_lines_are_skipped_and_the_last_line_gets_its_end() -> None:
    data = b"From alice Wed Nov 25 08:13:40 2026\n>From x\nSubject: s\n\nFrom the body\nno newline"
    assert sm.read_message(lines(data)) == b"Subject: s\r\n\r\nFrom the body\r\nno newline\r\n"


def test_line_endings_as_sendmail_fix_line_endings_says() -> None:
    crlf = b"a\r\nb\r\r\n"
    assert sm.read_message(lines(crlf), fix_eol="always") == b"a\r\nb\r\n"
    assert sm.read_message(lines(crlf), fix_eol="strict") == b"a\r\nb\r\n"
    assert sm.read_message(lines(b"a\nb\r\n"), fix_eol="strict") == b"a\r\nb\r\r\n"  # first line decides
    assert sm.read_message(lines(crlf), fix_eol="never") == b"a\r\r\nb\r\r\r\n"
    assert sm.read_message(lines(b".\r\n"), fix_eol="always") == b""  # the dot test sees the fixed line


def test_size_limit() -> None:
    assert sm.read_message(lines(b"12345678\n"), size_limit=10) == b"12345678\r\n"
    with pytest.raises(sm.MessageTooBig):
        sm.read_message(lines(b"123456789\n"), size_limit=10)


def test_t_takes_to_cc_bcc() -> None:
    msg = (b"From: a@x\r\nTo: One <1@a.test>, 2@a.test\r\nSubject: s\r\nCc: \"Three, Jr\" <3@a.test>,\r\n"
           b"\t4@a.test\r\nBcc: 5@a.test\r\nReply-To: 6@a.test\r\n\r\nTo: 7@a.test\r\n")
    assert sm.extract_recipients(msg) == ["1@a.test", "2@a.test", "3@a.test", "4@a.test", "5@a.test"]


def test_t_with_resent_headers_takes_only_those() -> None:
    msg = b"To: old@a.test\r\nResent-To: new@b.test\r\nCc: later@a.test\r\nResent-Bcc: hidden@b.test\r\n\r\n"
    assert sm.extract_recipients(msg) == ["new@b.test", "hidden@b.test"]
    assert sm.extract_recipients(b"To: undisclosed-recipients:;\r\n\r\n") == []


def test_recipient_arguments_sender_and_full_name() -> None:
    assert sm.parse_recipient_args(["a@x, Bob <b@y>", "alice", " "]) == ["a@x", "b@y", "alice", ""]
    assert sm.parse_sender("<>") == ("", False)
    assert sm.parse_sender("") == ("", False)
    assert sm.parse_sender("Alice <a@x>") == ("a@x", False)
    assert sm.parse_sender("a@x, b@y") == ("a@x", True)
    assert sm.gecos_full_name("& Smith,Room 1,555", "alice") == "Alice Smith"
    assert sm.gecos_full_name("", "alice") == ""


# --- the drop file -----------------------------------------------------------------------


def drop(**kw: object) -> md.DropFile:
    args: dict[str, object] = {"recipients": ("x@remote.test",), "content": b"Subject: s\r\n\r\nhi\r\n"}
    args.update(kw)
    return md.DropFile(**args)  # type: ignore[arg-type]


def test_drop_format_round_trip_and_layout() -> None:
    d = drop(sender="", full_name="Ünï Code", body_type="8BITMIME", envid="e1", notify=("SUCCESS",))
    data = md.encode_drop(d)
    head, _, content = data.partition(b"\n\n")
    first, meta = head.split(b"\n")
    assert first == b"POSTILLION-MAILDROP 1" and content == d.content and meta.isascii()
    assert json.loads(meta) == {"content_length": 18, "recipients": ["x@remote.test"], "sender": "",
                                "full_name": "Ünï Code", "body_type": "8BITMIME", "envid": "e1",
                                "notify": ["SUCCESS"]}
    assert md.decode_drop(data) == d
    assert md.decode_drop(md.encode_drop(drop())) == drop()


def _with_meta(**changes: object) -> bytes:
    meta: dict[str, object] = {"content_length": 3, "recipients": ["x@remote.test"]}
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    return b"POSTILLION-MAILDROP 1\n" + json.dumps(meta).encode() + b"\n\nhi\n"


@pytest.mark.parametrize("data, reason", [
    (b"", "not a maildrop file"),
    (b"POSTILLION-QUEUE 2\n{}\n\n", "not a maildrop file"),
    (b"POSTILLION-MAILDROP 2\n{}\n\n", "unsupported maildrop file version"),
    (b"POSTILLION-MAILDROP 1\n{\n\n", "malformed envelope"),
    (b"POSTILLION-MAILDROP 1\n[]\n\n", "malformed envelope"),
    (_with_meta(extra=1), "unexpected envelope field 'extra'"),
    (_with_meta(content_length=4), "truncated file"),
    (_with_meta(content_length=2), "data after the content"),
    (_with_meta(content_length=True), "bad content_length"),
    (_with_meta(recipients=[]), "no recipients"),
    (_with_meta(recipients=["a@b\r\nRCPT TO:<c@d>"]), "recipient 'a@b??RCPT TO:<c@d>': bad address syntax"),
    (_with_meta(recipients=["a b@c"]), "recipient 'a b@c': bad address syntax"),
    (_with_meta(sender="x@"), "sender 'x@': bad address syntax"),
    (_with_meta(full_name="a\nBcc: x@y"), "bad full name"),
    (_with_meta(body_type="BINARYMIME"), "bad body type"),
    (_with_meta(notify=["NEVER", "DELAY"]), "bad notify"),
    (_with_meta(envid="a b"), "bad envid"),
])
def test_damaged_drop_files_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(md.MaildropError) as info:
        md.decode_drop(data)
    assert str(info.value) == reason


def test_content_limit_is_message_size_limit() -> None:
    data = md.encode_drop(drop(content=b"x" * 10))
    assert md.decode_drop(data, content_limit=10).content == b"x" * 10
    with pytest.raises(md.MaildropError, match="message file too big"):
        md.decode_drop(data, content_limit=9)


def test_addresses() -> None:
    ok = ["alice", "a@b.test", '"john doe"@b.test', "a@[192.0.2.1]", "ü@bü.test", "a@b.test."]
    assert [md.address_problem(a) for a in ok] == [None] * len(ok)
    bad = ["", "a@", "@b", "a@b c", "<a@b>", "a@b\x00", "a" * 1001]
    assert [md.address_problem(a) is not None for a in bad] == [True] * len(bad)
    assert md.address_problem("", allow_empty=True) is None


def test_canonical_lines_leave_no_stray_line_ends() -> None:
    assert md.canonical_lines(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n"
    assert md.canonical_lines(b"x\r.\r\ny\r\r\n") == b"x .\r\ny \r\n"
    assert md.canonical_lines(b"") == b""


# --- what pickup queues --------------------------------------------------------------------


def build(d: md.DropFile, settings: md.PickupSettings = SETTINGS, login: str | None = "alice") -> md.Submission:
    return md.build_message(d, uid=1000, login=login, queue_id=QID, posted=POSTED, settings=settings)


def test_local_submission_gets_received_message_id_date_and_from() -> None:
    sub = build(drop(recipients=("x@remote.test", "bob", "X@Remote.test"), full_name="Alice Smith"))
    assert sub.content == (
        b"Received: by mail.example.test (Postfix, from userid 1000)\r\n"
        b"\tid C9DD9160197; Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"
        b"Subject: s\r\n"
        b"Message-Id: <20261125081340.C9DD9160197@mail.example.test>\r\n"
        b"Date: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)\r\n"
        b"From: Alice Smith <alice@example.test>\r\n"
        b"\r\nhi\r\n"
    )
    env = sub.envelope
    assert (env.sender, env.recipients, env.queue_id, env.arrival_time, env.body_type, env.smtputf8) == (
        "alice@example.test", [Recipient(address="x@remote.test"), Recipient(address="bob@example.test")],
        QID, POSTED.timestamp(), "7BIT", False)
    assert (sub.message_id, sub.log_sender) == ("<20261125081340.C9DD9160197@mail.example.test>", "alice")


def test_sender_from_f_is_logged_as_given_and_qualified_in_the_envelope() -> None:
    sub = build(drop(sender="list-bounces"))
    assert (sub.log_sender, sub.envelope.sender) == ("list-bounces", "list-bounces@example.test")
    assert b"From: list-bounces@example.test\r\n" in sub.content
    null = build(drop(sender="", full_name="Ignored"))
    assert null.envelope.sender == "" and b"From: MAILER-DAEMON\r\n" in null.content


def test_full_name_forms() -> None:
    assert md.from_header("a@b", "Smith, John", "standard") == 'From: "Smith, John" <a@b>'
    assert md.from_header("a@b", 'Say "hi"', "standard") == 'From: "Say \\"hi\\"" <a@b>'
    assert md.from_header("a@b", "John (Jr)", "obsolete") == "From: a@b (John \\(Jr\\))"
    obsolete = md.PickupSettings(myhostname="h.test", myorigin="o.test", header_from_format="obsolete")
    assert b"From: alice@o.test (Alice)\r\n" in build(drop(full_name="Alice"), obsolete).content


def test_existing_headers_are_kept_and_bcc_is_removed() -> None:
    content = (b"From: Me <me@x.test>\r\nDate: Tue, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <m@x>\r\n"
               b"Bcc: secret@remote.test,\r\n other@remote.test\r\nReturn-Path: <z@z>\r\n\r\nBcc: body\r\n")
    sub = build(drop(content=content, full_name="Alice"))
    assert sub.content.split(b"\r\n", 2)[2] == (
        b"From: Me <me@x.test>\r\nDate: Tue, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <m@x>\r\n\r\nBcc: body\r\n")
    assert sub.message_id == "<m@x>"


def test_content_that_starts_with_white_space_or_a_body_line() -> None:
    sub = build(drop(content=b" indented\r\n"))
    assert sub.content.split(b"\r\n")[2:] == [
        b"Message-Id: <20261125081340.C9DD9160197@mail.example.test>",
        b"Date: Wed, 25 Nov 2026 08:13:40 +0000 (UTC)", b"From: alice@example.test", b"", b" indented", b""]
    sub = build(drop(content=b"just text\nand bare LF\n"))
    assert sub.content.endswith(b"From: alice@example.test\r\n\r\njust text\r\nand bare LF\r\n")


def test_no_login_and_no_f_is_an_error_eight_bit_is_detected() -> None:
    with pytest.raises(md.MaildropError, match="no login name found for user ID 1000"):
        build(drop(), login=None)
    sub = build(drop(content="Subject: é\r\n\r\n".encode(), recipients=("ü@remote.test",)))
    assert (sub.envelope.body_type, sub.envelope.smtputf8) == ("8BITMIME", True)


# --- pickup on a real directory ------------------------------------------------------------


class Pick:
    def __init__(self, root: Path, clock: float | None = None) -> None:
        self.store = QueueStore(root / "spool")
        self.store.ensure_layout()
        self.sink = MemorySink()
        self.queued: list[str] = []
        self.pickup = md.Pickup(self.store, SETTINGS, QueueLog("postfix", sink=self.sink, pid=7),
                                on_queued=self.queued.append,
                                clock=(lambda: clock) if clock is not None else time.time,
                                login_of=lambda uid: "alice")
        self.pickup.ensure_directory()
        self.dir = self.pickup.directory

    def drop(self, d: md.DropFile) -> str:
        return md.write_drop(self.dir, md.encode_drop(d))


def test_directory_mode_and_drop_file(tmp_path: Path) -> None:
    p = Pick(tmp_path)
    assert stat.S_IMODE(p.dir.stat().st_mode) == 0o1733
    name = p.drop(drop())
    assert md.NAME_RE.fullmatch(name)
    assert os.listdir(p.dir) == [name]  # no temporary file left
    assert stat.S_IMODE((p.dir / name).stat().st_mode) == 0o644


def test_pickup_queues_logs_and_removes(tmp_path: Path) -> None:
    p = Pick(tmp_path)
    name = p.drop(drop(full_name="Alice"))
    mtime = (p.dir / name).stat().st_mtime
    ids = p.pickup.scan()
    assert ids == p.queued == p.store.list(INCOMING) and len(ids) == 1
    qid = ids[0]
    env, content = decode((p.store.queue_directory / INCOMING / qid).read_bytes())
    uid = os.getuid()
    assert (env.sender, [r.address for r in env.recipients], env.queue_id) == (
        "alice@example.test", ["x@remote.test"], qid)
    assert content.startswith(f"Received: by mail.example.test (Postfix, from userid {uid})\r\n\tid {qid}; ".encode())
    assert abs(env.arrival_time - mtime) < 1e-3
    msgid = f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(mtime))}.{qid}@mail.example.test>"
    assert p.sink.lines == [f"postfix/pickup[7]: {qid}: uid={uid} from=<alice>",
                            f"postfix/cleanup[7]: {qid}: message-id={msgid}"]
    assert os.listdir(p.dir) == []
    assert p.pickup.scan() == []  # nothing twice


def corrupt_names(p: Pick) -> list[str]:
    return sorted(os.listdir(p.store.queue_directory / CORRUPT))


def test_hostile_files_are_moved_aside_and_the_rest_still_flows(tmp_path: Path) -> None:
    p = Pick(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(md.encode_drop(drop()))
    bad_link = "a" * 32
    (p.dir / bad_link).symlink_to(secret)
    hard = "b" * 32
    os.link(secret, p.dir / hard)
    fifo = "c" * 32
    os.mkfifo(p.dir / fifo)
    garbage = "d" * 32
    (p.dir / garbage).write_bytes(b"POSTILLION-MAILDROP 1\n{\"content_length\": 99}\n\nxx")
    (p.dir / "evil name").write_bytes(md.encode_drop(drop()))
    good = p.drop(drop())
    ids = p.pickup.scan()
    assert len(ids) == 1 and os.listdir(p.dir) == []
    names = corrupt_names(p)
    assert [n for n in names if not n.startswith("maildrop.inode")] == sorted(
        f"maildrop.{n}" for n in (bad_link, hard, fifo, garbage))
    assert len(names) == 5
    uid = os.getuid()
    warnings = [line for line in p.sink.lines if "warning" in line]
    assert warnings == [
        f"postfix/pickup[7]: warning: maildrop/{bad_link}: uid={uid}: not a regular file; moved to corrupt/maildrop.{bad_link}",
        f"postfix/pickup[7]: warning: maildrop/{hard}: uid={uid}: file has 2 links; moved to corrupt/maildrop.{hard}",
        f"postfix/pickup[7]: warning: maildrop/{fifo}: uid={uid}: not a regular file; moved to corrupt/maildrop.{fifo}",
        f"postfix/pickup[7]: warning: maildrop/{garbage}: uid={uid}: truncated file; moved to corrupt/maildrop.{garbage}",
        warnings[4],
    ]
    assert warnings[4].startswith(f"postfix/pickup[7]: warning: maildrop/evil name: uid={uid}: bad maildrop file name; "
                                  "moved to corrupt/maildrop.inode")
    assert good not in os.listdir(p.dir)
    assert secret.read_bytes() == md.encode_drop(drop())  # the link target was not touched


def test_temporary_files_are_left_alone_until_stale(tmp_path: Path) -> None:
    p = Pick(tmp_path)
    tmp = p.dir / ".tmp.0123"
    tmp.write_bytes(b"partial")
    assert p.pickup.scan() == [] and tmp.exists() and p.sink.lines == []
    os.utime(tmp, (time.time() - 2 * 86400,) * 2)
    p.pickup.scan()
    assert not tmp.exists()
    assert p.sink.lines == ["postfix/pickup[7]: warning: removed stale temporary file maildrop/.tmp.0123"]


def test_time_warped_files_are_dated_now_with_a_warning(tmp_path: Path) -> None:
    now = time.time()
    p = Pick(tmp_path, clock=now)
    name = p.drop(drop())
    os.utime(p.dir / name, (now + 3 * 3600,) * 2)
    [qid] = p.pickup.scan()
    env, _ = decode((p.store.queue_directory / INCOMING / qid).read_bytes())
    assert env.arrival_time == pytest.approx(now)
    assert p.sink.lines[0] == f"postfix/pickup[7]: warning: {qid}: message maildrop/{name} dated 10800 seconds into the future"
    name = p.drop(drop())
    os.utime(p.dir / name, (now - 3 * 86400 - 5,) * 2)
    [qid] = p.pickup.scan()
    assert f"postfix/pickup[7]: warning: {qid}: message maildrop/{name} has been queued for 3 days" in p.sink.lines


def test_a_queue_write_error_keeps_the_file_for_the_next_scan(tmp_path: Path) -> None:
    p = Pick(tmp_path)
    name = p.drop(drop())
    incoming = p.store.queue_directory / INCOMING
    incoming.rename(tmp_path / "away")
    assert p.pickup.scan() == []
    assert os.listdir(p.dir) == [name]
    assert "will try again" in p.sink.lines[-1]
    (tmp_path / "away").rename(incoming)
    assert len(p.pickup.scan()) == 1 and os.listdir(p.dir) == []


# --- the command, in process -----------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/spool\nmyhostname = mail.example.test\n"
                                      "message_size_limit = 1000\nmail_owner = nosuchuser-xyz\n")
    (tmp_path / "master.cf").write_text("")
    QueueStore(tmp_path / "spool").ensure_layout()
    md.ensure_maildrop(tmp_path / "spool")
    return tmp_path


def run(config: Path, argv: list[str], data: bytes, env: dict[str, str] | None = None) -> tuple[int, str]:
    err = io.StringIO()
    status = sm.main(config, argv, stdin=io.BytesIO(data), stderr=err, env=env or {})
    return status, err.getvalue()


def dropped(config: Path) -> list[md.DropFile]:
    d = config / "spool" / "maildrop"
    return [md.decode_drop((d / n).read_bytes()) for n in sorted(os.listdir(d))]


def test_sendmail_writes_a_drop_file(config: Path) -> None:
    assert run(config, ["-oi", "-F", "Alice", "x@remote.test"], b"Subject: s\n\n.\nbody\n") == (0, "")
    assert dropped(config) == [md.DropFile(recipients=("x@remote.test",), content=b"Subject: s\r\n\r\n.\r\nbody\r\n",
                                           full_name="Alice")]


def test_sendmail_t_adds_header_recipients_and_keeps_bcc_for_pickup(config: Path) -> None:
    msg = b"To: a@remote.test\nBcc: b@remote.test\n\nhi\n"
    assert run(config, ["-t", "-f", "<>", "c@remote.test"], msg, env={"NAME": "From Env"}) == (0, "")
    [d] = dropped(config)
    assert (d.recipients, d.sender, d.full_name) == (("c@remote.test", "a@remote.test", "b@remote.test"), "", "From Env")
    assert b"Bcc: b@remote.test\r\n" in d.content


def test_sendmail_fatal_texts_and_exit_statuses(config: Path) -> None:
    login = pwd.getpwuid(os.getuid()).pw_name
    who = f"{login}({os.getuid()})"
    assert run(config, [], b"x\n") == (
        64, "sendmail: fatal: Recipient addresses must be specified on the command line or via the -t option\n")
    assert run(config, ["-t"], b"Subject: none\n\n") == (
        64, f"sendmail: fatal: {who}: No recipient addresses found in message header\n")
    assert run(config, ["a@b..c"], b"x\n") == (64, f"sendmail: fatal: {who}: bad address syntax: a@b..c\n")
    assert run(config, ["a@"], b"x\n") == (64, f"sendmail: fatal: {who}: bad address syntax: a@\n")
    assert run(config, ["x@remote.test"], b"y" * 1000 + b"\n") == (
        75, f"sendmail: fatal: {who}: error writing queue file: File too large\n")
    assert run(config, ["-f", "a@x, b@y", "x@remote.test"], b"x\n") == (
        0, "sendmail: warning: -f option specified malformed sender: a@x, b@y\n")
    (config / "main.cf").write_text("queue_directory = /nonexistent/spool\n")
    status, err = run(config, ["x@remote.test"], b"x\n")
    assert status == 75 and err.startswith(f"sendmail: fatal: {who}: error writing queue file: ")
    (config / "main.cf").write_text("this is not main.cf syntax\n")
    status, err = run(config, ["x@remote.test"], b"x\n")
    assert status == 75 and err.startswith("sendmail: fatal: ")


def test_bs_line_ends_across_reads() -> None:
    """-bs: LF ends a line, CRLF stays CRLF, even when a read ends between CR and LF."""
    from postillion.cli.sendmail_bs import _LineEnds

    ends = _LineEnds()
    assert [ends.feed(b"a\nb\r\nc\r"), ends.feed(b"\nd\n\n"), ends.feed(b""), ends.feed(b"\n")] == [
        b"a\r\nb\r\nc\r", b"\nd\r\n\r\n", b"", b"\r\n"]
