"""Search orders: which keys a table is asked, in which order, for an address or a host.

Owns: the access(5) key sequences (``check_*_access``), the client name/address
sequence, and the mail_addr_find() sequence used by smtpd_sender_login_maps and
local_recipient_maps.  Pure functions: no table is asked here.
Must not import: anything above ``errors``.
Follows: access(5) "EMAIL ADDRESS PATTERNS", "HOST NAME/ADDRESS PATTERNS"; Postfix
smtpd_check.c check_mail_access(), check_domain_access(), check_addr_access();
global/mail_addr_find.c; global/split_addr.c (which local parts keep their delimiter).
"""

from __future__ import annotations

import ipaddress

# split_addr.c: these local parts are never split at the recipient delimiter.
_NEVER_SPLIT = frozenset({"postmaster", "mailer-daemon", "double-bounce"})


def split_address(address: str) -> tuple[str, str]:
    """``"a@b"`` -> ``("a", "b")``; no ``@`` -> ``(address, "")``.  Splits at the last ``@``."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain


def strip_extension(local: str, delimiters: str) -> str | None:
    """``user+ext`` -> ``user`` when ``+`` is in ``delimiters``; None when nothing to strip.

    Any character of ``delimiters`` separates (Postfix 2.11+ multi-character
    recipient_delimiter).  A delimiter at the start of the local part is not an extension.
    """
    if not delimiters or local.lower() in _NEVER_SPLIT:
        return None
    for i, c in enumerate(local):
        if c in delimiters:
            return local[:i] if i > 0 else None
    return None


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def domain_keys(domain: str, *, parent_matches_subdomains: bool = True) -> list[str]:
    """``a.b.example`` -> ``a.b.example``, then parents: ``b.example``, ``example``.

    With ``parent_matches_subdomains`` off (``smtpd_access_maps`` removed from
    parent_domain_matches_subdomains) the parents are ``.b.example``, ``.example``.
    A numerical name (an IP address) has no parents.  Keys are lower case.
    """
    name = domain.lower()
    if not name:
        return []
    keys = [name]
    if is_ip_address(name):
        return keys
    labels = name.split(".")
    for i in range(1, len(labels)):
        parent = ".".join(labels[i:])
        if parent:
            keys.append(parent if parent_matches_subdomains else "." + parent)
    return _dedupe(keys)


def address_keys(
    address: str,
    *,
    recipient_delimiter: str = "",
    parent_matches_subdomains: bool = True,
) -> list[str]:
    """access(5) order for ``user+ext@domain``:

    ``user+ext@domain``, ``user@domain`` (with a recipient delimiter), ``domain`` and its
    parent domains, ``user+ext@``, ``user@``.  Keys are lower case.  ``address`` must be
    qualified (callers append ``@$myorigin`` to a bare local part first).
    """
    addr = address.lower()
    local, domain = split_address(addr)
    bare = strip_extension(local, recipient_delimiter)
    keys = [addr]
    if bare is not None:
        keys.append(f"{bare}@{domain}")
    keys.extend(domain_keys(domain, parent_matches_subdomains=parent_matches_subdomains))
    keys.append(f"{local}@")
    if bare is not None:
        keys.append(f"{bare}@")
    return _dedupe(keys)


def address_prefixes(addr: str) -> list[str]:
    """``1.2.3.4`` -> ``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``; IPv6 is cut at ``:`` the same way
    (``2001:db8::1`` -> ``2001:db8::1``, ``2001:db8:``, ``2001:db8``, ``2001``)."""
    delim = ":" if ":" in addr else "."
    keys = []
    cur = addr.lower()
    while cur:
        keys.append(cur)
        cut = cur.rfind(delim)
        if cut < 0:
            break
        cur = cur[:cut]
    return keys


def client_keys(name: str, addr: str, *, parent_matches_subdomains: bool = True) -> list[str]:
    """Client lookups: the host name and its parents, then the address and its networks."""
    keys = domain_keys(name, parent_matches_subdomains=parent_matches_subdomains) if name else []
    keys.extend(address_prefixes(addr))
    return _dedupe(keys)


def mail_addr_keys(address: str, *, recipient_delimiter: str = "", local_domain: bool) -> list[str]:
    """mail_addr_find() order: ``user+ext@domain``, ``user@domain``, then (only when the
    domain is local) ``user+ext``, ``user``, then ``@domain``."""
    addr = address.lower()
    local, domain = split_address(addr)
    bare = strip_extension(local, recipient_delimiter)
    keys = [addr] if domain else []
    if bare is not None and domain:
        keys.append(f"{bare}@{domain}")
    if local_domain or not domain:
        keys.append(local)
        if bare is not None:
            keys.append(bare)
    if domain:
        keys.append(f"@{domain}")
    return _dedupe(keys)


def _dedupe(keys: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out
