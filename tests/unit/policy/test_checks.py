"""HELO and address syntax checks, unlisted recipients, warn_if_reject, soft_bounce,
lookup failures, pipelining, defer_if_permit/defer_if_reject."""

from __future__ import annotations

import pwd

import pytest

from policy_helpers import check, ctx, make_engine


@pytest.mark.parametrize(
    ("restriction", "helo", "expected"),
    [
        ("reject_invalid_helo_hostname", "client.remote.test", None),
        ("reject_invalid_helo_hostname", "client.remote.test.", None),
        ("reject_invalid_helo_hostname", "localhost", None),
        ("reject_invalid_helo_hostname", "192.0.2.1", None),
        ("reject_invalid_helo_hostname", "[192.0.2.1]", None),
        ("reject_invalid_helo_hostname", "[IPv6:2001:db8::1]", None),
        ("reject_invalid_helo_hostname", "bad..name", "501 5.5.2 <bad..name>: Helo command rejected: Invalid name"),
        ("reject_invalid_helo_hostname", "-bad.test", "501 5.5.2 <-bad.test>: Helo command rejected: Invalid name"),
        ("reject_invalid_helo_hostname", "bad_ok.test", None),
        ("reject_invalid_helo_hostname", "sp ace", "501 5.5.2 <sp ace>: Helo command rejected: Invalid name"),
        ("reject_invalid_helo_hostname", "[300.1.1.1]",
         "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"),
        ("reject_non_fqdn_helo_hostname", "client.remote.test", None),
        ("reject_non_fqdn_helo_hostname", "localhost",
         "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"),
        ("reject_non_fqdn_helo_hostname", "123.456",
         "504 5.5.2 <123.456>: Helo command rejected: need fully-qualified hostname"),
        ("reject_non_fqdn_hostname", "[192.0.2.1]", None),
    ],
)
def test_helo_checks(restriction: str, helo: str, expected: str | None) -> None:
    engine = make_engine(smtpd_helo_restrictions=restriction)
    assert check(engine, "recipient", ctx(helo_name=helo, recipient="root@localhost")) == expected


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sender", "a@remote.test", None),
        ("sender", "a@remote", "504 5.5.2 <a@remote>: Sender address rejected: need fully-qualified address"),
        ("sender", "a", "504 5.5.2 <a>: Sender address rejected: need fully-qualified address"),
        ("sender", "a@[192.0.2.1]", None),
        ("sender", "", None),  # the null sender is not checked
        ("recipient", "b@localhost",
         "504 5.5.2 <b@localhost>: Recipient address rejected: need fully-qualified address"),
        ("recipient", "postmaster@mx.example.test", None),
    ],
)
def test_non_fqdn_addresses(field: str, value: str, expected: str | None) -> None:
    engine = make_engine(smtpd_sender_restrictions="reject_non_fqdn_sender",
                         smtpd_recipient_restrictions="reject_non_fqdn_recipient")
    fields = {"recipient": "root@mx.example.test", field: value}
    assert check(engine, "recipient", ctx(**fields)) == expected


ROOT = pwd.getpwuid(0).pw_name


@pytest.mark.parametrize(
    ("values", "recipient", "expected"),
    [
        ({}, f"{ROOT}@mx.example.test", None),
        ({}, f"{ROOT.upper()}@localhost", None),
        ({}, "no-such-user-postillion@mx.example.test",
         "550 5.1.1 <no-such-user-postillion@mx.example.test>: Recipient address rejected: "
         "User unknown in local recipient table"),
        ({}, "postmaster@mx.example.test", None),
        ({}, "abuse@localhost", None),
        ({}, "MAILER-DAEMON@localhost", None),
        ({}, "nobody-here@remote.test", None),  # not a local domain: no check here
        ({"recipient_delimiter": "+"}, f"{ROOT}+tag@localhost", None),
        ({"local_recipient_maps": "inline:{ {@localhost = catchall} }"}, "anyone@localhost", None),
        ({"local_recipient_maps": "inline:{ list=1 }"}, "list@localhost", None),
        ({"local_recipient_maps": ""}, "anyone@localhost", None),  # empty: no check
        ({"smtpd_reject_unlisted_recipient": "no"}, "anyone@localhost", None),
        ({"unknown_local_recipient_reject_code": "450"}, "anyone@localhost",
         "450 4.1.1 <anyone@localhost>: Recipient address rejected: User unknown in local recipient table"),
        ({"smtpd_reject_unlisted_recipient": "no", "smtpd_recipient_restrictions": "reject_unlisted_recipient"},
         "anyone@localhost",
         "550 5.1.1 <anyone@localhost>: Recipient address rejected: User unknown in local recipient table"),
    ],
)
def test_unlisted_recipient(values: dict, recipient: str, expected: str | None) -> None:
    engine = make_engine(**values)
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", recipient=recipient)) == expected


def test_unlisted_sender() -> None:
    engine = make_engine(smtpd_reject_unlisted_sender="yes")
    assert check(engine, "recipient", ctx(sender="ghost@localhost", recipient="root@localhost")) == \
        "550 5.1.0 <ghost@localhost>: Sender address rejected: User unknown in local recipient table"


def test_warn_if_reject_logs_instead_of_rejecting() -> None:
    events: list = []
    engine = make_engine(smtpd_helo_restrictions="warn_if_reject reject_non_fqdn_helo_hostname, "
                                                 "reject_invalid_helo_hostname")
    assert check(engine, "recipient", ctx(helo_name="localhost", recipient="root@localhost"), events) is None
    assert [(e.kind, e.text) for e in events] == [
        ("reject_warning", "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname")]
    # only the next restriction is softened
    assert check(engine, "recipient", ctx(helo_name="a..b", recipient="root@localhost")) == \
        "501 5.5.2 <a..b>: Helo command rejected: Invalid name"


def test_warn_if_reject_does_not_soften_lookup_failures() -> None:
    engine = make_engine(smtpd_sender_restrictions="warn_if_reject check_sender_access fail:x")
    assert check(engine, "recipient", ctx(recipient="root@localhost")) == \
        "451 4.3.0 <someone@remote.test>: Temporary lookup failure"


@pytest.mark.parametrize(
    ("values", "fields", "expected"),
    [
        ({"smtpd_relay_restrictions": "reject_unauth_destination"}, {"recipient": "x@remote.test"},
         "454 4.7.1 <x@remote.test>: Relay access denied"),
        ({"smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname"},
         {"helo_name": "localhost", "recipient": "root@localhost"},
         "404 4.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"),
        ({"smtpd_recipient_restrictions": "check_recipient_access static:{550 5.1.1 gone}"},
         {"recipient": "root@localhost"}, "450 4.1.1 <root@localhost>: Recipient address rejected: gone"),
        ({}, {"recipient": "nope@localhost", "client_addr": "127.0.0.1"},
         "450 4.1.1 <nope@localhost>: Recipient address rejected: User unknown in local recipient table"),
    ],
)
def test_soft_bounce(values: dict, fields: dict, expected: str) -> None:
    assert check(make_engine(soft_bounce="yes", **values), "recipient", ctx(**fields)) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"smtpd_client_restrictions": "check_client_access fail:c"},
         "451 4.3.0 <client.remote.test[203.0.113.5]>: Temporary lookup failure"),
        ({"smtpd_recipient_restrictions": "check_recipient_access proxy:fail:r"},
         "451 4.3.0 <root@localhost>: Temporary lookup failure"),
        ({"local_recipient_maps": "fail:l"}, "451 4.3.0 <root@localhost>: Temporary lookup failure"),
        ({"mydestination": "fail:d"}, "451 4.3.0 <root@localhost>: Temporary lookup failure"),
        ({"smtpd_sasl_auth_enable": "yes", "smtpd_sender_login_maps": "fail:s",
          "smtpd_sender_restrictions": "reject_sender_login_mismatch"},
         "451 4.3.0 <someone@remote.test>: Temporary lookup failure"),
    ],
)
def test_lookup_failure_is_451(values: dict, expected: str) -> None:
    events: list = []
    engine = make_engine(soft_bounce="yes", **values)
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", recipient="root@localhost"), events) \
        == expected.replace("203.0.113.5", "127.0.0.1")
    assert [e.kind for e in events] == ["warning"]


@pytest.mark.parametrize(
    ("protocol", "stage", "violation", "expected"),
    [
        ("SMTP", "recipient", True,
         "503 5.5.0 <root@localhost>: Recipient address rejected: Improper use of SMTP command pipelining"),
        ("ESMTP", "recipient", True, None),   # ESMTP clients may pipeline before DATA
        ("SMTP", "recipient", False, None),
        ("ESMTP", "data", True, "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"),
    ],
)
def test_reject_unauth_pipelining(protocol: str, stage: str, violation: bool, expected: str | None) -> None:
    engine = make_engine(smtpd_recipient_restrictions="reject_unauth_pipelining",
                         smtpd_data_restrictions="reject_unauth_pipelining")
    context = ctx(protocol=protocol, pipelining_violation=violation, recipient="root@localhost")
    assert check(engine, stage, context) == expected


def test_defer_if_permit_turns_a_later_permit_into_450() -> None:
    engine = make_engine(smtpd_client_restrictions="check_client_access static:{DEFER_IF_PERMIT busy}")
    assert check(engine, "recipient", ctx(client_addr="127.0.0.1", recipient="x@remote.test")) == \
        "450 4.7.1 <client.remote.test[127.0.0.1]>: Client host rejected: busy"


def test_defer_if_reject_turns_a_later_reject_into_450() -> None:
    engine = make_engine(smtpd_relay_restrictions="defer_if_reject, reject_unauth_destination")
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == \
        "450 4.7.0 <x@remote.test>: Recipient address rejected: defer_if_reject requested"
