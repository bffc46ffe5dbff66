"""The smtp delivery agent against Postfix's smtp-sink(1): accepted, soft- and hard-rejected
recipients, rejected end of data and dropped connections, with Postfix's status texts.

smtp-sink is a real (if minimal) Postfix SMTP server; the test is skipped when it is missing.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.smtp import SmtpAgent
from postillion.queue.envelope import Envelope, Recipient

pytestmark = pytest.mark.interop

SMTP_SINK = "/usr/sbin/smtp-sink"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("smtp-sink did not start listening")


class Sink:
    def __init__(self, *options: str) -> None:
        if shutil.which(SMTP_SINK) is None:
            pytest.skip(f"{SMTP_SINK} is not installed (Debian package postfix)")
        self.port = _free_port()
        # -v shows the conversation on stdout; as root smtp-sink insists on dropping privileges.
        args = [SMTP_SINK, "-v", *options]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += [f"127.0.0.1:{self.port}", "10"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # The probe connection of _wait_listening shows up as one empty session in the output.
        _wait_listening(self.port, self.proc)

    def stop(self) -> str:
        """The conversation, one command per line, once both sessions (the start-up probe and
        the agent's) have ended; without the "smtp-sink: " log prefix."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b": disconnect\n") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
        self.proc.terminate()
        self.proc.communicate(timeout=10)
        return "".join(line.partition(": ")[2] + "\n" for line in data.decode().splitlines())

    @property
    def nexthop(self) -> str:
        return f"[127.0.0.1]:{self.port}"


@pytest.fixture
def sink_factory() -> Iterator:
    sinks: list[Sink] = []

    def make(*options: str) -> Sink:
        sinks.append(Sink(*options))
        return sinks[-1]

    yield make
    for s in sinks:
        if s.proc.poll() is None:
            s.proc.terminate()
            s.proc.communicate(timeout=10)


def deliver(nexthop: str, *rcpts: Recipient | str, **env) -> list[RecipientResult]:
    envelope = Envelope(sender="sender@me.test",
                        recipients=[r if isinstance(r, Recipient) else Recipient(address=r) for r in rcpts], **env)
    request = DeliveryRequest(queue_id="4QID", envelope=envelope,
                              content=b"From: sender@me.test\r\nSubject: t\r\n\r\n.body\r\n",
                              recipients=list(enumerate(envelope.recipients)), transport="smtp",
                              nexthop=nexthop)
    # One message, no backlog: Postfix would not cache the connection, so neither do we here
    # (with caching the session would end in the cache, not with QUIT).
    agent = SmtpAgent(Params.from_dict({"myhostname": "me.test", "inet_protocols": "ipv4",
                                        "smtp_connection_cache_on_demand": "no"}))
    return asyncio.run(asyncio.wait_for(agent.deliver(request), 30))


def test_sink_accepts(sink_factory) -> None:
    sink = sink_factory()
    results = deliver(sink.nexthop, Recipient(address="a@remote.test", notify=("FAILURE", "DELAY")),
                      "b@remote.test", ret="FULL", envid="ENV+1")
    relay = f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert [(r.status, r.dsn, r.relay, r.text) for r in results] == [("sent", "2.0.0", relay, "250 2.0.0 Ok")] * 2
    out = sink.stop()
    assert "MAIL FROM:<sender@me.test> BODY=7BIT ENVID=ENV+2B1 RET=FULL\n" in out
    assert "RCPT TO:<a@remote.test> NOTIFY=FAILURE,DELAY\nRCPT TO:<b@remote.test>\nDATA\n.\nQUIT\n" in out


def test_sink_soft_rejects_recipients(sink_factory) -> None:
    sink = sink_factory("-r", "RCPT")
    results = deliver(sink.nexthop, "a@remote.test", "b@remote.test")
    text = "host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed (in reply to RCPT TO command)"
    assert [(r.status, r.dsn, r.text) for r in results] == [("deferred", "4.3.0", text)] * 2
    # Nobody accepted and no PIPELINING (-r implies -p): no DATA, just QUIT.
    assert "RCPT TO:<b@remote.test>\nQUIT\n" in sink.stop()


def test_sink_hard_rejects_with_custom_reply(sink_factory) -> None:
    sink = sink_factory("-f", "RCPT", "-B", "550 5.1.1 Recipient address rejected: User unknown")
    (result,) = deliver(sink.nexthop, "nobody@remote.test")
    assert (result.status, result.dsn, result.text) == (
        "bounced", "5.1.1", "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 Recipient address rejected: "
                            "User unknown (in reply to RCPT TO command)")


def test_sink_rejects_end_of_data(sink_factory) -> None:
    sink = sink_factory("-r", ".")
    (result,) = deliver(sink.nexthop, "a@remote.test")
    assert (result.status, result.dsn, result.text) == (
        "deferred", "4.3.0",
        "host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed (in reply to end of DATA command)")


def test_sink_rejects_mail_from(sink_factory) -> None:
    sink = sink_factory("-f", "MAIL")
    results = deliver(sink.nexthop, "a@remote.test", "b@remote.test")
    text = "host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command failed (in reply to MAIL FROM command)"
    assert [(r.status, r.dsn, r.text) for r in results] == [("bounced", "5.3.0", text)] * 2


def test_sink_drops_connection(sink_factory) -> None:
    sink = sink_factory("-q", "RCPT")
    (result,) = deliver(sink.nexthop, "a@remote.test")
    assert (result.status, result.dsn, result.relay, result.text) == (
        "deferred", "4.4.2", f"127.0.0.1[127.0.0.1]:{sink.port}",
        "lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO")


def test_sink_421_after_data(sink_factory) -> None:
    sink = sink_factory("-Q", "DATA")
    (result,) = deliver(sink.nexthop, "a@remote.test")
    assert (result.status, result.dsn, result.text) == (
        "deferred", "4.0.0",
        "host 127.0.0.1[127.0.0.1] said: 421 4.0.0 Server closing connection (in reply to DATA command)")
