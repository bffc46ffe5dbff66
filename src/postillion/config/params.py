"""The parameter registry and the ``Params`` view that the rest of postillion reads.

Owns: ``PARAMETERS`` (every parameter postillion implements: type, default exactly as
``postconf -d`` prints it, one-line doc), ``KNOWN_RESTRICTIONS``, ``SUPPORTED_TABLE_TYPES``,
the list of all Postfix parameter names (``postfix_names()``), and ``Params``.
Must not import: anything above ``postillion.errors`` and ``postillion.tokens`` (no server, queue,
policy, cli).
Follows: postconf(5) of Postfix 3.7 for names and defaults, with the defaults of
``compatibility_level = 3.6`` written out resolved (``smtputf8_enable = yes``, ...), and
the Postfix 3.9 defaults for ``smtpd_forbid_unauth_pipelining``/``smtpd_forbid_bare_newline``.
Postfix's ``${stress?{a}:{b}}`` defaults are written as their non-stress value.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from postillion.errors import ConfigError
from postillion.config.expand import expand
from postillion.tokens import split_words

ParamType = str  # "str" | "bool" | "int" | "time" | "size" | "list"
PARAM_TYPES = frozenset({"str", "bool", "int", "time", "size", "list"})


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter: ``default`` is the unexpanded text ``postconf -d`` prints.

    ``unit`` is the unit of a bare number for ``time`` parameters (Postfix's per-parameter
    default unit, e.g. ``s`` for smtpd_timeout, ``d`` for maximal_queue_lifetime).
    """

    name: str
    type: ParamType
    default: str
    doc: str
    unit: str = "s"


# Parameters whose default is computed at run time, like Postfix's check_myhostname().
DYNAMIC_DEFAULTS = frozenset({"myhostname", "mydomain"})


def _spec_list(rows: Iterable[tuple[str, str, str, str]]) -> dict[str, ParamSpec]:
    out: dict[str, ParamSpec] = {}
    for name, typ, default, doc in rows:
        unit = "s"
        if typ.startswith("time:"):
            typ, unit = "time", typ[5:]
        assert typ in PARAM_TYPES, (name, typ)
        assert name not in out, name
        out[name] = ParamSpec(name, typ, default, doc, unit)
    return out


_RELAY_DEFAULT = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"

PARAMETERS: dict[str, ParamSpec] = _spec_list([
    # --- identity and addresses
    ("myhostname", "str", "", "Internet hostname of this mail system (default: the FQDN of this host)"),
    ("mydomain", "str", "", "Internet domain name of this mail system (default: $myhostname minus its first label)"),
    ("myorigin", "str", "$myhostname", "Domain that locally-posted mail appears to come from"),
    ("mydestination", "list", "$myhostname, localhost.$mydomain, localhost", "Domains this machine delivers locally"),
    ("mynetworks", "list", "127.0.0.0/8 [::1]/128", "Trusted remote SMTP clients (permit_mynetworks)"),
    ("mynetworks_style", "str", "host", "How to compute mynetworks when it is not set (host, subnet, class)"),
    ("relay_domains", "list", "", "Remote domains this system relays mail to"),
    ("inet_interfaces", "list", "all", "Network interface addresses this mail system listens on"),
    ("inet_protocols", "list", "all", "Internet protocols to use (ipv4, ipv6, all)"),
    ("mail_name", "str", "Postfix", "Mail system name in the SMTP greeting and Received: headers"),
    ("mail_owner", "str", "postillion", "UNIX account that owns the queue and runs unprivileged processes"),
    ("smtpd_banner", "str", "$myhostname ESMTP $mail_name", "Text after the 220 code in the SMTP greeting"),
    ("compatibility_level", "str", "3.6", "Backwards-compatible default settings level"),
    # --- logging and paths
    ("syslog_name", "str", "postfix", "Mail system name prepended to the process name in log records"),
    ("syslog_facility", "str", "mail", "Syslog facility for log records"),
    ("maillog_file", "str", "", "File to log to instead of syslog (empty: syslog)"),
    ("queue_directory", "str", "/var/spool/postfix", "Location of the mail queue"),
    ("data_directory", "str", "/var/lib/postfix", "Directory with writable data files (caches, user database)"),
    ("config_directory", "str", "/etc/postfix", "Directory with main.cf and master.cf"),
    # --- limits
    ("message_size_limit", "size", "10240000", "Maximal size in bytes of a message including envelope"),
    ("header_size_limit", "size", "102400", "Maximal amount of memory in bytes for one message header"),
    ("line_length_limit", "size", "2048", "Maximal length of an SMTP line before it is broken up"),
    ("smtpd_recipient_limit", "int", "1000", "Maximal number of recipients per message"),
    ("smtpd_timeout", "time", "300s", "Time limit for sending a reply and receiving a request"),
    ("smtpd_starttls_timeout", "time", "300s", "Time limit for the TLS handshake after STARTTLS"),
    ("smtpd_soft_error_limit", "int", "10", "Errors after which the server sleeps before each reply"),
    ("smtpd_hard_error_limit", "int", "20", "Errors after which the server disconnects"),
    ("smtpd_error_sleep_time", "time", "1s", "Sleep time before an error reply (soft error limit)"),
    ("smtpd_junk_command_limit", "int", "100", "Limit on NOOP/VRFY/ETRN/RSET commands without progress"),
    ("smtpd_recipient_overshoot_limit", "int", "1000", "Recipients beyond the limit that count as errors"),
    # --- restrictions
    ("smtpd_helo_required", "bool", "no", "Require HELO or EHLO before MAIL FROM"),
    ("smtpd_delay_reject", "bool", "yes", "Wait until RCPT TO before applying client/helo/sender restrictions"),
    ("smtpd_client_restrictions", "list", "", "Restrictions at connect time"),
    ("smtpd_helo_restrictions", "list", "", "Restrictions on the HELO/EHLO command"),
    ("smtpd_sender_restrictions", "list", "", "Restrictions on MAIL FROM"),
    ("smtpd_relay_restrictions", "list", _RELAY_DEFAULT, "Mail relay control restrictions on RCPT TO"),
    ("smtpd_recipient_restrictions", "list", "", "Spam blocking restrictions on RCPT TO"),
    ("smtpd_data_restrictions", "list", "", "Restrictions on the DATA command"),
    ("smtpd_end_of_data_restrictions", "list", "", "Restrictions after the end of message"),
    ("smtpd_reject_unlisted_recipient", "bool", "yes", "Reject recipients not listed in a local/virtual/relay table"),
    ("smtpd_reject_unlisted_sender", "bool", "no", "Reject sender addresses unknown to local tables"),
    ("local_recipient_maps", "list", "proxy:unix:passwd.byname $alias_maps", "Lookup tables with all local recipient names"),
    ("alias_maps", "list", "", "Alias tables (empty: postillion does not read hash: tables)"),
    ("smtpd_sender_login_maps", "list", "", "Tables: MAIL FROM address -> SASL login names that own it"),
    ("smtpd_forbid_unauth_pipelining", "bool", "yes", "Disconnect clients that pipeline commands without PIPELINING"),
    ("smtpd_forbid_bare_newline", "str", "normal", "Reject bare LF line endings (no, normal, note)"),
    ("smtpd_forbid_bare_newline_exclusions", "list", "$mynetworks", "Clients excluded from smtpd_forbid_bare_newline"),
    ("smtpd_forbid_bare_newline_reject_code", "int", "550", "Reply code when smtpd_forbid_bare_newline rejects"),
    ("smtpd_discard_ehlo_keywords", "list", "", "EHLO keywords not announced and not accepted"),
    ("disable_vrfy_command", "bool", "no", "Disable the SMTP VRFY command"),
    ("smtputf8_enable", "bool", "yes", "Enable SMTPUTF8 support"),
    ("smtpd_client_event_limit_exceptions", "list", "${smtpd_client_connection_limit_exceptions:$mynetworks}",
     "Clients exempt from connection and rate limits"),
    ("smtpd_client_auth_rate_limit", "int", "0", "Maximal AUTH commands per client per time unit (0: none)"),
    ("smtpd_client_connection_count_limit", "int", "50", "Maximal simultaneous connections per client"),
    ("smtpd_client_connection_rate_limit", "int", "0", "Maximal connections per client per time unit (0: none)"),
    ("anvil_rate_time_unit", "time", "60s", "Time unit of the client rate limits"),
    ("smtpd_peername_lookup", "bool", "yes", "Look up the client hostname in DNS"),
    ("smtpd_client_port_logging", "bool", "no", "Log the client port along with the address"),
    ("milter_macro_daemon_name", "str", "$myhostname", "The {daemon_name} macro value"),
    # --- TLS
    ("smtpd_tls_security_level", "str", "", "SMTP server TLS level (none, may, encrypt)"),
    ("smtpd_tls_cert_file", "str", "", "PEM server certificate file"),
    ("smtpd_tls_key_file", "str", "$smtpd_tls_cert_file", "PEM server private key file"),
    ("smtpd_tls_chain_files", "list", "", "Files with private key followed by certificate chain"),
    ("smtpd_tls_wrappermode", "bool", "no", "Implicit TLS on connect (port 465) instead of STARTTLS"),
    ("smtpd_tls_auth_only", "bool", "no", "Offer AUTH only after TLS is established"),
    ("smtpd_tls_loglevel", "int", "0", "Amount of TLS logging"),
    ("smtpd_tls_protocols", "list", ">=TLSv1.2", "TLS protocols accepted with opportunistic TLS"),
    ("smtpd_tls_mandatory_protocols", "list", ">=TLSv1.2", "TLS protocols accepted with mandatory TLS"),
    ("smtpd_tls_ciphers", "str", "medium", "Minimum cipher grade with opportunistic TLS"),
    ("smtpd_tls_mandatory_ciphers", "str", "medium", "Minimum cipher grade with mandatory TLS"),
    ("smtpd_tls_received_header", "bool", "no", "Record TLS protocol and cipher in the Received: header"),
    ("smtpd_use_tls", "bool", "no", "Obsolete: like smtpd_tls_security_level = may"),
    ("smtpd_enforce_tls", "bool", "no", "Obsolete: like smtpd_tls_security_level = encrypt"),
    # --- SASL
    ("smtpd_sasl_auth_enable", "bool", "no", "Enable SMTP AUTH"),
    ("smtpd_sasl_type", "str", "cyrus", "SASL server plugin type (cyrus, dovecot)"),
    ("smtpd_sasl_path", "str", "smtpd", "Cyrus application name or Dovecot auth socket path"),
    ("smtpd_sasl_service", "str", "smtp", "SASL service name"),
    ("smtpd_sasl_security_options", "list", "noanonymous", "SASL mechanism restrictions without TLS"),
    ("smtpd_sasl_tls_security_options", "list", "$smtpd_sasl_security_options",
     "SASL mechanism restrictions with TLS"),
    ("smtpd_sasl_local_domain", "str", "", "SASL authentication realm"),
    ("smtpd_sasl_authenticated_header", "bool", "no", "Record the SASL login name in the Received: header"),
    ("smtpd_sasl_response_limit", "size", "12288", "Maximal length of a SASL client response"),
    ("smtpd_sasl_exceptions_networks", "list", "", "Clients that are not offered AUTH"),
    ("broken_sasl_auth_clients", "bool", "no", "Also announce AUTH=mech for old Outlook clients"),
    ("cyrus_sasl_config_path", "str", "", "Where Cyrus SASL looks for smtpd.conf"),
    # --- reply codes
    ("soft_bounce", "bool", "no", "Turn 5xx rejects into 4xx"),
    ("access_map_reject_code", "int", "554", "Reply code for REJECT in an access table"),
    ("access_map_defer_code", "int", "450", "Reply code for DEFER in an access table"),
    ("relay_domains_reject_code", "int", "554", "Reply code for reject_unauth_destination"),
    ("unknown_local_recipient_reject_code", "int", "550", "Reply code for unknown local recipients"),
    ("reject_code", "int", "554", "Reply code for the reject restriction"),
    ("defer_code", "int", "450", "Reply code for the defer restriction"),
    ("unverified_recipient_reject_code", "int", "450", "Reply code for unverified recipients"),
    # --- message handling
    ("recipient_delimiter", "str", "", "Separators between user names and address extensions"),
    ("always_add_missing_headers", "bool", "no", "Add missing From:/To:/Date:/Message-ID: headers"),
    ("local_header_rewrite_clients", "list", "permit_inet_interfaces, permit_sasl_authenticated",
     "Clients whose messages get missing Date:, Message-Id: and From: headers"),
    # --- processes
    ("default_process_limit", "int", "100", "Default maximal number of processes per service"),
    ("max_idle", "time", "100s", "Time a process waits for a new connection before it exits"),
    ("max_use", "int", "100", "Connections a process handles before it exits"),
    ("service_name", "str", "", "The master.cf service name of the running process (read-only)"),
    ("process_name", "str", "", "The name of the running program (read-only)"),
    ("smtpd_relay_before_recipient_restrictions", "bool",
     "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
     "Evaluate smtpd_relay_restrictions before smtpd_recipient_restrictions"),
    ("parent_domain_matches_subdomains", "list",
     "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
     "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
     "Features where a domain name matches its subdomains"),
    ("smtpd_null_access_lookup_key", "str", "<>", "Lookup key for the null sender in access tables"),
    ("non_fqdn_reject_code", "int", "504", "Reply code for reject_non_fqdn_*"),
    ("invalid_hostname_reject_code", "int", "501", "Reply code for reject_invalid_helo_hostname"),
    ("allow_untrusted_routing", "bool", "no", "Relay for source-routed addresses (user%host@...)"),
    ("show_user_unknown_table_name", "bool", "yes", "Name the recipient table in User unknown replies"),
    ("smtpd_restriction_classes", "list", "", "User-defined aliases for groups of restrictions"),
    ("virtual_alias_domains", "list", "$virtual_alias_maps", "Virtual alias domains"),
    ("virtual_alias_maps", "list", "", "Virtual alias tables"),
    ("virtual_mailbox_domains", "list", "$virtual_mailbox_maps", "Virtual mailbox domains"),
    ("virtual_mailbox_maps", "list", "", "Virtual mailbox tables"),
    ("enable_long_queue_ids", "bool", "no", "Long, non-repeating queue IDs"),
    ("smtpd_tls_ask_ccert", "bool", "no", "Ask the client for a certificate"),
    ("smtpd_tls_CAfile", "str", "", "CA certificates for client certificate verification"),
    ("daemon_directory", "str", "/usr/libexec/postillion", "Where the server programs live (for log texts)"),
    ("service_throttle_time", "time", "60s", "How long to pause a service whose processes keep failing"),
    ("anvil_status_update_time", "time", "600s", "How often anvil logs its peak statistics"),
    # --- queue manager (queue/qmgr.py, server/queue_process.py)
    ("relayhost", "str", "", "Next hop for non-local mail ([host]:port skips the MX lookup)"),
    ("default_transport", "str", "smtp", "Transport for mail to remote domains"),
    ("relay_transport", "str", "relay", "Transport for mail to relay_domains"),
    ("local_transport", "str", "local:$myhostname", "Transport for mail to mydestination"),
    ("virtual_transport", "str", "virtual", "Transport for mail to virtual_mailbox_domains"),
    ("transport_maps", "list", "", "Tables mapping recipients or domains to transport:nexthop"),
    ("minimal_backoff_time", "time", "300s", "Shortest wait before retrying a deferred message"),
    ("maximal_backoff_time", "time", "4000s", "Longest wait before retrying a deferred message"),
    ("queue_run_delay", "time", "300s", "How often the deferred queue is scanned"),
    ("maximal_queue_lifetime", "time:d", "5d", "How long a message may stay queued before it bounces"),
    ("bounce_queue_lifetime", "time:d", "5d", "How long a bounce may stay queued"),
    ("delay_warning_time", "time:h", "0h", "Send a delay warning after this long (0: never)"),
    ("default_destination_concurrency_limit", "int", "20", "Parallel deliveries per destination"),
    ("default_destination_recipient_limit", "int", "50", "Recipients per delivery request"),
    *[(f"{t}_destination_{what}_limit", "int", f"$default_destination_{what}_limit",
       f"{'Parallel deliveries' if what == 'concurrency' else 'Recipients per request'} ({t})")
      for t in ("smtp", "relay", "lmtp", "virtual") for what in ("concurrency", "recipient")],
    ("local_destination_concurrency_limit", "int", "2", "Parallel local deliveries per user"),
    ("local_destination_recipient_limit", "int", "1", "Recipients per local delivery request"),
    # --- smtp delivery agent (delivery/smtp.py, delivery/dns.py)
    ("smtp_helo_name", "str", "$myhostname", "Hostname the SMTP client sends in EHLO/HELO"),
    ("smtp_always_send_ehlo", "bool", "yes", "Always send EHLO first, whatever the greeting says"),
    ("smtp_connect_timeout", "time", "30s", "Time limit for completing a TCP connection"),
    ("smtp_helo_timeout", "time", "300s", "Time limit for the greeting and the EHLO/HELO reply"),
    ("smtp_mail_timeout", "time", "300s", "Time limit for the MAIL FROM reply"),
    ("smtp_rcpt_timeout", "time", "300s", "Time limit for a RCPT TO reply"),
    ("smtp_data_init_timeout", "time", "120s", "Time limit for the DATA reply"),
    ("smtp_data_xfer_timeout", "time", "180s", "Time limit for sending the message content"),
    ("smtp_data_done_timeout", "time", "600s", "Time limit for the reply to the end of data"),
    ("smtp_quit_timeout", "time", "300s", "Time limit for the QUIT reply"),
    ("smtp_starttls_timeout", "time", "300s", "Time limit for the STARTTLS reply and TLS handshake"),
    ("smtp_skip_5xx_greeting", "bool", "yes", "Treat a 5xx greeting as temporary and try the next server"),
    ("smtp_mx_address_limit", "int", "5", "Maximal number of MX addresses tried per delivery (0: no limit)"),
    ("smtp_mx_session_limit", "int", "2", "Maximal number of SMTP sessions per delivery (0: no limit)"),
    ("smtp_host_lookup", "list", "dns", "How to look up host addresses (dns, native)"),
    ("smtp_randomize_addresses", "bool", "yes", "Shuffle equal-preference MX hosts"),
    ("smtp_tls_security_level", "str", "", "SMTP client TLS level (none, may, encrypt, verify, secure)"),
    ("smtp_use_tls", "bool", "no", "Obsolete: like smtp_tls_security_level = may"),
    ("smtp_enforce_tls", "bool", "no", "Obsolete: like smtp_tls_security_level = encrypt"),
    ("smtp_tls_CAfile", "str", "", "CA certificates for server certificate verification (empty: system CAs)"),
    ("smtp_tls_verify_cert_match", "list", "hostname", "Names a server certificate must match at level verify"),
    ("smtp_tls_secure_cert_match", "list", "nexthop, dot-nexthop",
     "Names a server certificate must match at level secure"),
    ("smtp_sasl_auth_enable", "bool", "no", "Enable SASL authentication in the SMTP client"),
    ("smtp_sasl_password_maps", "list", "", "Tables: remote host or nexthop -> username:password"),
    ("smtp_sasl_security_options", "list", "noplaintext, noanonymous",
     "Client SASL mechanism restrictions without TLS"),
    ("smtp_sasl_tls_security_options", "list", "$smtp_sasl_security_options",
     "Client SASL mechanism restrictions with TLS"),
    ("smtp_sasl_tls_verified_security_options", "list", "$smtp_sasl_tls_security_options",
     "Client SASL mechanism restrictions with a verified server certificate"),
    ("smtp_sasl_mechanism_filter", "list", "", "Server AUTH mechanisms the client may use (empty: all)"),
    ("smtp_sasl_auth_soft_bounce", "bool", "yes", "Turn a 5xx AUTH failure into a temporary one"),
    ("postillion_dns_servers", "list", "",
     "Name servers (ip or ip:port) for MX/A/AAAA lookups (empty: the system resolver)"),
    # --- smtp client details (delivery/smtp.py, conncache.py, mime8.py, dns.py)
    ("smtp_connection_cache_on_demand", "bool", "yes",
     "Keep SMTP connections open for reuse (postillion: every clean session, no backlog signal)"),
    ("smtp_connection_cache_destinations", "list", "",
     "Destinations whose SMTP connections are always cached (literal nexthops or hosts; no tables)"),
    ("smtp_connection_cache_time_limit", "time", "2s", "How long an unused SMTP connection stays cached"),
    ("smtp_connection_reuse_time_limit", "time", "300s",
     "How long after it was opened an SMTP connection may still be reused"),
    ("smtp_connection_reuse_count_limit", "int", "0",
     "How many times an SMTP connection may be reused (0: no limit)"),
    ("smtp_rset_timeout", "time", "20s", "Time limit for the reply to an RSET (probe or final)"),
    ("smtp_defer_if_no_mx_address_found", "bool", "no",
     "Defer instead of bounce when no MX host has a usable address"),
    ("disable_mime_output_conversion", "bool", "no",
     "Send 8-bit mail as is to servers without 8BITMIME (no quoted-printable downgrade)"),
    ("mime_nesting_limit", "int", "100", "Maximal MIME multipart/message nesting the downgrade follows"),
    ("mime_boundary_length_limit", "int", "2048", "Maximal MIME boundary length the downgrade looks at"),
    # --- queue admin commands (cli/queue.py: mailq, postqueue -j, postsuper, postcat)
    ("empty_address_recipient", "str", "MAILER-DAEMON", "Shown for the null sender in queue listings"),
    # --- bounce and delivery status notifications (cleanup/bounce.py)
    ("bounce_size_limit", "int", "50000", "Largest original returned in full in a bounce (bytes; 0: no limit)"),
    ("notify_classes", "list", "resource, software", "Problems reported to postmaster (bounce, 2bounce, delay, ...)"),
    ("bounce_notice_recipient", "str", "postmaster", "Recipient of postmaster copies of bounces"),
    ("2bounce_notice_recipient", "str", "postmaster", "Recipient of undeliverable bounces (double bounces)"),
    ("delay_notice_recipient", "str", "postmaster", "Recipient of postmaster copies of delay warnings"),
    ("double_bounce_sender", "str", "double-bounce", "Sender of postmaster notices (mail to it is discarded)"),
    # --- local, virtual and lmtp delivery (delivery/local.py, virtual.py, lmtp.py, aliases.py)
    ("home_mailbox", "str", "", "Mailbox under the home directory (trailing /: Maildir); empty: mbox in mail_spool_directory"),
    ("mailbox_command", "str", "", "External command for local mailbox delivery (not supported: set, recipients are deferred)"),
    ("propagate_unmatched_extensions", "list", "canonical, virtual", "Where an unmatched address extension is propagated to the lookup result"),
    ("virtual_alias_recursion_limit", "int", "1000", "Maximal nesting depth of virtual alias expansion"),
    ("virtual_alias_expansion_limit", "int", "1000", "Maximal number of addresses one virtual alias expansion may produce"),
    ("virtual_mailbox_base", "str", "", "Directory prepended to virtual_mailbox_maps results (absolute)"),
    ("virtual_uid_maps", "list", "", "Tables with the uid of each virtual mailbox (e.g. static:5000)"),
    ("virtual_gid_maps", "list", "", "Tables with the gid of each virtual mailbox (e.g. static:5000)"),
    ("virtual_minimum_uid", "int", "100", "Smallest uid virtual_uid_maps may return"),
    ("lmtp_tcp_port", "str", "24", "Default LMTP server port"),
    ("lmtp_lhlo_name", "str", "$myhostname", "Host name sent in the LHLO command"),
    ("lmtp_connect_timeout", "time", "0s", "Time limit for connecting to the LMTP server (0: the system's)"),
    ("lmtp_lhlo_timeout", "time", "300s", "Time limit for the greeting and the LHLO reply"),
    ("lmtp_mail_timeout", "time", "300s", "Time limit for the MAIL FROM reply"),
    ("lmtp_rcpt_timeout", "time", "300s", "Time limit for each RCPT TO reply"),
    ("lmtp_data_init_timeout", "time", "120s", "Time limit for the DATA reply"),
    ("lmtp_data_xfer_timeout", "time", "180s", "Time limit for sending the message content"),
    ("lmtp_data_done_timeout", "time", "600s", "Time limit for each reply after the final dot"),
    ("lmtp_quit_timeout", "time", "300s", "Time limit for the QUIT reply"),
    # --- local(8) mailboxes, files and commands (delivery/local.py, delivery/mbox.py)
    ("mail_spool_directory", "str", "/var/mail", "UNIX mailbox directory when home_mailbox is empty (ending in /: Maildir)"),
    ("mailbox_delivery_lock", "list", "fcntl, dotlock", "How mbox files are locked: fcntl, dotlock"),
    ("deliver_lock_attempts", "int", "20", "How often to try to lock a mailbox before deferring"),
    ("deliver_lock_delay", "time", "1s", "Time between mailbox lock attempts"),
    ("stale_lock_time", "time", "500s", "Age after which a mailbox dotlock file is removed"),
    ("default_privs", "str", "nobody", "Rights for deliveries to files and commands of root-owned aliases"),
    ("allow_mail_to_commands", "list", "alias, forward", "Where |command destinations are allowed (alias, forward, include)"),
    ("allow_mail_to_files", "list", "alias, forward", "Where /file destinations are allowed (alias, forward, include)"),
    ("command_time_limit", "time", "1000s", "Time limit for delivery to an external command"),
    # --- sendmail and pickup (cli/sendmail.py, queue/maildrop.py)
    ("message_drop_headers", "list", "bcc, content-length, resent-bcc, return-path",
     "Headers removed from mail submitted with sendmail (by pickup)"),
    ("header_from_format", "str", "standard",
     "Form of the From: added with a full name: standard (Name <a@b>) or obsolete (a@b (Name))"),
    ("sendmail_fix_line_endings", "str", "always",
     "Remove CR before LF in sendmail input: always, strict (if the first line has one), never"),
    # --- content inspection and always_bcc (cleanup/checks.py, cleanup/content.py)
    ("header_checks", "list", "", "Tables with header checks for the primary message headers"),
    ("mime_header_checks", "list", "$header_checks", "Tables with header checks for MIME headers"),
    ("nested_header_checks", "list", "$header_checks",
     "Tables with header checks for the headers of attached messages"),
    ("body_checks", "list", "", "Tables with checks for message body lines"),
    ("body_checks_size_limit", "size", "51200",
     "Bytes of each body segment (attachment) subjected to body_checks (0: all)"),
    ("disable_mime_input_processing", "bool", "no",
     "Treat everything after the primary headers as body (no MIME header classes)"),
    ("always_bcc", "str", "", "Address that receives a copy of every message (NOTIFY=NEVER)"),
    # --- postillion's own
    ("postillion_worker_processes", "int", "0", "Server worker processes (0: number of CPUs)"),
    ("postillion_user_database", "str", "$data_directory/users.sqlite", "SQLite user database for SASL"),
    ("postillion_auth_cache_ttl", "time", "3600s",
     "How long a successful login to the user store is remembered (0: never; like saslauthd -c)"),
    ("postillion_syslog_enable", "bool", "no", "Also log to syslog when maillog_file is set"),
    # --- SCRAM / CRAM-MD5 secrets in the user database (sasl/userdb.py, sasl/verifiers.py)
    ("postillion_scram_iterations", "int", "4096",
     "PBKDF2 iteration count for the SCRAM-SHA-1/-256 keys stored when a password is set"),
    ("postillion_cram_md5_enable", "bool", "no",
     "Store a CRAM-MD5 secret (password-equivalent) when a password is set, and offer CRAM-MD5"),
])

OWN_PREFIX = "postillion_"

# Restriction names policy understands; the check_*_access ones take a type:name argument.
# Restrictions whose next word is a type:name table.
RESTRICTIONS_WITH_TABLE: frozenset[str] = frozenset({
    "check_client_access", "check_helo_access", "check_sender_access", "check_recipient_access",
})
# Postfix's other names for the same restriction.
RESTRICTION_ALIASES: dict[str, str] = {
    "reject_invalid_hostname": "reject_invalid_helo_hostname",
    "reject_non_fqdn_hostname": "reject_non_fqdn_helo_hostname",
    "check_recipient_maps": "reject_unlisted_recipient",
}
# Every restriction name postillion implements (policy.engine evaluates exactly these).
KNOWN_RESTRICTIONS: frozenset[str] = frozenset({
    "permit", "reject", "defer", "defer_if_permit", "defer_if_reject", "warn_if_reject",
    "reject_unauth_pipelining",
    "permit_mynetworks", "permit_sasl_authenticated",
    "permit_tls_clientcerts", "permit_tls_all_clientcerts",
    "reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_sender", "reject_unlisted_sender",
    "reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "permit_auth_destination", "reject_unauth_destination", "defer_unauth_destination",
    "reject_non_fqdn_recipient", "reject_unlisted_recipient",
    *RESTRICTIONS_WITH_TABLE,
    *RESTRICTION_ALIASES,
})
RESTRICTION_PARAMETERS: tuple[str, ...] = (
    "smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
    "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
)
# Lookup table types postillion.tables can open.
SUPPORTED_TABLE_TYPES: frozenset[str] = frozenset({"inline", "static", "texthash", "unix", "proxy",
                                                   "regexp", "pcre", "sqlite", "postillion"})

_TRUE = "yes"
_FALSE = "no"
_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_RE = re.compile(r"^(\d+)([smhdw]?)$")


@functools.cache
def postfix_defaults() -> dict[str, str]:
    """Every Postfix 3.7 parameter and its ``postconf -d`` text, shipped as package data.

    Only ``postconf`` shows these; ``Params`` reads defaults from ``PARAMETERS`` alone.
    """
    text = resources.files("postillion.config").joinpath("postfix_params.txt").read_text("utf-8")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        out[name.strip()] = value.strip()
    return out


@functools.cache
def postfix_names() -> frozenset[str]:
    """All parameter names Postfix 3.7 knows (``postconf -d -H``)."""
    return frozenset(postfix_defaults())


# Postfix expands these only at use time, with per-message macros; postconf -x leaves them raw.
RAW_PARAMETERS = frozenset({
    "default_rbl_reply", "forward_path", "luser_relay", "mailbox_command",
    "postscreen_expansion_filter", "postscreen_reject_footer", "smtpd_expansion_filter",
    "smtpd_reject_footer",
})

# postconf_service.c: delivery agents get per-transport scheduler parameters named after
# their master.cf service; pipe(8) and spawn(8) also get <service>_time_limit.
_TRANSPORT_COMMANDS = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error"})
_TIME_LIMIT_COMMANDS = frozenset({"pipe", "spawn"})
_TRANSPORT_SUFFIXES = (
    "delivery_slot_cost", "delivery_slot_discount", "delivery_slot_loan",
    "destination_concurrency_failed_cohort_limit", "destination_concurrency_limit",
    "destination_concurrency_negative_feedback", "destination_concurrency_positive_feedback",
    "destination_rate_delay", "destination_recipient_limit", "extra_recipient_limit",
    "initial_destination_concurrency", "minimum_delivery_slots", "recipient_limit",
    "recipient_refill_delay", "recipient_refill_limit", "transport_rate_delay",
)


def service_parameters(services: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Parameters Postfix derives from master.cf (service name, command) pairs, with defaults."""
    out: dict[str, str] = {}
    for name, command in services:
        if command in _TRANSPORT_COMMANDS:
            for suffix in _TRANSPORT_SUFFIXES:
                default = ("$initial_destination_concurrency"
                           if suffix == "initial_destination_concurrency"
                           else f"$default_{suffix}")
                out[f"{name}_{suffix}"] = default
        if command in _TIME_LIMIT_COMMANDS:
            out[f"{name}_time_limit"] = "$command_time_limit"
    return out


def default_myhostname() -> str:
    """Postfix's rule: the host name; a name without a dot gets ``.localdomain`` appended."""
    name = socket.gethostname()
    if "." not in name:
        fqdn = socket.getfqdn()
        name = fqdn if fqdn.startswith(name + ".") else name + ".localdomain"
    return name


def default_mydomain(myhostname: str) -> str:
    _, dot, rest = myhostname.partition(".")
    return rest if dot and rest else "localdomain"


def default_value(name: str, lookup: Callable[[str], str | None] | None = None) -> str | None:
    """The ``postconf -d`` text for ``name`` (None if unknown); ``lookup`` sees explicit values."""
    if name == "myhostname":
        return default_myhostname()
    if name == "mydomain":
        host = (lookup("myhostname") if lookup else None) or default_myhostname()
        return default_mydomain(host)
    spec = PARAMETERS.get(name)
    return spec.default if spec is not None else None


def split_list(value: str) -> list[str]:
    """Split a Postfix list on commas/whitespace, keeping ``{ ... }`` groups whole (mystrtok)."""
    return split_words(value)


def parse_bool(value: str) -> bool | None:
    v = value.strip().lower()
    if v == _TRUE:
        return True
    if v == _FALSE:
        return False
    return None


def parse_time(value: str, unit: str = "s") -> float | None:
    m = _TIME_RE.match(value.strip())
    if not m:
        return None
    return int(m.group(1)) * _TIME_UNITS[m.group(2) or unit]


def parse_int(value: str) -> int | None:
    v = value.strip()
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    return None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an explicit value came from (for diagnostics)."""

    path: Path | None
    lineno: int | None


class Params:
    """Read-only parameter view: explicit values over registry defaults, expanded on read.

    ``values`` are the explicit settings (main.cf, then a service's ``-o`` overrides);
    ``service_name`` answers ``$service_name``.  Expansion is lazy, like Postfix: the order
    of definitions does not matter.
    """

    def __init__(
        self,
        values: Mapping[str, str],
        *,
        config_dir: Path | str = Path("."),
        service_name: str = "",
        origins: Mapping[str, Origin] | None = None,
    ) -> None:
        self._values = dict(values)
        self._config_dir = Path(config_dir)
        self._service_name = service_name
        self._origins = dict(origins or {})
        self._cache: dict[str, str] = {}

    @classmethod
    def from_dict(
        cls, values: Mapping[str, str] | None = None, *, config_dir: Path | str = Path("."),
        service_name: str = "",
    ) -> Params:
        """For tests and callers without files: registry defaults plus these values."""
        return cls(values or {}, config_dir=config_dir, service_name=service_name)

    def with_overrides(
        self, overrides: Mapping[str, str], *, service_name: str = "",
        origins: Mapping[str, Origin] | None = None,
    ) -> Params:
        merged = {**self._values, **overrides}
        merged_origins = {**self._origins, **(origins or {})}
        return Params(merged, config_dir=self._config_dir, service_name=service_name,
                      origins=merged_origins)

    # --- raw access
    @property
    def config_dir(self) -> Path:
        return self._config_dir

    @property
    def service_name(self) -> str:
        return self._service_name

    def is_set(self, name: str) -> bool:
        """Explicitly set in main.cf or a ``-o`` override."""
        return name in self._values

    def explicit(self) -> dict[str, str]:
        return dict(self._values)

    def origin(self, name: str) -> Origin | None:
        return self._origins.get(name)

    def raw(self, name: str) -> str | None:
        """The unexpanded value (explicit, else default); None when neither exists."""
        if name in self._values:
            return self._values[name]
        if name == "service_name":
            return self._service_name
        if name == "config_directory":
            return str(self._config_dir)
        return default_value(name, self._values.get)

    # --- typed, expanded access
    def get(self, name: str) -> str:
        """Fully $-expanded value; "" when unset and without default."""
        if name not in self._cache:
            raw = self.raw(name)
            self._cache[name] = "" if raw is None else expand(raw, self.raw, name=name)
        return self._cache[name]

    def _error(self, name: str, value: str, what: str, fix: str) -> ConfigError:
        o = self._origins.get(name)
        return ConfigError(f'bad {what} value "{value}"', path=o.path if o else None,
                           lineno=o.lineno if o else None, name=name, fix=fix)

    def get_bool(self, name: str) -> bool:
        value = self.get(name)
        b = parse_bool(value)
        if b is None:
            raise self._error(name, value, "boolean", 'use "yes" or "no"')
        return b

    def get_int(self, name: str) -> int:
        value = self.get(name)
        i = parse_int(value)
        if i is None:
            raise self._error(name, value, "numerical", "use a whole number such as 100")
        return i

    def get_time(self, name: str) -> float:
        """Seconds; a bare number uses the parameter's default unit."""
        value = self.get(name)
        spec = PARAMETERS.get(name)
        t = parse_time(value, spec.unit if spec else "s")
        if t is None:
            raise self._error(name, value, "time",
                              "use a number with an optional unit s, m, h, d or w, such as 300s")
        return t

    def get_list(self, name: str) -> list[str]:
        return split_list(self.get(name))

    def path(self, name: str) -> Path | None:
        """A file-name parameter resolved against config_dir; None when empty."""
        value = self.get(name).strip()
        if not value:
            return None
        return self._config_dir / value

    def worker_processes(self) -> int:
        n = self.get_int("postillion_worker_processes")
        return n if n > 0 else (os.cpu_count() or 1)
