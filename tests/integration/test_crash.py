"""Crash test: kill -9 postillion A at random moments under load; nothing acknowledged is lost.

A (smtpd workers + queue manager) relays through B (``relayhost = [127.0.0.1]:PORT``); B keeps
what it accepts in incoming/ (no queue manager), so B's files are the ground truth.  A few
client threads send to A for the whole test and remember, for every ``250 2.0.0 Ok: queued as
ID`` they read, the queue id and the Message-Id they sent.  Meanwhile A is killed with SIGKILL:

- round 1: the whole process group (supervisor, smtpd workers, queue manager), then restarted;
- round 2: one smtpd worker or the queue manager alone (the supervisor starts a new one).

The moments come from a seeded RNG.  After the load stops, ``postillion flush`` and waiting
for ``Mail queue is empty``; then every acknowledged message must be at B, with A's queue id in
its Received: header.  A kill between "B answered 250" and "A recorded sent" makes B get a
message twice; that window is unavoidable (Postfix has it too), so duplicates are only counted
and bounded: at most kills × default_destination_concurrency_limit.
"""

from __future__ import annotations

import os
import random
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from harness import Server, cleanup, make_server, postillion

SEED = 20240425
CLIENTS = 4  # concurrent client sessions sending to A
CONCURRENCY = 4  # A's default_destination_concurrency_limit: deliveries in flight to B
GROUP_KILLS = 3
WORKER_KILLS = ("smtpd", "qmgr", "smtpd", "qmgr")
MESSAGES_PER_CLIENT = 3000  # a bound on the load, far above what the test's time allows
PEER_HOST = "peer.example.test"
_QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Za-z]+)")
_MESSAGE_ID = re.compile(rb"^Message-Id: <([^>]+)>\r$", re.MULTILINE | re.IGNORECASE)
_RECEIVED_ID = re.compile(rb"\(Postfix\) with ESMTP id ([0-9A-Za-z]+)")

pytestmark = pytest.mark.timeout(180)


@dataclass
class Load:
    """Client threads sending to A; `acked` maps Message-Id → A's queue id from the 250."""

    port: int
    acked: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(CLIENTS):
            t = threading.Thread(target=self._client, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> int:
        """Stop the clients; how many were still sending (all, unless the load ran out)."""
        running = sum(t.is_alive() for t in self.threads)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a client thread is stuck"
        return running

    def _client(self, n: int) -> None:
        for i in range(MESSAGES_PER_CLIENT):
            if self.stop.is_set():
                return
            msgid = f"crash-{n}-{i}@client.example.test"
            body = (f"From: a@example.net\r\nTo: x{n}@example.org\r\nSubject: crash {n}/{i}\r\n"
                    f"Message-Id: <{msgid}>\r\n\r\nmessage {i} of client {n}\r\n").encode()
            with self.lock:
                self.attempts += 1
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
                    c.ehlo("client.example.test")
                    if c.mail("a@example.net")[0] != 250 or c.rcpt(f"x{n}@example.org")[0] != 250:
                        raise smtplib.SMTPException("refused")
                    code, text = c.data(body)
                    m = _QUEUED.fullmatch(text.decode())
                    if code == 250 and m:
                        with self.lock:
                            self.acked[msgid] = m.group(1)
                    else:
                        raise smtplib.SMTPException(f"{code} {text!r}")
            except (OSError, smtplib.SMTPException):
                # A is down or was killed mid-session: not acknowledged, so no promise made.
                with self.lock:
                    self.failures += 1
                time.sleep(0.05)


@pytest.fixture
def peer() -> Iterator[Server]:
    server = make_server(workers=2, main={"myhostname": PEER_HOST, "mynetworks": "127.0.0.0/8",
                                          "local_header_rewrite_clients": "permit_sasl_authenticated"})
    start(server)
    try:
        yield server
    finally:
        cleanup(server)


@pytest.fixture
def relay(peer: Server) -> Iterator[Server]:
    server = make_server(qmgr=True, workers=2, main={
        "relayhost": f"[127.0.0.1]:{peer.ports['smtp']}",
        "default_destination_concurrency_limit": str(CONCURRENCY),
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
    })
    start(server)
    try:
        yield server
    finally:
        cleanup(server)


def start(srv: Server) -> None:
    srv.start()


def current_status(srv: Server, timeout: float = 10.0) -> dict:
    """status.json as written by the running supervisor (not a killed one's leftover)."""
    assert srv.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        data = srv.status()
        if data.get("pid") == srv.proc.pid:
            return data
        assert time.monotonic() < deadline, f"no status from supervisor {srv.proc.pid}: {data}"
        time.sleep(0.05)


def pids_of(srv: Server, service: str) -> list[int]:
    names = {"smtpd": f"127.0.0.1:{srv.ports['smtp']}", "qmgr": "qmgr"}
    return [int(w["pid"]) for w in current_status(srv)["workers"]
            if not w.get("retiring") and w["service"] == names[service]]


def wait_for_respawn(srv: Server, service: str, victim: int, count: int, timeout: float = 15.0) -> None:
    """Wait until the supervisor has replaced `victim`: `count` processes again, none of them it."""
    deadline = time.monotonic() + timeout
    while True:
        pids = pids_of(srv, service)
        if victim not in pids and len(pids) == count:
            return
        assert time.monotonic() < deadline, (
            f"{service} {victim} was not replaced: {current_status(srv)}\n{srv.log_text()[-3000:]}")
        time.sleep(0.05)


def wait_until_queue_empty(srv: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = postillion(srv.config_dir, "queue").stdout
        if out == "Mail queue is empty\n":
            return
        assert time.monotonic() < deadline, f"A's queue did not drain:\n{out}\n{srv.log_text()[-3000:]}"
        time.sleep(0.25)


def arrived(peer: Server) -> tuple[Counter[str], dict[str, set[str]]]:
    """Message-Id → copies at B, and Message-Id → A's queue ids seen in their Received:."""
    copies: Counter[str] = Counter()
    a_ids: dict[str, set[str]] = {}
    for queue_id in peer.queue_ids():
        _, content = peer.read_queue(queue_id)
        m = _MESSAGE_ID.search(content)
        assert m, f"B's {queue_id} has no Message-Id:\n{content[:500]!r}"
        msgid = m.group(1).decode()
        copies[msgid] += 1
        a_ids.setdefault(msgid, set()).update(i.decode() for i in _RECEIVED_ID.findall(content))
    return copies, a_ids


def test_kill_9_under_load_loses_nothing_acknowledged(relay: Server, peer: Server) -> None:
    rng = random.Random(SEED)
    load = Load(relay.ports["smtp"])
    load.start()
    kills = 0
    running = 0
    try:
        # Round 1: the whole process group, restarted each time over its stale run state.
        for _ in range(GROUP_KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            relay.kill_all()
            kills += 1
            start(relay)
        # Round 2: one process at a time; each lived over a second, so no restart throttling.
        for service in WORKER_KILLS:
            time.sleep(rng.uniform(1.1, 2.0))
            pids = pids_of(relay, service)
            victim = rng.choice(pids)
            os.kill(victim, signal.SIGKILL)
            kills += 1
            wait_for_respawn(relay, service, victim, len(pids))
        time.sleep(0.5)
    finally:
        running = load.finish()

    postillion(relay.config_dir, "flush")
    wait_until_queue_empty(relay)
    corrupt = relay.config_dir / "data" / "spool" / "corrupt"
    assert sorted(os.listdir(corrupt)) == []

    copies, a_ids = arrived(peer)
    missing = sorted(m for m in load.acked if m not in copies)
    assert missing == [], f"acknowledged with 250 by A but never reached B: {missing}"
    wrong = {m: (qid, a_ids[m]) for m, qid in load.acked.items() if qid not in a_ids[m]}
    assert wrong == {}, "B's copy does not carry A's queue id from the 250"
    duplicates = sum(n - 1 for n in copies.values())
    print(f"\ncrash test: seed={SEED} kills={kills} (group {GROUP_KILLS}, single {len(WORKER_KILLS)}) "
          f"attempts={load.attempts} acknowledged={len(load.acked)} failed={load.failures} "
          f"arrived={len(copies)} duplicates={duplicates}")
    assert running == CLIENTS, "the load ran out before the last kill"
    assert len(load.acked) >= 50, "too little load to mean anything"
    assert kills == GROUP_KILLS + len(WORKER_KILLS)
    assert duplicates <= kills * CONCURRENCY
    # Every copy at B came from a message a client sent (nothing invented or mangled).
    assert set(copies) <= {f"crash-{n}-{i}@client.example.test"
                           for n in range(CLIENTS) for i in range(MESSAGES_PER_CLIENT)}
