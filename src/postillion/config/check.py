"""``postillion check``: find configuration mistakes before the server starts.

Owns: ``Diagnostic`` and ``check_config(config_dir)``.  Every diagnostic names the file and
line, the parameter, what is wrong and how to fix it.  Checks run for main.cf alone and again
for every smtpd service with its master.cf ``-o`` overrides; a problem that comes from an
override names the master.cf line.
Must not import: server, queue, policy, cli (restriction names come from ``params``).
Follows: the checks Postfix makes at start-up or at first use (postconf(5) value syntax,
smtpd(8) TLS and relay-restriction sanity checks), reported up front instead of at run time.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from postillion.config.configuration import Configuration
from postillion.config.maincf import MainCf, read_main_cf
from postillion.config.mastercf import MasterCf, Service, read_master_cf
from postillion.config.params import (
    KNOWN_RESTRICTIONS,
    OWN_PREFIX,
    PARAMETERS,
    RESTRICTION_PARAMETERS,
    RESTRICTIONS_WITH_TABLE,
    SUPPORTED_TABLE_TYPES,
    Origin,
    Params,
    parse_bool,
    parse_int,
    parse_time,
    postfix_names,
    service_parameters,
    split_list,
)
from postillion.errors import ConfigError

ERROR = "error"
WARNING = "warning"

# Postfix restrictions postillion does not implement: named so the message can say so.
POSTFIX_ONLY_RESTRICTIONS = frozenset({
    "reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_sender", "reject_rhsbl_helo",
    "reject_rhsbl_recipient", "reject_rhsbl_reverse_client", "permit_dnswl_client",
    "permit_rhswl_client", "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname", "reject_unknown_helo_hostname",
    "reject_unknown_sender_domain", "reject_unknown_recipient_domain",
    "reject_unverified_recipient", "reject_unverified_sender", "check_policy_service",
    "reject_multi_recipient_bounce", "reject_plaintext_session", "check_sender_mx_access",
    "check_sender_ns_access", "check_sender_a_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "check_recipient_a_access", "check_client_a_access",
    "check_client_mx_access", "check_client_ns_access", "check_reverse_client_hostname_access",
    "check_helo_a_access", "check_helo_mx_access", "check_helo_ns_access",
    "check_ccert_access", "check_sasl_access", "permit_tls_all_clientcerts",
    "reject_non_fqdn_hostname", "reject_invalid_hostname", "reject_unknown_hostname",
    "reject_unknown_client", "permit_mx_backup", "defer_if_permit", "defer_if_reject",
    "sleep", "permit_inet_interfaces", "permit_naked_ip_address",
    "reject_unlisted_recipient_address", "reject_known_sender_login_mismatch",
})
# Lists in which a table is looked up (each item is type:name).
TABLE_PARAMETERS = ("smtpd_sender_login_maps", "local_recipient_maps", "alias_maps",
                    "virtual_alias_maps", "virtual_mailbox_maps", "transport_maps",
                    "smtp_sasl_password_maps", "header_checks", "mime_header_checks",
                    "nested_header_checks", "body_checks")
# Tables whose entries follow aliases(5) or are read by a delivery agent's own parser.
_UNOPENED_TABLE_PARAMETERS = frozenset({"alias_maps", "local_recipient_maps"})
_TLS_LEVELS = ("", "none", "may", "encrypt")
_STOPS_RELAY = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject",
                          "defer"})
_REF_RE = re.compile(r"\$[{(]?([A-Za-z0-9_]+)")
_TABLE_TYPE_RE = re.compile(r"^([a-z][a-z0-9_-]*):")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding.  ``render()`` gives ``file:line: name: message; fix``."""

    severity: str  # "error" | "warning"
    path: Path | None
    lineno: int | None
    name: str | None
    message: str
    fix: str | None = None

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.lineno is not None:
                where += f":{self.lineno}"
            where += ": "
        name = f"{self.name}: " if self.name else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{where}{name}{self.message}{fix}"

    @classmethod
    def from_error(cls, exc: ConfigError, severity: str = ERROR) -> Diagnostic:
        return cls(severity, exc.path, exc.lineno, exc.name, exc.message, exc.fix)


class _Collector:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.items: list[Diagnostic] = []
        self._seen: set[tuple[object, ...]] = set()

    def rel(self, path: Path | None) -> Path | None:
        if path is None:
            return None
        try:
            return path.relative_to(self.config_dir)
        except ValueError:
            return path

    def add(self, severity: str, origin: Origin | None, name: str | None, message: str,
            fix: str | None = None) -> None:
        path = self.rel(origin.path) if origin else None
        lineno = origin.lineno if origin else None
        self.add_diag(Diagnostic(severity, path, lineno, name, message, fix))

    def add_diag(self, d: Diagnostic) -> None:
        d = Diagnostic(d.severity, self.rel(d.path), d.lineno, d.name, d.message, d.fix)
        key = (d.severity, d.path, d.lineno, d.name, d.message)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(d)


def check_config(config_dir: Path | str) -> list[Diagnostic]:
    """All problems found in ``config_dir``'s main.cf and master.cf (and SASL config)."""
    config_dir = Path(config_dir)
    out = _Collector(config_dir)
    try:
        main = read_main_cf(config_dir / "main.cf")
    except ConfigError as exc:
        out.add_diag(Diagnostic.from_error(exc))
        return out.items
    try:
        master = read_master_cf(config_dir / "master.cf")
    except ConfigError as exc:
        out.add_diag(Diagnostic.from_error(exc))
        master = MasterCf(config_dir / "master.cf")
    cfg = Configuration(config_dir, main, master)
    _check_duplicates(out, cfg)
    _check_undefined(out, main, master)
    referenced = _referenced_names(main, master)
    derived = set(service_parameters((s.name, s.command) for s in master.entries))
    _check_names(out, cfg.params(), referenced, derived)
    for service in master.services:
        _check_service_columns(out, service)
        if service.overrides:
            _check_names(out, cfg.params(service), referenced, derived,
                         only=service.overrides.keys())
    smtpd = [s for s in master.services if s.command == "smtpd"]
    param_sets: list[tuple[Service | None, Params]] = (
        [(None, cfg.params())] + [(s, cfg.params(s)) for s in smtpd])
    for maybe_service, params in param_sets:
        _check_values(out, params)
        _check_tls(out, params, maybe_service)
        _check_restrictions(out, params)
        _check_tables(out, params)
        _check_auth_without_tls(out, params, maybe_service)
        _check_sasl_conf(out, params)
    for maybe_service, params in param_sets[1:] or param_sets:
        _check_open_relay(out, params, maybe_service, cfg)
    return out.items


# --- names -------------------------------------------------------------------------------

def _check_undefined(out: _Collector, main: MainCf, master: MasterCf) -> None:
    """postconf's "undefined parameter" warning.  The classic case: the recipe's submission
    entry says ``-o smtpd_client_restrictions=$mua_client_restrictions`` and main.cf never
    defines mua_client_restrictions, so the restriction list is silently empty."""
    defined = {d.name for d in main.definitions} | set(PARAMETERS) | postfix_names()
    defined |= {"service_name", "process_name", "process_id"}
    uses: list[tuple[Origin, str, str]] = [
        (Origin(main.path, d.lineno), d.name, d.value) for d in main.definitions
    ]
    for s in master.entries:
        for name, value in s.overrides.items():
            uses.append((Origin(master.path, s.override_linenos.get(name, s.lineno)), name, value))
    for origin, name, value in uses:
        for ref in dict.fromkeys(m.group(1) for m in _REF_RE.finditer(value)):
            if ref not in defined:
                out.add(WARNING, origin, name,
                        f"undefined parameter ${ref}: it expands to nothing",
                        f'define {ref} in main.cf (e.g. "{ref} = permit_sasl_authenticated, reject")'
                        if ref.endswith("_restrictions") else f"define {ref} in main.cf")


def _referenced_names(main: MainCf, master: MasterCf) -> set[str]:
    values = [d.value for d in main.definitions]
    for s in master.entries:
        values.extend(s.overrides.values())
    values.extend(spec.default for spec in PARAMETERS.values())
    return {m.group(1) for v in values for m in _REF_RE.finditer(v)}


def _word_score(word: str, candidate_words: list[str]) -> float:
    return max(difflib.SequenceMatcher(None, word, c).ratio() for c in candidate_words)


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The likeliest intended name: words of ``name`` matched against words of a candidate.

    Plain difflib prefers ``smtpd_tls_loglevel`` for ``smtpd_tls_levle``; matching word by word
    (each word may be misspelt, the candidate may have one extra word) finds
    ``smtpd_tls_security_level``.
    """
    words = name.split("_")
    best: tuple[float, str] | None = None
    for cand in candidates:
        cwords = cand.split("_")
        if abs(len(cwords) - len(words)) > 1:
            continue
        score = sum(_word_score(w, cwords) for w in words) / len(words)
        score -= 0.02 * abs(len(cwords) - len(words))
        score += 0.01 * difflib.SequenceMatcher(None, name, cand).ratio()
        if score >= cutoff and (best is None or score > best[0]):
            best = (score, cand)
    return best[1] if best else None


def _check_duplicates(out: _Collector, cfg: Configuration) -> None:
    for earlier, later in cfg.main.duplicates():
        out.add(WARNING, Origin(cfg.main_cf, later.lineno), later.name,
                f"overriding earlier entry at line {earlier.lineno}: "
                f"{earlier.name}={earlier.value}",
                "remove one of the two definitions")
    for first, second in cfg.master.duplicates():
        out.add(WARNING, Origin(cfg.master_cf, second.lineno), second.key,
                f"overriding earlier entry at line {first.lineno} with the same service "
                "name and type", "remove or rename one of the two entries")


def _check_names(out: _Collector, params: Params, referenced: set[str], derived: set[str],
                 only: Iterable[str] | None = None) -> None:
    known = postfix_names() | derived
    for name in (only if only is not None else params.explicit().keys()):
        origin = params.origin(name)
        if name in PARAMETERS:
            continue
        if name in known:
            out.add(WARNING, origin, name,
                    "Postfix parameter accepted but ignored by postillion",
                    "remove it, or check docs/compatibility.md for what postillion supports")
            continue
        if name in referenced:
            continue  # a user-defined parameter, used as $name elsewhere
        close = did_you_mean(name, list(PARAMETERS) + sorted(known))
        if close:
            out.add(ERROR, origin, name, "unknown parameter", f'did you mean "{close}"?')
        elif name.startswith(OWN_PREFIX):
            out.add(ERROR, origin, name, "unknown parameter",
                    "postillion has no such parameter; remove it")
        else:
            # Postfix allows user-defined names (for $name use) and only warns when unused;
            # a near-miss of a real name (above) is a typo and stays an error.
            out.add(WARNING, origin, name, "unused parameter",
                    "remove it, or use it as $" + name + " in another parameter")


# --- master.cf ---------------------------------------------------------------------------

def _check_service_columns(out: _Collector, s: Service) -> None:
    origin = Origin(s.path, s.lineno)
    if s.type == "inet" and s.private == "y":
        out.add(ERROR, origin, s.key, 'an inet service cannot be private ("y" in column 3)',
                'write "n" in the private column')
    if s.type == "inet" and s.command == "smtpd":
        try:
            s.listen_port
        except ConfigError as exc:
            out.add(ERROR, origin, s.key, exc.message, exc.fix)


# --- values ------------------------------------------------------------------------------

def _check_values(out: _Collector, params: Params) -> None:
    for name in params.explicit():
        spec = PARAMETERS.get(name)
        origin = params.origin(name)
        try:
            value = params.get(name)
        except ConfigError as exc:
            out.add(ERROR, origin, name, exc.message, exc.fix)
            continue
        if spec is None or spec.type in ("str", "list"):
            continue
        if spec.type == "bool" and parse_bool(value) is None:
            out.add(ERROR, origin, name, f'bad boolean value "{value}"', 'use "yes" or "no"')
        elif spec.type in ("int", "size") and parse_int(value) is None:
            out.add(ERROR, origin, name, f'bad numerical value "{value}"',
                    f"use a whole number, such as the default {spec.default}")
        elif spec.type == "time" and parse_time(value, spec.unit) is None:
            out.add(ERROR, origin, name, f'bad time value "{value}"',
                    f"use a number with an optional unit s, m, h, d or w, such as "
                    f"the default {spec.default}")


def _safe_get(params: Params, name: str) -> str | None:
    try:
        return params.get(name)
    except ConfigError:
        return None  # reported by _check_values


def _safe_bool(params: Params, name: str) -> bool:
    try:
        return params.get_bool(name)
    except ConfigError:
        return False  # reported by _check_values


# --- TLS ---------------------------------------------------------------------------------

def _origin_or_service(params: Params, name: str, service: Service | None) -> Origin | None:
    origin = params.origin(name)
    if origin is None and service is not None:
        origin = Origin(service.path, service.lineno)
    return origin


def _check_tls(out: _Collector, params: Params, service: Service | None) -> None:
    level = (_safe_get(params, "smtpd_tls_security_level") or "").strip()
    if level not in _TLS_LEVELS:
        out.add(ERROR, params.origin("smtpd_tls_security_level"), "smtpd_tls_security_level",
                f'invalid TLS security level "{level}" for the SMTP server',
                'use "none", "may" or "encrypt"')
        return
    wrapper = _safe_bool(params, "smtpd_tls_wrappermode")
    if not level:
        if _safe_bool(params, "smtpd_enforce_tls"):
            level = "encrypt"
        elif _safe_bool(params, "smtpd_use_tls"):
            level = "may"
    required = level == "encrypt" or wrapper
    cert = (_safe_get(params, "smtpd_tls_cert_file") or "").strip()
    key = (_safe_get(params, "smtpd_tls_key_file") or "").strip()
    chain = split_list(_safe_get(params, "smtpd_tls_chain_files") or "")
    if not cert and not chain:
        if required:
            name = "smtpd_tls_wrappermode" if wrapper else "smtpd_tls_security_level"
            out.add(ERROR, _origin_or_service(params, name, service), name,
                    "TLS is required but no server certificate is configured",
                    "set smtpd_tls_cert_file and smtpd_tls_key_file (or smtpd_tls_chain_files)")
        elif level == "may":
            out.add(WARNING, params.origin("smtpd_tls_security_level"), "smtpd_tls_security_level",
                    "STARTTLS will not be offered: no server certificate is configured",
                    "set smtpd_tls_cert_file and smtpd_tls_key_file")
        return
    if level in ("", "none") and not wrapper:
        return  # certificates are configured but unused; Postfix does not read them either
    if chain:
        paths = [_resolve(params, c) for c in chain]
        missing = [p for p in paths if not p.is_file()]
        for p in missing:
            out.add(ERROR, params.origin("smtpd_tls_chain_files"), "smtpd_tls_chain_files",
                    f"file not found: {p}", "fix the path or create the file")
        if not missing:
            _check_pair(out, params, paths[0], paths[0], "smtpd_tls_chain_files",
                        "smtpd_tls_chain_files")
        return
    cert_path = _resolve(params, cert)
    key_path = _resolve(params, key or cert)
    ok = True
    for name, path in (("smtpd_tls_cert_file", cert_path), ("smtpd_tls_key_file", key_path)):
        if name == "smtpd_tls_key_file" and key_path == cert_path:
            continue  # the key lives in the certificate file: reported once
        if not path.is_file():
            ok = False
            kind = "certificate" if name.endswith("cert_file") else "private key"
            origin = params.origin(name) or params.origin("smtpd_tls_cert_file")
            out.add(ERROR, origin, name, f"{kind} file not found: {path}",
                    "fix the path, or create the file (e.g. with openssl req -x509)")
    if ok:
        _check_pair(out, params, cert_path, key_path, "smtpd_tls_cert_file", "smtpd_tls_key_file")


def _resolve(params: Params, value: str) -> Path:
    return params.config_dir / value  # an absolute value replaces config_dir


def _check_pair(out: _Collector, params: Params, cert_path: Path, key_path: Path,
                cert_name: str, key_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        out.add(ERROR, params.origin(cert_name), cert_name,
                f"cannot read a PEM certificate from {cert_path}: {exc}",
                "point it at a PEM file that contains the server certificate")
        return
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        out.add(ERROR, params.origin(key_name) or params.origin(cert_name), key_name,
                f"cannot read an unencrypted PEM private key from {key_path}: {exc}",
                "point it at the PEM private key (without a passphrase)")
        return
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        out.add(ERROR, params.origin(key_name) or params.origin(cert_name), key_name,
                f"private key {key_path} does not match the certificate in {cert_path}",
                "use the key the certificate was issued for")


# --- restrictions and tables -------------------------------------------------------------

def _table_problem(table: str) -> str | None:
    m = _TABLE_TYPE_RE.match(table)
    if not m:
        return f'"{table}" is not a lookup table (type:name)'
    kind = m.group(1)
    if kind not in SUPPORTED_TABLE_TYPES:
        return f'unsupported lookup table type "{kind}" in "{table}"'
    if kind == "proxy":
        return _table_problem(table[len("proxy:"):])
    return None


_TABLE_FIX = "use one of the table types " + ", ".join(sorted(SUPPORTED_TABLE_TYPES))


def _check_restrictions(out: _Collector, params: Params) -> None:
    classes = set(split_list(_safe_get(params, "smtpd_restriction_classes") or ""))
    for pname in RESTRICTION_PARAMETERS:
        value = _safe_get(params, pname)
        if value is None:
            continue
        origin = params.origin(pname)
        items = split_list(value)
        k = 0
        while k < len(items):
            item = items[k]
            k += 1
            if item in RESTRICTIONS_WITH_TABLE:
                if k >= len(items) or not _TABLE_TYPE_RE.match(items[k]):
                    out.add(ERROR, origin, pname, f"{item} requires a type:name table argument",
                            f"write {item} texthash:/path/to/table")
                    continue
                table = items[k]
                k += 1
                problem = _table_problem(table)
                if problem:
                    out.add(ERROR, origin, pname, problem, _TABLE_FIX)
            elif item in KNOWN_RESTRICTIONS or item in classes:
                continue
            elif _TABLE_TYPE_RE.match(item):
                problem = _table_problem(item)  # a bare table means check_<stage>_access
                if problem:
                    out.add(ERROR, origin, pname, problem, _TABLE_FIX)
            elif item in POSTFIX_ONLY_RESTRICTIONS:
                out.add(ERROR, origin, pname,
                        f'restriction "{item}" is not implemented by postillion',
                        "remove it from the list")
            else:
                close = difflib.get_close_matches(item, sorted(KNOWN_RESTRICTIONS), n=1,
                                                  cutoff=0.6)
                fix = (f'did you mean "{close[0]}"?' if close
                       else "see KNOWN_RESTRICTIONS in docs/compatibility.md")
                out.add(ERROR, origin, pname, f'unknown restriction "{item}"', fix)


def _check_tables(out: _Collector, params: Params) -> None:
    for pname in TABLE_PARAMETERS:
        if pname in ("mime_header_checks", "nested_header_checks") and not params.is_set(pname):
            continue  # $header_checks by default: already checked once under that name
        value = _safe_get(params, pname)
        for table in split_list(value or ""):
            problem = _table_problem(table)
            if problem:
                out.add(ERROR, params.origin(pname) or params.origin("alias_maps"), pname,
                        problem, _TABLE_FIX)
            elif pname not in _UNOPENED_TABLE_PARAMETERS or (
                    pname == "alias_maps" and table.startswith(("regexp:", "pcre:"))):
                # Open it as the server will: a bad inline: entry or a texthash: file with a
                # broken line must stop `start`, not kill every worker later; rules a
                # regexp:/pcre: table skips are only warnings, as Postfix logs them.
                from postillion.tables import open_table
                from postillion.tables.aliases import open_alias_maps

                try:
                    opened = (open_alias_maps(table, params.config_dir)[0]
                              if pname == "alias_maps" else open_table(table, params.config_dir))
                except ConfigError as exc:
                    out.add(ERROR, params.origin(pname), pname, f"{table}: {exc.message}", exc.fix)
                    continue
                for text in getattr(opened, "warnings", ()):
                    out.add(WARNING, params.origin(pname), pname, text, "fix or remove that rule")


# --- security warnings -------------------------------------------------------------------

_AUTH_PARAMS = ("smtpd_sasl_auth_enable", "smtpd_tls_security_level", "smtpd_tls_wrappermode",
                "smtpd_tls_auth_only", "smtpd_enforce_tls")
_RELAY_PARAMS = ("smtpd_relay_restrictions", "smtpd_recipient_restrictions", "mynetworks",
                 "smtpd_client_restrictions", "smtpd_helo_restrictions",
                 "smtpd_sender_restrictions")
# The lists a client passes before the relay decision, in smtpd_check.c order; with
# smtpd_delay_reject = yes they run at RCPT TO, with "no" earlier: either way first.
_EARLY_RESTRICTIONS = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                       "smtpd_sender_restrictions")


def _overrides_any(service: Service | None, names: Iterable[str]) -> bool:
    return service is not None and any(n in service.overrides for n in names)


def _check_auth_without_tls(out: _Collector, params: Params, service: Service | None) -> None:
    if not _safe_bool(params, "smtpd_sasl_auth_enable"):
        return
    level = (_safe_get(params, "smtpd_tls_security_level") or "").strip()
    if level == "encrypt" or _safe_bool(params, "smtpd_tls_wrappermode") \
            or _safe_bool(params, "smtpd_tls_auth_only") or _safe_bool(params, "smtpd_enforce_tls"):
        return
    where = f" ({service.key})" if service is not None and _overrides_any(service, _AUTH_PARAMS) else ""
    out.add(WARNING, _origin_or_service(params, "smtpd_sasl_auth_enable", service),
            "smtpd_sasl_auth_enable",
            f"AUTH is offered without TLS{where}: passwords can be sent in cleartext",
            "set smtpd_tls_auth_only = yes, or smtpd_tls_security_level = encrypt")


def _check_open_relay(out: _Collector, params: Params, service: Service | None,
                      cfg: Configuration) -> None:
    """Follow a stranger (not in mynetworks, not authenticated, no client certificate, sending
    to a remote domain) through every list it meets before its RCPT TO is accepted: client,
    helo, sender, then relay and recipient, which must both pass (smtpd_check.c).  The relay
    is open only when none of them stops the stranger; a submission service whose
    ``smtpd_client_restrictions = permit_sasl_authenticated, reject`` stops it first is not."""
    relay = _safe_get(params, "smtpd_relay_restrictions")
    rcpt = _safe_get(params, "smtpd_recipient_restrictions")
    if relay is None or rcpt is None:
        return
    lists = [split_list(relay), split_list(rcpt)]
    name = "smtpd_relay_restrictions"
    origin = (params.origin(name) or params.origin("smtpd_recipient_restrictions")
              or (Origin(service.path, service.lineno) if service else None))
    where = f"{service.key}: " if service is not None and _overrides_any(service, _RELAY_PARAMS) else ""
    if not any(item in _STOPS_RELAY for items in lists for item in items):
        if _stranger_outcome(params, lists) == "permit":
            _warn_open_relay(out, origin, name, where)
            return
        # Postfix then answers every RCPT TO (authenticated or not) with 451 4.3.5.
        out.add(WARNING, origin, name,
                f"{where}neither smtpd_relay_restrictions nor smtpd_recipient_restrictions "
                "rejects unauthorized destinations; mail will be refused with "
                "451 4.3.5 Server configuration error",
                'end smtpd_relay_restrictions with "reject_unauth_destination"')
        return
    if _stranger_outcome(params, lists) == "permit":
        _warn_open_relay(out, origin, name, where)


def _warn_open_relay(out: _Collector, origin: Origin | None, name: str, where: str) -> None:
    out.add(WARNING, origin, name,
            f"{where}open relay: the relay and recipient restrictions permit any "
            "destination", 'put "reject_unauth_destination" before "permit"')


def _stranger_outcome(params: Params, rcpt_lists: list[list[str]]) -> str:
    """"stopped" when some list rejects the stranger, else "permit" when a ``permit`` let it
    through the relay or recipient list, else "end" (it fell off the end of both)."""
    # With smtpd_delay_reject = no these lists run before any recipient is known, so only
    # an unconditional reject or defer stops the stranger there.
    early_stops = _STOPS_RELAY if _safe_bool(params, "smtpd_delay_reject") else {"reject", "defer"}
    for pname in _EARLY_RESTRICTIONS:
        items = split_list(_safe_get(params, pname) or "")
        if _scan_for_stranger(items, early_stops) == "stopped":
            return "stopped"
    outcomes = [_scan_for_stranger(items, _STOPS_RELAY) for items in rcpt_lists]
    if "stopped" in outcomes:
        return "stopped"
    return "permit" if "permit" in outcomes else "end"


def _scan_for_stranger(items: list[str], stops: Iterable[str]) -> str:
    """One list as the stranger meets it: restrictions that cannot match it (permit_mynetworks,
    permit_sasl_authenticated, table lookups, ...) are passed over, as DUNNO would be; the
    first unconditional answer decides.  Unknown tables are assumed not to reject, so the
    check errs towards warning."""
    for item in items:
        if item in stops:
            return "stopped"
        if item == "permit":
            return "permit"
    return "end"


# --- SASL application config (owned by config.saslconf) ------------------------------------

def _check_sasl_conf(out: _Collector, params: Params) -> None:
    try:
        from postillion.config import saslconf
    except ImportError:
        return
    check = getattr(saslconf, "check", None)
    if check is None:
        return
    n_args = len(inspect.signature(check).parameters)
    found = check(params, params.config_dir) if n_args >= 2 else check(params)
    for item in found:
        if isinstance(item, Diagnostic):
            out.add_diag(item)
        elif isinstance(item, ConfigError):
            out.add_diag(Diagnostic.from_error(item, WARNING))
