"""lmtp(8): reply parsing, next hops, dot-stuffing, and whole transactions against a scripted
LMTP server on 127.0.0.1 and on a UNIX socket (per-recipient replies after the dot)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.delivery import DeliveryRequest
from postillion.delivery.lmtp import (
    Endpoint,
    LmtpAgent,
    LmtpProtocolError,
    LmtpReply,
    ReplyParser,
    dot_stuff,
    parse_nexthop,
)
from postillion.queue.envelope import Envelope, Recipient

CONTENT = b"Subject: t\r\n\r\n.leading dot\r\nend\r\n"


def test_reply_parser_multiline_and_split_feeds() -> None:
    p = ReplyParser()
    p.feed(b"250-lmtp.test\r\n250-PIPELINING\r")
    assert p.next_reply() is None
    p.feed(b"\n250 8BITMIME\r\n550 5.1.1 <x@y> User doesn't exist: x@y\r\n")
    assert p.next_reply() == LmtpReply(250, ("lmtp.test", "PIPELINING", "8BITMIME"))
    r = p.next_reply()
    assert (r.code, r.dsn, str(r)) == (550, "5.1.1", "550 5.1.1 <x@y> User doesn't exist: x@y")
    assert p.next_reply() is None


def test_reply_dsn_without_enhanced_code() -> None:
    assert LmtpReply(451, ("try later",)).dsn == "4.0.0"
    assert LmtpReply(451, ("5.1.1 mismatched class",)).dsn == "4.0.0"
    assert str(LmtpReply(250, ("",))) == "250"


def test_reply_parser_rejects_garbage() -> None:
    p = ReplyParser()
    p.feed(b"hello there\r\n")
    with pytest.raises(LmtpProtocolError):
        p.next_reply()


@pytest.mark.parametrize("nexthop, endpoint", [
    ("unix:/run/dovecot/lmtp", Endpoint(host="", path="/run/dovecot/lmtp")),
    ("inet:127.0.0.1:2424", Endpoint(host="127.0.0.1", port=2424)),
    ("mail.example:2424", Endpoint(host="mail.example", port=2424)),
    ("[::1]:2424", Endpoint(host="::1", port=2424)),
    ("inet:[127.0.0.1]", Endpoint(host="127.0.0.1", port=24)),
    ("mail.example", Endpoint(host="mail.example", port=24)),
])
def test_parse_nexthop(nexthop: str, endpoint: Endpoint) -> None:
    assert parse_nexthop(nexthop) == endpoint


@pytest.mark.parametrize("bad", ["unix:", "inet:", "host:0", "host:x", "[::1"])
def test_parse_nexthop_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthop(bad)


def test_dot_stuff() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n..c") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_stuff(b"bare\nlf\n") == b"bare\r\nlf\r\n.\r\n"


class ScriptedLmtp:
    """A small LMTP server: RCPT and end-of-DATA replies come from per-address tables."""

    def __init__(self, rcpt: dict[str, bytes] | None = None, final: dict[str, bytes] | None = None,
                 greeting: bytes = b"220 lmtp.test LMTP ready\r\n") -> None:
        self.rcpt = rcpt or {}
        self.final = final or {}
        self.greeting = greeting
        self.commands: list[str] = []
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        accepted: list[str] = []
        while line := await reader.readline():
            cmd = line.decode().rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(":")[0].split(" ")[0].upper()
            if verb == "LHLO":
                writer.write(b"250-lmtp.test\r\n250-SIZE\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif verb == "MAIL":
                writer.write(b"250 2.1.0 OK\r\n")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                reply = self.rcpt.get(addr, b"250 2.1.5 OK\r\n")
                if reply.startswith(b"2"):
                    accepted.append(addr)
                writer.write(reply)
            elif verb == "DATA":
                writer.write(b"354 OK\r\n")
                self.bodies.append(await reader.readuntil(b"\r\n.\r\n"))
                for addr in accepted:
                    writer.write(self.final.get(addr, f"250 2.0.0 <{addr}> Saved\r\n".encode()))
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            await writer.drain()
        writer.close()


def request(nexthop: str, *addresses: str) -> DeliveryRequest:
    rcpts = [Recipient(address=a) for a in addresses]
    return DeliveryRequest(queue_id="4L", envelope=Envelope(sender="s@example.org",
                                                            recipients=rcpts, body_type="8BITMIME"),
                           content=CONTENT, recipients=list(enumerate(rcpts)),
                           transport="lmtp", nexthop=nexthop)


def agent(**values: str) -> LmtpAgent:
    return LmtpAgent(Params.from_dict({"myhostname": "mx.test", "mydomain": "test", **values}))


async def _run_inet(server: ScriptedLmtp, *addresses: str, agent_: LmtpAgent | None = None):
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        results = await (agent_ or agent()).deliver(request(f"inet:127.0.0.1:{port}", *addresses))
    return port, [(r.rcpt, r.status, r.dsn, r.relay, r.text) for r in results]


def test_per_recipient_results_after_the_dot() -> None:
    server = ScriptedLmtp(
        rcpt={"gone@x.test": b"550 5.1.1 <gone@x.test> User doesn't exist: gone@x.test\r\n"},
        final={"full@x.test": b"452 4.2.2 <full@x.test> Quota exceeded\r\n"})
    port, results = asyncio.run(_run_inet(server, "a@x.test", "gone@x.test", "full@x.test"))
    relay = f"127.0.0.1[127.0.0.1]:{port}"
    assert results == [
        (0, "sent", "2.0.0", relay, "250 2.0.0 <a@x.test> Saved"),
        (1, "bounced", "5.1.1", relay, ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 "
         "<gone@x.test> User doesn't exist: gone@x.test (in reply to RCPT TO command)")),
        (2, "deferred", "4.2.2", relay, ("host 127.0.0.1[127.0.0.1] said: 452 4.2.2 "
         "<full@x.test> Quota exceeded (in reply to end of DATA command)")),
    ]
    assert server.commands == ["LHLO mx.test", (f"MAIL FROM:<s@example.org> SIZE={len(CONTENT)} "
                               "BODY=8BITMIME"), "RCPT TO:<a@x.test>", "RCPT TO:<gone@x.test>",
                               "RCPT TO:<full@x.test>", "DATA", "QUIT"]
    assert server.bodies == [b"Subject: t\r\n\r\n..leading dot\r\nend\r\n.\r\n"]


def test_all_recipients_rejected_skips_data() -> None:
    server = ScriptedLmtp(rcpt={"a@x.test": b"450 4.2.1 busy\r\n"})
    _, results = asyncio.run(_run_inet(server, "a@x.test"))
    assert results[0][1:3] == ("deferred", "4.2.1")
    assert "DATA" not in server.commands


def test_greeting_refused() -> None:
    server = ScriptedLmtp(greeting=b"554 5.3.2 go away\r\n")
    _, results = asyncio.run(_run_inet(server, "a@x.test"))
    assert results[0][1:3] == ("bounced", "5.3.2")
    assert results[0][4] == "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.3.2 go away"


def test_timeout_while_waiting_for_the_greeting() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def main():
        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            return await agent(lmtp_lhlo_timeout="1s").deliver(
                request(f"127.0.0.1:{port}", "a@x.test"))
    [r] = asyncio.run(main())
    assert (r.status, r.dsn, r.text) == (
        "deferred", "4.4.2", ("conversation with 127.0.0.1[127.0.0.1] timed out while receiving "
        "the initial server greeting"))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ptl", dir="/tmp"))  # short: AF_UNIX paths <= 108 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unix_socket_relay_names_myhostname(sockdir: Path) -> None:
    path = str(sockdir / "lmtp")
    server = ScriptedLmtp(rcpt={"b@x.test": b"550 5.1.1 no\r\n"})

    async def main():
        srv = await asyncio.start_unix_server(server.handle, path)
        async with srv:
            return await agent().deliver(request(f"unix:{path}", "a@x.test", "b@x.test"))
    results = asyncio.run(main())
    assert [(r.status, r.relay, r.text) for r in results] == [
        ("sent", f"mx.test[{path}]", "250 2.0.0 <a@x.test> Saved"),
        ("bounced", f"mx.test[{path}]",
         f"host mx.test[{path}] said: 550 5.1.1 no (in reply to RCPT TO command)")]


def test_connect_failures_defer_every_recipient(sockdir: Path) -> None:
    path = sockdir / "missing"
    results = asyncio.run(agent().deliver(request(f"unix:{path}", "a@x.test", "b@x.test")))
    assert [(r.rcpt, r.status, r.dsn, r.relay, r.text) for r in results] == [
        (i, "deferred", "4.4.1", "none", f"connect to mx.test[{path}]: No such file or directory")
        for i in (0, 1)]
    [r] = asyncio.run(agent().deliver(request("inet:127.0.0.1:1", "a@x.test")))
    assert r.text == "connect to 127.0.0.1[127.0.0.1]:1: Connection refused"
