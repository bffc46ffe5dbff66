"""kill -9 in the middle of queue state changes: afterwards every message is in exactly one
queue and decodes (a torn status line at most is lost), whatever the instant of the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.store import QUEUE_NAMES, QueueStore

MESSAGES = 12
ROUNDS = 8

# The child: forever move random messages between queues and append statuses to them.
CHILD = r"""
import random, sys, time
from pathlib import Path
from postillion.queue.record import RecipientStatus
from postillion.queue.store import QueueStore

store = QueueStore(Path(sys.argv[1]))
ids = sys.argv[2:]
rng = random.Random()
moves = {"incoming": "active", "active": "deferred", "deferred": "hold", "hold": "incoming"}
print("ready", flush=True)
n = 0
while True:
    qid = rng.choice(ids)
    queue = store.locate(qid)
    text = "x" * rng.randrange(1, 5000)  # long lines make torn writes likelier
    st = RecipientStatus(rcpt=rng.randrange(3), status="deferred", dsn="4.4.1", relay="none",
                         text=text, time=time.time())
    store.append_status(queue, qid, st)
    store.move(qid, queue, moves[queue])
    store.set_next_attempt(moves[queue], qid, time.time() + 300)
    n += 1
"""


def where(store: QueueStore, qid: str) -> list[str]:
    return [q for q in QUEUE_NAMES if (store.queue_directory / q / qid).exists()]


@pytest.mark.timeout(120)
def test_kill_9_during_moves_and_appends_loses_nothing(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "q")
    store.ensure_layout()
    env = Envelope(sender="a@example.test", recipients=[Recipient(address=f"r{i}@example.test")
                                                        for i in range(3)])
    ids = [store.begin().commit(env, b"Subject: crash\r\n\r\n" + b"x" * 5000 + b"\r\n")
           for _ in range(MESSAGES)]
    appended = 0
    for round_ in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store.queue_directory), *ids],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(0.05 + 0.037 * round_)  # a different instant in the loop each round
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        total = 0
        for qid in ids:
            queues = where(store, qid)
            assert len(queues) == 1, (qid, queues)
            entry = store.load(queues[0], qid)
            assert entry.content.startswith(b"Subject: crash\r\n")
            total += len(entry.statuses)
        assert total >= appended  # nothing that was complete before is ever lost
        appended = total
        for q in QUEUE_NAMES:  # no temporary files either (no version 1 upgrades here)
            assert [n for n in os.listdir(store.queue_directory / q) if n.startswith(".")] == []
    assert appended > 0, appended  # the child really did work
