"""Issue 5, sender ownership: with no smtpd_sender_login_maps, reject_sender_login_mismatch
uses the user store (``postillion:users``): a user owns their own address and the aliases
given with ``postillion user alias add``.  Replies are Postfix 3.7's (smtpd_check.c).

Own server: ``smtpd_sasl_auth_enable = yes`` in main.cf so port 25 also knows about SASL (the
restriction is ignored without it, as in Postfix), and the sender login check both on port 25
(``smtpd_sender_restrictions``) and on the recipe's submission service
(``mua_sender_restrictions``).
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from harness import (
    HOSTNAME,
    PASSWORD,
    Server,
    cleanup,
    client_context,
    make_server,
    postillion,
)

HELO = "client.example.test"
CHECK = "reject_sender_login_mismatch"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = make_server(main={"smtpd_sasl_auth_enable": "yes", "smtpd_sender_restrictions": CHECK,
                            "mua_sender_restrictions": CHECK})
    try:
        srv.add_user("alice")
        srv.add_user("bob")
        postillion(srv.config_dir, "user", "alias", "add", "alice", "Sales@Example.Test")
        srv.start()
        yield srv
    finally:
        cleanup(srv)


def submit_as_alice(server: Server, sender: str) -> tuple[int, bytes]:
    """MAIL FROM ``sender`` after AUTH as alice on submission; the RCPT TO reply (the sender
    restrictions run at RCPT TO with smtpd_delay_reject = yes)."""
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], local_hostname=HELO,
                      timeout=10) as s:
        s.starttls(context=client_context())
        s.ehlo(HELO)
        assert s.login("alice", PASSWORD) == (235, b"2.7.0 Authentication successful")
        assert s.mail(sender) == (250, b"2.1.0 Ok")
        reply = s.rcpt("carol@example.org")
        s.rset()
        return reply


@pytest.mark.parametrize("sender", [f"alice@{HOSTNAME}", "alice@example.test",
                                    "sales@example.test", "SALES@example.test"])
def test_own_address_and_alias_are_accepted(server: Server, sender: str) -> None:
    assert submit_as_alice(server, sender) == (250, b"2.1.5 Ok")


@pytest.mark.parametrize("sender", [f"bob@{HOSTNAME}", "stranger@example.org"])
def test_another_address_is_refused(server: Server, sender: str) -> None:
    mark = server.mark()
    assert submit_as_alice(server, sender) == (
        553, f"5.7.1 <{sender}>: Sender address rejected: not owned by user alice".encode())
    server.wait_for_log(
        r"postfix/submission/smtpd\[\d+\]: NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: "
        rf"553 5\.7\.1 <{sender}>: Sender address rejected: not owned by user alice; "
        rf"from=<{sender}> to=<carol@example\.org> proto=ESMTP helo=<{HELO}>$", start=mark)


def test_unauthenticated_owned_address_is_not_logged_in(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], local_hostname=HELO, timeout=10) as s:
        assert s.mail(f"alice@{HOSTNAME}") == (250, b"2.1.0 Ok")
        assert s.rcpt("carol@example.org") == (
            553, f"5.7.1 <alice@{HOSTNAME}>: Sender address rejected: not logged in".encode())
        # An address nobody owns is no login mismatch (mynetworks may relay it).
        s.rset()
        assert s.mail("someone@example.org") == (250, b"2.1.0 Ok")
        assert s.rcpt("carol@example.org") == (250, b"2.1.5 Ok")


def test_alias_removed_takes_effect_without_reload(server: Server) -> None:
    postillion(server.config_dir, "user", "alias", "add", "alice", "temp@example.test")
    assert submit_as_alice(server, "temp@example.test") == (250, b"2.1.5 Ok")
    postillion(server.config_dir, "user", "alias", "del", "alice", "temp@example.test")
    assert submit_as_alice(server, "temp@example.test")[0] == 553
