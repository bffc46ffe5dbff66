"""local(8): Maildir files on disk (exact bytes), aliases, unknown users, ownership as root."""

from __future__ import annotations

import asyncio
import copy
import os
import pwd
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult, merge_member_results
from postillion.delivery.aliases import Leaf
from postillion.delivery.local import LocalAgent, MemberResult, _Rights, censor
from postillion.delivery.maildir import (
    MaildirError,
    delivered_to_loop,
    quote_local,
    unique_name,
    write_maildir,
)
from postillion.queue.envelope import Envelope, Recipient

CONTENT = b"Subject: hi\r\nFrom: a@example.org\r\n\r\nbody line\r\n.dot line\r\n"
NAME_RE = re.compile(r"^\d+\.M\d+P\d+Q\d+\.[^/]+$")
OTHER_UID = 1001  # any uid that is not ours; the passwd entry is faked below


@pytest.fixture
def homes() -> Iterator[Path]:
    """A world-traversable directory for home directories (tmp_path is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="pt-local-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def passwd(homes: Path, users: dict[str, int]):
    def getpwnam(name: str) -> pwd.struct_passwd:
        if name not in users:
            raise KeyError(name)
        uid = users[name]
        return pwd.struct_passwd((name, "x", uid, uid, "", str(homes / name), "/bin/sh"))
    return getpwnam


def agent(homes: Path, users: dict[str, int] | None = None, *, config_dir: Path | None = None,
          **values: str) -> tuple[LocalAgent, list[str], list[MemberResult]]:
    warnings: list[str] = []
    members: list[MemberResult] = []
    params = Params.from_dict({"myhostname": "mx.test", "mydomain": "test",
                               "recipient_delimiter": "+", "home_mailbox": "Maildir/", **values},
                              config_dir=config_dir or homes)
    ids = users if users is not None else {"alice": os.getuid(), "bob": os.getuid()}
    a = LocalAgent(params, warn=warnings.append, on_member=lambda qid, m: members.append(m),
                   getpwnam=passwd(homes, ids))
    return a, warnings, members


def request(*addresses: str, content: bytes = CONTENT, sender: str = "a@example.org"):
    rcpts = [Recipient(address=a) for a in addresses]
    return DeliveryRequest(queue_id="4ABCDEF", envelope=Envelope(sender=sender, recipients=rcpts),
                           content=content, recipients=list(enumerate(rcpts)),
                           transport="local", nexthop="mx.test")


def deliver(a: LocalAgent, req: DeliveryRequest) -> list[tuple[str, str, str, str]]:
    results: list[RecipientResult] = merge_member_results(asyncio.run(a.deliver(req)))
    assert [r.rcpt for r in results] == [i for i, _ in req.recipients]
    return [(r.status, r.dsn, r.relay, r.text) for r in results]


def only_message(maildir: Path) -> bytes:
    files = list((maildir / "new").iterdir())
    assert len(files) == 1
    assert NAME_RE.match(files[0].name), files[0].name
    assert list((maildir / "tmp").iterdir()) == []
    return files[0].read_bytes()


def test_delivered_to_maildir_with_exact_headers(homes: Path) -> None:
    a, warnings, _ = agent(homes)
    assert deliver(a, request("alice@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    maildir = homes / "alice" / "Maildir"
    assert only_message(maildir) == (
        b"Return-Path: <a@example.org>\nX-Original-To: alice@mx.test\n"
        b"Delivered-To: alice@mx.test\n"
        b"Subject: hi\nFrom: a@example.org\n\nbody line\n.dot line\n")
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE((maildir / sub).stat().st_mode) == 0o700
    assert stat.S_IMODE(next((maildir / "new").iterdir()).stat().st_mode) == 0o600
    assert warnings == []


def test_null_sender_and_extension(homes: Path) -> None:
    a, _, _ = agent(homes)
    assert deliver(a, request("Alice+News@mx.test", sender="")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    assert only_message(homes / "alice" / "Maildir").startswith(
        b"Return-Path: <>\nX-Original-To: Alice+News@mx.test\nDelivered-To: Alice+News@mx.test\n")


def test_unknown_user_bounces(homes: Path) -> None:
    a, _, _ = agent(homes)
    assert deliver(a, request("carol+x@mx.test", "alice@mx.test")) == [
        ("bounced", "5.1.1", "local", 'unknown user: "carol"'),
        ("sent", "2.0.0", "local", "delivered to maildir")]


def test_missing_postmaster_alias_is_discarded(homes: Path) -> None:
    a, warnings, _ = agent(homes)
    assert deliver(a, request("postmaster@mx.test")) == [("sent", "2.0.0", "local", "discarded")]
    assert warnings == ["required alias not found: postmaster"]


def test_alias_with_several_members(homes: Path) -> None:
    (homes / "aliases").write_text("team: alice, bob@mx.test\nroot: team\n")
    a, _, members = agent(homes, alias_maps="hash:aliases")
    assert deliver(a, request("root@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    for user in ("alice", "bob"):
        assert only_message(homes / user / "Maildir").startswith(
            b"Return-Path: <a@example.org>\nX-Original-To: root@mx.test\n"
            b"Delivered-To: root@mx.test\n")
    assert members == [
        MemberResult("alice@mx.test", "root@mx.test", "sent", "2.0.0", "delivered to maildir"),
        MemberResult("bob@mx.test", "root@mx.test", "sent", "2.0.0", "delivered to maildir")]


def test_alias_loop_and_restricted_command_bounce(homes: Path) -> None:
    (homes / "aliases").write_text("a: b\nb: a\nprog: |/usr/bin/true\n")
    a, warnings, _ = agent(homes, alias_maps="texthash:aliases", allow_mail_to_commands="forward")
    assert deliver(a, request("a@mx.test", "prog@mx.test")) == [
        ("bounced", "5.4.6", "local", "alias database loop for a"),
        ("bounced", "5.7.1", "local", "mail to command is restricted")]
    assert warnings == ["alias database loop for a"]


def test_partial_failure_reports_the_worst_member(homes: Path) -> None:
    (homes / "aliases").write_text("team: alice, nosuch\n")
    a, _, members = agent(homes, alias_maps="hash:aliases")
    assert deliver(a, request("team@mx.test")) == [
        ("bounced", "5.1.1", "local", 'unknown user: "nosuch"')]
    assert [m.status for m in members] == ["sent", "bounced"]


class ListForwarder:
    """A real Forwarder that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], bytes]] = []

    async def forward(self, *, sender: str, recipients: list[str], content: bytes) -> str:
        self.calls.append((sender, recipients, content))
        return "5FWDED"


def test_remote_members_are_forwarded(homes: Path) -> None:
    (homes / "aliases").write_text("ext: x@remote.example, y@remote.example\n")
    a, warnings, _ = agent(homes, alias_maps="hash:aliases")
    assert deliver(a, request("ext@mx.test")) == [
        ("deferred", "4.3.5", "local", "mail system configuration error")]
    assert "no forwarding queue configured" in warnings[0]
    fwd = ListForwarder()
    a.forwarder = fwd
    assert deliver(a, request("ext@mx.test")) == [("sent", "2.0.0", "local", "forwarded as 5FWDED")]
    assert fwd.calls == [("a@example.org", ["x@remote.example", "y@remote.example"],
                          b"Delivered-To: ext@mx.test\r\n" + CONTENT)]


def test_delivered_to_loop_bounces(homes: Path) -> None:
    a, _, _ = agent(homes)
    looped = b"Delivered-To: other@mx.test\r\nDelivered-To:\r\n  ALICE@mx.test\r\n" + CONTENT
    assert deliver(a, request("alice@mx.test", content=looped)) == [
        ("bounced", "5.4.6", "local", "mail forwarding loop for alice@mx.test")]
    assert not (homes / "alice" / "Maildir").exists()


def test_mbox_home_mailbox_in_the_home_directory(homes: Path) -> None:
    a, warnings, _ = agent(homes, home_mailbox="Mailbox")
    (homes / "alice").mkdir()
    assert deliver(a, request("alice@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to mailbox")]
    data = (homes / "alice" / "Mailbox").read_bytes()
    assert re.match(rb"From a@example.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                    rb"Return-Path: <a@example.org>\n", data), data
    assert warnings == []


def test_custom_home_mailbox(homes: Path) -> None:
    a, _, _ = agent(homes, home_mailbox="Mail/inbox/")
    assert deliver(a, request("alice@mx.test"))[0][0] == "sent"
    only_message(homes / "alice" / "Mail" / "inbox")


@pytest.mark.root
def test_delivers_as_the_user_when_root(homes: Path) -> None:
    (homes / "alice").mkdir()
    os.chown(homes / "alice", OTHER_UID, OTHER_UID)
    a, _, _ = agent(homes, {"alice": OTHER_UID})
    assert deliver(a, request("alice@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    maildir = homes / "alice" / "Maildir"
    msg = next((maildir / "new").iterdir())
    for path in (maildir, maildir / "new", maildir / "cur", maildir / "tmp", msg):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (OTHER_UID, OTHER_UID), path
    assert msg.read_bytes().startswith(b"Return-Path: <a@example.org>\n")


@pytest.mark.root
def test_unwritable_home_defers_with_postfix_text(homes: Path) -> None:
    (homes / "alice").mkdir(mode=0o755)  # owned by root: the user cannot create Maildir/
    a, warnings, _ = agent(homes, {"alice": OTHER_UID})
    [(status, dsn, relay, text)] = deliver(a, request("alice@mx.test"))
    assert (status, dsn, relay) == ("deferred", "4.2.0", "local")
    assert re.fullmatch(r"maildir delivery failed: create maildir file "
                        + re.escape(str(homes / "alice" / "Maildir" / "tmp")) + r"/\S+: "
                        r"Permission denied", text), text
    assert warnings[1] == "perhaps you need to create the maildirs in advance"


# --- maildir.py helpers


def test_unique_names_differ_and_escape_the_host() -> None:
    a, b = unique_name("h/o:st", now=1700000000.25), unique_name("h/o:st", now=1700000000.25)
    assert a != b
    assert re.fullmatch(rf"1700000000\.M250000P{os.getpid()}Q\d+\.h\\057o\\072st", a)


def test_quote_local() -> None:
    assert quote_local("alice@example.org") == "alice@example.org"
    assert quote_local("john doe@example.org") == '"john doe"@example.org'
    assert quote_local('a"b@x') == '"a\\"b"@x'


def test_delivered_to_loop_matches_whole_address() -> None:
    msg = b"Delivered-To: xalice@mx.test\r\n\r\nDelivered-To: alice@mx.test\r\n"
    assert not delivered_to_loop(msg, "alice@mx.test")


def test_write_maildir_error_texts(homes: Path) -> None:
    blocker = homes / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MaildirError) as info:
        write_maildir(blocker / "Maildir", b"x\n", hostname="h")
    assert info.value.dsn == "4.2.0"
    assert info.value.text.startswith(f"create maildir file {blocker}/Maildir/tmp/")
    assert info.value.text.endswith(": Not a directory")


# --------------------------------------------------------------- review fixes: commands, rights


def test_command_environment_is_censored_like_command_expansion_filter() -> None:
    assert censor("a;b$(id)`x`@ex-1.test/+=%,:!") == "a_b__id__x_@ex-1.test/+=%,:!"


@pytest.mark.root
def test_command_output_is_bounded_and_time_limit_kills_the_group(homes: Path) -> None:
    out = homes / "out"
    out.mkdir()
    out.chmod(0o777)
    (homes / "aliases").write_text(
        'chatty: "|yes x | head -c 3000000; exit 1"\n'
        f'slow: "|sleep 30 & echo $! > {out}/bg; wait"\n'
        'env: "|env; exit 1"\n')
    nobody = pwd.getpwnam("nobody").pw_uid
    a, _, _ = agent(homes, {"nobody": nobody}, alias_maps="texthash:aliases",
                    allow_mail_to_commands="alias", command_time_limit="1s")
    [chatty, slow, env] = deliver(a, request("chatty@mx.test", "slow@mx.test",
                                             "env+a;b$c@mx.test"))
    assert chatty == ("bounced", "5.3.0", "local",
                      'Command died with status 1: "yes x | head -c 3000000; exit 1". '
                      "Command output: " + "x " * 2048)
    assert slow == ("bounced", "5.3.0", "local",
                    f'Command time limit exceeded: "sleep 30 & echo $! > {out}/bg; wait"')
    bg = int((out / "bg").read_text())
    with pytest.raises(ProcessLookupError):  # the whole process group was killed
        for _ in range(50):
            os.kill(bg, 0)
            time.sleep(0.05)
    text = env[3]
    assert " PATH=/usr/bin:/bin " in text, text
    assert " LOCAL=env+a_b_c " in text and " RECIPIENT=env+a_b_c@mx.test " in text, text
    assert " USER=env " in text and f" HOME={homes}/nobody " in text, text


@pytest.mark.root
def test_alias_owner_with_group_0_gets_default_privs_group(homes: Path) -> None:
    (homes / "aliases").write_text("prog: |/bin/true\n")
    os.chown(homes / "aliases", OTHER_UID, 0)
    nobody = pwd.getpwnam("nobody")
    a, _, _ = agent(homes, {"nobody": nobody.pw_uid}, alias_maps="texthash:aliases")
    a._getpwuid = lambda uid: pwd.struct_passwd(("owner", "x", uid, 0, "", "/h", "/bin/sh"))
    leaf = Leaf("command", "prog@mx.test", user="prog", target="/bin/true",
                source=str(homes / "aliases"))
    rights = a._rights(leaf)
    assert (rights.uid, rights.gid, rights.name) == (OTHER_UID, nobody.pw_uid, "owner")


# --------------------------------------------------------------- alias_maps changes, EXTENSION


def test_changed_alias_file_applies_to_the_next_delivery(homes: Path) -> None:
    aliases = homes / "aliases"
    aliases.write_text("team: alice\n")
    os.utime(aliases, (1_000_000, 1_000_000))
    a, warnings, members = agent(homes, alias_maps="hash:aliases")
    infos: list[str] = []
    a.info = infos.append
    assert deliver(a, request("team@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    assert infos == []
    aliases.write_text("team: bob\n")
    os.utime(aliases, (1_000_001, 1_000_001))
    shared = copy.copy(a)  # the local service copies the agent per connection
    assert deliver(shared, request("team@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")]
    assert infos == ["table hash:aliases has changed -- reloading"]
    assert [(m.to, m.orig_to) for m in members] == [("alice@mx.test", "team@mx.test"),
                                                    ("bob@mx.test", "team@mx.test")]
    assert only_message(homes / "bob" / "Maildir").startswith(
        b"Return-Path: <a@example.org>\nX-Original-To: team@mx.test\n"
        b"Delivered-To: team@mx.test\n")  # local(8): the recipient before aliasing
    deliver(a, request("team@mx.test"))  # the original agent sees the new tables too
    assert infos == ["table hash:aliases has changed -- reloading"]
    assert len(list((homes / "bob" / "Maildir" / "new").iterdir())) == 2
    assert warnings == []


def test_broken_alias_edit_keeps_the_old_tables_with_a_warning(homes: Path) -> None:
    aliases = homes / "aliases"
    aliases.write_text("team: alice\n")
    os.utime(aliases, (1_000_000, 1_000_000))
    a, warnings, members = agent(homes, alias_maps="texthash:aliases")
    aliases.write_text("team: alice\nbroken bob\n")
    os.utime(aliases, (1_000_001, 1_000_001))
    assert deliver(a, request("team@mx.test", "team@mx.test")) == [
        ("sent", "2.0.0", "local", "delivered to maildir")] * 2
    assert warnings == [
        (f"table texthash:aliases has changed but cannot be reloaded: {aliases}:2: "
         "need name:value pair, got 'broken bob'; write it as \"name: address, address\"; "
         "using the previous alias_maps")]
    assert [m.to for m in members] == ["alice@mx.test", "alice@mx.test"]


def test_command_environment_names_the_recipient_like_recipient_c(homes: Path) -> None:
    a, warnings, _ = agent(homes, {"nobody": 65534})
    req = request("Top@mx.test", sender="")
    leaf = Leaf("command", "Env+A;b@MX.Test", user="env", target="env")
    who = _Rights(65534, 65534, "nobody", "/nonexistent", "/usr/sbin/nologin")
    assert a._command_env(req, "Top@mx.test", leaf, who) == {
        "LOGNAME": "env", "USER": "env", "SENDER": "", "RECIPIENT": "Env+A_b@MX.Test",
        "LOCAL": "env+a_b", "HOME": "/nonexistent", "SHELL": "/usr/sbin/nologin",
        "DOMAIN": "mx.test", "EXTENSION": "a_b", "ORIGINAL_RECIPIENT": "Top@mx.test",
        "CLIENT_PROTOCOL": "ESMTP"}
    bad = Leaf("command", "env+a/b@mx.test", user="env", target="env")
    env = a._command_env(req, "env+a/b@mx.test", bad, who)
    assert "EXTENSION" not in env and env["LOCAL"] == "env+a/b"
    assert warnings == ["4ABCDEF: address with illegal extension: env+a/b"]
    plain = a._command_env(req, "env@mx.test", Leaf("command", "env@mx.test", user="env"), who)
    assert "EXTENSION" not in plain and plain["USER"] == "env"


@pytest.mark.root
def test_command_environment_has_every_postfix_variable(homes: Path) -> None:
    out = homes / "out"
    out.mkdir()
    out.chmod(0o777)
    (homes / "aliases").write_text(f'env: "|env > {out}/env"\n')
    nobody = pwd.getpwnam("nobody").pw_uid
    a, warnings, _ = agent(homes, {"nobody": nobody}, alias_maps="texthash:aliases",
                           allow_mail_to_commands="alias")
    rcpts = [Recipient(address="Env+Tag;x@MX.test")]
    envelope = Envelope(sender="s@example.org", recipients=rcpts, client_name="c.example",
                        client_addr="192.0.2.1", helo_name="helo $(x)", protocol="ESMTPA",
                        sasl_method="PLAIN", sasl_username="u`id`", sasl_sender=None)
    req = DeliveryRequest(queue_id="4ABCDEF", envelope=envelope, content=CONTENT,
                          recipients=list(enumerate(rcpts)), transport="local", nexthop="mx.test")
    assert deliver(a, req) == [("sent", "2.0.0", "local", f"delivered to command: env > {out}/env")]
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    for name in ("PWD", "SHLVL", "_"):  # added by /bin/sh itself
        env.pop(name, None)
    assert env == {
        "HOME": f"{homes}/nobody", "LOGNAME": "env", "USER": "env", "SHELL": "/bin/sh",
        "SENDER": "s@example.org", "RECIPIENT": "Env+Tag_x@MX.test", "LOCAL": "env+tag_x",
        "DOMAIN": "mx.test", "EXTENSION": "tag_x", "ORIGINAL_RECIPIENT": "Env+Tag_x@MX.test",
        "CLIENT_HOSTNAME": "c.example", "CLIENT_ADDRESS": "192.0.2.1",
        "CLIENT_HELO": "helo___x_", "CLIENT_PROTOCOL": "ESMTPA", "SASL_METHOD": "PLAIN",
        "SASL_USERNAME": "u_id_", "PATH": "/usr/bin:/bin"}
    assert warnings == []
