"""Restriction lists are parsed at construction; mistakes are ConfigErrors that say where."""

from __future__ import annotations

import pytest

from postillion.errors import ConfigError

from policy_helpers import make_engine


@pytest.mark.parametrize(
    ("values", "rendered"),
    [
        ({"smtpd_recipient_restrictions": "permit_mynetwork, reject"},
         'smtpd_recipient_restrictions: unknown smtpd restriction: "permit_mynetwork"; '
         'did you mean "permit_mynetworks"?'),
        ({"smtpd_client_restrictions": "permit_sasl_authenticatd"},
         'smtpd_client_restrictions: unknown smtpd restriction: "permit_sasl_authenticatd"; '
         'did you mean "permit_sasl_authenticated"?'),
        ({"smtpd_helo_restrictions": "zzzzzz"},
         'smtpd_helo_restrictions: unknown smtpd restriction: "zzzzzz"; '
         "see postconf(5) for the restriction names"),
        ({"smtpd_sender_restrictions": "check_sender_access"},
         'smtpd_sender_restrictions: restriction check_sender_access: bad argument "": '
         "need maptype:mapname; write check_sender_access type:name, for example "
         "check_sender_access texthash:/etc/postfix/access"),
        ({"smtpd_client_restrictions": "check_client_access reject"},
         'smtpd_client_restrictions: restriction check_client_access: bad argument "reject": '
         "need maptype:mapname; write check_client_access type:name, for example "
         "check_client_access texthash:/etc/postfix/access"),
        ({"smtpd_client_restrictions": "reject_rbl_client zen.example"},
         'smtpd_client_restrictions: restriction "reject_rbl_client" is not supported by '
         "postillion; remove it, or put a supported restriction in its place"),
        ({"smtpd_data_restrictions": "inline:{a=b}"},
         'smtpd_data_restrictions: lookup table "inline:{a=b}" without a restriction name; '
         "write check_client_access, check_helo_access, check_sender_access or "
         'check_recipient_access before "inline:{a=b}"'),
        ({"smtpd_recipient_restrictions": "check_recipient_access hash:/etc/postfix/access"},
         "hash:/etc/postfix/access: unsupported dictionary type: hash; postillion does not "
         "support hash: tables; use texthash:/path for a postmap source file"),
        ({"smtpd_restriction_classes": "friends"},
         "smtpd_restriction_classes: restriction class `friends' needs a definition; "
         "set friends = <restrictions> in main.cf"),
    ],
)
def test_bad_lists(values: dict[str, str], rendered: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(**values)
    assert str(info.value) == rendered


@pytest.mark.parametrize(
    "values",
    [
        {"smtpd_relay_restrictions": "", "smtpd_recipient_restrictions": ""},
        {"smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated"},
        # a reject after permit is never reached (Postfix has_required())
        {"smtpd_relay_restrictions": "permit, reject_unauth_destination"},
        # warn_if_reject makes the next one harmless
        {"smtpd_relay_restrictions": "warn_if_reject, reject_unauth_destination"},
    ],
)
def test_open_relay_lists_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(**values)
    assert str(info.value) == (
        "smtpd_relay_restrictions or smtpd_recipient_restrictions: specify at least one working "
        "instance of: reject_unauth_destination, defer_unauth_destination, reject, defer or "
        "defer_if_permit; the default is smtpd_relay_restrictions = permit_mynetworks, "
        "permit_sasl_authenticated, defer_unauth_destination")


@pytest.mark.parametrize(
    "values",
    [
        {},  # the defaults
        {"smtpd_relay_restrictions": "", "smtpd_recipient_restrictions": "permit_mynetworks reject"},
        {"smtpd_restriction_classes": "strict", "strict": "reject_unauth_destination",
         "smtpd_relay_restrictions": "permit_mynetworks strict"},
        {"smtpd_recipient_restrictions": "PERMIT_MYNETWORKS, Reject_Unauth_Destination",
         "smtpd_helo_restrictions": "reject_invalid_hostname reject_non_fqdn_hostname",
         "smtpd_sender_restrictions": "inline:{a@b=OK} static:DUNNO"},
    ],
)
def test_good_lists(values: dict[str, str]) -> None:
    make_engine(**values)


def test_mynetworks_host_bits() -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(mynetworks="192.0.2.1/24")
    assert str(info.value) == ('mynetworks: non-null host address bits in "192.0.2.1/24"; '
                               'perhaps you should use "192.0.2.0/24" instead')
