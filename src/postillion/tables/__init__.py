"""postillion lookup tables: ``type:name`` tables and the search orders used to ask them.

Owns: the ``Table`` protocol, the type registry (``open_table``), and the access(5) /
mail_addr_find() key orders.
Must not import: config, policy, server (tables sit next to config in the layering).
Follows: Postfix DATABASE_README, access(5), postmap(1).

    table = open_table("texthash:access", config_dir)      # ConfigError on problems
    value = await table.lookup("example.com")             # str | None; TableLookupError
"""

from __future__ import annotations

from postillion.tables._base import Table, fold, split_words
from postillion.tables._registry import (
    TABLE_TYPES,
    TableList,
    open_table,
    open_tables,
    split_spec,
)
from postillion.tables.search import (
    address_keys,
    address_prefixes,
    client_keys,
    domain_keys,
    mail_addr_keys,
    split_address,
    strip_extension,
)

__all__ = [
    "TABLE_TYPES",
    "Table",
    "TableList",
    "address_keys",
    "address_prefixes",
    "client_keys",
    "domain_keys",
    "fold",
    "mail_addr_keys",
    "open_table",
    "open_tables",
    "split_address",
    "split_spec",
    "split_words",
    "strip_extension",
]
