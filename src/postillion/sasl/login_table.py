"""``postillion:users``: the embedded user store as a sender login map.

Owns: which addresses a user of ``postillion_user_database`` owns, as a lookup table whose
value is the owners' login names (the smtpd_sender_login_maps value format), and the default
login map the policy engine uses when ``smtpd_sender_login_maps`` is empty.
Must not import: server, policy, cli.  Reads config only to find the database and domains.
Follows: postconf(5) smtpd_sender_login_maps and reject_sender_login_mismatch.

A user owns, with no configuration:

* the login name itself as an address key (``alice`` for a bare local part in a local
  domain, ``alice@example.org`` for a login that is an address);
* for a login without ``@``: ``login@$mydomain`` and ``login@$myorigin``;
* every alias given with ``postillion user alias add LOGIN ADDRESS`` (``sasl.aliases_store``;
  an ``@domain`` alias owns the whole domain, as a ``@domain`` login-map key does).

Keys and names are compared in lower case.  The file is opened read-only for each lookup, so
``postillion user`` changes apply at once; a missing file owns nothing.  A file that cannot
be read is a TableLookupError (451 4.3.0).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from postillion.errors import ConfigError, TableLookupError

if TYPE_CHECKING:
    from postillion.config import Params

SPEC = "postillion:users"
TABLE_NAME = "users"


class UserStoreTable:
    """Owners of an address according to the user store."""

    def __init__(self, name: str, config_dir: Path | None = None, *,
                 params: Params | None = None) -> None:
        self.spec = f"postillion:{name}"
        if name != TABLE_NAME:
            raise ConfigError(f"unknown table: {name}", name=self.spec,
                              fix=f"use {SPEC} (the user store of postillion_user_database)")
        if params is None:
            from postillion.config import load_config

            params = load_config(Path(config_dir or ".")).params()
        path = params.path("postillion_user_database")
        if path is None:
            raise ConfigError("is empty", name="postillion_user_database",
                              fix=f"set it to the user database file, or do not use {SPEC}")
        self.path = Path(path)
        self.domains = tuple(dict.fromkeys(
            d.lower().rstrip(".") for d in (params.get("mydomain"), params.get("myorigin")) if d))

    @classmethod
    def from_params(cls, params: Params) -> UserStoreTable:
        return cls(TABLE_NAME, params.config_dir, params=params)

    async def lookup(self, key: str) -> str | None:
        key = key.lower()
        if not key or not self.path.exists():
            return None
        local, at, domain = key.rpartition("@")
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
            try:
                owners = [r[0] for r in db.execute(
                    "SELECT name FROM users WHERE lower(name) = ? ORDER BY name", (key,))]
                if at and local and domain in self.domains:
                    owners += [r[0] for r in db.execute(
                        "SELECT name FROM users WHERE lower(name) = ? AND instr(name, '@') = 0 "
                        "ORDER BY name", (local,))]
                if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                              "AND name = 'user_aliases'").fetchone():
                    owners += [r[0] for r in db.execute(
                        "SELECT a.user FROM user_aliases a JOIN users u ON u.name = a.user "
                        "WHERE a.address = ? ORDER BY a.user", (key,))]
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise TableLookupError(f"{self.spec}: user database {self.path}: {exc}") from exc
        return ", ".join(dict.fromkeys(owners)) or None
