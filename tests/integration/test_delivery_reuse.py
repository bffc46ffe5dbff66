"""Connection reuse end to end: postillion A (queue manager on) relays three messages to
postillion B over one SMTP connection; A logs conn_use=2 and conn_use=3 like Postfix, B sees
one session (one connect, RSET probes, one QUIT when A's cache time limit runs out).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator

import pytest
from harness import Server, cleanup, make_server


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Server, Server]]:
    peer = make_server(main={"myhostname": "peer.example.test", "mynetworks": "127.0.0.0/8"})
    peer.start()
    relay = make_server(qmgr=True, main={
        "relayhost": f"[127.0.0.1]:{peer.ports['smtp']}",
        "smtp_connection_cache_time_limit": "4s",
        "local_header_rewrite_clients": "permit_sasl_authenticated",
    })
    try:
        relay.start()
        yield relay, peer
    finally:
        cleanup(relay)
        cleanup(peer)


def test_three_messages_one_connection(pair: tuple[Server, Server]) -> None:
    relay, peer = pair
    peer.settle()
    peer_mark = peer.mark()
    lines = []
    for n in range(3):
        mark = relay.mark()
        with smtplib.SMTP("127.0.0.1", relay.ports["smtp"], timeout=10) as c:
            c.sendmail("a@example.net", [f"r{n}@example.org"], f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
        qid = relay.wait_for_log(r"\]: (\w+): client=", start=mark).group(1)
        lines.append(relay.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<r{n}@example\.org>.*",
                                        start=mark).group(0))
    port = peer.ports["smtp"]
    relay_field = rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port},"
    assert re.search(rf"{relay_field} delay=", lines[0]), lines[0]
    assert re.search(rf"{relay_field} conn_use=2, delay=.*status=sent", lines[1]), lines[1]
    assert re.search(rf"{relay_field} conn_use=3, delay=.*status=sent", lines[2]), lines[2]
    # After smtp_connection_cache_time_limit the idle connection is closed with QUIT.
    summary = peer.wait_for_disconnect(peer_mark, timeout=30)
    assert re.fullmatch(r"disconnect from \S+ ehlo=1 mail=3 rcpt=3 data=3 rset=2 quit=1 commands=13",
                        summary), summary
    assert peer.log_since(peer_mark).count("]: connect from ") == 1
