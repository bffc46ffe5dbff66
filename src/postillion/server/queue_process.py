"""The queue manager process: qmgr plus the delivery agents, forked by the supervisor.

Owns: building the QueueManager from main.cf (routing, limits, agents, bounces), the wake-up
socket, the one-queue-manager lock, and a graceful stop on SIGTERM (deliveries in progress
finish; the next generation's queue manager waits for the lock).
Must not import: cli.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from postillion.config import Configuration, Params
from postillion.delivery import DeliveryAgent
from postillion.errors import ConfigError
from postillion.maillog import QueueLog
from postillion.queue import scheduler
from postillion.queue.maildrop import Pickup, pickup_settings
from postillion.queue.qmgr import Notice, QmgrSettings, QueueManager
from postillion.queue.wakeup import WakeSocket, acquire_lock, lock_path, socket_path
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.store import QueueStore
from postillion.server.local_service import LocalServiceAgent, is_local_service
from postillion.server.local_service import socket_path as local_socket_path
from postillion.tables import TableList, open_tables

# transport name → "module:Class" of its agent, imported when first used (uvicorn style)
AGENTS = {
    "smtp": "postillion.delivery.smtp:SmtpAgent",
    "relay": "postillion.delivery.smtp:SmtpAgent",
    "lmtp": "postillion.delivery.lmtp:LmtpAgent",
    "local": "postillion.delivery.local:LocalAgent",
    "virtual": "postillion.delivery.virtual:VirtualAgent",
}


def load_agents(params: Params, log: QueueLog, *, forwarder: Any = None,
                local_socket: Path | None = None) -> dict[str, DeliveryAgent]:
    """One agent per transport.  With ``local_socket`` (the privileged local service runs),
    ``local`` mail goes there; otherwise local(8) runs in this process with its rights."""
    agents: dict[str, DeliveryAgent] = {}
    if local_socket is not None:
        agents["local"] = LocalServiceAgent(local_socket, forwarder=forwarder)
    for transport, target in AGENTS.items():
        if transport in agents:
            continue
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue  # not built yet: its mail is deferred with "mail transport unavailable"
        try:
            agents[transport] = cls(
                params, forwarder=forwarder,
                warn=lambda text: log.warning(text, process="local"),
                info=lambda text: log.info(text, process="local"),
            ) if transport == "local" else cls(params)
        except ConfigError as exc:
            log.warning(f"transport {transport}: {exc}")
    return agents


def routing_from(params: Params) -> scheduler.Routing:
    def domains(name: str) -> frozenset[str]:
        return frozenset(d.lower() for d in params.get_list(name) if ":" not in d and "/" not in d)

    return scheduler.Routing(
        mydestination=domains("mydestination"),
        virtual_mailbox_domains=domains("virtual_mailbox_domains"),
        relay_domains=domains("relay_domains"),
        relayhost=params.get("relayhost").strip(),
        default_transport=params.get("default_transport") or "smtp",
        relay_transport=params.get("relay_transport") or "relay",
        local_transport=params.get("local_transport") or "local",
        virtual_transport=params.get("virtual_transport") or "virtual",
    )


def settings_from(params: Params) -> QmgrSettings:
    return QmgrSettings(
        routing=routing_from(params),
        minimal_backoff_time=params.get_time("minimal_backoff_time"),
        maximal_backoff_time=params.get_time("maximal_backoff_time"),
        queue_run_delay=params.get_time("queue_run_delay"),
        maximal_queue_lifetime=params.get_time("maximal_queue_lifetime"),
        bounce_queue_lifetime=params.get_time("bounce_queue_lifetime"),
        delay_warning_time=params.get_time("delay_warning_time"),
        destination_concurrency_limit=params.get_int("default_destination_concurrency_limit"),
        destination_recipient_limit=params.get_int("default_destination_recipient_limit"),
        transport_limits={
            t: (params.get_int(f"{t}_destination_concurrency_limit"),
                params.get_int(f"{t}_destination_recipient_limit"))
            for t in ("smtp", "relay", "lmtp", "local", "virtual")
        },
        myhostname=params.get("myhostname"),
        mail_name=params.get("mail_name") or "Postfix",
    )


def bounce_builder(params: Params) -> Any:
    """Every notice Postfix's bounce(8) would post for an event (cleanup/bounce.py builds them)."""
    from postillion.cleanup import bounce

    myhostname = params.get("myhostname")
    myorigin = params.get("myorigin") or myhostname
    targets: dict[str, Any] = dict(
        myorigin=myorigin,
        notify_classes=[c.lower() for c in params.get_list("notify_classes")],
        bounce_notice_recipient=params.get("bounce_notice_recipient") or "postmaster",
        double_bounce_notice_recipient=params.get("2bounce_notice_recipient") or "postmaster",
        delay_notice_recipient=params.get("delay_notice_recipient") or "postmaster",
        double_bounce_sender=params.get("double_bounce_sender") or "double-bounce",
    )
    size_limit = params.get_int("bounce_size_limit")

    def notices(kind: str, entry: Any, outcomes: list[Any], now: float) -> list[Notice]:
        when = datetime.datetime.fromtimestamp(now).astimezone()
        out = []
        for t in bounce.notice_targets(entry.envelope, kind, **targets):
            common = dict(envelope=entry.envelope, content=entry.content, queue_id=entry.queue_id,
                          myhostname=myhostname, myorigin=myorigin, now=when, to=t.recipient)

            def build(bounce_id: str, t: Any = t, common: dict[str, Any] = common) -> bytes | None:
                if kind == "success":
                    result: bytes | None = bounce.success_notification(
                        delivered=outcomes, bounce_id=bounce_id, **common)
                elif kind == "delay":
                    result = bounce.delay_warning(
                        delayed=outcomes, bounce_id=bounce_id, postmaster_copy=t.postmaster_copy,
                        delay_warning_time=params.get_time("delay_warning_time"),
                        maximal_queue_lifetime=params.get_time("maximal_queue_lifetime"),
                        bounce_size_limit=size_limit, **common)
                else:
                    result = bounce.non_delivery_report(
                        failed=outcomes, bounce_id=bounce_id, postmaster_copy=t.postmaster_copy,
                        bounce_size_limit=size_limit, **common)
                return result

            out.append(Notice(sender=t.sender, recipient=t.recipient, build=build))
        return out

    return notices


class QueueForwarder:
    """The local agent's way to send alias members in other domains onward: a new queue file
    from the original sender (Postfix's local(8) does the same through cleanup)."""

    def __init__(self, store: QueueStore, wake: Any) -> None:
        self.store = store
        self.wake = wake

    async def forward(self, *, sender: str, recipients: list[str], content: bytes) -> str:
        def commit() -> str:
            env = Envelope(sender=sender, recipients=[Recipient(address=r) for r in recipients],
                           arrival_time=time.time(), protocol="ESMTP", service="local")
            with self.store.begin() as pending:
                return pending.commit(env, content)

        queue_id = await asyncio.to_thread(commit)
        self.wake()
        return queue_id


def transport_lookup(params: Params) -> Any:
    tables = TableList(open_tables(params.get("transport_maps"), params.config_dir))
    if not tables:
        return None
    return tables.lookup


PICKUP_INTERVAL = 1.0  # seconds between maildrop scans; users without the wake socket wait this long


async def run_pickup(pickup: Pickup, stop: asyncio.Event, woken: asyncio.Event) -> None:
    """pickup(8) next to the queue manager: scan maildrop/ every second and when woken."""
    try:
        pickup.ensure_directory()
    except OSError as exc:
        pickup.log.warning(f"maildrop directory: {exc}", process="pickup")
    while not stop.is_set():
        woken.clear()
        for name in pickup.names():
            try:
                pickup.process(name)
            except Exception as exc:  # noqa: BLE001 -- a bug must not stop local submission for everyone
                pickup.log.warning(f"maildrop/{name[:100]}: {type(exc).__name__}: {exc}", process="pickup")
            await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), PICKUP_INTERVAL)


def _local_socket(cfg: Configuration, store: QueueStore) -> Path | None:
    """The privileged local service's socket, when master.cf has the service and the
    supervisor (as root) created it; None keeps local(8) in this process."""
    if not any(is_local_service(s) for s in cfg.services):
        return None
    path = local_socket_path(store.queue_directory)
    return path if path.is_socket() else None


def qmgr_main(cfg: Configuration, wctx: Any) -> int:
    return asyncio.run(_serve(cfg, wctx))


async def _serve(cfg: Configuration, wctx: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    params = cfg.params()
    log = QueueLog(params.get("syslog_name") or "postfix", sink=wctx.sinks)
    store = QueueStore(
        params.path("queue_directory") or Path(params.config_dir) / "spool",
        long_queue_ids=params.get_bool("enable_long_queue_ids"),
    )
    store.ensure_layout()
    lock_fd = await acquire_lock(lock_path(store.queue_directory), stop)
    if lock_fd is None:
        return 0
    try:
        qmgr: QueueManager | None = None
        forwarder = QueueForwarder(store, lambda: qmgr.wake() if qmgr is not None else None)
        agents = load_agents(params, log, forwarder=forwarder, local_socket=_local_socket(cfg, store))
        qmgr = QueueManager(
            store=store, settings=settings_from(params),
            agents=agents,
            log=log, bounce=bounce_builder(params), transport_lookup=transport_lookup(params),
        )
        pickup = Pickup(store, pickup_settings(params), log, on_queued=lambda _id: qmgr.wake(),
                        on_rejected=lambda rejected: qmgr.bounce_unqueued(*rejected))
        pickup_woken = asyncio.Event()

        def on_wake(data: bytes) -> None:
            qmgr.wake(flush=data.startswith(b"F"))
            pickup_woken.set()

        wake = WakeSocket(socket_path(store.queue_directory))
        wake.open(on_wake)
        pickup_task = asyncio.create_task(run_pickup(pickup, stop, pickup_woken))
        try:
            await qmgr.run(stop)
        finally:
            pickup_task.cancel()
            wake.close()
            # Cached SMTP connections get their QUIT instead of a dropped socket.
            for agent in agents.values():
                aclose = getattr(agent, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(aclose(), 5)
    finally:
        with contextlib.suppress(OSError):
            os.close(lock_fd)
    return 0
