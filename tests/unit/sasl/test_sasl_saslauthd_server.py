"""Our saslauthd server (sasl.saslauthd_server), testsaslauthd and the rimap backend, in-process.

The daemon runs on a UNIX socket under tmp_path with a small recording backend; the real
mechanisms and Cyrus's programs are compared in tests/interop/test_own_saslauthd.py.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from pathlib import Path

import pytest

from postillion.cli import testsaslauthd
from postillion.errors import AuthBackendError
from postillion.sasl.backends import (
    RESP_IERROR,
    RESP_SYNC,
    RimapBackend,
    imap_string,
    parse_rimap_option,
)
from postillion.sasl.saslauthd import encode_request, saslauthd_check
from postillion.sasl.saslauthd_server import (
    CacheLookup,
    CredentialCache,
    SaslauthdLog,
    SaslauthdServer,
    bind_socket,
)


class Recorder:
    """A backend that accepts alice/secret, records what it was asked, and can break."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.answer: str | None = None

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        self.calls.append((login, service, realm))
        if self.answer == "raise":
            raise AuthBackendError("database gone")
        if self.answer is not None:
            return self.answer
        return "OK" if (login, password) == ("alice", "secret") else "NO Incorrect password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(tmp_path: Path, backend: Recorder, **kw: object) -> tuple[Path, io.StringIO, list[object]]:
    """Run the server in a thread with its own loop; returns (mux, log stream, [loop, server])."""
    mux = tmp_path / "mux"
    stream = io.StringIO()
    log = SaslauthdLog(verbose=True, stderr=stream, use_syslog=False)
    server = SaslauthdServer(backend, log=log, **kw)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    sock = bind_socket(mux)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start(sock))
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(5)
    return mux, stream, [loop, server]


@pytest.fixture
def stoppers() -> list[list[object]]:
    handles: list[list[object]] = []
    yield handles
    for loop, server in handles:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)  # type: ignore[attr-defined]


def ask(mux: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(mux))
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)  # so a truncated request ends in EOF, not the read timeout
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def log_lines(stream: io.StringIO) -> list[str]:
    return [line.split(" :", 1)[1] for line in stream.getvalue().splitlines()]


def test_answers_and_refusals(tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Recorder()
    mux, stream, handle = serve(tmp_path, backend)
    stoppers.append(handle)
    assert ask(mux, encode_request("alice", "secret", "smtp", "")) == b"\x00\x02OK"
    assert ask(mux, encode_request("alice", "nope", "smtp", "")) == b"\x00\x15NO Incorrect password"
    assert ask(mux, encode_request("", "x", "smtp", "")) == b"\x00\x16NO NULL login received"
    assert ask(mux, encode_request("alice", "", "smtp", "")) == b"\x00\x19NO NULL password received"
    assert ask(mux, encode_request("a" * 257, "x", "smtp", "")) == b"\x00\x03NO "
    assert ask(mux, b"\x00\x05ali") == b""  # client gave up mid-field: closed without answer
    assert backend.calls == [("alice", "smtp", ""), ("alice", "smtp", "")]
    assert log_lines(stream) == [
        "auth success: [user=alice] [service=smtp] [realm=] [mech=recorder]",
        "response: OK",
        "auth failure: [user=alice] [service=smtp] [realm=] [mech=recorder] [reason=Incorrect password]",
        "NULL login received",
        "NULL password received",
        "login exceeded MAX_REQ_LEN: 256",
    ]


def test_concat_realm_and_nul_truncation(tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Recorder()
    mux, _stream, handle = serve(tmp_path, backend, concat_realm=True)
    stoppers.append(handle)
    ask(mux, encode_request("bob", "pw", "smtp", "example.org"))
    ask(mux, encode_request("bob", "pw", "imap", ""))
    ask(mux, encode_request("carl\0ignored", "pw", "smtp", ""))
    assert backend.calls == [("bob@example.org", "smtp", "example.org"), ("bob", "imap", ""),
                             ("carl", "smtp", "")]


def test_internal_failure_and_unknown_answer(tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Recorder()
    mux, stream, handle = serve(tmp_path, backend)
    stoppers.append(handle)
    backend.answer = "raise"
    assert ask(mux, encode_request("alice", "secret", "smtp", "")) == b"\x00\x1dNO internal mechanism failure"
    backend.answer = "MAYBE"
    assert ask(mux, encode_request("alice", "secret", "smtp", "")) == b"\x00\x1dNO internal mechanism failure"
    assert log_lines(stream) == [
        "internal mechanism failure: recorder: database gone",
        ("auth failure: [user=alice] [service=smtp] [realm=] [mech=recorder] "
         "[reason=internal mechanism failure]"),
        "mechanism returned unknown response: recorder",
    ]


def test_cache_semantics_with_fake_clock() -> None:
    clock = Clock()
    cache = CredentialCache(10, clock=clock)
    found, pending = cache.lookup("alice", "", "smtp", "pw1")
    assert found is CacheLookup.MISSING
    cache.commit(pending)
    assert cache.lookup("alice", "", "smtp", "pw1")[0] is CacheLookup.FOUND
    assert cache.lookup("alice", "", "imap", "pw1")[0] is CacheLookup.MISSING  # per service
    assert cache.lookup("alice", "", "smtp", "pw2")[0] is CacheLookup.WRONG
    assert b"pw1" not in repr(cache._entries).encode()
    clock.now += 9.9
    assert cache.lookup("alice", "", "smtp", "pw1")[0] is CacheLookup.FOUND
    clock.now += 0.1
    assert cache.lookup("alice", "", "smtp", "pw1")[0] is CacheLookup.MISSING
    assert (cache.hits, cache.misses) == (2, 4)


def test_cached_login_skips_the_mechanism(tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Recorder()
    mux, stream, handle = serve(tmp_path, backend, cache=CredentialCache(100))
    stoppers.append(handle)
    for _ in range(2):
        assert ask(mux, encode_request("alice", "secret", "smtp", "")) == b"\x00\x02OK"
    assert len(backend.calls) == 1
    assert log_lines(stream)[-3:] == [
        "[login=alice] [service=smtp] [realm=]: found with valid passwd",
        "auth success (cached): [user=alice] [service=smtp] [realm=]",
        "response: OK",
    ]


def test_our_client_and_testsaslauthd(tmp_path: Path, stoppers: list[list[object]]) -> None:
    mux, _stream, handle = serve(tmp_path, Recorder())
    stoppers.append(handle)
    assert asyncio.run(saslauthd_check(mux, "alice", "secret", "smtp", "")) == (True, "OK")

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = testsaslauthd.main(list(args), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    assert run("-u", "alice", "-p", "secret", "-f", str(mux)) == (0, '0: OK "Success."\n', "")
    assert run("-u", "alice", "-p", "x", "-R", "2", "-f", str(mux)) == (
        255, '0: NO "authentication failed"\n1: NO "authentication failed"\n', "")
    assert run("-u", "alice", "-p", "x", "-f", str(tmp_path / "none")) == (
        255, "0: ", "connect() : No such file or directory\n")
    assert run("-u", "alice")[0:2] == (1, "")


def test_rimap_option_and_quoting() -> None:
    assert parse_rimap_option("imap.example/993") == ("imap.example", 993)
    assert parse_rimap_option("127.0.0.1:1143") == ("127.0.0.1", 1143)
    assert parse_rimap_option("[::1]:1143") == ("::1", 1143)
    assert parse_rimap_option("host") == ("host", 143)
    with pytest.raises(ValueError, match="unknown service nosuch/tcp"):
        parse_rimap_option("host/nosuch")
    assert imap_string(b'a"b\\c') == (b'"a\\"b\\\\c"', False)
    assert imap_string("pä".encode()) == (b"{3}\r\n", True)


def test_rimap_dialogue_with_literal() -> None:
    """A scripted IMAP peer: the LOGIN line as sent, a literal for a non-ASCII password."""
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def peer() -> None:
        for answer in (b"saslauthd OK Logged in\r\n", b"saslauthd NO [AUTHENTICATIONFAILED] no\r\n"):
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as f:
                conn.sendall(b"* OK ready\r\n")
                line = f.readline()
                seen.append(line)
                if line.endswith(b"}\r\n"):
                    conn.sendall(b"+ go\r\n")
                    seen.append(f.readline())
                conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + answer)
                seen.append(f.readline())

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    backend = RimapBackend("127.0.0.1", port, timeout=5)
    assert backend.authenticate("erin", 'q"uote', "imap", "") == "OK remote authentication successful"
    assert backend.authenticate("erin", "pä", "imap", "") == "NO remote server rejected your credentials"
    t.join(5)
    listener.close()
    assert seen == [b'saslauthd LOGIN "erin" "q\\"uote"\r\n', b"saslauthd LOGOUT\r\n",
                    b'saslauthd LOGIN "erin" {3}\r\n', "pä\r\n".encode(), b"saslauthd LOGOUT\r\n"]


class Gate(Recorder):
    """A Recorder whose answers wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.waiting = 0

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        self.waiting += 1  # one worker thread: no race
        self.entered.set()
        self.gate.wait(10)
        return super().authenticate(login, password, service, realm)


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_accept_pauses_at_the_connection_bound_and_nothing_is_dropped(
        tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Gate()
    mux, _stream, handle = serve(tmp_path, backend, workers=1, max_connections=2)
    stoppers.append(handle)
    server = handle[1]
    answers: list[bytes] = []

    def client() -> None:
        answers.append(ask(mux, encode_request("alice", "secret", "smtp", "")))

    clients = [threading.Thread(target=client) for _ in range(5)]
    for t in clients:
        t.start()
    backend.entered.wait(5)
    time.sleep(0.3)  # time for the server to accept more, if it wrongly would
    assert server.connections == 2  # type: ignore[attr-defined]  # the other 3 wait in the backlog
    assert backend.waiting == 1
    backend.gate.set()
    for t in clients:
        t.join(10)
    assert answers == [b"\x00\x02OK"] * 5
    assert len(backend.calls) == 5
    _wait_for(lambda: server.connections == 0)  # type: ignore[attr-defined]


def test_silent_client_holds_its_slot_only_until_the_read_timeout(
        tmp_path: Path, stoppers: list[list[object]]) -> None:
    backend = Recorder()
    mux, _stream, handle = serve(tmp_path, backend, workers=1, max_connections=1,
                                 read_timeout=0.5)
    stoppers.append(handle)
    server = handle[1]
    with socket.socket(socket.AF_UNIX) as silent:
        silent.settimeout(5)
        silent.connect(str(mux))
        _wait_for(lambda: server.connections == 1)  # type: ignore[attr-defined]
        start = time.monotonic()
        assert ask(mux, encode_request("alice", "secret", "smtp", "")) == b"\x00\x02OK"
        waited = time.monotonic() - start
        assert silent.recv(16) == b""  # closed without an answer, as Cyrus does for EOF
    assert 0.3 < waited < 3.0
    assert backend.calls == [("alice", "smtp", "")]


def _imap_peer(script: object) -> tuple[int, threading.Thread, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            script(conn)  # type: ignore[operator]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t, listener


def _dribble(conn: socket.socket, data: bytes, stop: threading.Event) -> None:
    for byte in data:
        if stop.wait(0.05):
            return
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return


@pytest.mark.parametrize("phase, expected", [("banner", RESP_SYNC), ("answer", RESP_IERROR)])
def test_rimap_overall_deadline_beats_a_dribbling_server(phase: str, expected: str) -> None:
    """Each byte comes well within the per-read timeout; only the overall deadline stops it."""
    stop = threading.Event()

    def script(conn: socket.socket) -> None:
        if phase == "answer":
            conn.sendall(b"* OK ready\r\n")
            conn.recv(1000)
        _dribble(conn, b"x" * 900, stop)

    port, t, listener = _imap_peer(script)
    backend = RimapBackend("127.0.0.1", port, timeout=2.0, deadline=0.6)
    start = time.monotonic()
    try:
        assert backend.authenticate("erin", "pw", "imap", "") == expected
        assert time.monotonic() - start < 1.5
    finally:
        stop.set()
        t.join(5)
        listener.close()
