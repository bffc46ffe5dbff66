"""The restriction names postillion knows, and parsing a restriction list into steps.

Owns: the catalog (supported names, aliases, names Postfix has that postillion lacks),
Step, and parse_restrictions() with its "did you mean" diagnostics.
Must not import: server.  Uses ``tables`` to open check_*_access tables; the name lists
themselves live in ``config.params`` so that ``postillion check`` and this module agree.
Follows: postconf(5) smtpd_*_restrictions, access(5); Postfix smtpd_check.c
smtpd_check_parse(), is_map_command() and generic_checks().
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from postillion.config.params import KNOWN_RESTRICTIONS, RESTRICTION_ALIASES, RESTRICTIONS_WITH_TABLE
from postillion.errors import ConfigError
from postillion.tables import Table, split_spec

# The names live in config (postillion check validates them); aliases map to their targets.
MAP_COMMANDS = RESTRICTIONS_WITH_TABLE
ALIASES = RESTRICTION_ALIASES
SUPPORTED = KNOWN_RESTRICTIONS - RESTRICTION_ALIASES.keys()

# Real Postfix restrictions postillion does not implement: a distinct error, so nobody
# hunts for a typo that is not there.
POSTFIX_ONLY = frozenset({
    "check_policy_service", "check_ccert_access", "check_sasl_access", "check_etrn_access",
    "check_client_a_access", "check_client_mx_access", "check_client_ns_access",
    "check_reverse_client_a_access", "check_reverse_client_mx_access",
    "check_reverse_client_ns_access", "check_helo_a_access", "check_helo_mx_access",
    "check_helo_ns_access", "check_sender_a_access", "check_sender_mx_access",
    "check_sender_ns_access", "check_recipient_a_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "check_relay_domains", "permit_inet_interfaces",
    "permit_mx_backup", "permit_naked_ip_address", "permit_dnswl_client", "permit_rhswl_client",
    "reject_rbl_client", "reject_rbl", "reject_rhsbl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo", "reject_rhsbl_sender", "reject_rhsbl_recipient", "reject_maps_rbl",
    "reject_unknown_client", "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname", "reject_unknown_forward_client_hostname",
    "reject_unknown_helo_hostname", "reject_unknown_hostname", "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain", "reject_unknown_address", "reject_unverified_sender",
    "reject_unverified_recipient", "reject_multi_recipient_bounce", "reject_plaintext_session",
    "sleep",
})

# postconf(5): at least one of these in smtpd_relay_restrictions or
# smtpd_recipient_restrictions, or smtpd refuses to start (an open relay is never a default).
RELAY_REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
                  "defer_if_permit")

IMPLICIT_MAP = ""  # Step.name of a bare type:name word (short for the list's check_*_access)


@dataclass(frozen=True, slots=True)
class Step:
    """One restriction: its canonical name, the table for map commands, the word as written."""

    name: str
    word: str
    table: Table | None = None


def suggest(word: str, names: set[str] | frozenset[str]) -> str | None:
    close = difflib.get_close_matches(word.lower(), sorted(names), n=1, cutoff=0.6)
    return close[0] if close else None


def parse_restrictions(
    param: str,
    words: list[str],
    *,
    classes: set[str],
    open_table: Callable[[str], Table],
    def_acl: str | None,
) -> list[Step]:
    """Turn a restriction list into Steps; ConfigError names ``param`` and the bad word."""
    steps: list[Step] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if ":" in word and not word.startswith("{"):
            if def_acl is None:
                raise ConfigError(
                    f'lookup table "{word}" without a restriction name', name=param,
                    fix="write check_client_access, check_helo_access, check_sender_access "
                        f"or check_recipient_access before \"{word}\"")
            split_spec(word)
            steps.append(Step(IMPLICIT_MAP, word, open_table(word)))
            continue
        low = word.lower()
        name = ALIASES.get(low, low)
        if name in MAP_COMMANDS:
            arg = words[i] if i < len(words) else ""
            if ":" not in arg:
                raise ConfigError(f'restriction {low}: bad argument "{arg}": need maptype:mapname',
                                  name=param, fix=f"write {low} type:name, for example "
                                  f"{low} texthash:/etc/postfix/access")
            i += 1
            steps.append(Step(name, word, open_table(arg)))
        elif name in SUPPORTED:
            steps.append(Step(name, word))
        elif word in classes:
            steps.append(Step(word, word))
        elif name in POSTFIX_ONLY:
            raise ConfigError(f'restriction "{word}" is not supported by postillion', name=param,
                              fix="remove it, or put a supported restriction in its place")
        else:
            hint = suggest(word, SUPPORTED | classes | POSTFIX_ONLY)
            raise ConfigError(f'unknown smtpd restriction: "{word}"', name=param,
                              fix=f'did you mean "{hint}"?' if hint else
                              "see postconf(5) for the restriction names")
    return steps


def has_required(steps: list[Step], classes: dict[str, list[Step]], seen: frozenset[str] = frozenset()) -> bool:
    """Postfix has_required(): a rejecting restriction that is reachable (not after permit)."""
    skip_next = False
    for step in steps:
        if skip_next:
            skip_next = False
            continue
        if step.name == "warn_if_reject":
            skip_next = True
            continue
        if step.name == "permit":
            return False
        if step.name in RELAY_REQUIRED:
            return True
        if step.name in classes and step.name not in seen:
            if has_required(classes[step.name], classes, seen | {step.name}):
                return True
    return False


def open_cached(cache: dict[str, Table], config_dir: Path,
                opener: Callable[[str, Path], Table]) -> Callable[[str], Table]:
    def _open(spec: str) -> Table:
        if spec not in cache:
            cache[spec] = opener(spec, config_dir)
        return cache[spec]
    return _open
