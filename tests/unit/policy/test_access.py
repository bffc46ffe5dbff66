"""check_*_access: search order and what each access(5) result means."""

from __future__ import annotations

import pytest

from policy_helpers import check, ctx, make_engine

RCPT = "x@remote.test"


def rcpt_with(result: str, **values: str) -> str | None:
    engine = make_engine(smtpd_recipient_restrictions=f"check_recipient_access static:{{{result}}}, "
                         "permit_mynetworks, reject_unauth_destination",
                         smtpd_relay_restrictions="", **values)
    return check(engine, "recipient", ctx(recipient=RCPT))


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("OK", None),
        ("ok trailing text ignored", None),
        ("RELAY", None),
        ("20240101", None),  # all-numerical = OK
        ("550", None),       # a bare code is all-numerical too
        ("PERMIT", None),    # restriction names, case-insensitive
        ("permit_mynetworks", "554 5.7.1 <x@remote.test>: Relay access denied"),
        ("DUNNO", "554 5.7.1 <x@remote.test>: Relay access denied"),
        ("REJECT", "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"),
        ("reject go away", "554 5.7.1 <x@remote.test>: Recipient address rejected: go away"),
        ("REJECT 5.7.9 go away", "554 5.7.9 <x@remote.test>: Recipient address rejected: go away"),
        ("DEFER", "450 4.7.1 <x@remote.test>: Recipient address rejected: Access denied"),
        ("DEFER busy", "450 4.7.1 <x@remote.test>: Recipient address rejected: busy"),
        ("550 no such user", "550 5.7.1 <x@remote.test>: Recipient address rejected: no such user"),
        ("550 5.1.1 no such user", "550 5.1.1 <x@remote.test>: Recipient address rejected: no such user"),
        ("451 try later", "451 4.7.1 <x@remote.test>: Recipient address rejected: try later"),
        # the code wins over the enhanced code's class digit
        ("450 5.2.2 full", "450 4.2.2 <x@remote.test>: Recipient address rejected: full"),
        # a sender-style address code is mapped for a recipient (smtpd_dsn_fix)
        ("553 5.1.7 bad", "553 5.1.3 <x@remote.test>: Recipient address rejected: bad"),
        ("reject_unauth_destination", "554 5.7.1 <x@remote.test>: Relay access denied"),
        ("permit_sasl_authenticated, reject",
         "554 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"),
        # lookup tables inside an access table entry are a configuration error
        ("check_client_access inline:{a=b}", "451 4.3.5 Server configuration error"),
        ("no_such_restriction", "451 4.3.5 Server configuration error"),
        # actions postillion does not carry out yet: DUNNO (and an event)
        ("HOLD", "554 5.7.1 <x@remote.test>: Relay access denied"),
        ("DISCARD", "554 5.7.1 <x@remote.test>: Relay access denied"),
        ("WARN looks odd", "554 5.7.1 <x@remote.test>: Relay access denied"),
    ],
)
def test_access_results(result: str, expected: str | None) -> None:
    assert rcpt_with(result) == expected


def test_access_map_codes() -> None:
    assert rcpt_with("REJECT", access_map_reject_code="550") == \
        "550 5.7.1 <x@remote.test>: Recipient address rejected: Access denied"
    assert rcpt_with("DEFER", access_map_defer_code="451") == \
        "451 4.7.1 <x@remote.test>: Recipient address rejected: Access denied"


def test_events_for_unimplemented_actions() -> None:
    events: list = []
    engine = make_engine(smtpd_sender_restrictions="check_sender_access static:{HOLD spam?}")
    check(engine, "recipient", ctx(recipient="root@localhost"), events)
    assert [(e.kind, e.text) for e in events] == [("hold", "<someone@remote.test>: Sender address spam?")]


ACCESS = """\
user+ext@example.com   REJECT full address
user@example.com       REJECT no extension
sub.example.com        REJECT subdomain
example.com            REJECT domain
other@                 REJECT local part
dunno.example.com      DUNNO
"""


@pytest.mark.parametrize(
    ("sender", "why"),
    [
        ("User+Ext@Example.com", "full address"),
        ("user+other@example.com", "no extension"),
        ("a@sub.example.com", "subdomain"),
        ("a@deep.sub.example.com", "subdomain"),
        ("a@x.example.com", "domain"),
        ("other@unrelated.test", "local part"),
        ("other+ext@unrelated.test", "local part"),
        # DUNNO stops the search: the parent "example.com" is not tried
        ("a@dunno.example.com", None),
        ("a@unrelated.test", None),
    ],
)
def test_sender_access_search_order(tmp_path, sender: str, why: str | None) -> None:
    (tmp_path / "access").write_text(ACCESS)
    engine = make_engine(tmp_path, recipient_delimiter="+",
                         smtpd_sender_restrictions="check_sender_access texthash:access")
    got = check(engine, "recipient", ctx(sender=sender, recipient="root@localhost"))
    assert got == (None if why is None else f"554 5.7.1 <{sender}>: Sender address rejected: {why}")


def test_null_sender_uses_null_access_lookup_key() -> None:
    engine = make_engine(smtpd_sender_restrictions="check_sender_access inline:{<>=REJECT}")
    assert check(engine, "recipient", ctx(sender="", recipient="root@localhost")) == \
        "554 5.7.1 <>: Sender address rejected: Access denied"


@pytest.mark.parametrize(
    ("name", "addr", "expected"),
    [
        ("host.bad.test", "198.51.100.9", "bad domain"),
        ("unknown", "192.0.2.44", "bad net"),
        ("unknown", "192.0.2.45", "bad host"),
        ("good.test", "198.51.100.9", None),
    ],
)
def test_client_access(name: str, addr: str, expected: str | None) -> None:
    table = "inline:{ {bad.test = REJECT bad domain}, {192.0.2 = REJECT bad net}, " \
            "{192.0.2.45 = REJECT bad host} }"
    engine = make_engine(smtpd_client_restrictions=f"check_client_access {table}")
    got = check(engine, "recipient", ctx(client_name=name, client_addr=addr, recipient="root@localhost"))
    assert got == (None if expected is None else
                   f"554 5.7.1 <{name}[{addr}]>: Client host rejected: {expected}")


def test_helo_access_and_bare_table_shorthand() -> None:
    engine = make_engine(smtpd_helo_restrictions="inline:{ {remote.test=REJECT fake} }")
    assert check(engine, "recipient", ctx(recipient="root@localhost")) == \
        "554 5.7.1 <client.remote.test>: Helo command rejected: fake"


def test_restriction_class_from_access_table() -> None:
    engine = make_engine(smtpd_restriction_classes="strict",
                         strict="reject_non_fqdn_sender, reject",
                         smtpd_sender_restrictions="check_sender_access inline:{remote.test=strict}")
    assert check(engine, "recipient", ctx(recipient="root@localhost")) == \
        "554 5.7.1 <someone@remote.test>: Sender address rejected: Access denied"
    assert check(engine, "recipient", ctx(sender="a@else.test", recipient="root@localhost")) is None


def test_routed_recipient_ok_is_not_trusted() -> None:
    engine = make_engine(smtpd_recipient_restrictions="check_recipient_access static:OK, "
                         "reject_unauth_destination", smtpd_relay_restrictions="")
    assert check(engine, "recipient", ctx(recipient="x@remote.test")) is None
    assert check(engine, "recipient", ctx(recipient="a%b@remote.test")) == \
        "554 5.7.1 <a%b@remote.test>: Relay access denied"
