"""IPv6 next hops end to end: postillion A relays to postillion B listening on [::1], named
as relayhost ``[::1]:PORT`` and ``[ipv6:::1]:PORT``; A logs ``relay=::1[::1]:PORT`` as
Postfix does.  Skipped when the host has no ::1.
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Iterator

import pytest
from harness import Server, cleanup, make_server


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 on this host")


@pytest.fixture(scope="module")
def peer6() -> Iterator[Server]:
    server = make_server(main={"myhostname": "peer6.example.test", "mynetworks": "127.0.0.0/8, [::1]/128",
                               "inet_protocols": "all"})
    master = server.config_dir / "master.cf"
    port = server.ports["smtp"]
    text = master.read_text()
    assert f"127.0.0.1:{port} " in text
    master.write_text(text.replace(f"127.0.0.1:{port} ", f"[::1]:{port} "))
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


@pytest.mark.parametrize("form", ["[::1]:{port}", "[ipv6:::1]:{port}"])
def test_relayhost_ipv6_literal(peer6: Server, form: str) -> None:
    port = peer6.ports["smtp"]
    relay = make_server(qmgr=True, main={"relayhost": form.format(port=port), "inet_protocols": "all",
                                         "local_header_rewrite_clients": "permit_sasl_authenticated"})
    relay.start()
    try:
        mark = relay.mark()
        with smtplib.SMTP("127.0.0.1", relay.ports["smtp"], timeout=10) as c:
            c.sendmail("a@example.net", ["v6@example.org"], b"Subject: v6\r\n\r\nhello\r\n")
        qid = relay.wait_for_log(r"\]: (\w+): client=", start=mark).group(1)
        line = relay.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<v6@example\.org>.*", start=mark).group(0)
        assert re.search(rf"relay=::1\[::1\]:{port}, delay=.*dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as \w+\)",
                         line), line
        peer6.wait_for_log(r"connect from localhost\[::1\]|connect from \S+\[::1\]")
    finally:
        cleanup(relay)
