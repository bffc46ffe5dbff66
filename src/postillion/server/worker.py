"""A worker process: serves SMTP sessions on the listening sockets the supervisor hands it.

Owns: the worker's event loop, one ServiceContext per listener, graceful stop on SIGTERM
(stop accepting, let every open session finish), and reporting counts for `postillion status`.
Must not import: cli.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import ssl
from typing import Any, Protocol

from postillion.config import Configuration
from postillion.errors import ConfigError
from postillion.maillog import MailLog
from postillion.server.anvil import AnvilClient
from postillion.server.service import ServiceContext, build_service
from postillion.server.session import SessionCounters, SmtpProtocol, log_failed_tls_accept

REPORT_INTERVAL = 1.0  # seconds between status reports


class ListenerLike(Protocol):
    service: Any
    sock: Any


class WorkerContextLike(Protocol):
    anvil_path: Any
    sinks: Any

    def report(self, **counts: int) -> None: ...


def make_log(params: Any, sink: Any, main_syslog_name: str) -> MailLog:
    return MailLog(params.get("syslog_name"), "smtpd", sink=sink, main_syslog_name=main_syslog_name)


def worker_main(cfg: Configuration, listeners: list[ListenerLike], wctx: WorkerContextLike) -> int:
    service = next((s for s in cfg.services if s.name == getattr(wctx, "service", None)), None)
    if service is not None and listeners and service.type == "unix" \
            and service.command.rpartition("/")[2] == "local":
        from postillion.server.local_service import local_main

        return local_main(cfg, listeners, wctx)
    if service is not None and not listeners and service.command.rpartition("/")[2] == "qmgr":
        from postillion.server.queue_process import qmgr_main

        return qmgr_main(cfg, wctx)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_serve(cfg, listeners, wctx))


async def _serve(cfg: Configuration, listeners: list[ListenerLike], wctx: WorkerContextLike) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    counters = SessionCounters()
    sessions: set[asyncio.Task[None]] = set()
    anvil = AnvilClient(wctx.anvil_path) if getattr(wctx, "anvil_path", None) else None
    servers: list[asyncio.base_events.Server] = []
    acceptors: list[asyncio.Task[None]] = []
    contexts: list[ServiceContext] = []
    for listener in listeners:
        params = cfg.params(listener.service)
        log = make_log(params, wctx.sinks, cfg.params().get("syslog_name"))
        try:
            sctx = build_service(listener.service, params, log=log, anvil=anvil)
        except ConfigError as exc:
            log.fatal(str(exc))
            return 1
        try:
            sctx.queue.ensure_layout()
        except OSError as exc:
            log.fatal(f"queue directory {sctx.queue.queue_directory}: {exc}")
            return 1
        contexts.append(sctx)
        if sctx.wrappermode:
            # Our own accept loop, so a failed handshake is logged like Postfix's smtpd does
            # (create_server(ssl=...) would swallow it before any session exists).
            acceptors.append(loop.create_task(_accept_tls(listener.sock, sctx, counters, sessions)))
            continue
        server = await loop.create_server(
            lambda sctx=sctx: SmtpProtocol(sctx, counters, sessions),  # type: ignore[misc]
            sock=listener.sock,
        )
        servers.append(server)

    async def report() -> None:
        while True:
            with contextlib.suppress(Exception):
                wctx.report(**dataclasses.asdict(counters))
            await asyncio.sleep(REPORT_INTERVAL)

    reporter = loop.create_task(report())
    await stop.wait()
    for server in servers:
        server.close()  # closes this process's copy of the listening socket only
    for acceptor in acceptors:
        acceptor.cancel()
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.sock.close()
    if sessions:
        limit = max((c.timeout for c in contexts), default=300.0) + 10
        await asyncio.wait(set(sessions), timeout=limit)
    reporter.cancel()
    with contextlib.suppress(Exception):
        wctx.report(**dataclasses.asdict(counters))
    if anvil is not None:
        await anvil.close()
    return 0


async def _accept_tls(
    sock: socket.socket,
    sctx: ServiceContext,
    counters: SessionCounters,
    sessions: set[asyncio.Task[None]],
) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    while True:
        try:
            conn, peer = await loop.sock_accept(sock)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            continue  # another worker took it, or the client gave up: not our problem
        task = loop.create_task(_start_tls_session(conn, peer, sctx, counters, sessions))
        sessions.add(task)
        task.add_done_callback(sessions.discard)


async def _start_tls_session(
    conn: socket.socket,
    peer: tuple[str, int],
    sctx: ServiceContext,
    counters: SessionCounters,
    sessions: set[asyncio.Task[None]],
) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.connect_accepted_socket(
            lambda: SmtpProtocol(sctx, counters, sessions),
            conn,
            ssl=sctx.ssl_context,
            ssl_handshake_timeout=sctx.starttls_timeout,
        )
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        conn.close()
        await log_failed_tls_accept(sctx, peer, exc)
