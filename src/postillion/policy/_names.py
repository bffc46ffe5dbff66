"""Host name and address syntax checks used by the HELO and address restrictions.

Owns: valid_hostname(), valid_hostaddr(), valid_mailhost_addr() and the trailing-dot rule.
Must not import: anything from postillion.
Follows: Postfix util/valid_hostname.c (labels of letters, digits, ``-`` and ``_``, at most
63 characters, 255 in all, not all-numeric) and smtpd_check.c dup_if_truncate().
"""

from __future__ import annotations

import ipaddress

_MAX_NAME = 255
_MAX_LABEL = 63


def truncate_dot(name: str) -> str:
    """``host.example.`` -> ``host.example`` (one trailing dot, but not ``..``)."""
    if len(name) > 1 and name.endswith(".") and not name.endswith(".."):
        return name[:-1]
    return name


def valid_hostname(name: str) -> bool:
    if not name or len(name) > _MAX_NAME:
        return False
    non_numeric = False
    for label in name.split("."):
        if not label or len(label) > _MAX_LABEL:
            return False
        if label.startswith("-") or label.endswith("-"):
            return False
        for c in label:
            if not (c.isascii() and (c.isalnum() or c in "-_")):
                return False
            if not c.isdigit():
                non_numeric = True
    return non_numeric


def valid_ipv4(addr: str) -> bool:
    parts = addr.split(".")
    if len(parts) != 4:
        return False
    return all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


def valid_hostaddr(addr: str) -> bool:
    """A bare IPv4 or IPv6 address."""
    if ":" in addr:
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            return False
        return True
    return valid_ipv4(addr)


def valid_mailhost_addr(addr: str) -> bool:
    """The inside of an address literal: ``1.2.3.4`` or ``IPv6:2001:db8::1``."""
    if addr[:5].lower() == "ipv6:":
        return ":" in addr[5:] and valid_hostaddr(addr[5:])
    return valid_ipv4(addr)
