"""Durability: once the client has read `250 2.0.0 Ok: queued as ID`, the message survives
`kill -9` of the supervisor and all workers, decodes completely, and the instance starts
again over the stale pid file and run directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, Server, Wire, cleanup, make_server

HELO = "client.example.test"


@pytest.fixture
def srv() -> Iterator[Server]:
    server = make_server(main={"local_header_rewrite_clients": "permit_sasl_authenticated"})
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


def test_queued_message_survives_kill_9(srv: Server) -> None:
    body = b"Subject: durable\r\n\r\n" + b"".join(b"line %d of the message\r\n" % i for i in range(2000))
    with Wire(srv.ports["smtp"]) as w:
        assert w.reply() == f"220 {HOSTNAME} ESMTP Postfix"
        assert w.cmd(f"EHLO {HELO}").endswith("250 CHUNKING")
        assert w.cmd(f"MAIL FROM:<a@example.net> SIZE={len(body)}") == "250 2.1.0 Ok"
        assert w.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        assert w.cmd("RCPT TO:<c@example.org>") == "250 2.1.5 Ok"
        assert w.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        w.send(body + b".\r\n")
        m = re.fullmatch(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{6,})", w.reply())
        assert m
        srv.kill_all()  # at once, before QUIT: supervisor and every worker
    queue_id = m.group(1)
    files = sorted(p.name for p in srv.incoming.iterdir())
    assert files == [queue_id]  # no temporary file left behind either
    envelope, content = srv.read_queue(queue_id)
    assert (envelope.queue_id, envelope.sender) == (queue_id, "a@example.net")
    assert [r.address for r in envelope.recipients] == ["b@example.org", "c@example.org"]
    assert envelope.size == len(body)
    received_end = content.index(b"\r\n", content.index(b"\tby ")) + 2
    assert content[received_end:].startswith(b"\t")  # the date line (two recipients: no "for")
    assert content[content.index(b"\r\n", received_end) + 2:] == body

    # Restart over the stale run state; the message is still there, and mail flows.
    srv.start()
    with Wire(srv.ports["smtp"]) as w:
        assert w.reply() == f"220 {HOSTNAME} ESMTP Postfix"
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    assert queue_id in srv.queue_ids()
