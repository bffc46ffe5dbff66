"""Everything one smtpd service needs at run time, built once per worker from its Params.

Owns: turning a master.cf service's parameters into the engine ``Settings``, the TLS context,
the SASL server, the restriction engine, the queue store and the service's log.
Must not import: cli.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from postillion.config import Params, Service
from postillion.errors import ConfigError
from postillion.delivery.virtual import VirtualAliases
from postillion.maillog import MailLog
from postillion.policy import PolicyEngine
from postillion.queue import wakeup
from postillion.queue.store import QueueStore
from postillion.sasl.verifiers import SaslServerConfig, make_sasl_server, offered_mechanisms
from postillion.server import tls
from postillion.server.anvil import AnvilClient
from postillion.smtp import Settings
from postillion.policy._lists import NetworkList


@dataclass(slots=True)
class ServiceContext:
    """Per-service, per-worker state shared by all sessions of that service."""

    service: Service
    params: Params
    settings: Settings
    ssl_context: ssl.SSLContext | None
    wrappermode: bool
    sasl: SaslServerConfig | None
    policy: PolicyEngine
    queue: QueueStore
    log: MailLog
    anvil: AnvilClient | None
    myhostname: str
    banner: str
    timeout: float
    starttls_timeout: float
    error_sleep: float
    tls_loglevel: int
    port_logging: bool
    peername_lookup: bool
    auth_rate_limit: int
    connection_count_limit: int
    connection_rate_limit: int
    limit_exceptions: NetworkList
    sasl_service: str
    sasl_realm: str
    authenticated_header: bool
    tls_received_header: bool
    mail_name: str
    bare_newline_exclusions: list[str]
    header_rewrite_clients: list[str]
    mynetworks: NetworkList
    sasl_exceptions: NetworkList
    qmgr_wake: Path
    virtual_aliases: VirtualAliases | None

    async def limits_apply(self, client_name: str, client_addr: str) -> bool:
        """Anvil limits skip smtpd_client_event_limit_exceptions (default $mynetworks)."""
        return not await self.limit_exceptions.match(client_name, client_addr)


def tls_level(params: Params) -> str:
    level = params.get("smtpd_tls_security_level").strip().lower()
    if not level:
        # Postfix's legacy switches, used when the level is not set
        if params.get_bool("smtpd_enforce_tls"):
            return "encrypt"
        if params.get_bool("smtpd_use_tls"):
            return "may"
        return "none"
    return level


def build_service(
    service: Service,
    params: Params,
    *,
    log: MailLog,
    anvil: AnvilClient | None,
) -> ServiceContext:
    wrappermode = params.get_bool("smtpd_tls_wrappermode")
    level = tls_level(params)
    ssl_context = tls.make_server_context(params)
    if (level == "encrypt" or wrappermode) and ssl_context is None:
        raise ConfigError(
            "TLS is required but no certificate is configured",
            name="smtpd_tls_cert_file",
            fix="set smtpd_tls_cert_file and smtpd_tls_key_file (postillion init creates a self-signed pair)",
        )
    auth_enabled = params.get_bool("smtpd_sasl_auth_enable")
    sasl = make_sasl_server(params) if auth_enabled else None
    for note in sasl.notes if sasl else []:
        log.warning(note)  # e.g. Dovecot unreachable at start, mech_list entries ignored
    mechs = sasl.mechanisms if sasl else []
    plain_mechs = offered_mechanisms(mechs, params.get_list("smtpd_sasl_security_options"), tls=False)
    tls_mechs = offered_mechanisms(mechs, params.get_list("smtpd_sasl_tls_security_options"))
    myhostname = params.get("myhostname")
    settings = Settings(
        hostname=myhostname,
        tls_available=ssl_context is not None and level in ("may", "encrypt") and not wrappermode,
        tls_required=level == "encrypt" and not wrappermode,
        auth_enabled=auth_enabled,
        auth_tls_only=params.get_bool("smtpd_tls_auth_only") or level == "encrypt",
        auth_mechanisms=tuple(plain_mechs),
        auth_mechanisms_tls=tuple(tls_mechs),
        broken_sasl_auth_clients=params.get_bool("broken_sasl_auth_clients"),
        message_size_limit=params.get_int("message_size_limit"),
        line_length_limit=params.get_int("line_length_limit"),
        recipient_limit=params.get_int("smtpd_recipient_limit"),
        recipient_overshoot_limit=params.get_int("smtpd_recipient_overshoot_limit"),
        soft_error_limit=params.get_int("smtpd_soft_error_limit"),
        hard_error_limit=params.get_int("smtpd_hard_error_limit"),
        junk_command_limit=params.get_int("smtpd_junk_command_limit"),
        helo_required=params.get_bool("smtpd_helo_required"),
        disable_vrfy=params.get_bool("disable_vrfy_command"),
        smtputf8_enable=params.get_bool("smtputf8_enable"),
        discard_ehlo_keywords=frozenset(w.lower() for w in params.get_list("smtpd_discard_ehlo_keywords")),
        forbid_unauth_pipelining=params.get_bool("smtpd_forbid_unauth_pipelining"),
        forbid_bare_newline=(params.get("smtpd_forbid_bare_newline").strip().lower() or "normal"),
        bare_newline_reject_code=params.get_int("smtpd_forbid_bare_newline_reject_code"),
        sasl_response_limit=params.get_int("smtpd_sasl_response_limit"),
    )
    queue = QueueStore(
        params.path("queue_directory") or params.config_dir / "spool",
        long_queue_ids=params.get_bool("enable_long_queue_ids"),
    )
    return ServiceContext(
        service=service,
        params=params,
        settings=settings,
        ssl_context=ssl_context,
        wrappermode=wrappermode,
        sasl=sasl,
        policy=PolicyEngine(params, params.config_dir),
        queue=queue,
        log=log,
        anvil=anvil,
        myhostname=myhostname,
        banner=params.get("smtpd_banner"),
        timeout=params.get_time("smtpd_timeout"),
        starttls_timeout=params.get_time("smtpd_starttls_timeout"),
        error_sleep=params.get_time("smtpd_error_sleep_time"),
        tls_loglevel=params.get_int("smtpd_tls_loglevel"),
        port_logging=params.get_bool("smtpd_client_port_logging"),
        peername_lookup=params.get_bool("smtpd_peername_lookup"),
        auth_rate_limit=params.get_int("smtpd_client_auth_rate_limit"),
        connection_count_limit=params.get_int("smtpd_client_connection_count_limit"),
        connection_rate_limit=params.get_int("smtpd_client_connection_rate_limit"),
        limit_exceptions=NetworkList(
            "smtpd_client_event_limit_exceptions",
            params.get_list("smtpd_client_event_limit_exceptions"),
            params.config_dir,
        ),
        sasl_service=params.get("smtpd_sasl_service") or "smtp",
        sasl_realm=params.get("smtpd_sasl_local_domain"),
        authenticated_header=params.get_bool("smtpd_sasl_authenticated_header"),
        tls_received_header=params.get_bool("smtpd_tls_received_header"),
        mail_name=params.get("mail_name") or "Postfix",
        bare_newline_exclusions=params.get_list("smtpd_forbid_bare_newline_exclusions"),
        header_rewrite_clients=[w.lower() for w in params.get_list("local_header_rewrite_clients")],
        mynetworks=NetworkList("mynetworks", params.get_list("mynetworks"), params.config_dir),
        qmgr_wake=wakeup.socket_path(queue.queue_directory),
        virtual_aliases=VirtualAliases(params) if params.get("virtual_alias_maps").strip() else None,
        sasl_exceptions=NetworkList(
            "smtpd_sasl_exceptions_networks",
            params.get_list("smtpd_sasl_exceptions_networks"),
            params.config_dir,
        ),
    )
