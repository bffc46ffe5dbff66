"""The SQLite user database: schema, permissions, argon2id, read-only workers, name rules."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from postillion.sasl.userdb import (
    SCHEMA_VERSION,
    InvalidUsernameError,
    NoSuchUserError,
    UserDB,
    UserDBError,
    UserExistsError,
    check_username,
)

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def db(tmp_path: Path) -> UserDB:
    return UserDB(tmp_path / "users.sqlite", hasher=FAST)


def test_add_creates_file_0600_with_schema(db: UserDB) -> None:
    old = os.umask(0)
    try:
        db.add("alice", "secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.path.stat().st_mode) == 0o600
    con = sqlite3.connect(db.path)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    (name, digest, created, updated), = con.execute("SELECT * FROM users").fetchall()
    assert name == "alice"
    assert digest.startswith("$argon2id$v=19$")
    assert "secret" not in digest
    assert created == updated and created.endswith("Z") and len(created) == 20
    assert list(db.path.parent.iterdir()) == [db.path]  # no temporary file left behind


def test_default_hasher_is_argon2id(tmp_path: Path) -> None:
    db = UserDB(tmp_path / "u.sqlite")
    db.add("alice", "secret")
    digest = sqlite3.connect(db.path).execute("SELECT password_hash FROM users").fetchone()[0]
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert db.verify("alice", "secret") is True


def test_verify(db: UserDB) -> None:
    db.add("alice", "secret")
    db.add("bob", "pässwört")
    assert db.verify("alice", "secret") is True
    assert db.verify("alice", "Secret") is False
    assert db.verify("alice", "") is False
    assert db.verify("Alice", "secret") is False  # names are exact
    assert db.verify("bob", "pässwört") is True
    assert db.verify("nobody", "secret") is False


def test_unknown_user_still_costs_one_argon2_verification(tmp_path: Path) -> None:
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            calls.append("verify")
            return super().verify(hash, password)

    db = UserDB(tmp_path / "u.sqlite", hasher=CountingHasher(time_cost=1, memory_cost=8, parallelism=1))
    db.add("alice", "secret")
    assert db.verify("ghost", "secret") is False
    assert calls == ["verify"]


def test_add_existing_user_fails(db: UserDB) -> None:
    db.add("alice", "secret")
    with pytest.raises(UserExistsError, match=r"^user alice already exists$"):
        db.add("alice", "other")
    assert db.verify("alice", "secret")


def test_delete_and_list(db: UserDB) -> None:
    for name in ("carol", "alice", "bob"):
        db.add(name, "pw")
    assert db.list_names() == ["alice", "bob", "carol"]
    db.delete("bob")
    assert db.list_names() == ["alice", "carol"]
    with pytest.raises(NoSuchUserError, match=r"^user bob does not exist$"):
        db.delete("bob")


def test_set_password(db: UserDB) -> None:
    db.add("alice", "old")
    db.set_password("alice", "new")
    assert db.verify("alice", "new") is True
    assert db.verify("alice", "old") is False
    with pytest.raises(NoSuchUserError):
        db.set_password("zed", "x")


@pytest.mark.parametrize("name, why", [
    ("", "must not be empty"),
    ("al ice", "spaces"),
    ("al\tice", "spaces"),
    ("al\x00ice", "control"),
    ("al\x7fice", "control"),
    ("a" * 256, "longer than 255 bytes"),
    ("é" * 128, "longer than 255 bytes"),  # 256 bytes of UTF-8
])
def test_invalid_usernames(db: UserDB, name: str, why: str) -> None:
    with pytest.raises(InvalidUsernameError, match=why):
        db.add(name, "pw")


def test_valid_usernames() -> None:
    for name in ("alice", "alice@example.org", "a" * 255, "é" * 127, "jürgen"):
        check_username(name)


def test_unreadable_database_names_the_cause(open_tmp: Path) -> None:
    db = UserDB(open_tmp / "users.sqlite", hasher=FAST)
    db.add("alice", "secret")
    open_tmp.chmod(0o700)
    ro = UserDB(db.path, readonly=True, hasher=FAST)
    if os.geteuid() == 0:
        with pytest.raises(UserDBError) as info:
            call_as("nobody", lambda: ro.verify("alice", "secret"))
        assert str(info.value) == (
            f"cannot open user database {db.path}: Permission denied"
            f" (uid {pwd.getpwnam('nobody').pw_uid} must be able to reach the file)"
        )


def test_readonly_worker_cannot_write_and_does_not_create(tmp_path: Path) -> None:
    ro = UserDB(tmp_path / "missing.sqlite", readonly=True, hasher=FAST)
    with pytest.raises(UserDBError, match="No such file or directory"):
        ro.verify("alice", "x")
    assert not ro.path.exists()
    with pytest.raises(UserDBError, match="read-only"):
        ro.add("alice", "x")


def test_readonly_sees_changes(db: UserDB) -> None:
    ro = UserDB(db.path, readonly=True, hasher=FAST)
    db.add("alice", "one")
    assert ro.verify("alice", "one")
    db.set_password("alice", "two")
    assert ro.verify("alice", "two")
    assert ro.list_names() == ["alice"]


def call_as(user: str | None, fn: Callable[[], object]) -> object:
    """fn() in a forked child running as ``user`` (None: as we are); its result or exception."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            if user is not None:
                pw = pwd.getpwnam(user)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            result: tuple[bool, object] = (True, fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            result = (False, exc)
        with os.fdopen(w, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        ok, value = pickle.loads(f.read())
    os.waitpid(pid, 0)
    if not ok:
        raise value  # type: ignore[misc]
    return value


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory any user may traverse (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="postillion-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_worker_reads_a_readonly_file_in_a_readonly_directory(open_tmp: Path) -> None:
    """As the unprivileged worker would: no write access to the file or its directory."""
    home = open_tmp / "db"
    db = UserDB(home / "users.sqlite", hasher=FAST)
    db.add("alice", "secret")
    user = None
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        os.chown(db.path, nobody.pw_uid, nobody.pw_gid)
        user = "nobody"
    db.path.chmod(0o400)
    home.chmod(0o500)
    ro = UserDB(db.path, readonly=True, hasher=FAST)
    try:
        result = call_as(user, lambda: (ro.verify("alice", "secret"), ro.verify("alice", "x"),
                                        ro.list_names()))
        assert result == (True, False, ["alice"])
        assert list(home.iterdir()) == [db.path]
        if user is not None:
            with pytest.raises(UserDBError, match="is open read-only"):
                call_as(user, lambda: ro.add("bob", "x"))
            writer = UserDB(db.path, hasher=FAST)
            with pytest.raises(UserDBError, match="readonly database"):
                call_as(user, lambda: writer.add("bob", "x"))
    finally:
        home.chmod(0o700)


def test_not_a_user_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello, this is not sqlite at all" * 100)
    with pytest.raises(UserDBError, match="is not a postillion user database"):
        UserDB(junk, readonly=True).verify("a", "b")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(UserDBError, match="is not a postillion user database"):
        UserDB(other).add("a", "b")


def test_future_schema_version_is_refused(db: UserDB) -> None:
    db.add("alice", "x")
    con = sqlite3.connect(db.path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    with pytest.raises(UserDBError, match="unsupported schema version 99"):
        db.verify("alice", "x")


def test_creates_missing_parent_directory(tmp_path: Path) -> None:
    db = UserDB(tmp_path / "a" / "b" / "users.sqlite", hasher=FAST)
    db.add("alice", "x")
    assert db.list_names() == ["alice"]


def test_success_cache_skips_argon2_but_never_caches_failures(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from postillion.sasl.userdb import SuccessCache, UserDB

    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(password))
            return super().verify(hash, password)

    now = [1000.0]
    cache = SuccessCache(60, clock=lambda: now[0])
    db = UserDB(tmp_path / "u.sqlite", hasher=CountingHasher())
    db.add("alice", "secret")
    assert db.verify("alice", "secret", cache=cache)
    assert db.verify("alice", "secret", cache=cache)
    assert calls == ["secret"]  # the second login came from the cache
    assert not db.verify("alice", "wrong", cache=cache)
    assert not db.verify("alice", "wrong", cache=cache)
    assert calls == ["secret", "wrong", "wrong"]  # failures always pay full price
    db.set_password("alice", "new")
    assert not db.verify("alice", "secret", cache=cache)  # the old password stops working at once
    assert db.verify("alice", "new", cache=cache)
    now[0] += 61
    calls.clear()
    assert db.verify("alice", "new", cache=cache)
    assert calls == ["new"]  # expired after the TTL
