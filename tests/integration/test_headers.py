"""cleanup's header completion follows local_header_rewrite_clients.

Our default is Postfix's `permit_inet_interfaces` plus `permit_sasl_authenticated` (submission):
mail from this machine or from a logged-in user gets Message-Id:, Date: and From: when missing;
mail from elsewhere is left as it came.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, Server, cleanup, make_server

MESSAGE = b"Subject: bare\r\n\r\nno date, no id\r\n"


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = make_server()
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


def send(srv: Server, source: str) -> bytes:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], source_address=(source, 0), timeout=10) as c:
        before = srv.queue_ids()
        c.sendmail("a@example.net", [f"root@{HOSTNAME}"], MESSAGE)
    (queue_id,) = srv.queue_ids() - before
    _, content = srv.read_queue(queue_id)
    return content


def test_local_client_gets_missing_headers(srv: Server) -> None:
    content = send(srv, "127.0.0.1")
    headers = content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    names = [h.split(b":", 1)[0] for h in headers if not h.startswith((b"\t", b" "))]
    assert names == [b"Received", b"Subject", b"Message-Id", b"Date", b"From"]
    assert b"From: a@example.net" in headers


def test_remote_client_is_left_alone(srv: Server) -> None:
    content = send(srv, "127.0.0.2")
    received, rest = content.split(b"\r\nSubject: ", 1)
    assert received.startswith(b"Received: from ")
    assert b"Subject: " + rest == MESSAGE  # nothing added after our Received:
