"""The addresses each user of the embedded user store may send as, besides their own.

Owns: the ``user_aliases`` table inside the user database file (``postillion_user_database``),
created on first use next to ``sasl.userdb``'s tables, and the alias address rules.
Must not import: asyncio, config, server, tables (callers pass the path).
Follows: Postfix smtpd_sender_login_maps semantics (an address may have several owners;
keys are matched in lower case, ``@domain`` entries cover a whole domain); SQLite URI names.

Schema (independent of ``sasl.userdb``'s schema version; never migrated by it)::

    CREATE TABLE IF NOT EXISTS user_aliases (
        user     TEXT NOT NULL,   -- users.name, exactly as stored there
        address  TEXT NOT NULL,   -- "local@domain" or "@domain", lower case
        created  TEXT NOT NULL,   -- UTC, ISO 8601
        PRIMARY KEY (address, user)
    );

An alias of a deleted user is kept but owns nothing: readers join with ``users``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postillion.sasl.userdb import NoSuchUserError, UserDBError, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_aliases (
    user     TEXT NOT NULL,
    address  TEXT NOT NULL,
    created  TEXT NOT NULL,
    PRIMARY KEY (address, user)
)
"""


class AliasExistsError(UserDBError):
    pass


class NoSuchAliasError(UserDBError):
    pass


class InvalidAliasError(UserDBError):
    pass


def normalize_alias(address: str) -> str:
    """``<Alice@Example.ORG>`` -> ``alice@example.org``; ``@example.org`` covers the domain.

    Raises InvalidAliasError for anything that is not ``local@domain`` or ``@domain``."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    _local, at, domain = text.rpartition("@")
    if not at or not domain or any(c.isspace() or ord(c) < 0x20 for c in text) \
            or "@" in domain or domain.startswith(".") or domain.endswith(".."):
        raise InvalidAliasError(
            f"alias {address!r} must be an address (user@example.org) or a domain (@example.org)")
    return text.lower()


class AliasStore:
    """The ``user_aliases`` table in the user database at ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def add(self, user: str, address: str) -> str:
        """Let ``user`` send as ``address``; returns the stored (normalized) address."""
        alias = normalize_alias(address)
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone() is None:
                raise NoSuchUserError(f"user {user} does not exist")
            try:
                db.execute("INSERT INTO user_aliases (user, address, created) VALUES (?, ?, ?)",
                           (user, alias, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
            except sqlite3.IntegrityError:
                raise AliasExistsError(f"user {user} already has alias {alias}") from None
        return alias

    def delete(self, user: str, address: str) -> None:
        alias = normalize_alias(address)
        with self._connect(write=True) as db:
            cur = db.execute("DELETE FROM user_aliases WHERE user = ? AND address = ?",
                             (user, alias))
            if cur.rowcount == 0:
                raise NoSuchAliasError(f"user {user} has no alias {alias}")

    def list(self, user: str | None = None) -> list[tuple[str, str]]:
        """(user, address) pairs, sorted; only ``user``'s when given."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            if not _has_table(db):
                return []
            if user is None:
                rows = db.execute("SELECT user, address FROM user_aliases ORDER BY user, address")
            else:
                rows = db.execute("SELECT user, address FROM user_aliases WHERE user = ? "
                                  "ORDER BY address", (user,))
            return [(r[0], r[1]) for r in rows]

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write and not self.path.exists():
            # The file appears with the first `postillion user add`; before that nobody exists.
            raise UserDBError(f"user database {self.path} does not exist "
                              "(create it with: postillion user add NAME)")
        # userdb's helper: the same URI, schema check and write transaction as the user tables.
        with connect(self.path, write=write, prepare=lambda db: db.execute(_SCHEMA)) as db:
            yield db


def _has_table(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user_aliases'")
    return row.fetchone() is not None
