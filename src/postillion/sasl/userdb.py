"""The embedded SASL user store: one SQLite file of user names, argon2id password hashes and
the secrets the challenge-response mechanisms need.

Owns: the on-disk format below (and its migration), user name rules, password hashing and
checking, and computing the SCRAM / CRAM-MD5 secrets when a password is set.
Must not import: asyncio, config, server (callers pass the path and settings; ``sasl.verifiers``
runs ``verify`` and the secret look-ups in a thread).
Follows: RFC 9106 (argon2id, via argon2-cffi's PasswordHasher defaults), RFC 5802 / RFC 7677
(SCRAM StoredKey/ServerKey), Dovecot's ``{SCRAM-SHA-256}`` and ``{CRAM-MD5}`` value formats,
SQLite URI filenames.

On-disk format (``postillion_user_database``), schema version 2::

    CREATE TABLE schema_version (version INTEGER NOT NULL);      -- one row: 2
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,   -- the SASL authcid, compared exactly (case-sensitive)
        password_hash TEXT NOT NULL,      -- PHC string "$argon2id$v=19$m=...,t=...,p=...$salt$hash",
                                          -- or "{SCHEME}data" kept from a Dovecot passwd-file import
        created       TEXT NOT NULL,      -- UTC, ISO 8601 "2024-05-01T12:00:00Z"
        updated       TEXT NOT NULL       -- UTC, last password change
    );
    CREATE TABLE secrets (                -- added in version 2; rewritten with every password
        name   TEXT NOT NULL,             -- users.name
        scheme TEXT NOT NULL,             -- "SCRAM-SHA-1", "SCRAM-SHA-256" or "CRAM-MD5"
        value  TEXT NOT NULL,             -- SCRAM: "iterations,salt,StoredKey,ServerKey" (base64
                                          -- fields); CRAM-MD5: 64 hex digits (Dovecot's layout)
        PRIMARY KEY (name, scheme)
    );

One ``secrets`` row belongs to no user: name ``""`` (no user can have it), scheme
``SCRAM-DECOY-KEY``, value 64 hex digits of random key.  SCRAM keys the made-up salts of
unknown users with it, so they stay the same in every worker and after restarts.  Every write
adds it when missing; until then each worker uses a key of its own.

Version 1 files (no ``secrets`` table) are still read; the first change made with
``postillion user`` upgrades them in place.  Users whose password was set before then have no
SCRAM keys: SCRAM fails for them (logged, with the fix) until ``postillion user passwd NAME``.
The plaintext password is never stored; CRAM-MD5 secrets (password-equivalent for CRAM-MD5)
are stored only when ``store_cram_md5`` is on (``postillion_cram_md5_enable = yes``).

The file is created with mode 0600 and written only by ``postillion user``; smtpd workers open it
read-only (``mode=ro``), so the rollback journal (not WAL, which needs a writable -shm file) is used.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postillion.errors import PostillionError
from postillion.sasl import crammd5, schemes, scram
from postillion.sasl.scram import ScramCredentials

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
NAME_LIMIT = 255  # bytes of UTF-8; saslauthd's MAX_REQ_LEN is 256 with the NUL
SCRAM_SCHEMES = ("SCRAM-SHA-1", "SCRAM-SHA-256")
DECOY_NAME, DECOY_SCHEME = "", "SCRAM-DECOY-KEY"  # the secrets row that is no user's

_SECRETS_TABLE = """
CREATE TABLE secrets (
    name   TEXT NOT NULL,
    scheme TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (name, scheme)
);
"""
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created       TEXT NOT NULL,
    updated       TEXT NOT NULL
);
""" + _SECRETS_TABLE


class UserDBError(PostillionError):
    """A user database operation failed; the message is meant for the operator."""


class UserExistsError(UserDBError):
    pass


class NoSuchUserError(UserDBError):
    pass


class InvalidUsernameError(UserDBError):
    pass


def check_username(name: str) -> None:
    """Raise InvalidUsernameError unless ``name`` is a usable SASL user name."""
    if not name:
        raise InvalidUsernameError("user name must not be empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidUsernameError(
            f"user name {name!r} must not contain spaces or control characters"
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidUsernameError(f"user name {name!r} is not valid UTF-8") from None
    if size > NAME_LIMIT:
        raise InvalidUsernameError(f"user name is longer than {NAME_LIMIT} bytes")


class UserDB:
    """The user database at ``path``.

    ``readonly=True`` (smtpd workers) never creates or changes the file.  Each call opens its own
    short-lived connection, so one instance may be used from several threads.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        hasher: PasswordHasher | None = None,
        scram_iterations: int = scram.DEFAULT_ITERATIONS,
        store_cram_md5: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.scram_iterations = scram_iterations  # postillion_scram_iterations
        self.store_cram_md5 = store_cram_md5  # postillion_cram_md5_enable
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._decoy_key: bytes | None = None

    # --- administration (postillion user ...) -------------------------------------------

    def add(self, name: str, password: str) -> None:
        check_username(name)
        digest = self._hasher.hash(password)
        secrets = self._secrets(password)
        now = _now()
        with self._connect(write=True) as db:
            try:
                db.execute(
                    "INSERT INTO users (name, password_hash, created, updated) VALUES (?, ?, ?, ?)",
                    (name, digest, now, now),
                )
            except sqlite3.IntegrityError:
                raise UserExistsError(f"user {name} already exists") from None
            self._store_secrets(db, name, secrets)

    def add_hashed(self, name: str, stored: str) -> None:
        """Add a user with a password hash brought from elsewhere (``{SCHEME}data``, a Dovecot
        scheme that ``sasl.schemes`` can check).  A ``{SCRAM-SHA-*}`` hash also serves that SCRAM
        mechanism, as the value formats are the same."""
        check_username(name)
        scheme = schemes.check_supported(stored)
        rows = [(scheme, stored.partition("}")[2])] if scheme in SCRAM_SCHEMES else []
        for _, value in rows:
            # Refused here rather than failing (as a backend error) at every login later.
            try:
                creds = ScramCredentials.from_text(value)
            except ValueError as exc:
                raise UserDBError(f"user {name}: {scheme} password: {exc}") from None
            if len(creds.stored_key) != hashlib.new(scram.HASHES[scheme]).digest_size:
                raise UserDBError(f"user {name}: {scheme} password: wrong key size")
        now = _now()
        with self._connect(write=True) as db:
            try:
                db.execute(
                    "INSERT INTO users (name, password_hash, created, updated) VALUES (?, ?, ?, ?)",
                    (name, stored, now, now),
                )
            except sqlite3.IntegrityError:
                raise UserExistsError(f"user {name} already exists") from None
            self._store_secrets(db, name, rows)

    def delete(self, name: str) -> None:
        with self._connect(write=True) as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise NoSuchUserError(f"user {name} does not exist")
            db.execute("DELETE FROM secrets WHERE name = ?", (name,))

    def set_password(self, name: str, password: str) -> None:
        digest = self._hasher.hash(password)
        secrets = self._secrets(password)
        with self._connect(write=True) as db:
            cur = db.execute(
                "UPDATE users SET password_hash = ?, updated = ? WHERE name = ?",
                (digest, _now(), name),
            )
            if cur.rowcount == 0:
                raise NoSuchUserError(f"user {name} does not exist")
            self._store_secrets(db, name, secrets)

    def list_names(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT name FROM users ORDER BY name")]

    # --- authentication ----------------------------------------------------------------

    def verify(self, name: str, password: str, *, cache: SuccessCache | None = None) -> bool:
        """True if ``name`` exists and ``password`` matches.  Blocking (argon2): run in a thread.

        Unknown users cost one argon2 verification too, so timing does not tell who exists.
        With ``cache``, a recent success for the same name, stored hash and password skips
        argon2.  Raises UserDBError when the database cannot be read.
        """
        with self._connect() as db:
            row = db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        digest = row[0] if row is not None else self._dummy()
        key = cache.key(name, digest, password) if cache is not None and row is not None else None
        if key is not None and cache is not None and cache.hit(key):
            return True
        if digest.startswith("{"):
            try:
                if not schemes.verify(digest, password):
                    return False
            except schemes.SchemeError as exc:
                raise UserDBError(f"user database {self.path}: password of {name}: {exc}") from None
        else:
            try:
                self._hasher.verify(digest, password)  # returns True or raises
            except (VerificationError, InvalidHashError):
                return False
        if key is not None and cache is not None:
            cache.add(key)
        return row is not None

    def user_exists(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None

    def scram_credentials(self, name: str, hash_name: str) -> ScramCredentials | None:
        """The SCRAM keys of ``name`` for ``hash_name`` (``SCRAM-SHA-256``, ``SCRAM-SHA-1``, or
        ``SHA-256`` / ``SHA-1``); None for an unknown user or one without keys for that hash."""
        scheme = hash_name.upper()
        if not scheme.startswith("SCRAM-"):
            scheme = f"SCRAM-{scheme}"
        if scheme not in SCRAM_SCHEMES:
            raise ValueError(f"unknown SCRAM hash {hash_name!r}")
        value = self._secret(name, scheme)
        if value is None:
            return None
        try:
            return ScramCredentials.from_text(value)
        except ValueError as exc:
            raise UserDBError(f"user database {self.path}: {scheme} secret of {name}: {exc}") from None

    def scram_decoy(self) -> scram.Decoy:
        """What SCRAM shows for a name without keys: this store's iteration count and key."""
        if self._decoy_key is None:
            value = self._secret(DECOY_NAME, DECOY_SCHEME, user=False)
            try:
                key = bytes.fromhex(value) if value is not None else b""
            except ValueError:
                key = b""
            if len(key) >= 16:
                self._decoy_key = key  # never changes once written
        return scram.Decoy(iterations=self.scram_iterations, key=self._decoy_key or b"")

    def cram_md5_secret(self, name: str) -> bytes | None:
        """The 32-byte CRAM-MD5 secret of ``name``, or None (unknown user or none stored)."""
        value = self._secret(name, crammd5.SCHEME)
        if value is None:
            return None
        try:
            secret = bytes.fromhex(value)
        except ValueError:
            secret = b""
        if len(secret) != crammd5.SECRET_SIZE:
            raise UserDBError(f"user database {self.path}: CRAM-MD5 secret of {name} is malformed")
        return secret

    # --- internals -----------------------------------------------------------------------

    def _secrets(self, password: str) -> list[tuple[str, str]]:
        """(scheme, value) rows for a new password; computed before the write transaction."""
        rows = [
            (s, scram.make_credentials(s, password, iterations=self.scram_iterations).to_text())
            for s in SCRAM_SCHEMES
        ]
        if self.store_cram_md5:
            rows.append((crammd5.SCHEME, crammd5.make_secret(password).hex()))
        return rows

    @staticmethod
    def _store_secrets(db: sqlite3.Connection, name: str, rows: list[tuple[str, str]]) -> None:
        # Every secret derived from the old password goes, including a CRAM-MD5 one that is no
        # longer wanted.
        db.execute("DELETE FROM secrets WHERE name = ?", (name,))
        db.executemany(
            "INSERT INTO secrets (name, scheme, value) VALUES (?, ?, ?)",
            [(name, scheme, value) for scheme, value in rows],
        )

    def _secret(self, name: str, scheme: str, *, user: bool = True) -> str | None:
        with self._connect() as db:
            if not _has_secrets_table(db):
                return None  # a version 1 file that no write has upgraded yet
            row = db.execute(
                "SELECT value FROM secrets WHERE name = ? AND scheme = ?"
                + (" AND name IN (SELECT name FROM users)" if user else ""),
                (name, scheme),
            ).fetchone()
        return row[0] if row is not None else None

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(os.urandom(16).hex())
        return self._dummy_hash

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write and self.readonly:
            raise UserDBError(f"user database {self.path} is open read-only")
        if write:
            self._create_if_missing()
        with connect(self.path, write=write, prepare=_migrate) as db:
            yield db

    def _create_if_missing(self) -> None:
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        # Create with 0600 ourselves (whatever the umask), fill it, then rename into place so a
        # reader never sees a file without a schema.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            finally:
                db.close()
            os.link(tmp, self.path)  # fails if someone else created it meanwhile: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def connect(
    path: Path, *, write: bool = False, prepare: Callable[[sqlite3.Connection], object] | None = None
) -> Iterator[sqlite3.Connection]:
    """A short-lived connection to the user database file at ``path`` (never created here),
    its schema version checked.  ``write=True`` yields inside a ``BEGIN IMMEDIATE`` transaction
    that ``prepare(db)`` (schema upgrades) runs in first, committed when the block ends."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={'rw' if write else 'ro'}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise UserDBError(f"cannot open user database {path}: {_why(exc, path)}") from exc
    try:
        _check_schema(db, path)
        if write:
            db.execute("BEGIN IMMEDIATE")
            try:
                if prepare is not None:
                    prepare(db)
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        else:
            yield db
    except sqlite3.Error as exc:
        raise UserDBError(f"user database {path}: {exc}") from exc
    finally:
        db.close()


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    try:
        row = db.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise UserDBError(f"{path} is not a postillion user database ({exc})") from exc
    if row is None or row[0] not in READABLE_VERSIONS:
        raise UserDBError(
            f"{path}: unsupported schema version {row[0] if row else None}"
            f" (this postillion reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )


def _migrate(db: sqlite3.Connection) -> None:
    """Version 1 → 2: add the secrets table; any version: add the decoy key if missing (inside
    the caller's write transaction)."""
    if db.execute("SELECT version FROM schema_version").fetchone()[0] == 1:
        db.execute(_SECRETS_TABLE)  # not executescript(), which would COMMIT first
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    db.execute(
        "INSERT OR IGNORE INTO secrets (name, scheme, value) VALUES (?, ?, ?)",
        (DECOY_NAME, DECOY_SCHEME, os.urandom(32).hex()),
    )


def _has_secrets_table(db: sqlite3.Connection) -> bool:
    return db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'secrets'"
    ).fetchone() is not None


def _why(exc: sqlite3.Error, path: Path) -> str:
    """sqlite3 says only "unable to open database file"; find out what the operator must fix."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "No such file or directory (create it with: postillion user add NAME)"
    except OSError as err:
        return f"{err.strerror} (uid {os.geteuid()} must be able to reach the file)"
    if not os.access(path, os.R_OK):
        return f"Permission denied (the file must be readable by uid {os.geteuid()})"
    return str(exc)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SuccessCache:
    """Recent successful logins, like ``saslauthd -c``: a mail client that logs in for every
    message should not cost a full argon2 verification (~0.1 s of CPU) each time.

    Keys are HMAC-SHA256 under a random per-process secret of (name, stored hash, password):
    a changed password changes the stored hash and misses, and nothing in memory reveals a
    password.  Failures are never cached, so guessing stays as slow as argon2 makes it.
    """

    def __init__(
        self, ttl: float, *, max_entries: int = 10000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, name: str, stored_hash: str, password: str) -> bytes:
        msg = b"\0".join(x.encode("utf-8", "surrogatepass") for x in (name, stored_hash, password))
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def hit(self, key: bytes) -> bool:
        with self._lock:
            expires = self._entries.get(key)
            if expires is None:
                return False
            if expires < self._clock():
                del self._entries[key]
                return False
            self._entries.move_to_end(key)
            return True

    def add(self, key: bytes) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = self._clock() + self.ttl
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
