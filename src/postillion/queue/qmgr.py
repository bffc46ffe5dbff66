"""The queue manager: moves mail from incoming/ through active/ to delivery, deferred/ or gone.

Owns: the message life cycle on disk and the order of the durable steps, so that a crash at any
moment loses nothing and never repeats a delivery whose outcome was recorded:

1. incoming/ID → active/ID (rename; Postfix logs ``from=<...>, size=N, nrcpt=N (queue active)``);
2. each pending recipient is routed and delivered; its outcome is appended to the queue file
   (fsync'd) before the next step — a recipient with a final status is never delivered again;
3. bounces are queued as new messages *before* the failed recipients are marked final, so a
   crash can repeat a notification but never lose one;
4. all recipients final → the file is removed (``removed``); otherwise it moves to deferred/
   with its next attempt time as mtime (Postfix's convention).

At start-up, files left in active/ by a crash go back to incoming/ (Postfix qmgr does the same).
Must not import: server, cli.  Agents come in as a mapping transport → DeliveryAgent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from postillion.delivery import (
    DeliveryAgent,
    DeliveryRequest,
    RecipientResult,
    merge_member_results,
)
from postillion.maillog import QueueLog
from postillion.queue import scheduler
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import QueueRecordError, RecipientStatus
from postillion.queue.store import ACTIVE, DEFERRED, INCOMING, QueueEntry, QueueStore

SCAN_INTERVAL = 1.0  # seconds between incoming/ scans when nobody wakes us


@dataclass(frozen=True, slots=True, kw_only=True)
class QmgrSettings:
    routing: scheduler.Routing
    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    queue_run_delay: float = 300.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 0.0
    destination_concurrency_limit: int = 20
    destination_recipient_limit: int = 50
    # <transport>_destination_{concurrency,recipient}_limit where they differ from the defaults
    transport_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def limits(self, transport: str) -> tuple[int, int]:
        return self.transport_limits.get(
            transport, (self.destination_concurrency_limit, self.destination_recipient_limit)
        )
    myhostname: str = "localhost"
    mail_name: str = "Postfix"


@dataclass(frozen=True, slots=True)
class Notice:
    """One delivery status notice to post: its envelope, and how to build its content once the
    new message's queue id is known (Postfix's notices carry their own id in their headers)."""

    sender: str
    recipient: str
    build: Callable[[str], bytes | None]  # queue id → message, or None: nothing to send


# The notices for one event: (kind "failure"|"delay"|"success", entry, outcomes
# [(Recipient, RecipientStatus)], now) → every notice Postfix would post (the sender's, a
# postmaster copy, a double bounce), each possibly empty once NOTIFY has been applied.
BounceBuilder = Callable[
    [str, QueueEntry, list[tuple[Recipient, RecipientStatus]], float], list[Notice]
]

_NOTICE_LOG = {"failure": "non-delivery", "delay": "delay status", "success": "delivery status"}


@dataclass
class QueueManager:
    store: QueueStore
    settings: QmgrSettings
    agents: Mapping[str, DeliveryAgent]
    log: QueueLog
    bounce: BounceBuilder | None = None
    transport_lookup: Callable[[str], Awaitable[str | None]] | None = None
    clock: Callable[[], float] = time.time
    _busy: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _destinations: dict[tuple[str, str], asyncio.Semaphore] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _last_deferred_scan: float = float("-inf")
    _active_since: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ life cycle
    def recover(self) -> None:
        """Files a crashed queue manager left in active/ go back to incoming/."""
        for queue_id in self.store.list(ACTIVE):
            with contextlib.suppress(FileNotFoundError):
                self.store.move(queue_id, ACTIVE, INCOMING)

    def wake(self, *, flush: bool = False) -> None:
        if flush:
            self._last_deferred_scan = float("-inf")
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.recover()
        while not stop.is_set():
            self._wake.clear()
            self.scan()
            stopper = asyncio.ensure_future(stop.wait())
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({stopper, waker}, timeout=SCAN_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            waker.cancel()
        await self.drain()

    async def drain(self, timeout: float = 60.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def scan(self) -> None:
        """Start work on new mail, and on deferred mail whose time has come."""
        now = self.clock()
        for queue_id in self.store.list(INCOMING):
            self._start(queue_id, INCOMING)
        if now - self._last_deferred_scan >= min(self.settings.queue_run_delay, SCAN_INTERVAL * 10):
            self._last_deferred_scan = now
            for queue_id in self.store.list(DEFERRED):
                try:
                    due = self.store.next_attempt(DEFERRED, queue_id) <= now
                except FileNotFoundError:
                    continue
                if due:
                    self._start(queue_id, DEFERRED)

    def _start(self, queue_id: str, queue: str) -> None:
        if queue_id in self._busy:
            return
        try:
            self.store.move(queue_id, queue, ACTIVE)
        except FileNotFoundError:
            return  # an admin command got there first
        self._busy.add(queue_id)
        self._active_since[queue_id] = self.clock()
        task = asyncio.get_running_loop().create_task(self._process(queue_id, fresh=queue == INCOMING))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one message
    async def _process(self, queue_id: str, *, fresh: bool) -> None:
        try:
            try:
                entry = self.store.load(ACTIVE, queue_id)
            except QueueRecordError as exc:
                self.store.quarantine(ACTIVE, queue_id)
                self.log.warning(f"{queue_id}: corrupt queue file moved to corrupt/: {exc}")
                return
            env = entry.envelope
            self.log.active(queue_id, env.sender, len(entry.content), len(env.recipients))
            await self._deliver_pending(entry)
            self._finish(entry.queue_id)
        except Exception as exc:  # keep the message; a bug must not lose mail
            self.log.warning(f"{queue_id}: queue manager error, message deferred: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                self._defer_file(queue_id)
        finally:
            self._busy.discard(queue_id)
            self._active_since.pop(queue_id, None)

    async def _deliver_pending(self, entry: QueueEntry) -> None:
        env = entry.envelope
        now = self.clock()
        pending = entry.pending()
        s = self.settings
        if pending and scheduler.expired(
            now, env.arrival_time, sender=env.sender,
            lifetime=s.maximal_queue_lifetime, bounce_lifetime=s.bounce_queue_lifetime,
        ):
            self.log.expired(entry.queue_id, env.sender)
            failed = []
            for rcpt in pending:
                last = entry.last_deferral(rcpt)
                failed.append(RecipientStatus(
                    rcpt=rcpt, status="expired", dsn=last.dsn if last else "4.4.7",
                    relay=last.relay if last else "none",
                    text=last.text if last else "message expired", time=now,
                ))
            await self._bounce_and_record(entry, failed)
            return
        routed = []
        for rcpt in pending:
            recipient = env.recipients[rcpt]
            r = await scheduler.route(recipient.address, s.routing, self.transport_lookup)
            routed.append((rcpt, recipient, r))
        jobs: list[tuple[scheduler.Route, list[tuple[int, Recipient]]]] = []
        for transport in dict.fromkeys(r.transport for _, _, r in routed):
            mine = [x for x in routed if x[2].transport == transport]
            jobs += scheduler.batches(mine, recipient_limit=s.limits(transport)[1])
        results = await asyncio.gather(*(self._deliver(entry, r, members) for r, members in jobs))
        bounced: list[RecipientStatus] = []
        sent: list[RecipientStatus] = []
        for statuses in results:
            for st in statuses:
                if st.status == "bounced":
                    bounced.append(st)
                    continue
                self.store.append_status(ACTIVE, entry.queue_id, st)
                if st.final and "SUCCESS" in (env.recipients[st.rcpt].notify or ()):
                    sent.append(st)
        if sent and self.bounce is not None:
            # NOTIFY=SUCCESS: a report after the fact; a crash before it only loses the report
            pairs = [(env.recipients[st.rcpt], st) for st in sent]
            await self._post_notices("success", entry, pairs)
        if bounced:
            await self._bounce_and_record(entry, bounced)
        await self._delay_warning(entry, results)

    async def _delay_warning(self, entry: QueueEntry, results: list[list[RecipientStatus]]) -> None:
        """One "Delayed Mail (still being retried)" notice per recipient, once the message is
        delay_warning_time old; recorded as a "delayed" status so it is sent once."""
        s = self.settings
        now = self.clock()
        env = entry.envelope
        if s.delay_warning_time <= 0 or now - env.arrival_time < s.delay_warning_time:
            return
        delayed = [st for statuses in results for st in statuses
                   if st.status == "deferred" and not entry.delay_warned(st.rcpt)]
        if not delayed or self.bounce is None:
            return
        pairs = [(env.recipients[st.rcpt], st) for st in delayed]
        await self._post_notices("delay", entry, pairs)
        for st in delayed:
            self.store.append_status(ACTIVE, entry.queue_id, RecipientStatus(
                rcpt=st.rcpt, status="delayed", dsn=st.dsn, relay=st.relay, text=st.text, time=now))

    async def _deliver(
        self, entry: QueueEntry, r: scheduler.Route, members: list[tuple[int, Recipient]]
    ) -> list[RecipientStatus]:
        agent = self.agents.get(r.transport)
        started = self.clock()
        if agent is None:
            results = [
                RecipientResult(rcpt=i, status="deferred", dsn="4.3.5", relay="none",
                                text=f"mail transport unavailable: {r.transport}")
                for i, _ in members
            ]
        else:
            sem = self._destinations.setdefault(
                (r.transport, r.nexthop), asyncio.Semaphore(max(1, self.settings.limits(r.transport)[0]))
            )
            async with sem:
                started = self.clock()
                request = DeliveryRequest(
                    queue_id=entry.queue_id, envelope=entry.envelope, content=entry.content,
                    recipients=members, transport=r.transport, nexthop=r.nexthop,
                )
                results = await agent.deliver(request)
        for res in results:
            self._log_result(entry, r, res, started)
        # Alias members: each was logged; the queue file records one status per queued
        # recipient, the worst member's (see delivery.merge_member_results).
        now = self.clock()
        return [RecipientStatus(rcpt=res.rcpt, status=res.status, dsn=res.dsn, relay=res.relay,
                                text=res.text, time=now)
                for res in merge_member_results(results)]

    def _log_result(
        self, entry: QueueEntry, r: scheduler.Route, res: RecipientResult, started: float
    ) -> None:
        now = self.clock()
        env = entry.envelope
        recipient = env.recipients[res.rcpt]
        active = self._active_since.get(entry.queue_id, started)
        a = max(0.0, active - env.arrival_time)
        b = max(0.0, started - active)
        process = {"relay": "relay/smtp"}.get(r.transport, r.transport)
        orig = recipient.orcpt.partition(";")[2] if recipient.orcpt else None
        to = recipient.address
        if res.address is not None and res.address != recipient.address:
            # an alias member: Postfix logs to=<member>, orig_to=<the recipient as received>
            to, orig = res.address, orig or recipient.address
        self.log.delivery(
            process, entry.queue_id, to=to, orig_to=orig, relay=res.relay,
            delay=max(0.0, now - env.arrival_time), delays=(a, b, res.conn_time, res.xfer_time),
            dsn=res.dsn, status=res.status, text=res.text, conn_use=res.conn_use,
        )

    async def _bounce_and_record(self, entry: QueueEntry, failed: list[RecipientStatus]) -> None:
        """Queue the notification first, then mark the recipients final (see module doc)."""
        if self.bounce is not None:
            pairs = [(entry.envelope.recipients[st.rcpt], st) for st in failed]
            await self._post_notices("failure", entry, pairs)
        for st in failed:
            self.store.append_status(ACTIVE, entry.queue_id, st)

    async def _post_notices(
        self, kind: str, entry: QueueEntry, outcomes: list[tuple[Recipient, RecipientStatus]]
    ) -> None:
        assert self.bounce is not None
        await asyncio.to_thread(self._queue_notices, kind, entry, outcomes)

    def bounce_unqueued(self, entry: QueueEntry, failed: list[RecipientStatus]) -> None:
        """Non-delivery notices for a message that never entered the queue: local submissions
        that cleanup rejected (Postfix's CLEANUP_FLAG_BOUNCE: pickup mail cannot be answered
        with a 5xx, so the sender gets a bounce).  Blocking; the caller then drops the input."""
        if self.bounce is None:
            return
        self._queue_notices("failure", entry,
                            [(entry.envelope.recipients[st.rcpt], st) for st in failed])
        self.wake()

    def _queue_notices(
        self, kind: str, entry: QueueEntry, outcomes: list[tuple[Recipient, RecipientStatus]]
    ) -> None:
        """Build, queue and log the notices of ``kind`` for ``outcomes`` (blocking: fsyncs)."""
        assert self.bounce is not None
        for notice in self.bounce(kind, entry, outcomes, self.clock()):
            new_id = self._queue_notice(notice)
            if new_id is not None:
                to = "sender" if notice.sender == "" else "postmaster"
                self.log.notification(entry.queue_id, _NOTICE_LOG[kind], new_id, to=to)

    def _queue_notice(self, notice: Notice) -> str | None:
        with self.store.begin() as pending:
            message = notice.build(pending.queue_id)
            if message is None:
                return None  # the context manager removes the unused queue file
            envelope = Envelope(
                sender=notice.sender,
                recipients=[Recipient(address=notice.recipient)],
                arrival_time=self.clock(),
                protocol="ESMTP",
                service="bounce",
            )
            return pending.commit(envelope, message)

    def _finish(self, queue_id: str) -> None:
        entry = self.store.load(ACTIVE, queue_id)
        if not entry.pending():
            self.store.remove(ACTIVE, queue_id)
            self.log.removed(queue_id)
        else:
            self._defer_file(queue_id, entry.envelope.arrival_time)

    def _defer_file(self, queue_id: str, arrival: float | None = None) -> None:
        now = self.clock()
        if arrival is None:
            arrival = now
        s = self.settings
        when = scheduler.next_attempt(now, arrival, minimal=s.minimal_backoff_time, maximal=s.maximal_backoff_time)
        self.store.set_next_attempt(ACTIVE, queue_id, when)
        self.store.move(queue_id, ACTIVE, DEFERRED)
