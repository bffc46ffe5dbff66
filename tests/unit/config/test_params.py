"""The parameter registry and the Params view."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.config.params import (
    KNOWN_RESTRICTIONS,
    PARAMETERS,
    RESTRICTION_ALIASES,
    default_mydomain,
    default_myhostname,
    postfix_names,
    service_parameters,
    split_list,
)
from postillion.errors import ConfigError

REQUIRED = """myhostname mydomain myorigin mydestination mynetworks mynetworks_style relay_domains
inet_interfaces inet_protocols mail_name mail_owner smtpd_banner syslog_name syslog_facility
maillog_file queue_directory data_directory config_directory compatibility_level
message_size_limit header_size_limit line_length_limit smtpd_recipient_limit smtpd_timeout
smtpd_starttls_timeout smtpd_soft_error_limit smtpd_hard_error_limit smtpd_error_sleep_time
smtpd_junk_command_limit smtpd_helo_required smtpd_delay_reject smtpd_client_restrictions
smtpd_helo_restrictions smtpd_sender_restrictions smtpd_relay_restrictions
smtpd_recipient_restrictions smtpd_data_restrictions smtpd_end_of_data_restrictions
smtpd_reject_unlisted_recipient smtpd_reject_unlisted_sender local_recipient_maps alias_maps
smtpd_sender_login_maps smtpd_forbid_unauth_pipelining smtpd_forbid_bare_newline
smtpd_forbid_bare_newline_exclusions smtpd_forbid_bare_newline_reject_code
smtpd_discard_ehlo_keywords disable_vrfy_command smtputf8_enable smtpd_tls_security_level
smtpd_tls_cert_file smtpd_tls_key_file smtpd_tls_chain_files smtpd_tls_wrappermode
smtpd_tls_auth_only smtpd_tls_loglevel smtpd_tls_protocols smtpd_tls_mandatory_protocols
smtpd_tls_ciphers smtpd_tls_received_header smtpd_use_tls smtpd_enforce_tls
smtpd_sasl_auth_enable smtpd_sasl_type smtpd_sasl_path smtpd_sasl_service
smtpd_sasl_security_options smtpd_sasl_tls_security_options smtpd_sasl_local_domain
smtpd_sasl_authenticated_header smtpd_sasl_response_limit smtpd_sasl_exceptions_networks
broken_sasl_auth_clients cyrus_sasl_config_path smtpd_client_auth_rate_limit
smtpd_client_connection_count_limit smtpd_client_connection_rate_limit anvil_rate_time_unit
smtpd_client_event_limit_exceptions smtpd_peername_lookup smtpd_client_port_logging
milter_macro_daemon_name soft_bounce access_map_reject_code access_map_defer_code
relay_domains_reject_code unknown_local_recipient_reject_code reject_code defer_code
recipient_delimiter always_add_missing_headers local_header_rewrite_clients
default_process_limit max_idle max_use service_name process_name postillion_worker_processes
postillion_user_database postillion_syslog_enable""".split()


def test_registry_has_every_required_parameter() -> None:
    assert sorted(set(REQUIRED) - set(PARAMETERS)) == []


def test_registry_names_are_postfix_names_or_ours() -> None:
    # Per-transport names (smtp_destination_concurrency_limit...) exist in Postfix for the
    # transports of its stock master.cf.
    stock = set(service_parameters([("smtp", "smtp"), ("relay", "smtp"), ("lmtp", "lmtp"),
                                    ("local", "local"), ("virtual", "virtual")]))
    strays = [n for n in PARAMETERS
              if n not in postfix_names() | stock and not n.startswith("postillion_")]
    assert strays == []


@pytest.mark.parametrize(("name", "default"), [
    ("smtpd_relay_restrictions",
     "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"),
    ("smtputf8_enable", "yes"),
    ("relay_domains", ""),
    ("mynetworks", "127.0.0.0/8 [::1]/128"),
    ("compatibility_level", "3.6"),
    ("mail_owner", "postillion"),
    ("smtpd_timeout", "300s"),
    ("smtpd_forbid_unauth_pipelining", "yes"),
    ("smtpd_forbid_bare_newline", "normal"),
    ("smtpd_tls_protocols", ">=TLSv1.2"),
    ("smtpd_tls_key_file", "$smtpd_tls_cert_file"),
    ("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps"),
    ("smtpd_client_event_limit_exceptions",
     "${smtpd_client_connection_limit_exceptions:$mynetworks}"),
    ("postillion_user_database", "$data_directory/users.sqlite"),
])
def test_defaults_as_postconf_d_prints_them(name: str, default: str) -> None:
    assert PARAMETERS[name].default == default


def test_params_expand_defaults_and_values() -> None:
    p = Params.from_dict({"myhostname": "mx.example.test"})
    assert p.get("smtpd_banner") == "mx.example.test ESMTP Postfix"
    assert p.get("mydomain") == "example.test"
    assert p.get("mydestination") == "mx.example.test, localhost.example.test, localhost"
    assert p.get("smtpd_client_event_limit_exceptions") == "127.0.0.0/8 [::1]/128"
    assert p.get("postillion_user_database") == "/var/lib/postfix/users.sqlite"
    assert p.get("no_such_parameter") == ""


def test_typed_getters() -> None:
    p = Params.from_dict({"smtpd_timeout": "5m", "smtpd_helo_required": "YES",
                          "smtpd_error_sleep_time": "2", "max_idle": "1w"})
    assert p.get_time("smtpd_timeout") == 300.0
    assert p.get_time("smtpd_error_sleep_time") == 2.0
    assert p.get_time("max_idle") == 604800.0
    assert p.get_bool("smtpd_helo_required") is True
    assert p.get_bool("smtpd_delay_reject") is True
    assert p.get_int("message_size_limit") == 10240000
    assert p.get_list("smtpd_relay_restrictions") == [
        "permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]


@pytest.mark.parametrize(("getter", "name", "value"), [
    ("get_bool", "smtpd_helo_required", "maybe"),
    ("get_int", "message_size_limit", "10M"),
    ("get_time", "smtpd_timeout", "5x"),
])
def test_bad_values_raise_config_error(getter: str, name: str, value: str) -> None:
    p = Params.from_dict({name: value})
    with pytest.raises(ConfigError) as info:
        getattr(p, getter)(name)
    assert info.value.name == name
    assert value in info.value.message


def test_is_set_and_config_dir(tmp_path: Path) -> None:
    p = Params.from_dict({"myhostname": "mx.test"}, config_dir=tmp_path)
    assert p.is_set("myhostname") and not p.is_set("mydomain")
    assert p.config_dir == tmp_path
    assert p.get("config_directory") == str(tmp_path)


def test_service_name_is_per_service() -> None:
    base = Params.from_dict({"syslog_name": "postfix/$service_name"})
    assert base.with_overrides({}, service_name="submission").get("syslog_name") == \
        "postfix/submission"


def test_split_list_keeps_brace_groups() -> None:
    assert split_list("a, inline:{ k=v, { k2 = v 2 } }\n\tb,,c") == [
        "a", "inline:{ k=v, { k2 = v 2 } }", "b", "c"]


def test_myhostname_rule_like_postfix() -> None:
    host = socket.gethostname()
    name = default_myhostname()
    assert "." in name
    assert name.split(".")[0] == host.split(".")[0]
    assert default_mydomain("mx.example.test") == "example.test"
    assert default_mydomain("localhost") == "localdomain"


def test_postfix_names_are_shipped() -> None:
    names = postfix_names()
    assert len(names) > 800
    assert {"biff", "smtpd_tls_security_level", "2bounce_notice_recipient"} <= names


def test_service_parameters_follow_master_cf() -> None:
    derived = service_parameters([("relay", "smtp"), ("smtp", "smtpd"), ("x", "pipe")])
    assert derived["relay_destination_concurrency_limit"] == \
        "$default_destination_concurrency_limit"
    assert derived["relay_initial_destination_concurrency"] == "$initial_destination_concurrency"
    assert derived["x_time_limit"] == "$command_time_limit"
    assert "smtp_delivery_slot_cost" not in derived
    assert len(derived) == 33


def test_known_restrictions() -> None:
    # `postillion check` and the policy engine read the same list, so they cannot drift.
    from postillion.policy._restrictions import SUPPORTED

    assert KNOWN_RESTRICTIONS == SUPPORTED | set(RESTRICTION_ALIASES)
    assert set(RESTRICTION_ALIASES.values()) <= SUPPORTED
    assert {"permit_sasl_authenticated", "reject_unauth_destination",
            "reject_sender_login_mismatch", "check_sender_access"} <= KNOWN_RESTRICTIONS
