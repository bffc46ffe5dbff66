"""saslauthd mux client against a scripted fake server on a real UNIX socket."""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from postillion.errors import AuthBackendError
from postillion.sasl.saslauthd import (
    connect_error_detail,
    encode_request,
    saslauthd_check,
    split_realm,
)
from postillion.sasl.verifiers import SaslauthdVerifier

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="sa", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def read_request(reader: asyncio.StreamReader) -> list[bytes]:
    fields = []
    for _ in range(4):
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        fields.append(await reader.readexactly(n))
    return fields


def serve(path: Path, handler: Handler, client: Callable[[], Awaitable[object]]) -> object:
    """Run a fake mux server with ``handler`` while ``client()`` runs; returns its result."""

    async def main() -> object:
        server = await asyncio.start_unix_server(handler, path=str(path))
        async with server:
            return await client()

    return asyncio.run(main())


def answering(answer: bytes, seen: list[list[bytes]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer)
        await writer.drain()
        writer.close()

    return handler


def test_request_bytes_match_the_live_capture() -> None:
    assert encode_request("alice", "secret", "smtp", "") == (
        b"\x00\x05alice\x00\x06secret\x00\x04smtp\x00\x00"
    )
    assert encode_request("jürgen", "", "smtp", "ex") == (
        b"\x00\x07j\xc3\xbcrgen\x00\x00\x00\x04smtp\x00\x02ex"
    )


@pytest.mark.parametrize("answer, ok, text", [
    (b"\x00\x02OK", True, "OK"),
    (b"\x00\x0aOK Success", True, "OK Success"),
    (b"\x00\x02NO", False, "NO"),
    (b"\x00\x1dNO internal mechanism failure", False, "NO internal mechanism failure"),
    (b"\x00\x02XX", False, "XX"),  # libsasl: anything but "OK" is a failure
])
def test_answers(sockdir: Path, answer: bytes, ok: bool, text: str) -> None:
    seen: list[list[bytes]] = []
    mux = sockdir / "mux"
    result = serve(mux, answering(answer, seen),
                   lambda: saslauthd_check(mux, "alice", "secret", "smtp", ""))
    assert result == (ok, text)
    assert seen == [[b"alice", b"secret", b"smtp", b""]]


def test_verifier_splits_realm_at_last_at(sockdir: Path) -> None:
    seen: list[list[bytes]] = []
    mux = sockdir / "mux"

    async def client() -> list[bool]:
        v = SaslauthdVerifier(mux, "smtp", "local.test")
        return [
            await v.verify("alice", "pw"),
            await v.verify("alice@example.org", "pw"),
            await v.verify("a@b@example.org", "pw", service="submission"),
            await v.verify("bob", "pw", realm=""),
        ]

    assert serve(mux, answering(b"\x00\x02OK", seen), client) == [True, True, True, True]
    assert seen == [
        [b"alice", b"pw", b"smtp", b"local.test"],
        [b"alice", b"pw", b"smtp", b"example.org"],
        [b"a@b", b"pw", b"submission", b"example.org"],
        [b"bob", b"pw", b"smtp", b""],
    ]


def test_split_realm() -> None:
    assert split_realm("alice", "") == ("alice", "")
    assert split_realm("alice", "dom") == ("alice", "dom")
    assert split_realm("alice@", "dom") == ("alice", "")
    assert split_realm("x@y@z", "dom") == ("x@y", "z")


def run_against(sockdir: Path, handler: Handler, *, timeout: float = 5.0) -> str:
    mux = sockdir / "mux"
    with pytest.raises(AuthBackendError) as info:
        serve(mux, handler, lambda: saslauthd_check(mux, "alice", "pw", "smtp", "",
                                                    timeout=timeout))
    return info.value.detail


def test_short_response(sockdir: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"\x00\x05OK")
        writer.close()

    assert run_against(sockdir, handler) == (
        f"bad response from saslauthd server {sockdir}/mux: connection closed after 2 of 5 bytes"
    )


def test_closed_without_answer(sockdir: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    assert run_against(sockdir, handler) == (
        f"bad response from saslauthd server {sockdir}/mux: connection closed after 0 of 2 bytes"
    )


def test_half_length_prefix(sockdir: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"\x00")
        writer.close()

    assert run_against(sockdir, handler).endswith("connection closed after 1 of 2 bytes")


def test_answer_shorter_than_two_bytes(sockdir: Path) -> None:
    for answer in (b"\x00\x00", b"\x00\x01O"):
        seen: list[list[bytes]] = []
        detail = run_against(sockdir, answering(answer, seen))
        assert detail == (
            f"bad response from saslauthd server {sockdir}/mux: "
            f"{answer[2:].decode()!r} (expected OK or NO)"
        )
        (sockdir / "mux").unlink()


def test_no_answer_times_out(sockdir: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    assert run_against(sockdir, handler, timeout=0.2) == (
        f"saslauthd server {sockdir}/mux did not answer within 0.2 seconds"
    )


def test_missing_socket(sockdir: Path) -> None:
    mux = sockdir / "nothere" / "mux"
    with pytest.raises(AuthBackendError) as info:
        asyncio.run(saslauthd_check(mux, "alice", "pw", "smtp", ""))
    assert info.value.detail == (
        f"cannot connect to saslauthd server {mux}: No such file or directory "
        "(is saslauthd running? check -m and saslauthd_path)"
    )


def test_stale_socket_file_is_connection_refused(sockdir: Path) -> None:
    mux = sockdir / "mux"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(mux))  # bound, never listening: what a crashed saslauthd leaves behind
    try:
        with pytest.raises(AuthBackendError) as info:
            asyncio.run(saslauthd_check(mux, "alice", "pw", "smtp", ""))
    finally:
        s.close()
    assert info.value.detail == (
        f"cannot connect to saslauthd server {mux}: Connection refused "
        "(a socket file is there but nothing listens: is saslauthd running?)"
    )


def test_permission_denied_detail_names_user_and_group(sockdir: Path) -> None:
    import grp
    import os
    import pwd

    exc = PermissionError(errno.EACCES, "Permission denied")
    if os.geteuid() == 0:
        os.chown(sockdir, -1, next(g.gr_gid for g in grp.getgrall() if g.gr_gid != 0))
    gid = sockdir.stat().st_gid
    uid = os.geteuid()
    detail = connect_error_detail(f"{sockdir}/mux", exc)
    assert detail == (
        f"cannot connect to saslauthd server {sockdir}/mux: Permission denied "
        f"(the user postillion runs as, uid {uid}, must be able to reach the socket: "
        f"e.g. adduser {pwd.getpwuid(uid).pw_name} {grp.getgrgid(gid).gr_name})"
    )
    if os.geteuid() == 0:  # a root-group directory: Debian's group is the advice
        os.chown(sockdir, -1, 0)
        assert connect_error_detail(f"{sockdir}/mux", exc).endswith(" e.g. adduser root sasl)")


def test_field_too_long_for_the_protocol_is_a_refusal_not_a_crash(sockdir: Path) -> None:
    assert asyncio.run(saslauthd_check(sockdir / "unused", "a" * 70000, "pw", "smtp", "")) == (
        False, "NO request field too long")
