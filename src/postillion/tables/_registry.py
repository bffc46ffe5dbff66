"""Opening ``type:name`` tables through a lazy registry of table types.

Owns: ``TABLE_TYPES`` (type name -> "module:Class", imported on first use, uvicorn style),
``open_table`` and ``open_tables`` (a parameter's list of tables).
Must not import: anything above ``errors`` and ``tables``.
Follows: Postfix util/dict_open.c (the type registry) and postconf(5) "proxy:".
"""

from __future__ import annotations

import importlib
from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables._base import Table, split_words

# Every type the registry knows.  A new type is one line here plus its module.
TABLE_TYPES: dict[str, str] = {
    "inline": "postillion.tables.inline:InlineTable",
    "static": "postillion.tables.inline:StaticTable",
    "fail": "postillion.tables.inline:FailTable",
    "texthash": "postillion.tables.texthash:TextHashTable",
    "unix": "postillion.tables.unix:UnixTable",
    "regexp": "postillion.tables.regexp:RegexpTable",
    "pcre": "postillion.tables.regexp:PcreTable",
    "sqlite": "postillion.tables.sqlite:SqliteTable",
    # postillion:users, the embedded user store as a sender login map (sasl/login_table.py).
    "postillion": "postillion.sasl.login_table:UserStoreTable",
}

# Types Postfix has and postillion does not (yet): named in the error's fix text.
_POSTFIX_ONLY = frozenset({
    "hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "cidr", "tcp", "socketmap",
    "ldap", "mysql", "pgsql", "memcache", "nis", "nisplus", "netinfo", "environ",
    "internal", "pipemap", "unionmap", "randmap",
})


def _load(type_name: str) -> type:
    target = TABLE_TYPES[type_name]
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def split_spec(spec: str) -> tuple[str, str]:
    """``"texthash:/etc/x"`` -> ``("texthash", "/etc/x")``; ConfigError without a type."""
    type_name, sep, name = spec.strip().partition(":")
    if not sep or not type_name or not name:
        raise ConfigError(f"bad table name {spec!r}: need type:name", name=spec,
                          fix='for example "texthash:/etc/postfix/access"')
    return type_name.lower(), name


def open_table(spec: str, config_dir: Path | str) -> Table:
    """Open one table.  Unknown types and unreadable tables raise ConfigError."""
    type_name, name = split_spec(spec)
    if type_name == "proxy":
        # The proxymap service only shares open tables between processes; asking the
        # table directly gives the same answers.
        return open_table(name, config_dir)
    if type_name not in TABLE_TYPES:
        supported = ", ".join(sorted(TABLE_TYPES))
        hint = (f"postillion does not support {type_name}: tables; use texthash:/path for a "
                "postmap source file" if type_name in _POSTFIX_ONLY else f"supported: {supported}")
        raise ConfigError(f"unsupported dictionary type: {type_name}", name=spec, fix=hint)
    return _load(type_name)(name, Path(config_dir))


def open_tables(value: str, config_dir: Path | str) -> list[Table]:
    """Open every table in a list-valued parameter (``"texthash:/a, inline:{b=c}"``)."""
    return [open_table(word, config_dir) for word in split_words(value)]


class TableList:
    """Several tables searched in order, like a Postfix MAPS list: the first hit wins.

    A lookup error in any table is raised at once (Postfix stops at the first error too,
    rather than answering from a later table).
    """

    def __init__(self, tables: list[Table]) -> None:
        self.tables = list(tables)
        self.spec = ", ".join(t.spec for t in self.tables)

    def __bool__(self) -> bool:
        return bool(self.tables)

    async def lookup(self, key: str) -> str | None:
        for table in self.tables:
            value = await table.lookup(key)
            if value is not None:
                return value
        return None

    async def find(self, keys: list[str]) -> str | None:
        """The value for the first of ``keys`` found in any table (mail_addr_find style:
        each key is tried in all tables before the next key)."""
        for key in keys:
            value = await self.lookup(key)
            if value is not None:
                return value
        return None
