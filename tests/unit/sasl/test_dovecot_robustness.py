"""The Dovecot auth protocol against hostile or odd peers: numbers ``int()`` refuses, more
requests than a connection may hold, a continuation sent while a password is being checked."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from postillion.sasl import dovecot_proto as proto
from postillion.sasl import dovecot_server
from postillion.sasl.dovecot_server import DovecotAuthServer

HANDSHAKE_LINES = 7  # VERSION, 2 MECH, SPID, CUID, COOKIE, DONE


class _SlowUsers:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def verify(self, username: str, password: str, **_: Any) -> bool:
        await asyncio.sleep(self.delay)
        return (username, password) == ("alice", "secret")


async def _serve(server: DovecotAuthServer) -> tuple[asyncio.base_events.Server, int, list[Any]]:
    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    listener = await server.start_tcp("127.0.0.1", 0)
    return listener, listener.sockets[0].getsockname()[1], errors


async def _talk(port: int, data: bytes, *, timeout: float = 5.0) -> list[bytes]:
    """Send ``data``, then read every line until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    lines = []
    async with asyncio.timeout(timeout):
        while line := await reader.readline():
            lines.append(line)
    writer.close()
    return lines


@pytest.mark.parametrize("numbers", ["²", "1" * 5000, "99999999999"])
def test_odd_numbers_drop_the_client_without_an_exception(numbers: str) -> None:
    async def run() -> tuple[list[bytes], list[bytes], list[Any]]:
        listener, port, errors = await _serve(DovecotAuthServer(_SlowUsers(0), failure_delay=0))
        try:
            bad_version = await _talk(port, f"VERSION\t{numbers}\t0\n".encode())
            bad_id = await _talk(port, f"VERSION\t1\t0\nAUTH\t{numbers}\tPLAIN\n".encode())
            return bad_version, bad_id, errors
        finally:
            listener.close()

    bad_version, bad_id, errors = asyncio.run(run())
    assert len(bad_version) == HANDSHAKE_LINES and len(bad_id) == HANDSHAKE_LINES
    assert errors == []


def test_odd_numbers_in_replies_are_protocol_errors() -> None:
    with pytest.raises(proto.ProtocolViolation, match="^SASL: Protocol error$"):
        proto.parse_reply("OK\t²\tuser=alice")
    with pytest.raises(proto.ProtocolViolation, match="^SASL: Protocol version error$"):
        proto.ServerHandshake().feed("VERSION\t" + "1" * 5000 + "\t2")
    assert proto.number("4294967295") == 4294967295
    assert proto.number("4294967296") is None


def test_too_many_open_requests_drop_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dovecot_server, "MAX_REQUESTS", 3)
    login = b"".join(b"AUTH\t%d\tLOGIN\tservice=smtp\n" % i for i in range(1, 5))

    async def run() -> list[bytes]:
        listener, port, _ = await _serve(DovecotAuthServer(_SlowUsers(0), failure_delay=0))
        try:
            return await _talk(port, b"VERSION\t1\t0\n" + login)
        finally:
            listener.close()

    lines = asyncio.run(run())
    # three prompts, then the fourth request closes the connection
    assert lines[HANDSHAKE_LINES:] == [b"CONT\t%d\tVXNlcm5hbWU6\n" % i for i in (1, 2, 3)]


def test_no_late_answer_for_a_request_that_got_unexpected_continuation() -> None:
    good = base64.b64encode(b"\0alice\0secret")
    wrong = base64.b64encode(b"\0alice\0wrong")

    async def run() -> list[bytes]:
        listener, port, _ = await _serve(DovecotAuthServer(_SlowUsers(0.3), failure_delay=0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"VERSION\t1\t0\nAUTH\t1\tPLAIN\tservice=smtp\tresp=" + good + b"\n"
                         + b"CONT\t1\tAA==\n")
            lines = [await reader.readline() for _ in range(HANDSHAKE_LINES + 1)]
            # id 1 is free again: the client reuses it for a wrong password
            writer.write(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=" + wrong + b"\n")
            lines.append(await reader.readline())
            await asyncio.sleep(0.5)  # the first check has long finished by now
            writer.write(b"AUTH\t2\tLOGIN\tservice=smtp\n")
            lines.append(await reader.readline())
            writer.close()
            return lines[HANDSHAKE_LINES:]
        finally:
            listener.close()

    assert asyncio.run(run()) == [
        b"FAIL\t1\treason=Unexpected continuation\n",
        b"FAIL\t1\tuser=alice\n",
        b"CONT\t2\tVXNlcm5hbWU6\n",
    ]


def test_request_waiting_for_cont_times_out_and_frees_its_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot's auth_request_timeout(): no reply when it fires; a late CONT hears "timed out";
    the expired requests no longer count against MAX_REQUESTS."""
    monkeypatch.setattr(dovecot_server, "MAX_REQUESTS", 2)
    logged: list[str] = []
    user = base64.b64encode(b"alice")

    async def run() -> list[bytes]:
        server = DovecotAuthServer(_SlowUsers(0), failure_delay=0, request_timeout=0.3,
                                   log=logged.append)
        listener, port, errors = await _serve(server)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"VERSION\t1\t0\nAUTH\t1\tLOGIN\tservice=smtp\trip=192.0.2.7\n"
                         b"AUTH\t2\tLOGIN\tservice=smtp\trip=192.0.2.7\n")
            lines = [await reader.readline() for _ in range(HANDSHAKE_LINES + 2)]
            with pytest.raises(TimeoutError):  # nothing is sent when the requests expire
                async with asyncio.timeout(0.6):
                    lines.append(await reader.readline())
            writer.write(b"CONT\t1\t" + user + b"\n"
                         b"AUTH\t3\tLOGIN\tservice=smtp\nAUTH\t4\tLOGIN\tservice=smtp\n")
            lines += [await reader.readline() for _ in range(3)]
            writer.close()
            assert errors == []
            return lines[HANDSHAKE_LINES:]
        finally:
            listener.close()

    assert asyncio.run(run()) == [
        b"CONT\t1\tVXNlcm5hbWU6\n",
        b"CONT\t2\tVXNlcm5hbWU6\n",
        b"FAIL\t1\treason=Authentication request timed out\n",
        b"CONT\t3\tVXNlcm5hbWU6\n",
        b"CONT\t4\tVXNlcm5hbWU6\n",
    ]
    expired = ("login(?,192.0.2.7): Request timed out waiting for client to continue "
               "authentication (0 secs)")
    assert logged == [expired, expired]


def test_request_timeout_default_is_dovecots() -> None:
    assert dovecot_server.REQUEST_TIMEOUT == 150.0  # MASTER_AUTH_SERVER_TIMEOUT_SECS
    assert DovecotAuthServer(_SlowUsers(0)).request_timeout == 150.0
