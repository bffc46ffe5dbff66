"""When each list runs: smtpd_delay_reject, relay-before-recipient order, the submission
recipe, and the stage-specific reply names."""

from __future__ import annotations

import pytest

from policy_helpers import check, ctx, make_engine

SUBMISSION = {"smtpd_recipient_restrictions": "permit_sasl_authenticated,reject"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Postfix 3.6+ (compatibility_level >= 3.6): relay list first -> relay denied
        (SUBMISSION, "454 4.7.1 <x@remote.test>: Relay access denied"),
        ({**SUBMISSION, "smtpd_relay_before_recipient_restrictions": "yes"},
         "454 4.7.1 <x@remote.test>: Relay access denied"),
        # older order (compatibility_level < 3.6 or explicit "no"): recipient list first
        ({**SUBMISSION, "smtpd_relay_before_recipient_restrictions": "no"},
         "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"),
        ({**SUBMISSION, "compatibility_level": "2"},
         "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"),
    ],
)
def test_submission_recipe_unauthenticated(values: dict, expected: str) -> None:
    assert check(make_engine(**values), "recipient", ctx(recipient="x@remote.test")) == expected


def test_submission_recipe_unauthenticated_from_mynetworks() -> None:
    # the relay list permits (mynetworks), then the recipient list rejects: the
    # reply the [live] Postfix transcript shows for a 127.0.0.1 client
    engine = make_engine(**SUBMISSION)
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", recipient="x@remote.test")) == \
        "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"


@pytest.mark.parametrize("order", ["yes", "no"])
def test_submission_recipe_authenticated(order: str) -> None:
    engine = make_engine(**SUBMISSION, smtpd_relay_before_recipient_restrictions=order)
    context = ctx(recipient="x@remote.test", sasl_username="alice", sasl_method="PLAIN")
    assert check(engine, "recipient", context) is None


CLIENT_REJECT = {"smtpd_client_restrictions": "reject"}


def test_delay_reject_yes_defers_client_helo_sender_to_rcpt() -> None:
    engine = make_engine(**CLIENT_REJECT)
    c = ctx(client_name="localhost", client_addr="127.0.0.1", recipient="root@localhost")
    for stage in ("client", "helo", "sender"):
        assert check(engine, stage, c) is None
    assert check(engine, "recipient", c) == \
        "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied"


def test_delay_reject_no_rejects_at_connect() -> None:
    engine = make_engine(**CLIENT_REJECT, smtpd_delay_reject="no")
    c = ctx(client_name="localhost", client_addr="127.0.0.1", recipient="root@localhost")
    assert check(engine, "client", c) == \
        "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied"
    # the client list is not run again at RCPT time
    assert check(engine, "recipient", c) is None


@pytest.mark.parametrize(
    ("values", "stage", "expected"),
    [
        ({"smtpd_helo_restrictions": "reject"}, "helo",
         "554 5.7.1 <client.remote.test>: Helo command rejected: Access denied"),
        ({"smtpd_sender_restrictions": "reject"}, "sender",
         "554 5.7.1 <someone@remote.test>: Sender address rejected: Access denied"),
        ({"smtpd_sender_restrictions": "defer"}, "sender",
         "450 4.3.2 <someone@remote.test>: Sender address rejected: Try again later"),
        ({"smtpd_sender_restrictions": "defer", "defer_code": "421"}, "sender",
         "421 4.3.2 <someone@remote.test>: Sender address rejected: Try again later"),
        ({"smtpd_sender_restrictions": "reject", "reject_code": "550"}, "sender",
         "550 5.7.1 <someone@remote.test>: Sender address rejected: Access denied"),
        ({"smtpd_data_restrictions": "reject"}, "data",
         "554 5.7.1 <DATA>: Data command rejected: Access denied"),
    ],
)
def test_each_stage_with_delay_reject_no(values: dict, stage: str, expected: str) -> None:
    engine = make_engine(**values, smtpd_delay_reject="no")
    assert check(engine, stage, ctx()) == expected


def test_delayed_order_client_before_helo_before_sender() -> None:
    engine = make_engine(smtpd_client_restrictions="permit_mynetworks, reject",
                         smtpd_helo_restrictions="reject",
                         smtpd_sender_restrictions="reject")
    # client list rejects first
    assert check(engine, "recipient", ctx(recipient="root@localhost")).startswith(
        "554 5.7.1 <client.remote.test[203.0.113.5]>: Client host rejected")
    # permit in the client list ends only that list; the helo list still runs
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", recipient="root@localhost")) == \
        "554 5.7.1 <client.remote.test>: Helo command rejected: Access denied"
    # without HELO the helo list is skipped and the sender list runs
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", helo_name=None,
                                          recipient="root@localhost")) == \
        "554 5.7.1 <someone@remote.test>: Sender address rejected: Access denied"


def test_permit_in_recipient_list_does_not_skip_relay_list() -> None:
    engine = make_engine(smtpd_recipient_restrictions="permit",
                         smtpd_relay_before_recipient_restrictions="no")
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == \
        "454 4.7.1 <x@remote.test>: Relay access denied"


def test_recipient_restrictions_can_use_sender_and_client_facts() -> None:
    engine = make_engine(smtpd_recipient_restrictions="check_client_access inline:{203.0.113=REJECT}")
    assert check(engine, "recipient", ctx(recipient="root@localhost")) == \
        "554 5.7.1 <client.remote.test[203.0.113.5]>: Client host rejected: Access denied"
