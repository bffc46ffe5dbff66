"""anvil: per-client connection counts and event rates, shared by all worker processes.

Owns: the counting rules (``AnvilState``, pure, clock injected), the UNIX-socket service the
supervisor runs (``AnvilServer``) and the worker-side asyncio client (``AnvilClient``).
Must not import: config, server.supervisor, smtp, cli.  Limits are compared by smtpd, not here:
anvil only counts, exactly like Postfix's.
Follows: Postfix anvil(8) (src/anvil/anvil.c): the key is ``service:client-ip``; one fixed rate
window of ``anvil_rate_time_unit`` per key, restarted when an event comes more than one unit
after the window start; an idle entry (no connections) is dropped once its window expired;
a connection is tied to the client stream that reported it, so a worker that dies does not
leave connections counted; maxima are logged as ``statistics: max ... rate N/60s for (ident)``.

Wire protocol (one request line, one reply line, UTF-8, fields separated by one space):

    connect <service> <ip>      -> ok <count> <rate>
    disconnect <service> <ip>   -> ok
    message|rcpt|newtls|auth <service> <ip> -> ok <rate>
    lookup <service> <ip>       -> ok <count> <rate> <message> <rcpt> <newtls> <auth>
    anything else               -> error <text>
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from postillion.server.proclog import syslog_timestamp

DEFAULT_RATE_TIME_UNIT = 60.0  # anvil_rate_time_unit
DEFAULT_STATUS_UPDATE_TIME = 600.0  # anvil_status_update_time
CLIENT_TIMEOUT = 1.0  # smtpd must not stall on anvil; a missing answer means "allowed"
CLIENT_RETRY_AFTER = 10.0  # after a failure, do not retry on every event
_MAX_LINE = 1024

RATE_EVENTS = ("message", "rcpt", "newtls", "auth")
# Report order and names of anvil_status_dump().
_REPORT = (
    ("connection rate", "conn_rate"), ("connection count", "conn_count"),
    ("message rate", "message"), ("recipient rate", "rcpt"),
    ("newtls rate", "newtls"), ("auth rate", "auth"),
)

Log = Callable[[str], None]


@dataclass
class _Remote:
    """anvil.c ANVIL_REMOTE: one (service, client) pair."""

    start: float
    count: int = 0
    rates: Counter[str] = field(default_factory=Counter)


@dataclass
class _Max:
    value: int = 0
    ident: str = ""
    when: float = 0.0


class AnvilState:
    """The counters.  ``clock`` gives the window time (monotonic), ``wallclock`` the log time."""

    def __init__(
        self,
        rate_time_unit: float = DEFAULT_RATE_TIME_UNIT,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.rate_time_unit = rate_time_unit
        self._clock = clock
        self._wallclock = wallclock
        self._remotes: dict[str, _Remote] = {}
        self._max: dict[str, _Max] = {}
        self._max_cache = _Max()
        self._next_scan = 0.0

    @staticmethod
    def ident(service: str, ip: str) -> str:
        return f"{service}:{ip}"

    def __len__(self) -> int:
        return len(self._remotes)

    def _touch(self, ident: str) -> _Remote:
        now = self._clock()
        if now >= self._next_scan:
            # A full scan per event would be quadratic under load; once a second is enough.
            self.expire()
            self._next_scan = now + 1.0
        remote = self._remotes.get(ident)
        if remote is None:
            remote = self._remotes[ident] = _Remote(start=now)
            if len(self._remotes) > self._max_cache.value:
                self._max_cache = _Max(len(self._remotes), "", self._wallclock())
        elif remote.start + self.rate_time_unit < now:
            # ANVIL_REMOTE_RSET_RATE: a fixed window, all rates restart together.
            remote.rates.clear()
            remote.start = now
        return remote

    def _record(self, what: str, value: int, ident: str) -> None:
        best = self._max.setdefault(what, _Max())
        if value > best.value:
            self._max[what] = _Max(value, ident, self._wallclock())

    def connect(self, service: str, ip: str) -> tuple[int, int]:
        """A new connection: (simultaneous connections, connections in this window)."""
        ident = self.ident(service, ip)
        remote = self._touch(ident)
        remote.count += 1
        remote.rates["conn_rate"] += 1
        self._record("conn_count", remote.count, ident)
        self._record("conn_rate", remote.rates["conn_rate"], ident)
        return remote.count, remote.rates["conn_rate"]

    def disconnect(self, service: str, ip: str) -> None:
        remote = self._remotes.get(self.ident(service, ip))
        if remote is not None and remote.count > 0:
            remote.count -= 1

    def event(self, what: str, service: str, ip: str) -> int:
        """One message/rcpt/newtls/auth event; the rate in the current window including it."""
        if what not in RATE_EVENTS:
            raise ValueError(f"unknown anvil event {what!r}")
        ident = self.ident(service, ip)
        remote = self._touch(ident)
        remote.rates[what] += 1
        self._record(what, remote.rates[what], ident)
        return remote.rates[what]

    def lookup(self, service: str, ip: str) -> tuple[int, int, int, int, int, int]:
        remote = self._remotes.get(self.ident(service, ip))
        if remote is None or remote.start + self.rate_time_unit < self._clock():
            rates: Counter[str] = Counter()
        else:
            rates = remote.rates
        count = remote.count if remote is not None else 0
        return (count, rates["conn_rate"], rates["message"], rates["rcpt"], rates["newtls"],
                rates["auth"])

    def expire(self) -> int:
        """Drop entries without connections whose window has run out; how many were dropped."""
        now = self._clock()
        stale = [k for k, r in self._remotes.items()
                 if r.count == 0 and r.start + self.rate_time_unit < now]
        for k in stale:
            del self._remotes[k]
        return len(stale)

    def statistics(self, *, reset: bool = True) -> list[str]:
        """The ``statistics: max ...`` lines of anvil_status_dump(), maxima then reset."""
        unit = f"{self.rate_time_unit:g}s"
        lines = []
        for name, key in _REPORT:
            m = self._max.get(key)
            if m is None or m.value <= 0:
                continue
            value = f"{m.value}/{unit}" if name.endswith("rate") else f"{m.value}"
            lines.append(f"statistics: max {name} {value} for ({m.ident}) at {syslog_timestamp(m.when)}")
        if self._max_cache.value > 0:
            lines.append(f"statistics: max cache size {self._max_cache.value} "
                         f"at {syslog_timestamp(self._max_cache.when)}")
        if reset:
            self._max.clear()
            self._max_cache = _Max()
        return lines


class AnvilServer:
    """Serves ``AnvilState`` on a UNIX socket inside the supervisor's event loop."""

    def __init__(
        self,
        state: AnvilState,
        path: Path,
        *,
        log: Log,
        owner_uid: int | None = None,
        owner_gid: int | None = None,
        status_update_time: float = DEFAULT_STATUS_UPDATE_TIME,
    ) -> None:
        self.state = state
        self.path = path
        self._log = log
        self._owner = (owner_uid, owner_gid)
        self._status_update_time = status_update_time
        self._server: asyncio.base_events.Server | None = None
        self._dump_task: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        # Create the socket 0600 from the start: there is no window in which others may connect.
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        uid, gid = self._owner
        if uid is not None:
            os.chown(self.path, uid, gid if gid is not None else -1)
        self._dump_task = asyncio.get_running_loop().create_task(self._dump_periodically())

    def listening_fds(self) -> set[int]:
        """Descriptors of the listening socket and of open client streams (for forked children)."""
        fds: set[int] = set()
        if self._server is not None:
            fds.update(s.fileno() for s in self._server.sockets)
        for w in self._writers:
            sock = w.get_extra_info("socket")
            if sock is not None and sock.fileno() >= 0:
                fds.add(sock.fileno())
        return fds

    async def close(self) -> None:
        if self._dump_task is not None:
            self._dump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dump_task
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.dump_statistics()

    def dump_statistics(self) -> None:
        for line in self.state.statistics():
            self._log(line)

    async def _dump_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._status_update_time)
            self.dump_statistics()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        # The connections this stream reported, undone when it goes away (anvil.c ANVIL_LOCAL).
        links: Counter[tuple[str, str]] = Counter()
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    break
                if len(raw) > _MAX_LINE:
                    break
                writer.write(self._answer(raw.decode("utf-8", "replace").strip(), links).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            for (service, ip), n in links.items():
                for _ in range(n):
                    self.state.disconnect(service, ip)
            writer.close()

    def _answer(self, line: str, links: Counter[tuple[str, str]]) -> str:
        parts = line.split(" ")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return "error bad request"
        what, service, ip = parts
        if what == "connect":
            count, rate = self.state.connect(service, ip)
            links[(service, ip)] += 1
            return f"ok {count} {rate}"
        if what == "disconnect":
            if links[(service, ip)] > 0:
                links[(service, ip)] -= 1
                self.state.disconnect(service, ip)
            return "ok"
        if what in RATE_EVENTS:
            return f"ok {self.state.event(what, service, ip)}"
        if what == "lookup":
            return "ok " + " ".join(str(v) for v in self.state.lookup(service, ip))
        return "error bad request"


class AnvilClient:
    """A worker's connection to anvil.  Never fails: when anvil cannot be asked, it logs a
    warning (once per outage) and answers zero, which every limit reads as "allowed"."""

    def __init__(
        self,
        path: Path | str,
        *,
        log: Log | None = None,
        timeout: float = CLIENT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._log = log or (lambda _text: None)
        self._timeout = timeout
        self._clock = clock
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._down_since: float | None = None

    async def connect(self, service: str, ip: str) -> tuple[int, int]:
        """(simultaneous connections, connection rate) including this one."""
        values = await self._ask("connect", service, ip, 2)
        return values[0], values[1]

    async def disconnect(self, service: str, ip: str) -> None:
        await self._ask("disconnect", service, ip, 0)

    async def message(self, service: str, ip: str) -> int:
        return (await self._ask("message", service, ip, 1))[0]

    async def rcpt(self, service: str, ip: str) -> int:
        return (await self._ask("rcpt", service, ip, 1))[0]

    async def newtls(self, service: str, ip: str) -> int:
        return (await self._ask("newtls", service, ip, 1))[0]

    async def auth(self, service: str, ip: str) -> int:
        return (await self._ask("auth", service, ip, 1))[0]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    aclose = close  # trio-style name for the same coroutine

    async def _ask(self, what: str, service: str, ip: str, nvalues: int) -> list[int]:
        zeros = [0] * nvalues
        if " " in service or " " in ip or "\n" in service + ip:
            return zeros
        if self._down_since is not None and self._clock() - self._down_since < CLIENT_RETRY_AFTER:
            return zeros
        async with self._lock:
            try:
                values = await asyncio.wait_for(self._roundtrip(f"{what} {service} {ip}\n"),
                                                self._timeout)
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ValueError) as exc:
                await self._fail(exc)
                return zeros
        if self._down_since is not None:
            self._down_since = None
        if len(values) != nvalues:
            return zeros
        return values

    async def _roundtrip(self, request: str) -> list[int]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_unix_connection(str(self.path))
        assert self._reader is not None
        self._writer.write(request.encode())
        await self._writer.drain()
        reply = (await self._reader.readuntil(b"\n")).decode().split()
        if not reply or reply[0] != "ok":
            raise ValueError(" ".join(reply))
        return [int(v) for v in reply[1:]]

    async def _fail(self, exc: BaseException) -> None:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError):
            detail = "timeout"
        if self._down_since is None:
            # attr_clnt(3)'s wording for an unreachable Postfix service.
            self._log(f"warning: problem talking to server {self.path}: {detail}")
        self._down_since = self._clock()
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
