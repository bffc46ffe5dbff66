"""anvil: counting rules with a fake clock, and the real UNIX-socket server with its client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from postillion.server.anvil import AnvilClient, AnvilServer, AnvilState


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# 2024-11-25 08:12:58 local time, the wall clock statistics lines show
WALL = time.mktime((2024, 11, 25, 8, 12, 58, 0, 0, -1))


def make_state(unit: float = 60.0) -> tuple[AnvilState, FakeClock]:
    clock = FakeClock()
    return AnvilState(unit, clock=clock, wallclock=lambda: WALL), clock


def test_connect_counts_concurrency_and_rate() -> None:
    state, _clock = make_state()
    assert state.connect("smtp", "192.0.2.1") == (1, 1)
    assert state.connect("smtp", "192.0.2.1") == (2, 2)
    state.disconnect("smtp", "192.0.2.1")
    assert state.connect("smtp", "192.0.2.1") == (2, 3)


def test_counts_are_per_service_and_per_client() -> None:
    state, _clock = make_state()
    state.connect("smtp", "192.0.2.1")
    assert state.connect("submission", "192.0.2.1") == (1, 1)
    assert state.connect("smtp", "192.0.2.2") == (1, 1)


def test_fixed_window_restarts_only_after_a_full_unit() -> None:
    state, clock = make_state()
    assert state.event("auth", "smtp", "192.0.2.1") == 1
    clock.now += 30
    assert state.event("auth", "smtp", "192.0.2.1") == 2
    clock.now += 30  # exactly one unit after the window start: still the same window (anvil.c "<")
    assert state.event("auth", "smtp", "192.0.2.1") == 3
    clock.now += 0.5
    assert state.event("auth", "smtp", "192.0.2.1") == 1


def test_window_restart_resets_every_rate_but_not_the_count() -> None:
    state, clock = make_state()
    state.connect("smtp", "192.0.2.1")
    state.event("message", "smtp", "192.0.2.1")
    state.event("rcpt", "smtp", "192.0.2.1")
    clock.now += 61
    assert state.event("rcpt", "smtp", "192.0.2.1") == 1
    assert state.lookup("smtp", "192.0.2.1") == (1, 0, 0, 1, 0, 0)


def test_idle_entries_are_dropped_after_their_window() -> None:
    state, clock = make_state()
    state.connect("smtp", "192.0.2.1")
    state.event("auth", "smtp", "192.0.2.2")
    clock.now += 61
    assert state.expire() == 1  # .2 had no connection; .1 is still connected
    assert len(state) == 1
    state.disconnect("smtp", "192.0.2.1")
    assert state.expire() == 1
    assert len(state) == 0


def test_unknown_event_is_refused() -> None:
    state, _clock = make_state()
    with pytest.raises(ValueError):
        state.event("helo", "smtp", "192.0.2.1")


def test_statistics_lines_are_postfix_texts_and_reset() -> None:
    state, _clock = make_state()
    for _ in range(3):
        state.event("auth", "smtp", "127.0.0.1")
    state.connect("smtp", "127.0.0.1")
    state.connect("smtp", "127.0.0.1")
    assert state.statistics() == [
        "statistics: max connection rate 2/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max connection count 2 for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max auth rate 3/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max cache size 1 at Nov 25 08:12:58",
    ]
    assert state.statistics() == []


# ------------------------------------------------------------------ over a real socket


async def _with_server(tmp_path: Path, body, unit: float = 60.0) -> list[str]:  # noqa: ANN001
    logged: list[str] = []
    clock = FakeClock()
    state = AnvilState(unit, clock=clock, wallclock=lambda: WALL)
    server = AnvilServer(state, tmp_path / "anvil", log=logged.append)
    await server.start()
    try:
        await body(server, clock)
    finally:
        await server.close()
    return logged


def test_server_socket_is_private(tmp_path: Path) -> None:
    async def body(server: AnvilServer, _clock: FakeClock) -> None:
        assert (server.path.stat().st_mode & 0o777) == 0o600

    asyncio.run(_with_server(tmp_path, body))


def test_client_round_trip_and_statistics_on_close(tmp_path: Path) -> None:
    async def body(server: AnvilServer, clock: FakeClock) -> None:
        client = AnvilClient(server.path)
        assert await client.connect("smtp", "127.0.0.1") == (1, 1)
        assert await client.connect("smtp", "127.0.0.1") == (2, 2)
        assert await client.auth("smtp", "127.0.0.1") == 1
        assert await client.auth("smtp", "127.0.0.1") == 2
        assert await client.message("smtp", "127.0.0.1") == 1
        assert await client.rcpt("smtp", "127.0.0.1") == 1
        assert await client.newtls("smtp", "127.0.0.1") == 1
        await client.disconnect("smtp", "127.0.0.1")
        assert server.state.lookup("smtp", "127.0.0.1") == (1, 2, 1, 1, 1, 2)
        await client.aclose()

    logged = asyncio.run(_with_server(tmp_path, body))
    assert logged == [
        "statistics: max connection rate 2/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max connection count 2 for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max message rate 1/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max recipient rate 1/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max newtls rate 1/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max auth rate 2/60s for (smtp:127.0.0.1) at Nov 25 08:12:58",
        "statistics: max cache size 1 at Nov 25 08:12:58",
    ]


def test_connections_of_a_vanished_client_are_released(tmp_path: Path) -> None:
    """A worker killed with open sessions must not leave them counted (anvil.c ANVIL_LOCAL)."""

    async def body(server: AnvilServer, _clock: FakeClock) -> None:
        dead = AnvilClient(server.path)
        assert await dead.connect("smtp", "192.0.2.9") == (1, 1)
        await dead.connect("smtp", "192.0.2.9")
        await dead.aclose()
        other = AnvilClient(server.path)
        for _ in range(100):  # the server sees EOF asynchronously
            if server.state.lookup("smtp", "192.0.2.9")[0] == 0:
                break
            await asyncio.sleep(0.01)
        assert await other.connect("smtp", "192.0.2.9") == (1, 3)
        # A disconnect for a connection this stream never reported changes nothing.
        stranger = AnvilClient(server.path)
        await stranger.disconnect("smtp", "192.0.2.9")
        assert server.state.lookup("smtp", "192.0.2.9")[0] == 1
        await other.aclose()
        await stranger.aclose()

    asyncio.run(_with_server(tmp_path, body))


def test_bad_request_gets_an_error_line(tmp_path: Path) -> None:
    async def body(server: AnvilServer, _clock: FakeClock) -> None:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b"connect smtp\nfrobnicate smtp 1.2.3.4\nlookup smtp 1.2.3.4\n")
        assert await reader.readline() == b"error bad request\n"
        assert await reader.readline() == b"error bad request\n"
        assert await reader.readline() == b"ok 0 0 0 0 0 0\n"
        writer.close()

    asyncio.run(_with_server(tmp_path, body))


def test_client_allows_and_warns_once_when_anvil_is_missing(tmp_path: Path) -> None:
    logged: list[str] = []

    async def main() -> None:
        client = AnvilClient(tmp_path / "nothing-here", log=logged.append)
        assert await client.connect("smtp", "192.0.2.1") == (0, 0)
        assert await client.auth("smtp", "192.0.2.1") == 0
        await client.disconnect("smtp", "192.0.2.1")

    asyncio.run(main())
    assert logged == [
        f"warning: problem talking to server {tmp_path / 'nothing-here'}: No such file or directory"
    ]


def test_client_times_out_on_a_silent_server(tmp_path: Path) -> None:
    logged: list[str] = []

    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await asyncio.start_unix_server(silent, path=str(tmp_path / "silent"))
        client = AnvilClient(tmp_path / "silent", log=logged.append, timeout=0.1)
        started = time.monotonic()
        assert await client.auth("smtp", "192.0.2.1") == 0
        assert time.monotonic() - started < 1.0
        # Within the retry pause the client does not even try: no second wait, no second warning.
        assert await client.auth("smtp", "192.0.2.1") == 0
        server.close()
        await client.aclose()

    asyncio.run(main())
    assert logged == [f"warning: problem talking to server {tmp_path / 'silent'}: timeout"]


def test_client_reconnects_after_the_retry_pause(tmp_path: Path) -> None:
    clock = FakeClock()

    async def body(server: AnvilServer, _c: FakeClock) -> None:
        client = AnvilClient(tmp_path / "anvil", clock=clock)
        assert await client.auth("smtp", "192.0.2.1") == 1
        # The supervisor restarts anvil: the old stream breaks.
        server.path.unlink()
        await client.aclose()
        client2 = AnvilClient(tmp_path / "anvil", clock=clock)
        assert await client2.auth("smtp", "192.0.2.1") == 0  # socket gone: allowed
        await server.close()
        await server.start()
        assert await client2.auth("smtp", "192.0.2.1") == 0  # still pausing
        clock.now += 11
        assert await client2.auth("smtp", "192.0.2.1") == 2  # back; the state survived
        await client2.aclose()

    asyncio.run(_with_server(tmp_path, body))
