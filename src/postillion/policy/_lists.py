"""Match lists: mynetworks (host names and networks) and domain lists (mydestination,
relay_domains).

Owns: NetworkList and DomainList, built from a parameter's words: literal names,
``.domain`` patterns, ``!`` negation, CIDR networks (``192.0.2.0/24``, ``[2001:db8::]/32``),
``/file/name`` (more patterns, one or more per line), and ``type:table`` lookups.
Must not import: config, server.  Uses ``tables`` to open ``type:table`` entries.
Follows: Postfix util/match_list.c, util/match_ops.c, and postconf(5)
parent_domain_matches_subdomains (whether ``example.com`` also matches
``sub.example.com``).  The first pattern that matches decides; a negated one means
"no match".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables import Table, domain_keys, open_table, split_spec

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class _Pattern:
    negate: bool
    name: str | None = None          # host or domain pattern, lower case
    network: _IPNetwork | None = None
    table: Table | None = None


def _expand_words(param: str, words: list[str], config_dir: Path, depth: int = 0) -> list[str]:
    out: list[str] = []
    for word in words:
        bare = word[1:] if word.startswith("!") else word
        if bare.startswith("/"):
            if depth > 10:
                raise ConfigError(f"{bare}: file inclusion nests too deep", name=param)
            try:
                text = Path(bare).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"open {bare}: {exc.strerror or exc}", name=param,
                                  fix="create the file or remove it from the list") from exc
            inner = [w for line in text.splitlines()
                     if not line.lstrip().startswith("#") for w in line.replace(",", " ").split()]
            expanded = _expand_words(param, inner, config_dir, depth + 1)
            if word.startswith("!"):
                expanded = [w[1:] if w.startswith("!") else "!" + w for w in expanded]
            out.extend(expanded)
        else:
            out.append(word)
    return out


def _network(param: str, word: str) -> _IPNetwork | None:
    """A CIDR or bare address pattern, or None when ``word`` is not one."""
    text = word
    prefix = ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ConfigError(f'missing "]" in "{word}"', name=param)
        prefix = text[close + 1:]
        text = text[1:close]
        if prefix and not prefix.startswith("/"):
            raise ConfigError(f'bad address pattern: "{word}"', name=param)
    elif "/" in text:
        text, _, rest = text.partition("/")
        prefix = "/" + rest
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if word.startswith("[") or prefix:
            raise ConfigError(f'bad address pattern: "{word}"', name=param,
                              fix='use a network such as "192.0.2.0/24" or "[2001:db8::]/32"') from None
        return None
    try:
        return ipaddress.ip_network(text + prefix, strict=True)
    except ValueError as exc:
        if "host bits" in str(exc):
            loose = ipaddress.ip_network(text + prefix, strict=False)
            shown = f"[{loose.network_address}]/{loose.prefixlen}" if loose.version == 6 else str(loose)
            raise ConfigError(f'non-null host address bits in "{word}"', name=param,
                              fix=f'perhaps you should use "{shown}" instead') from None
        raise ConfigError(f'bad net/mask pattern: "{word}"', name=param) from None


def _parse(param: str, words: list[str], config_dir: Path, *, networks: bool) -> list[_Pattern]:
    patterns: list[_Pattern] = []
    for word in _expand_words(param, words, config_dir):
        negate = word.startswith("!")
        bare = word[1:] if negate else word
        if not bare:
            raise ConfigError('empty pattern after "!"', name=param)
        if networks:
            net = _network(param, bare)
            if net is not None:
                patterns.append(_Pattern(negate, network=net))
                continue
        if ":" in bare and not bare.startswith("["):
            split_spec(bare)
            patterns.append(_Pattern(negate, table=open_table(bare, config_dir)))
            continue
        patterns.append(_Pattern(negate, name=bare.lower()))
    return patterns


def _name_matches(pattern: str, name: str, parent_style: bool) -> bool:
    if name == pattern:
        return True
    if pattern.startswith("."):
        return name.endswith(pattern)
    return parent_style and name.endswith("." + pattern)


async def _table_has_name(table: Table, name: str, parent_style: bool) -> bool:
    # match_hostname(): the name, then its parents (".parent" unless parent style)
    for key in domain_keys(name, parent_matches_subdomains=parent_style):
        if await table.lookup(key) is not None:
            return True
    return False


def _client_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = addr.strip("[]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class NetworkList:
    """A host name/address list such as ``mynetworks``."""

    def __init__(self, param: str, words: list[str], config_dir: Path, *,
                 parent_style: bool = True) -> None:
        self.param = param
        self.parent_style = parent_style
        self._patterns = _parse(param, words, config_dir, networks=True)

    async def match(self, name: str, addr: str) -> bool:
        """Does the client ``name``/``addr`` match?  TableLookupError propagates."""
        ip = _client_ip(addr)
        host = name.lower()
        for p in self._patterns:
            if p.network is not None:
                hit = ip is not None and ip.version == p.network.version and ip in p.network
            elif p.table is not None:
                hit = (await _table_has_name(p.table, host, self.parent_style)
                       or await p.table.lookup(addr) is not None)
            else:
                assert p.name is not None
                hit = host != "unknown" and _name_matches(p.name, host, self.parent_style)
            if hit:
                return not p.negate
        return False


class DomainList:
    """A domain list such as ``mydestination`` or ``relay_domains``."""

    def __init__(self, param: str, words: list[str], config_dir: Path, *,
                 parent_style: bool) -> None:
        self.param = param
        self.parent_style = parent_style
        self._patterns = _parse(param, words, config_dir, networks=False)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    async def match(self, domain: str) -> bool:
        name = domain.lower()
        for p in self._patterns:
            if p.table is not None:
                hit = await _table_has_name(p.table, name, self.parent_style)
            else:
                assert p.name is not None
                hit = _name_matches(p.name, name, self.parent_style)
            if hit:
                return not p.negate
        return False
