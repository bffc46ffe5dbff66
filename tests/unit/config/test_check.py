"""check_config: every diagnostic names file:line, the parameter, the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from postillion.config import Diagnostic, check_config

SMTP = "smtp inet n - n - - smtpd\n"


def write(tmp_path: Path, main: str, master: str = SMTP) -> Path:
    (tmp_path / "main.cf").write_text(main)
    (tmp_path / "master.cf").write_text(master)
    return tmp_path


def rendered(config_dir: Path) -> list[str]:
    """Each diagnostic as `postillion check` prints it after ``postillion: ``."""
    return [f"{d.severity}: {d.render()}" for d in check_config(config_dir)]


def test_clean_config_has_no_diagnostics(tmp_path: Path) -> None:
    assert check_config(write(tmp_path, "myhostname = mx.example.test\n")) == []


def test_unknown_parameter_did_you_mean(tmp_path: Path) -> None:
    diags = check_config(write(tmp_path, "myhostname = mx.test\nsmtpd_tls_levle = encrypt\n"))
    assert diags == [Diagnostic("error", Path("main.cf"), 2, "smtpd_tls_levle",
                                "unknown parameter",
                                'did you mean "smtpd_tls_security_level"?')]
    assert diags[0].render() == ('main.cf:2: smtpd_tls_levle: unknown parameter; '
                                 'did you mean "smtpd_tls_security_level"?')


def test_user_parameter_referenced_elsewhere_is_fine(tmp_path: Path) -> None:
    main = "mua_client_restrictions = permit_sasl_authenticated, reject\n"
    master = SMTP + "2525 inet n - n - - smtpd -o smtpd_client_restrictions=$mua_client_restrictions\n"
    assert rendered(write(tmp_path, main, master)) == []


def test_ignored_postfix_parameter_is_a_warning(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, "biff = no\n")) == [
        "warning: main.cf:1: biff: Postfix parameter accepted but ignored by postillion; "
        "remove it, or check docs/compatibility.md for what postillion supports"]


def test_bad_typed_values(tmp_path: Path) -> None:
    got = rendered(write(tmp_path, "smtpd_helo_required = maybe\nsmtpd_timeout = 5x\n"
                                   "message_size_limit = 10M\n"))
    assert got == [
        'error: main.cf:1: smtpd_helo_required: bad boolean value "maybe"; use "yes" or "no"',
        'error: main.cf:2: smtpd_timeout: bad time value "5x"; use a number with an optional unit '
        's, m, h, d or w, such as the default 300s',
        'error: main.cf:3: message_size_limit: bad numerical value "10M"; use a whole number, '
        'such as the default 10240000',
    ]


def test_duplicate_definition_warning(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, "myhostname = a.test\nmyhostname = b.test\n")) == [
        "warning: main.cf:2: myhostname: overriding earlier entry at line 1: "
        "myhostname=a.test; remove one of the two definitions"]


def test_override_problem_names_master_cf_line(tmp_path: Path) -> None:
    master = SMTP + "submission inet n - n - - smtpd\n  -o smtpd_tls_wrapermode=yes\n"
    assert rendered(write(tmp_path, "", master)) == [
        'error: master.cf:3: smtpd_tls_wrapermode: unknown parameter; '
        'did you mean "smtpd_tls_wrappermode"?']


def test_restrictions_and_tables(tmp_path: Path) -> None:
    main = ("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destinaton,\n"
            "  check_sender_access hash:/etc/postfix/access, check_client_access,\n"
            "  reject_rbl_client zen.example\n"
            "smtpd_sender_login_maps = inline:{a@x=a}, btree:/x\n")
    assert rendered(write(tmp_path, main)) == [
        'error: main.cf:1: smtpd_recipient_restrictions: unknown restriction '
        '"reject_unauth_destinaton"; did you mean "reject_unauth_destination"?',
        'error: main.cf:1: smtpd_recipient_restrictions: unsupported lookup table type "hash" in '
        '"hash:/etc/postfix/access"; use one of the table types inline, pcre, postillion, proxy, regexp, sqlite, static, '
        'texthash, unix',
        'error: main.cf:1: smtpd_recipient_restrictions: check_client_access requires a type:name '
        'table argument; write check_client_access texthash:/path/to/table',
        'error: main.cf:1: smtpd_recipient_restrictions: restriction "reject_rbl_client" is not '
        'implemented by postillion; remove it from the list',
        'error: main.cf:1: smtpd_recipient_restrictions: unknown restriction "zen.example"; '
        'see KNOWN_RESTRICTIONS in docs/compatibility.md',
        'error: main.cf:4: smtpd_sender_login_maps: unsupported lookup table type "btree" in '
        '"btree:/x"; use one of the table types inline, pcre, postillion, proxy, regexp, sqlite, static, texthash, unix',
    ]


def test_encrypt_without_certificate(tmp_path: Path) -> None:
    master = SMTP + "submission inet n - n - - smtpd -o smtpd_tls_security_level=encrypt\n"
    assert rendered(write(tmp_path, "", master)) == [
        "error: master.cf:2: smtpd_tls_security_level: TLS is required but no server certificate "
        "is configured; set smtpd_tls_cert_file and smtpd_tls_key_file "
        "(or smtpd_tls_chain_files)"]


def test_missing_certificate_file_names_the_path(tmp_path: Path) -> None:
    got = rendered(write(tmp_path, "smtpd_tls_security_level = may\n"
                                   "smtpd_tls_cert_file = certs/none.pem\n"))
    assert got == [f"error: main.cf:2: smtpd_tls_cert_file: certificate file not found: "
                   f"{tmp_path}/certs/none.pem; fix the path, or create the file "
                   f"(e.g. with openssl req -x509)"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_matching_and_mismatched_cert_and_key(tmp_path: Path, ca: trustme.CA) -> None:
    good = ca.issue_cert("mx.example.test")
    other = ca.issue_cert("other.example.test")
    good.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    good.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.pem"))
    main = ("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = cert.pem\n"
            "smtpd_tls_key_file = key.pem\n")
    assert rendered(write(tmp_path, main)) == []
    (tmp_path / "main.cf").write_text(main.replace("key.pem", "other.pem"))
    assert rendered(tmp_path) == [
        f"error: main.cf:3: smtpd_tls_key_file: private key {tmp_path}/other.pem does not match the "
        f"certificate in {tmp_path}/cert.pem; use the key the certificate was issued for"]


def test_auth_without_tls_warning(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, "smtpd_sasl_auth_enable = yes\n")) == [
        "warning: main.cf:1: smtpd_sasl_auth_enable: AUTH is offered without TLS: passwords "
        "can be sent in cleartext; set smtpd_tls_auth_only = yes, or "
        "smtpd_tls_security_level = encrypt"]
    assert rendered(write(tmp_path, "smtpd_sasl_auth_enable = yes\n"
                                    "smtpd_tls_auth_only = yes\n")) == []


def test_open_relay_warning(tmp_path: Path) -> None:
    master = SMTP + "2526 inet n - n - - smtpd -o smtpd_relay_restrictions=permit\n"
    assert rendered(write(tmp_path, "", master)) == [
        "warning: master.cf:2: smtpd_relay_restrictions: 2526/inet: open relay: the relay "
        "and recipient restrictions permit any destination; put \"reject_unauth_destination\" "
        "before \"permit\""]


def test_syntax_errors_are_diagnostics(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, "", "smtp inet n - n -\n")) == [
        'error: master.cf:1: smtp: bad field count (6 instead of at least 8) in "smtp inet n - n -"; '
        'write: service type private unpriv chroot wakeup maxproc command [args]']
    assert rendered(write(tmp_path, "junk\n")) == [
        "error: main.cf:1: missing '=' after parameter name: \"junk\"; write \"name = value\""]


def test_undefined_parameter_reference_is_a_warning(tmp_path: Path) -> None:
    # The recipe's submission entry without mua_client_restrictions in main.cf: the list would
    # silently be empty, as Postfix's postconf warns.
    master = SMTP + "2587 inet n - n - - smtpd\n  -o smtpd_client_restrictions=$mua_client_restrictions\n"
    assert rendered(write(tmp_path, "", master)) == [
        "warning: master.cf:3: smtpd_client_restrictions: undefined parameter $mua_client_restrictions: "
        'it expands to nothing; define mua_client_restrictions in main.cf (e.g. '
        '"mua_client_restrictions = permit_sasl_authenticated, reject")'
    ]
    defined = "mua_client_restrictions = permit_sasl_authenticated, reject\n"
    assert rendered(write(tmp_path, defined, master)) == []


def test_unused_user_parameter_is_a_warning_but_a_near_miss_is_an_error(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, "my_own_list = permit\nsmtpd_tls_levle = may\n")) == [
        "warning: main.cf:1: my_own_list: unused parameter; remove it, or use it as $my_own_list "
        "in another parameter",
        'error: main.cf:2: smtpd_tls_levle: unknown parameter; did you mean "smtpd_tls_security_level"?',
    ]


def test_broken_table_contents_are_errors(tmp_path: Path) -> None:
    main = "virtual_alias_maps = inline:{ team@example.org=ann@example.org,bob@example.org }\n"
    assert rendered(write(tmp_path, main)) == [
        "error: main.cf:1: virtual_alias_maps: inline:{ team@example.org=ann@example.org,"
        "bob@example.org }: bad entry 'bob@example.org': need key=value; "
        'use "{ key = value with spaces }" for values with spaces',
    ]


# The recipe's submission service with a relay list that permits before it rejects: unauthenticated clients are
# rejected by smtpd_client_restrictions before the relay decision, so nothing is open.
SUBMISSION = ("2587 inet n - n - - smtpd\n"
              "  -o smtpd_client_restrictions=$mua_client_restrictions\n"
              "  -o smtpd_relay_restrictions=permit_sasl_authenticated,permit,reject_unauth_destination\n")
MUA = "mua_client_restrictions = permit_sasl_authenticated, reject\n"
OPEN_2587 = ("warning: master.cf:1: smtpd_relay_restrictions: 2587/inet: open relay: the relay "
             "and recipient restrictions permit any destination; put \"reject_unauth_destination\" "
             "before \"permit\"")


def test_open_relay_check_follows_client_restrictions(tmp_path: Path) -> None:
    assert rendered(write(tmp_path, MUA, SUBMISSION)) == []


def test_open_relay_without_client_restrictions_is_still_flagged(tmp_path: Path) -> None:
    master = ("2587 inet n - n - - smtpd\n"
              "  -o smtpd_relay_restrictions=permit_sasl_authenticated,permit,reject_unauth_destination\n")
    assert rendered(write(tmp_path, "", master)) == [OPEN_2587.replace("master.cf:1", "master.cf:2")]


def test_open_relay_when_client_list_permits_strangers_first(tmp_path: Path) -> None:
    # "permit" ends only the client list; the relay list still decides and lets anyone through.
    main = "mua_client_restrictions = permit, reject\n"
    assert rendered(write(tmp_path, main, SUBMISSION)) == [OPEN_2587.replace("master.cf:1", "master.cf:3")]


@pytest.mark.parametrize("param", ["smtpd_helo_restrictions", "smtpd_sender_restrictions"])
def test_helo_or_sender_reject_closes_the_relay(tmp_path: Path, param: str) -> None:
    master = ("2587 inet n - n - - smtpd\n"
              f"  -o {param}=permit_sasl_authenticated,reject\n"
              "  -o smtpd_relay_restrictions=permit_sasl_authenticated,permit,reject_unauth_destination\n")
    assert rendered(write(tmp_path, "", master)) == []


def test_reject_unauth_destination_in_client_list_needs_delay_reject(tmp_path: Path) -> None:
    master = ("2587 inet n - n - - smtpd\n"
              "  -o smtpd_client_restrictions=reject_unauth_destination\n"
              "  -o smtpd_relay_restrictions=permit,reject\n")
    assert rendered(write(tmp_path, "", master)) == []
    assert rendered(write(tmp_path, "smtpd_delay_reject = no\n", master)) == [
        OPEN_2587.replace("master.cf:1", "master.cf:3")]


def test_relay_and_recipient_lists_must_both_pass(tmp_path: Path) -> None:
    master = ("2587 inet n - n - - smtpd\n"
              "  -o smtpd_relay_restrictions=permit\n"
              "  -o smtpd_recipient_restrictions=reject_unauth_destination\n")
    assert rendered(write(tmp_path, "", master)) == []


def test_client_reject_does_not_hide_a_missing_relay_restriction(tmp_path: Path) -> None:
    # Without any reject in the relay and recipient lists every RCPT TO fails, even
    # authenticated ones: that warning stays whatever the client list says.
    master = ("2587 inet n - n - - smtpd\n"
              "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
              "  -o smtpd_relay_restrictions=permit_sasl_authenticated,permit\n")
    assert rendered(write(tmp_path, "", master)) == [
        "warning: master.cf:3: smtpd_relay_restrictions: 2587/inet: neither "
        "smtpd_relay_restrictions nor smtpd_recipient_restrictions rejects unauthorized "
        "destinations; mail will be refused with 451 4.3.5 Server configuration error; "
        'end smtpd_relay_restrictions with "reject_unauth_destination"']


def test_skipped_pattern_rules_are_warnings(tmp_path: Path) -> None:
    """Rules a regexp:/pcre: table skips (Postfix logs them when it opens the map) are check
    warnings, including $1 in alias_maps, which local(8) never substitutes."""
    (tmp_path / "hc").write_text("/^Subject: (.*)/ REJECT $2\n")
    (tmp_path / "al").write_text('/^(.*)-run$/ "|/bin/echo $1"\n')
    (tmp_path / "main.cf").write_text("header_checks = regexp:hc\nalias_maps = pcre:al\n")
    found = [(d.severity, d.name, d.message) for d in check_config(tmp_path)]
    assert ("warning", "header_checks", f'regexp map {tmp_path}/hc, line 1: out of range '
            'replacement index "2": skipping this rule') in found
    assert ("warning", "alias_maps", f"pcre map {tmp_path}/al, line 1: regular expression "
            "substitution is not allowed: skipping this rule") in found
    assert not [f for f in found if f[1] in ("mime_header_checks", "nested_header_checks")]
