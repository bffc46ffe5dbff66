"""reject_*sender_login_mismatch with smtpd_sender_login_maps."""

from __future__ import annotations

import pytest

from policy_helpers import check, ctx, make_engine

MAPS = "inline:{ alice@example.test=alice, {@team.test = alice, bob} }"
NOT_LOGGED_IN = "553 5.7.1 <{0}>: Sender address rejected: not logged in"
NOT_OWNED = "553 5.7.1 <{0}>: Sender address rejected: not owned by user {1}"


@pytest.mark.parametrize(
    ("restriction", "sender", "user", "expected"),
    [
        ("reject_sender_login_mismatch", "alice@example.test", "alice", None),
        ("reject_sender_login_mismatch", "alice@example.test", "ALICE", None),
        ("reject_sender_login_mismatch", "bob@example.test", "alice", NOT_OWNED),
        ("reject_sender_login_mismatch", "alice@example.test", "bob", NOT_OWNED),
        ("reject_sender_login_mismatch", "alice@example.test", None, NOT_LOGGED_IN),
        ("reject_sender_login_mismatch", "nobody@else.test", None, None),
        ("reject_sender_login_mismatch", "x@team.test", "bob", None),   # @domain entry
        ("reject_sender_login_mismatch", "x@team.test", "carol", NOT_OWNED),
        ("reject_sender_login_mismatch", "", "alice", None),            # null sender
        ("reject_authenticated_sender_login_mismatch", "alice@example.test", None, None),
        ("reject_authenticated_sender_login_mismatch", "bob@example.test", "alice", NOT_OWNED),
        ("reject_unauthenticated_sender_login_mismatch", "bob@example.test", "alice", None),
        ("reject_unauthenticated_sender_login_mismatch", "alice@example.test", None, NOT_LOGGED_IN),
        ("reject_known_sender_login_mismatch", "bob@example.test", "alice", None),  # unknown owner
        ("reject_known_sender_login_mismatch", "alice@example.test", "bob", NOT_OWNED),
        ("reject_known_sender_login_mismatch", "alice@example.test", None, NOT_LOGGED_IN),
    ],
)
def test_sender_login_mismatch(restriction: str, sender: str, user: str | None,
                               expected: str | None) -> None:
    engine = make_engine(smtpd_sasl_auth_enable="yes", smtpd_sender_login_maps=MAPS,
                         smtpd_sender_restrictions=restriction)
    context = ctx(sender=sender, sasl_username=user, sasl_method="PLAIN" if user else None,
                  recipient="root@localhost")
    want = None if expected is None else expected.format(sender, user)
    assert check(engine, "recipient", context) == want


def test_ignored_without_sasl() -> None:
    events: list = []
    engine = make_engine(smtpd_sender_login_maps=MAPS,
                         smtpd_sender_restrictions="reject_sender_login_mismatch")
    context = ctx(sender="alice@example.test", recipient="root@localhost")
    assert check(engine, "recipient", context, events) is None
    assert [(e.kind, e.text) for e in events] == [
        ("warning", "restriction `reject_sender_login_mismatch' ignored: no SASL support")]


def test_submission_with_login_check_at_mail_time() -> None:
    engine = make_engine(smtpd_sasl_auth_enable="yes", smtpd_delay_reject="no",
                         smtpd_sender_login_maps="inline:{alice@example.test=alice}",
                         smtpd_sender_restrictions="reject_sender_login_mismatch",
                         smtpd_recipient_restrictions="permit_sasl_authenticated,reject")
    c = ctx(sender="bob@example.test", sasl_username="alice", sasl_method="PLAIN")
    assert check(engine, "sender", c) == \
        "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice"
    assert check(engine, "sender", ctx(sender="alice@example.test", sasl_username="alice")) is None
