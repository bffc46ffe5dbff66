"""local(8) as root: the privileged local service delivers into real users' homes and spools.

A running server (supervisor as root, queue manager, `local unix - n n - - local`) and real
system users made with useradd (removed afterwards).  Covered: Maildir files owned by the
user with mode 0600, mbox delivery into a mail_spool_directory, alias members logged one line
each with orig_to, `|command` members run as default_privs (root-owned aliases) or as the
alias file's owner, unknown users bounced with Postfix's text, EX_TEMPFAIL deferring, and an
alias file edited while the service runs taken without a reload (with the command's
environment: ORIGINAL_RECIPIENT, CLIENT_ADDRESS; no EXTENSION without recipient_delimiter).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import secrets
import shutil
import smtplib
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import HOSTNAME, Server, cleanup, make_server

from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.maillog import QueueLog
from postillion.queue.envelope import Envelope, Recipient
from postillion.server.local_service import (
    LINE_LIMIT,
    LocalService,
    LocalServiceAgent,
    bind_local_socket,
    remove_local_socket,
)

pytestmark = pytest.mark.root

DELAYS = r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+"


def make_user(name: str) -> pwd.struct_passwd:
    subprocess.run(["useradd", "--create-home", "--home-dir", f"/home/{name}",
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def remove_user(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
    shutil.rmtree(f"/home/{name}", ignore_errors=True)


@pytest.fixture(scope="module")
def users() -> Iterator[list[pwd.struct_passwd]]:
    names = [f"ptl{secrets.token_hex(3)}" for _ in range(2)]
    try:
        yield [make_user(n) for n in names]
    finally:
        for n in names:
            remove_user(n)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """World-writable, for commands that run as nobody or as a test user."""
    d = Path(tempfile.mkdtemp(prefix="ptl-out-"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def start(users: list[pwd.struct_passwd], scratch: Path, **main: str) -> Server:
    server = make_server(qmgr=True, main={"minimal_backoff_time": "1s",
                                          "maximal_backoff_time": "2s",
                                          "queue_run_delay": "1s",
                                          # unknown users must reach local(8), not smtpd's check
                                          "local_recipient_maps": "", **main})
    etc = server.config_dir
    u1, u2 = users[0].pw_name, users[1].pw_name
    (etc / "aliases").write_text(
        f"team: {u1}, {u2}\n"
        f'prog: "|id -u > {scratch}/prog.out; cat >> {scratch}/prog.out"\n'
        'tempfail: "|exit 75"\n'
        f"tofile: {scratch}/file.mbox\n")
    (etc / "useraliases").write_text(f'mine: "|id -u > {scratch}/mine.out"\n')
    os.chown(etc / "useraliases", users[0].pw_uid, users[0].pw_gid)
    server.postconf(f"alias_maps=texthash:{etc}/aliases, texthash:{etc}/useraliases")
    server.start()
    return server


@pytest.fixture(scope="module")
def mta(users: list[pwd.struct_passwd], scratch: Path) -> Iterator[Server]:
    server = start(users, scratch)
    try:
        yield server
    finally:
        cleanup(server)


def send(srv: Server, rcpts: list[str], body: bytes = b"Subject: t\r\n\r\nFrom here\r\nbye\r\n") -> str:
    mark = srv.mark()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
        c.sendmail("a@example.net", rcpts, body)
    return srv.wait_for_log(r"\]: (\w+): client=", start=mark).group(1)


def local_lines(srv: Server, qid: str, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [l for l in srv.log_lines() if l.startswith(f"postfix/local: {qid}: to=")]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, srv.log_text()[-3000:]
        time.sleep(0.05)


def test_maildir_in_the_users_home(mta: Server, users: list[pwd.struct_passwd]) -> None:
    user = users[0]
    qid = send(mta, [f"{user.pw_name}@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert re.fullmatch(rf"postfix/local: {qid}: to=<{user.pw_name}@localhost>, relay=local, "
                        rf"{DELAYS}, dsn=2\.0\.0, status=sent \(delivered to maildir\)", line), line
    mta.wait_for_log(rf"{qid}: removed")
    [msg] = list(Path(f"/home/{user.pw_name}/Maildir/new").iterdir())
    st = msg.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o600)
    assert msg.read_bytes().startswith(
        f"Return-Path: <a@example.net>\nX-Original-To: {user.pw_name}@localhost\n"
        f"Delivered-To: {user.pw_name}@localhost\n".encode())


def test_alias_members_are_logged_each_with_orig_to(mta: Server,
                                                    users: list[pwd.struct_passwd]) -> None:
    qid = send(mta, ["team@localhost"])
    lines = sorted(local_lines(mta, qid, 2))
    expected = sorted(
        rf"postfix/local: {qid}: to=<{u.pw_name}@{HOSTNAME}>, orig_to=<team@localhost>, "
        rf"relay=local, {DELAYS}, dsn=2\.0\.0, status=sent \(delivered to maildir\)"
        for u in users)
    assert len(lines) == 2
    for line in lines:
        assert any(re.fullmatch(e, line) for e in expected), line
    mta.wait_for_log(rf"{qid}: removed")


def test_command_runs_as_default_privs(mta: Server, scratch: Path) -> None:
    qid = send(mta, ["prog@localhost"])
    [line] = local_lines(mta, qid, 1)
    command = f"id -u > {scratch}/prog.out; cat >> {scratch}/prog.out"
    assert re.fullmatch(rf"postfix/local: {qid}: to=<prog@localhost>, relay=local, {DELAYS}, "
                        rf"dsn=2\.0\.0, status=sent \(delivered to command: {re.escape(command)}\)",
                        line), line
    out = (scratch / "prog.out").read_text()
    first, from_line, rest = out.split("\n", 2)
    assert first == str(pwd.getpwnam("nobody").pw_uid)
    assert from_line.startswith("From a@example.net  ")
    assert rest.startswith("Return-Path: <a@example.net>\nX-Original-To: prog@localhost\n"
                           "Delivered-To: prog@localhost\n")
    assert rest.endswith("\nFrom here\nbye\n")  # no >From quoting for commands


def test_command_runs_as_the_alias_file_owner(mta: Server, scratch: Path,
                                              users: list[pwd.struct_passwd]) -> None:
    qid = send(mta, ["mine@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert "status=sent (delivered to command: id -u > " in line, line
    assert (scratch / "mine.out").read_text() == f"{users[0].pw_uid}\n"


def test_file_destination_is_an_mbox(mta: Server, scratch: Path) -> None:
    qid = send(mta, ["tofile@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert line.endswith(f"status=sent (delivered to file: {scratch}/file.mbox)"), line
    path = scratch / "file.mbox"
    assert path.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert path.read_bytes().endswith(b"\n>From here\nbye\n\n")


def test_unknown_user_bounces(mta: Server) -> None:
    qid = send(mta, ["nosuchuser@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert re.fullmatch(rf"postfix/local: {qid}: to=<nosuchuser@localhost>, relay=local, "
                        rf'{DELAYS}, dsn=5\.1\.1, status=bounced \(unknown user: "nosuchuser"\)',
                        line), line


def test_command_exit_75_defers(mta: Server) -> None:
    qid = send(mta, ["tempfail@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert re.fullmatch(rf"postfix/local: {qid}: to=<tempfail@localhost>, relay=local, "
                        rf"{DELAYS}, dsn=4\.3\.0, status=deferred \(temporary failure\)",
                        line), line
    deferred = mta.config_dir / "data" / "spool" / "deferred" / qid
    deadline = time.monotonic() + 10
    while not deferred.exists():  # the message stays queued for the next attempt
        assert time.monotonic() < deadline, mta.log_text()[-2000:]
        time.sleep(0.05)
    assert not re.search(rf"{qid}: removed", mta.log_text())


def test_an_edited_alias_file_applies_without_a_reload(mta: Server, scratch: Path) -> None:
    aliases = mta.config_dir / "aliases"
    mark = mta.mark()
    with aliases.open("a") as f:  # the service is running: it must notice the edit itself
        f.write(f'envdump: "|env > {scratch}/env.out"\n')
    qid = send(mta, ["envdump@localhost"])
    [line] = local_lines(mta, qid, 1)
    assert line.endswith(f"status=sent (delivered to command: env > {scratch}/env.out)"), line
    mta.wait_for_log(rf"postfix/local\[\d+\]: table texthash:{re.escape(str(aliases))} has changed "
                     r"-- reloading", start=mark)
    env = dict(l.split("=", 1) for l in (scratch / "env.out").read_text().splitlines())
    assert {k: env.get(k) for k in ("USER", "LOCAL", "EXTENSION", "DOMAIN", "RECIPIENT",
                                    "ORIGINAL_RECIPIENT", "SENDER", "CLIENT_ADDRESS")} == {
        "USER": "envdump", "LOCAL": "envdump", "EXTENSION": None, "DOMAIN": "localhost",
        "RECIPIENT": "envdump@localhost", "ORIGINAL_RECIPIENT": "envdump@localhost",
        "SENDER": "a@example.net", "CLIENT_ADDRESS": "127.0.0.1"}


def test_mbox_in_the_mail_spool_directory(users: list[pwd.struct_passwd], scratch: Path) -> None:
    spool = Path(tempfile.mkdtemp(prefix="ptl-spool-"))
    spool.chmod(0o755)  # root-only writable: created as root, then given to the user
    server = start(users, scratch, home_mailbox="", mail_spool_directory=str(spool))
    try:
        user = users[1]
        qid = send(server, [f"{user.pw_name}@localhost"])
        [line] = local_lines(server, qid, 1)
        assert line.endswith("dsn=2.0.0, status=sent (delivered to mailbox)"), line
        box = spool / user.pw_name
        st = box.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid,
                                                                    0o600)
        data = box.read_bytes()
        assert re.match(rb"From a@example\.net  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", data)
        assert data.split(b"\n", 1)[1].startswith(
            f"Return-Path: <a@example.net>\nX-Original-To: {user.pw_name}@localhost\n"
            f"Delivered-To: {user.pw_name}@localhost\nReceived: ".encode())
        assert data.endswith(b"\n>From here\nbye\n\n")
        assert not (spool / f"{user.pw_name}.lock").exists()
    finally:
        cleanup(server)
        shutil.rmtree(spool, ignore_errors=True)


# --------------------------------------------------------------- the service's socket and protocol


class _Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, tag: str, text: str, pid: int | None = None) -> None:
        self.lines.append(f"{tag}: {text}")


class _StubAgent:
    """Delivers every recipient except 'crash@...', where the agent has a bug."""

    forwarder = None

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        out = []
        for i, r in request.recipients:
            if r.address.startswith("crash@"):
                raise RuntimeError("bug")
            out += [RecipientResult(rcpt=i, status="sent", dsn="2.0.0", relay="local",
                                    text="delivered to maildir", address=m)
                    for m in (f"a.{r.address}", f"b.{r.address}")]
        return out


def _request(*addresses: str) -> DeliveryRequest:
    rcpts = [Recipient(address=a) for a in addresses]
    return DeliveryRequest(queue_id="4ABC", envelope=Envelope(sender="s@x", recipients=rcpts),
                           content=b"Subject: x\r\n\r\nhi\r\n", recipients=list(enumerate(rcpts)),
                           transport="local", nexthop="localhost")


async def _serve_and_ask(tmp: Path, *requests: bytes | DeliveryRequest) -> tuple[list[object], list[str]]:
    sink = _Sink()
    service = LocalService(_StubAgent(), QueueLog("postfix", sink=sink), {os.getuid()},
                           max_size=1000)
    path = tmp / "local"
    server = await asyncio.start_unix_server(service.handle, path=str(path),
                                             limit=LINE_LIMIT)
    answers: list[object] = []
    async with server:
        for req in requests:
            if isinstance(req, DeliveryRequest):
                answers.append([(r.rcpt, r.status, r.dsn, r.text, r.address)
                                for r in await LocalServiceAgent(path).deliver(req)])
            else:
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(req)
                await writer.drain()
                answers.append(await reader.read())
                writer.close()
    return answers, sink.lines


def test_service_survives_bad_requests_and_defers_what_crashed(tmp_path: Path) -> None:
    answers, log = asyncio.run(_serve_and_ask(
        tmp_path,
        b"[" * 100000 + b"\n",  # nesting deeper than json can parse
        b'{"queue_id": "Q", "size": 1000000}\n',  # larger than the service takes
        b'{"queue_id": "Q", "size": -5}\n',
        _request("one@localhost", "crash@localhost", "two@localhost")))
    assert answers[:3] == [b"", b"", b""]
    assert answers[3] == [
        (0, "sent", "2.0.0", "delivered to maildir", "a.one@localhost"),
        (0, "sent", "2.0.0", "delivered to maildir", "b.one@localhost"),
        (1, "deferred", "4.3.0", "local delivery failed", None),
        (2, "sent", "2.0.0", "delivered to maildir", "a.two@localhost"),
        (2, "sent", "2.0.0", "delivered to maildir", "b.two@localhost")]
    assert log[0].startswith("postfix/local: warning: bad delivery request: LocalServiceError: "
                             "bad request line: maximum recursion depth exceeded")
    assert log[1:] == [
        ("postfix/local: warning: bad delivery request: LocalServiceError: request of 1000000 "
         "bytes is larger than 1000"),
        ("postfix/local: warning: bad delivery request: LocalServiceError: bad request line: "
         "bad size"),
        "postfix/local: warning: 4ABC: local delivery to crash@localhost: RuntimeError: bug"]


def test_a_recipient_whose_members_did_not_all_arrive_is_deferred(tmp_path: Path) -> None:
    """The service died after the first recipient's line: the second is deferred."""
    path = tmp_path / "local"

    async def dying(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        await reader.readexactly(json.loads(line)["size"])
        writer.write(json.dumps({"results": [
            {"rcpt": 0, "status": "sent", "dsn": "2.0.0", "relay": "local",
             "text": "delivered to maildir", "address": None}]}).encode() + b"\n")
        writer.write(b'{"results": [{"rcpt": 1, "status": "sent"')  # cut off mid-line
        await writer.drain()
        writer.close()

    async def run() -> list[RecipientResult]:
        server = await asyncio.start_unix_server(dying, path=str(path))
        async with server:
            return await LocalServiceAgent(path).deliver(_request("one@x", "two@x"))

    assert [(r.rcpt, r.status, r.dsn, r.text) for r in asyncio.run(run())] == [
        (0, "sent", "2.0.0", "delivered to maildir"),
        (1, "deferred", "4.3.0", "mail transport unavailable")]


def test_socket_is_0600_for_mail_owner_and_a_symlinked_private_is_refused(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    queue = tmp_path / "spool"
    queue.mkdir()
    sock = bind_local_socket(queue / "private" / "local", nobody.pw_uid, nobody.pw_gid)
    try:
        st = (queue / "private" / "local").lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            nobody.pw_uid, nobody.pw_gid, 0o600)
        d = (queue / "private").stat()
        assert (d.st_uid, stat.S_IMODE(d.st_mode)) == (nobody.pw_uid, 0o700)
    finally:
        sock.close()
    remove_local_socket(queue / "private" / "local")
    assert not (queue / "private" / "local").exists()
    # mail_owner owns the queue directory and swaps private/ for a symlink
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "local").write_text("keep")
    shutil.rmtree(queue / "private")
    (queue / "private").symlink_to(elsewhere)
    with pytest.raises(OSError):
        bind_local_socket(queue / "private" / "local", nobody.pw_uid, nobody.pw_gid)
    remove_local_socket(queue / "private" / "local")
    st = elsewhere.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert (elsewhere / "local").read_text() == "keep"
