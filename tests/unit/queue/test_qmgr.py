"""The queue manager's life cycle on a real queue directory, with scripted delivery agents.

The agents here stand in for remote servers (the real agents are tested against real peers);
what is under test is the order of durable steps, the log lines and the retry schedule.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.maillog import MemorySink, QueueLog
from postillion.queue import scheduler
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.qmgr import Notice, QmgrSettings, QueueManager
from postillion.queue.store import ACTIVE, CORRUPT, DEFERRED, INCOMING, QueueStore

ROUTING = scheduler.Routing(
    mydestination=frozenset({"mail.example.test"}),
    virtual_mailbox_domains=frozenset(),
    relay_domains=frozenset(),
    relayhost="",
)


class ScriptedAgent:
    """Answers each recipient by its local part: ok*, temp*, perm*."""

    def __init__(self) -> None:
        self.requests: list[DeliveryRequest] = []

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        self.requests.append(request)
        out = []
        for index, rcpt in request.recipients:
            local = rcpt.address.split("@")[0]
            if local.startswith("ok"):
                out.append(RecipientResult(rcpt=index, status="sent", dsn="2.0.0",
                                           relay="mx.example.org[192.0.2.7]:25",
                                           text="250 2.0.0 Ok: queued as X"))
            elif local.startswith("temp"):
                out.append(RecipientResult(rcpt=index, status="deferred", dsn="4.4.1",
                                           relay="mx.example.org[192.0.2.7]:25",
                                           text="connect to mx.example.org[192.0.2.7]:25: Connection refused"))
            else:
                out.append(RecipientResult(rcpt=index, status="bounced", dsn="5.1.1",
                                           relay="mx.example.org[192.0.2.7]:25",
                                           text="host mx.example.org[192.0.2.7] said: 550 5.1.1 no such user"))
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def queue_message(store: QueueStore, sender: str, rcpts: list[str], arrival: float) -> str:
    env = Envelope(sender=sender, recipients=[Recipient(address=r) for r in rcpts], arrival_time=arrival)
    with store.begin() as pending:
        return pending.commit(env, b"Subject: t\r\n\r\nbody\r\n")


def make(tmp_path: Path, bounce: bool = True) -> tuple[QueueManager, QueueStore, ScriptedAgent, MemorySink, Clock]:
    store = QueueStore(tmp_path / "spool")
    store.ensure_layout()
    agent = ScriptedAgent()
    sink = MemorySink()
    clock = Clock()

    def build_bounce(kind, entry, failed, now):  # noqa: ANN001, ANN202 - a tiny stand-in NDR
        body = b"Subject: Undelivered Mail Returned to Sender\r\n\r\n" + b"".join(
            r.address.encode() + b"\r\n" for r, _ in failed)
        return [Notice(sender="", recipient=entry.envelope.sender, build=lambda _id: body)]

    qmgr = QueueManager(
        store=store, settings=QmgrSettings(routing=ROUTING), agents={"smtp": agent},
        log=QueueLog("postfix", sink=sink), bounce=build_bounce if bounce else None, clock=clock,
    )
    return qmgr, store, agent, sink, clock


async def run_once(qmgr: QueueManager) -> None:
    qmgr.scan()
    await qmgr.drain()


def test_delivered_message_is_removed_and_logged(tmp_path: Path) -> None:
    qmgr, store, agent, sink, clock = make(tmp_path)
    qid = queue_message(store, "a@example.net", ["ok1@example.org"], clock.now - 1)
    asyncio.run(run_once(qmgr))
    assert store.list(INCOMING) == store.list(ACTIVE) == store.list(DEFERRED) == []
    assert sink.texts() == [
        f"{qid}: from=<a@example.net>, size=20, nrcpt=1 (queue active)",
        f"{qid}: to=<ok1@example.org>, relay=mx.example.org[192.0.2.7]:25, delay=1, "
        "delays=1/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)",
        f"{qid}: removed",
    ]
    assert [r.nexthop for r in agent.requests] == ["example.org"]


def test_partial_failure_bounces_defers_and_never_redelivers(tmp_path: Path) -> None:
    qmgr, store, agent, sink, clock = make(tmp_path)
    qid = queue_message(store, "a@example.net", ["ok@example.org", "temp@example.org", "perm@example.org"],
                        clock.now)
    asyncio.run(run_once(qmgr))
    assert store.list(DEFERRED) == [qid]
    entry = store.load(DEFERRED, qid)
    assert entry.pending() == [1]
    assert store.next_attempt(DEFERRED, qid) == clock.now + 300  # minimal_backoff_time
    bounces = store.list(INCOMING)
    assert len(bounces) == 1
    env, content = store.read(bounces[0])
    assert (env.sender, [r.address for r in env.recipients]) == ("", ["a@example.net"])
    assert content.endswith(b"perm@example.org\r\n")
    # Next run, after the backoff: only the deferred recipient is tried again.
    store.remove(INCOMING, bounces[0])
    agent.requests.clear()
    clock.now += 301
    qmgr._last_deferred_scan = float("-inf")
    asyncio.run(run_once(qmgr))
    assert [[r.address for _, r in req.recipients] for req in agent.requests] == [["temp@example.org"]]
    assert store.list(DEFERRED) == [qid]


def test_no_bounce_for_the_null_sender_builder_decides(tmp_path: Path) -> None:
    qmgr, store, _, _, clock = make(tmp_path, bounce=False)
    qid = queue_message(store, "", ["perm@example.org"], clock.now)
    asyncio.run(run_once(qmgr))
    assert store.list(INCOMING) == [] and store.list(DEFERRED) == []
    assert store.locate(qid) is None


def test_expired_message_is_returned(tmp_path: Path) -> None:
    qmgr, store, agent, sink, clock = make(tmp_path)
    qid = queue_message(store, "a@example.net", ["temp@example.org"], clock.now - 5 * 86400 - 1)
    asyncio.run(run_once(qmgr))
    assert agent.requests == []
    assert f"{qid}: from=<a@example.net>, status=expired, returned to sender" in sink.texts()
    assert store.locate(qid) is None
    assert len(store.list(INCOMING)) == 1  # the bounce


def test_crash_leftovers_in_active_are_recovered_without_repeating_deliveries(tmp_path: Path) -> None:
    qmgr, store, agent, _, clock = make(tmp_path)
    qid = queue_message(store, "a@example.net", ["ok@example.org", "temp@example.org"], clock.now)
    asyncio.run(run_once(qmgr))
    # Simulate a crash after the deferral was recorded but before the move to deferred/.
    store.move(qid, DEFERRED, ACTIVE)
    agent.requests.clear()
    qmgr.recover()
    assert store.list(INCOMING) == [qid]
    asyncio.run(run_once(qmgr))
    assert [[r.address for _, r in req.recipients] for req in agent.requests] == [["temp@example.org"]]


def test_corrupt_file_is_quarantined(tmp_path: Path) -> None:
    qmgr, store, _, sink, _ = make(tmp_path)
    (store.queue_directory / INCOMING / "ABCDEF123").write_bytes(b"garbage\n")
    asyncio.run(run_once(qmgr))
    assert store.list(CORRUPT) == ["ABCDEF123"]
    assert any(t.startswith("warning: ABCDEF123: corrupt queue file moved to corrupt/") for t in sink.texts())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@mail.example.test", scheduler.Route("local", "mail.example.test")),
        ("postmaster", scheduler.Route("local", "")),
        ("x@example.org", scheduler.Route("smtp", "example.org")),
    ],
)
def test_routing_classes(address: str, expected: scheduler.Route) -> None:
    assert asyncio.run(scheduler.route(address, ROUTING)) == expected


def test_relayhost_and_transport_maps() -> None:
    routing = scheduler.Routing(mydestination=frozenset(), virtual_mailbox_domains=frozenset(),
                                relay_domains=frozenset({"example.com"}), relayhost="[smarthost.test]:587")
    assert asyncio.run(scheduler.route("x@example.org", routing)) == scheduler.Route("smtp", "[smarthost.test]:587")
    assert asyncio.run(scheduler.route("x@a.example.com", routing)) == scheduler.Route("relay", "[smarthost.test]:587")

    async def lookup(key: str) -> str | None:
        return {"example.net": "lmtp:unix:/run/dovecot/lmtp", ".example.org": "smtp:[10.0.0.1]"}.get(key)

    assert asyncio.run(scheduler.route("x@example.net", routing, lookup)) == scheduler.Route("lmtp", "unix:/run/dovecot/lmtp")
    assert asyncio.run(scheduler.route("x@sub.example.org", routing, lookup)) == scheduler.Route("smtp", "[10.0.0.1]")


def test_backoff_doubles_up_to_the_maximum() -> None:
    t0 = 1000.0
    assert scheduler.next_attempt(t0 + 10, t0, minimal=300, maximal=4000) == t0 + 10 + 300
    assert scheduler.next_attempt(t0 + 1000, t0, minimal=300, maximal=4000) == t0 + 1000 + 1000
    assert scheduler.next_attempt(t0 + 9000, t0, minimal=300, maximal=4000) == t0 + 9000 + 4000


def test_delay_warning_is_sent_once(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "spool")
    store.ensure_layout()
    clock = Clock()
    kinds: list[tuple[str, list[str]]] = []

    def build(kind, entry, outcomes, now):  # noqa: ANN001, ANN202
        kinds.append((kind, [r.address for r, _ in outcomes]))
        body = b"Subject: Delayed Mail (still being retried)\r\n\r\n"
        return [Notice(sender="", recipient=entry.envelope.sender, build=lambda _id: body)]

    qmgr = QueueManager(
        store=store, settings=QmgrSettings(routing=ROUTING, delay_warning_time=3600),
        agents={"smtp": ScriptedAgent()}, log=QueueLog("postfix", sink=MemorySink()),
        bounce=build, clock=clock,
    )
    qid = queue_message(store, "a@example.net", ["temp@example.org", "ok@example.org"], clock.now - 7200)
    asyncio.run(run_once(qmgr))
    assert kinds == [("delay", ["temp@example.org"])]
    assert store.load(DEFERRED, qid).delay_warned(0)
    for notice in store.list(INCOMING):
        store.remove(INCOMING, notice)
    clock.now += 5000
    qmgr._last_deferred_scan = float("-inf")
    asyncio.run(run_once(qmgr))
    assert kinds == [("delay", ["temp@example.org"])]  # not again
    assert store.load(DEFERRED, qid).pending() == [0]


def test_real_notices_bounce_and_double_bounce(tmp_path: Path) -> None:
    """With the real notice builder: a failed message goes back to its sender; a failed bounce
    (null sender) never goes back to <>: with 2bounce in notify_classes it goes to the
    postmaster from double-bounce@ (Postfix's default drops it)."""
    from postillion.config import Params
    from postillion.server.queue_process import bounce_builder

    store = QueueStore(tmp_path / "spool")
    store.ensure_layout()
    clock = Clock()
    sink = MemorySink()
    qmgr = QueueManager(
        store=store, settings=QmgrSettings(routing=ROUTING), agents={"smtp": ScriptedAgent()},
        log=QueueLog("postfix", sink=sink), clock=clock,
        bounce=bounce_builder(Params.from_dict({"myhostname": "mail.example.test",
                                                "notify_classes": "resource, software, 2bounce"})),
    )
    first = queue_message(store, "a@example.net", ["perm@example.org"], clock.now)
    asyncio.run(run_once(qmgr))
    (ndr,) = store.list(INCOMING)
    env, content = store.read(ndr)
    assert (env.sender, [r.address for r in env.recipients]) == ("", ["a@example.net"])
    assert b"Subject: Undelivered Mail Returned to Sender" in content
    assert f"{first}: sender non-delivery notification: {ndr}" in sink.texts()
    store.remove(INCOMING, ndr)

    bounce = queue_message(store, "", ["perm2@example.org"], clock.now)
    asyncio.run(run_once(qmgr))
    (double,) = store.list(INCOMING)
    env, content = store.read(double)
    assert (env.sender, [r.address for r in env.recipients]) == (
        "double-bounce@mail.example.test", ["postmaster@mail.example.test"])
    assert b"\r\nSubject: Postmaster Copy: Undelivered Mail\r\n" in content
    assert f"{bounce}: postmaster non-delivery notification: {double}" in sink.texts()
