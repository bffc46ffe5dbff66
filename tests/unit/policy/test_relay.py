"""Relay control: the default lists are not an open relay; what counts as our destination."""

from __future__ import annotations

import pytest

from policy_helpers import check, ctx, make_engine

RELAY_DENIED_DEFER = "454 4.7.1 <x@remote.test>: Relay access denied"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # default smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
        # defer_unauth_destination
        ({"recipient": "x@remote.test"}, RELAY_DENIED_DEFER),
        ({"recipient": "x@remote.test", "client_addr": "127.0.0.1"}, None),
        ({"recipient": "x@remote.test", "client_addr": "::1"}, None),
        ({"recipient": "x@remote.test", "client_addr": "::ffff:127.0.0.1"}, None),
        ({"recipient": "x@remote.test", "sasl_username": "alice", "sasl_method": "PLAIN"}, None),
        # local destinations (mydestination = $myhostname, localhost.$mydomain, localhost)
        ({"recipient": "root@mx.example.test"}, None),
        ({"recipient": "root@MX.Example.TEST"}, None),
        ({"recipient": "root@mx.example.test."}, None),
        ({"recipient": "root@localhost"}, None),
        ({"recipient": "root@localhost.example.test"}, None),
        ({"recipient": "root"}, None),  # unqualified: local
        # mydestination is not in parent_domain_matches_subdomains
        ({"recipient": "x@sub.mx.example.test"}, "454 4.7.1 <x@sub.mx.example.test>: Relay access denied"),
        # routing tricks in the local part are never an authorized destination
        ({"recipient": "x%remote.test@mx.example.test"},
         "454 4.7.1 <x%remote.test@mx.example.test>: Relay access denied"),
        ({"recipient": "remote.test!x@mx.example.test"},
         "454 4.7.1 <remote.test!x@mx.example.test>: Relay access denied"),
        ({"recipient": '"x@remote.test"@mx.example.test'},
         '454 4.7.1 <"x@remote.test"@mx.example.test>: Relay access denied'),
        # "postmaster" without a domain is always accepted, before any restriction
        ({"recipient": "Postmaster"}, None),
    ],
)
def test_default_relay_restrictions(fields: dict, expected: str | None) -> None:
    assert check(make_engine(), "recipient", ctx(**fields)) == expected


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("x@relay.test", None),
        ("x@sub.relay.test", None),  # relay_domains matches subdomains by default
        ("x@notrelay.test", "554 5.7.1 <x@notrelay.test>: Relay access denied"),
        ("x@listed.test", None),      # from a table in the list
        ("x@sub.listed.test", None),
        ("x@except.relay.test", "554 5.7.1 <x@except.relay.test>: Relay access denied"),
    ],
)
def test_relay_domains_and_reject_unauth_destination(recipient: str, expected: str | None) -> None:
    engine = make_engine(
        relay_domains="!except.relay.test relay.test inline:{listed.test=yes}",
        smtpd_relay_restrictions="permit_mynetworks, reject_unauth_destination",
    )
    assert check(engine, "recipient", ctx(recipient=recipient)) == expected


def test_relay_domains_reject_code() -> None:
    engine = make_engine(relay_domains_reject_code="550",
                         smtpd_relay_restrictions="reject_unauth_destination")
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == \
        "550 5.7.1 <x@remote.test>: Relay access denied"
    engine = make_engine(relay_domains_reject_code="550",
                         smtpd_relay_restrictions="defer_unauth_destination")
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == RELAY_DENIED_DEFER.replace("454", "450")


def test_permit_auth_destination() -> None:
    engine = make_engine(smtpd_relay_restrictions="permit_auth_destination, reject")
    assert check(engine, "recipient", ctx(recipient="root@localhost")) is None
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == \
        "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"


@pytest.mark.parametrize(
    ("mynetworks", "addr", "name", "expected"),
    [
        ("192.0.2.0/24", "192.0.2.77", "unknown", None),
        ("192.0.2.0/24", "198.51.100.1", "unknown", RELAY_DENIED_DEFER),
        ("[2001:db8::]/32", "2001:db8:1::5", "unknown", None),
        ("[2001:db8::1]", "2001:db8::1", "unknown", None),
        ("192.0.2.1", "192.0.2.1", "unknown", None),
        ("!192.0.2.66 192.0.2.0/24", "192.0.2.66", "unknown", RELAY_DENIED_DEFER),
        ("trusted.test", "198.51.100.1", "host.trusted.test", None),  # parent style
        ("trusted.test", "198.51.100.1", "unknown", RELAY_DENIED_DEFER),
        ("inline:{198.51.100.1=ok}", "198.51.100.1", "unknown", None),
    ],
)
def test_mynetworks(mynetworks: str, addr: str, name: str, expected: str | None) -> None:
    engine = make_engine(mynetworks=mynetworks)
    context = ctx(client_addr=addr, client_name=name, recipient="x@remote.test")
    assert check(engine, "recipient", context) == expected


def test_mynetworks_file(tmp_path) -> None:
    path = tmp_path / "nets"
    path.write_text("# trusted\n192.0.2.0/24\n[2001:db8::]/32, 10.0.0.0/8\n")
    engine = make_engine(mynetworks=str(path))
    assert check(engine, "recipient", ctx(client_addr="10.9.8.7", recipient="x@remote.test")) is None
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) == RELAY_DENIED_DEFER
