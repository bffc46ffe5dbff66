"""Mail flows onward: postillion A (queue manager on) relays through postillion B.

A's relayhost is B's port 25 service; B keeps what it accepts in incoming/ (no queue manager),
so the test can read exactly what A delivered.  Covered: delivery and its Postfix log lines, a
per-recipient 5xx turned into a non-delivery report that travels back through the same path,
and a peer that is down (deferred) and comes back (`postillion flush`).
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, Server, cleanup, make_server, postillion

PEER_HOST = "peer.example.test"


@pytest.fixture(scope="module")
def peer() -> Iterator[Server]:
    server = make_server(main={"myhostname": PEER_HOST, "mynetworks": "127.0.0.0/8",
                               "local_header_rewrite_clients": "permit_sasl_authenticated"})
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


DEAD_PORT = 9  # discard: nothing listens there on this machine


@pytest.fixture(scope="module")
def relay(peer: Server) -> Iterator[Server]:
    server = make_server(qmgr=True, main={
        "relayhost": f"[127.0.0.1]:{peer.ports['smtp']}",
        "transport_maps": f"inline:{{ tm.test=smtp:[127.0.0.1]:{DEAD_PORT} }}",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
        "local_header_rewrite_clients": "permit_sasl_authenticated",
    })
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


def send(srv: Server, rcpts: list[str], body: bytes = b"Subject: onward\r\n\r\nhello\r\n") -> str:
    mark = srv.mark()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as c:
        c.sendmail("a@example.net", rcpts, body)
    return srv.wait_for_log(r"\]: (\w+): client=", start=mark).group(1)


def wait_for_file(srv: Server, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(srv.queue_ids()) < count:
        assert time.monotonic() < deadline, f"peer has {srv.queue_ids()}"
        time.sleep(0.05)
    return sorted(srv.queue_ids())


def test_relayed_to_the_next_hop_with_postfix_log_lines(relay: Server, peer: Server) -> None:
    before = peer.queue_ids()
    qid = send(relay, ["x@example.org"])
    line = relay.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<x@example.org>.*", timeout=20).group(0)
    port = peer.ports["smtp"]
    assert re.fullmatch(
        rf"postfix/smtp\[\d+\]: {qid}: to=<x@example.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, "
        r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
        r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)",
        line,
    ), line
    relay.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed")
    remote_id = line.rsplit(" ", 1)[1].rstrip(")")
    assert remote_id in peer.queue_ids() - before
    env, content = peer.read_queue(remote_id)
    assert (env.sender, [r.address for r in env.recipients]) == ("a@example.net", ["x@example.org"])
    assert f"by {HOSTNAME} (Postfix) with ESMTP id {qid}".encode() in content  # A's Received:
    assert relay.queue_ids() == set()


def test_rejected_recipient_bounces_back_to_the_sender(relay: Server, peer: Server) -> None:
    before = peer.queue_ids()
    qid = send(relay, [f"nosuchuser@{PEER_HOST}"])
    line = relay.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<nosuchuser@{PEER_HOST}>.*", timeout=20).group(0)
    assert "dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 " in line, line
    ndr = relay.wait_for_log(rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery notification: (\w+)").group(1)
    relay.wait_for_log(rf"postfix/qmgr\[\d+\]: {ndr}: removed")
    new = [i for i in wait_for_file(peer, len(before) + 1) if i not in before]
    env, content = peer.read_queue(new[0])
    assert (env.sender, [r.address for r in env.recipients]) == ("", ["a@example.net"])
    assert b"Subject: Undelivered Mail Returned to Sender" in content
    assert b"Status: 5.1.1" in content


def test_peer_down_is_deferred_then_delivered_after_flush(relay: Server, peer: Server) -> None:
    peer.stop()
    try:
        qid = send(relay, ["later@example.org"])
        line = relay.wait_for_log(rf"{qid}: to=<later@example.org>.*status=deferred.*", timeout=20).group(0)
        assert "Connection refused" in line, line
        assert postillion(relay.config_dir, "queue").stdout.count(qid) == 1
    finally:
        peer.start()
    mark = relay.mark()
    postillion(relay.config_dir, "flush")
    relay.wait_for_log(rf"{qid}: to=<later@example.org>.*status=sent", start=mark, timeout=30)
    relay.wait_for_log(rf"{qid}: removed", start=mark)


def test_notify_success_sends_a_delivery_report(relay: Server, peer: Server) -> None:
    before = peer.queue_ids()
    mark = relay.mark()
    with smtplib.SMTP("127.0.0.1", relay.ports["smtp"], timeout=10) as c:
        c.ehlo("client.example.test")
        c.sendmail("a@example.net", ["y@example.org"], b"Subject: receipt please\r\n\r\nhi\r\n",
                   rcpt_options=["NOTIFY=SUCCESS"])
    qid = relay.wait_for_log(r"\]: (\w+): client=", start=mark).group(1)
    notice = relay.wait_for_log(rf"postfix/bounce\[\d+\]: {qid}: sender delivery status notification: (\w+)").group(1)
    relay.wait_for_log(rf"postfix/qmgr\[\d+\]: {notice}: removed")
    new = [i for i in wait_for_file(peer, len(before) + 2) if i not in before]
    reports = [peer.read_queue(i) for i in new]
    report = next(content for env, content in reports if env.sender == "")
    assert b"Subject: Successful Mail Delivery Report" in report
    assert b"Action: relayed" in report and b"Final-Recipient: rfc822; y@example.org" in report


def test_transport_maps_override_the_relayhost(relay: Server) -> None:
    qid = send(relay, ["z@tm.test"])
    line = relay.wait_for_log(rf"{qid}: to=<z@tm.test>.*", timeout=20).group(0)
    assert f"status=deferred (connect to 127.0.0.1[127.0.0.1]:{DEAD_PORT}: Connection refused)" in line, line
    postillion(relay.config_dir, "delete", qid)


def test_virtual_alias_maps_expand_when_queued(peer: Server) -> None:
    """virtual_alias_maps at queue time, as Postfix's cleanup does: one RCPT, two recipients,
    each remembering the address the client used (ORCPT)."""
    srv = make_server(main={"virtual_alias_maps":
                            "inline:{ { team@example.org = ann@example.org, bob@example.org } }"})
    srv.start()
    try:
        qid = send(srv, ["team@example.org"])
        env, _ = srv.read_queue(qid)
        assert [(r.address, r.orcpt) for r in env.recipients] == [
            ("ann@example.org", "rfc822;team@example.org"),
            ("bob@example.org", "rfc822;team@example.org"),
        ]
    finally:
        cleanup(srv)
