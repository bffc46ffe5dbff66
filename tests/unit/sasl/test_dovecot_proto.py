"""The Dovecot auth protocol codec, byte for byte, and our client against our server.

Wire examples are the lines a real Dovecot 2.3.19 and Postfix 3.7 exchange (captured with
auth_debug = yes while writing tests/interop/test_dovecot_auth.py).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from postillion.errors import AuthBackendError, AuthRejected
from postillion.sasl import dovecot_proto as proto
from postillion.sasl.dovecot_client import (
    DovecotAuthClient,
    DovecotVerifier,
    Endpoint,
    parse_endpoint,
    relayed_mechanisms,
)
from postillion.sasl.dovecot_server import DovecotAuthServer

DOVECOT_HANDSHAKE = (
    b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t13444\nCUID\t1\n"
    b"COOKIE\t1839dc05ccaabb4cad6083d96584c016\nDONE\n"
)


# --- escaping and lines ------------------------------------------------------------------

@pytest.mark.parametrize("raw, escaped", [
    ("alice", "alice"),
    ("a\tb", "a\x01tb"),
    ("a\nb\rc", "a\x01nb\x01rc"),
    ("\x01", "\x011"),
    ("nul\0", "nul\x010"),
])
def test_escape_round_trip(raw: str, escaped: str) -> None:
    assert proto.escape(raw) == escaped
    assert proto.unescape(escaped) == raw


def test_unescape_accepts_old_lf_letter() -> None:
    assert proto.unescape("a\x01lb") == "a\nb"


def test_client_handshake_is_postfix_s() -> None:
    assert proto.client_handshake(4242) == b"VERSION\t1\t0\nCPID\t4242\n"


def test_auth_request_bytes() -> None:
    assert proto.auth_request(
        1, "PLAIN", service="smtp", local_addr="192.0.2.1", client_addr="198.51.100.7",
        secured=True, resp="AGFsaWNlAHNlY3JldA==",
    ) == (b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7\tsecured"
          b"\tresp=AGFsaWNlAHNlY3JldA==\n")
    assert proto.auth_request(2, "LOGIN", service="smtp") == (
        b"AUTH\t2\tLOGIN\tservice=smtp\tnologin\tlip=\trip=\n")


def test_cont_request_bytes() -> None:
    assert proto.cont_request(2, "YWxpY2U=") == b"CONT\t2\tYWxpY2U=\n"
    assert proto.cont_request(3, "") == b"CONT\t3\t\n"


def test_server_handshake_bytes() -> None:
    assert proto.server_handshake(
        [proto.Mech("PLAIN", frozenset({"plaintext"})), proto.Mech("LOGIN", frozenset({"plaintext"}))],
        spid=13444, cuid=1, cookie="1839dc05ccaabb4cad6083d96584c016",
    ) == DOVECOT_HANDSHAKE


def test_replies_bytes() -> None:
    assert proto.ok_reply(1, "alice") == b"OK\t1\tuser=alice\n"
    assert proto.cont_reply(3, "VXNlcm5hbWU6") == b"CONT\t3\tVXNlcm5hbWU6\n"
    assert proto.fail_reply(2, user="alice") == b"FAIL\t2\tuser=alice\n"
    assert proto.fail_reply(4) == b"FAIL\t4\n"
    assert proto.fail_reply(5, user="bob", code="temp_fail") == b"FAIL\t5\tuser=bob\tcode=temp_fail\n"
    assert proto.fail_reply(7, code="invalid_base64",
                            reason="Invalid base64 data in initial response") == (
        b"FAIL\t7\tcode=invalid_base64\treason=Invalid base64 data in initial response\n")
    assert proto.ok_reply(8, "tab\there") == b"OK\t8\tuser=tab\x01there\n"


# --- parsing -----------------------------------------------------------------------------

def test_parse_handshake_from_dovecot() -> None:
    hs = proto.ServerHandshake()
    lines = DOVECOT_HANDSHAKE.splitlines(keepends=True)
    assert [hs.feed(line) for line in lines] == [False] * 6 + [True]
    assert hs.version == (1, 2)
    assert hs.mechanism_names == ["PLAIN", "LOGIN"]
    assert hs.mechanisms[0].flags == frozenset({"plaintext"})


def test_private_mechanisms_are_skipped() -> None:
    hs = proto.ServerHandshake()
    for line in (b"VERSION\t1\t3\n", b"MECH\tPLAIN\tplaintext\n", b"MECH\tOAUTH\tprivate\n",
                 b"MECH\tCRAM-MD5\tdictionary\tactive\n"):
        hs.feed(line)
    assert hs.mechanism_names == ["PLAIN", "CRAM-MD5"]


@pytest.mark.parametrize("lines, warning", [
    ([b"VERSION\t2\t0\n"], "SASL: Protocol version mismatch (2 vs. 1)"),
    ([b"VERSION\tx\n"], "SASL: Protocol version error"),
    ([b"VERSION\t1\t1\n", b"SPID\t99\n"],
     "SASL: Connected to wrong auth socket (auth-master instead of auth-client)"),
])
def test_bad_handshakes_give_postfix_warnings(lines: list[bytes], warning: str) -> None:
    hs = proto.ServerHandshake()
    with pytest.raises(proto.ProtocolViolation) as info:
        for line in lines:
            hs.feed(line)
    assert str(info.value) == warning


def test_parse_replies() -> None:
    ok = proto.parse_reply(b"OK\t1\tuser=alice\n")
    assert (ok.kind, ok.id, ok.user) == ("OK", 1, "alice")
    fail = proto.parse_reply(b"FAIL\t2\tuser=alice\n")
    assert (fail.kind, fail.user, fail.reason, fail.temporary) == ("FAIL", "alice", None, False)
    temp = proto.parse_reply(b"FAIL\t5\tuser=bob\tcode=temp_fail\n")
    assert temp.temporary is True
    assert proto.parse_reply(b"FAIL\t6\ttemp\treason=Try later\n").temporary is True
    assert proto.parse_reply(b"FAIL\t6\treason=a\x01tb\n").reason == "a\tb"
    cont = proto.parse_reply(b"CONT\t5\t\n")
    assert (cont.kind, cont.id, cont.data) == ("CONT", 5, "")
    assert proto.parse_reply(b"CANCELLED\t3\n") is None
    with pytest.raises(proto.ProtocolViolation, match="SASL: Protocol error"):
        proto.parse_reply(b"OK\n")


def test_parse_requests() -> None:
    req = proto.parse_request(
        b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7\tsecured"
        b"\tresp=AGFsaWNlAHNlY3JldA==\n")
    assert req == proto.AuthRequest(
        1, "PLAIN",
        proto.Params({"service": "smtp", "lip": "192.0.2.1", "rip": "198.51.100.7"},
                     frozenset({"nologin", "secured"})),
        "AGFsaWNlAHNlY3JldA==")
    assert proto.parse_request(b"AUTH\t2\tLOGIN\tservice=smtp\n").resp is None
    assert proto.parse_request(b"CONT\t2\tYWxpY2U=\n") == proto.ContRequest(2, "YWxpY2U=")
    assert proto.parse_request(b"CPID\t4242\n") == ("CPID", ["4242"])
    for bad in (b"AUTH\t0\tPLAIN\n", b"AUTH\tx\tPLAIN\n", b"AUTH\t1\n",
                b"AUTH\t1\tPLAIN\tresp=AA==\tservice=smtp\n", b"CONT\tx\n"):
        with pytest.raises(proto.ProtocolViolation):
            proto.parse_request(bad)


def test_is_base64() -> None:
    assert proto.is_base64("AGFsaWNlAHNlY3JldA==") and proto.is_base64("")
    assert not proto.is_base64("!!!notb64")


# --- client helpers ----------------------------------------------------------------------

def test_parse_endpoint() -> None:
    assert parse_endpoint("private/auth", "/var/spool/postfix") == Endpoint(
        "private/auth", path="/var/spool/postfix/private/auth")
    assert parse_endpoint("unix:/run/dovecot/auth-client", "/q") == Endpoint(
        "unix:/run/dovecot/auth-client", path="/run/dovecot/auth-client")
    assert parse_endpoint("inet:127.0.0.1:12345", "/q") == Endpoint(
        "inet:127.0.0.1:12345", host="127.0.0.1", port=12345)
    assert parse_endpoint("inet:[::1]:12345", "/q").host == "::1"
    with pytest.raises(ValueError):
        parse_endpoint("inet:nohost", "/q")


def test_relayed_mechanisms() -> None:
    assert relayed_mechanisms(["PLAIN", "LOGIN", "CRAM-MD5"]) == ["PLAIN", "LOGIN"]
    assert relayed_mechanisms(["LOGIN", "PLAIN"]) == ["LOGIN", "PLAIN"]
    assert relayed_mechanisms(["plain"]) == ["PLAIN"]
    assert relayed_mechanisms(["LOGIN", "CRAM-MD5"]) == []  # we relay as AUTH PLAIN


# --- our client against our server (in process, real sockets) ------------------------------

class _Users:
    def __init__(self, users: dict[str, str], down: bool = False) -> None:
        self.users = users
        self.down = down
        self.calls: list[tuple[str, str | None, str | None, str | None, bool]] = []

    async def verify(self, username: str, password: str, *, service: str | None = None,
                     realm: str | None = None, client_addr: str | None = None,
                     local_addr: str | None = None, secured: bool = False) -> bool:
        self.calls.append((username, service, client_addr, local_addr, secured))
        if self.down:
            raise AuthBackendError("database locked")
        return self.users.get(username) == password


async def _raw(port: int, *lines: bytes, replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(lines))
    out = [await reader.readline() for _ in range(replies)]
    writer.close()
    return out


def test_server_speaks_like_dovecot(tmp_path: Path) -> None:
    users = _Users({"alice": "secret"})

    async def run() -> list[bytes]:
        server = DovecotAuthServer(users, failure_delay=0)
        listener = await server.start_tcp("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            return await _raw(
                port,
                b"VERSION\t1\t0\nCPID\t42\n",
                b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7\tsecured"
                b"\tresp=AGFsaWNlAHNlY3JldA==\n",
                replies=8,
            ) + await _raw(
                port,
                b"VERSION\t1\t0\nCPID\t42\n",
                b"AUTH\t2\tLOGIN\tservice=smtp\tnologin\tlip=\trip=\n",
                b"CONT\t2\t" + base64.b64encode(b"alice") + b"\n",
                b"CONT\t2\t" + base64.b64encode(b"wrong") + b"\n",
                b"CONT\t9\tAA==\n",
                b"AUTH\t3\tPLAIN\tservice=smtp\tresp=!!\n",
                b"AUTH\t4\tCRAM-MD5\tservice=smtp\n",
                replies=7 + 6,
            )
        finally:
            listener.close()

    got = asyncio.run(run())
    assert got[0] == b"VERSION\t1\t2\n"
    assert got[1:3] == [b"MECH\tPLAIN\tplaintext\n", b"MECH\tLOGIN\tplaintext\n"]
    assert [line.split(b"\t")[0] for line in got[3:7]] == [b"SPID", b"CUID", b"COOKIE", b"DONE\n"]
    assert got[7] == b"OK\t1\tuser=alice\n"
    second = got[8 + 7:]
    assert sorted(second) == sorted([
        b"CONT\t2\tVXNlcm5hbWU6\n",
        b"CONT\t2\tUGFzc3dvcmQ6\n",
        b"FAIL\t9\treason=Authentication request timed out\n",
        b"FAIL\t3\tcode=invalid_base64\treason=Invalid base64 data in initial response\n",
        b"FAIL\t4\treason=Unsupported authentication mechanism\n",
        b"FAIL\t2\tuser=alice\n",
    ])
    assert users.calls == [("alice", "smtp", "198.51.100.7", "192.0.2.1", True),
                           ("alice", "smtp", None, None, False)]


def test_client_and_server_together() -> None:
    users = _Users({"alice": "secret", "bob": "pw"})

    async def run() -> tuple[list[object], int]:
        server = DovecotAuthServer(users, failure_delay=0.2)
        listener = await server.start_tcp("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        client = DovecotAuthClient(Endpoint(f"inet:127.0.0.1:{port}", host="127.0.0.1", port=port))
        v = DovecotVerifier(client)
        results: list[object] = [await client.mechanisms()]
        # A slow failure does not hold up the other session's success.
        results.append(await asyncio.gather(v.verify("alice", "bad"), v.verify("bob", "pw"),
                                            return_exceptions=True))
        users.down = True
        try:
            await v.verify("alice", "secret")
        except AuthBackendError as exc:
            results.append(exc.detail)
        users.down = False
        # The connection drops (Dovecot restarted): the next request reconnects.
        client._conn.writer.transport.abort()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        results.append(await v.verify("alice", "secret"))
        listener.close()
        await listener.wait_closed()
        client.close()
        try:
            await v.verify("alice", "secret")
        except AuthBackendError as exc:
            results.append(exc.detail)
            results.append(exc.log_line)
        return results, port

    results, port = asyncio.run(run())
    rejected = results[1][0]  # type: ignore[index]
    assert isinstance(rejected, AuthRejected)
    results[1] = [rejected.reason, results[1][1]]  # type: ignore[index]
    assert results == [
        ["PLAIN", "LOGIN"],
        ["(reason unavailable)", True],
        f"Dovecot auth server 'inet:127.0.0.1:{port}': temporary failure",
        True,
        f"Connect to Dovecot auth socket 'inet:127.0.0.1:{port}' failed: Connection refused",
        f"SASL: Connect to Dovecot auth socket 'inet:127.0.0.1:{port}' failed: Connection refused",
    ]
