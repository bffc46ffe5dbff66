"""postillion:users (the user store as a sender login map), user aliases and their CLI."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from postillion.cli.main import main as cli_main
from postillion.cli.user_alias import main as alias_main
from postillion.config import Params
from postillion.errors import ConfigError, TableLookupError
from postillion.sasl.aliases_store import AliasStore, normalize_alias
from postillion.sasl.login_table import UserStoreTable
from postillion.sasl.userdb import UserDB
from postillion.tables import open_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policy"))
from policy_helpers import check, ctx, make_engine

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
MAIN_CF = ("postillion_user_database = $config_directory/users.sqlite\n"
           "myhostname = mx.example.test\nmydomain = example.test\nmyorigin = $myhostname\n")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    db = UserDB(tmp_path / "users.sqlite", hasher=FAST)
    for name in ("alice", "bob", "carol@corp.test"):
        db.add(name, "pw")
    return tmp_path


def lookup(table, key):
    return asyncio.run(table.lookup(key))


def run_alias(config: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = alias_main(config, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_a_user_owns_their_own_address(config: Path) -> None:
    t = open_table("postillion:users", config)
    assert t.spec == "postillion:users"
    assert lookup(t, "alice") == "alice"
    assert lookup(t, "alice@example.test") == "alice"        # $mydomain
    assert lookup(t, "Alice@MX.Example.Test") == "alice"     # $myorigin
    assert lookup(t, "alice@other.test") is None
    assert lookup(t, "carol@corp.test") == "carol@corp.test"  # a login that is an address
    assert lookup(t, "carol@example.test") is None
    assert lookup(t, "nobody@example.test") is None
    assert lookup(t, "@example.test") is None


def test_aliases_add_owners(config: Path) -> None:
    store = AliasStore(config / "users.sqlite")
    assert store.add("alice", "<Sales@Example.TEST>") == "sales@example.test"
    store.add("bob", "sales@example.test")
    store.add("bob", "@team.test")
    t = UserStoreTable("users", config)
    assert lookup(t, "sales@example.test") == "alice, bob"
    assert lookup(t, "@team.test") == "bob"
    assert store.list() == [("alice", "sales@example.test"), ("bob", "@team.test"),
                            ("bob", "sales@example.test")]
    store.delete("alice", "sales@example.test")
    assert lookup(t, "sales@example.test") == "bob"
    # A deleted user keeps no ownership through an old alias.
    UserDB(config / "users.sqlite", hasher=FAST).delete("bob")
    assert lookup(t, "sales@example.test") is None


def test_missing_database_owns_nothing_and_broken_one_fails(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    t = UserStoreTable("users", tmp_path)
    assert lookup(t, "alice@example.test") is None
    (tmp_path / "users.sqlite").write_text("not a database, just text that is long enough" * 20)
    with pytest.raises(TableLookupError, match="postillion:users: user database"):
        lookup(t, "alice@example.test")


def test_unknown_table_name(config: Path) -> None:
    with pytest.raises(ConfigError, match="unknown table: everyone"):
        open_table("postillion:everyone", config)


@pytest.mark.parametrize("bad", ["alice", "alice@", "a b@example.test", "@", "x@y@"])
def test_invalid_aliases(bad: str) -> None:
    with pytest.raises(Exception, match="must be an address"):
        normalize_alias(bad)


def test_alias_cli(config: Path) -> None:
    assert run_alias(config, "add", "alice", "Sales@Example.test") == (0, "", "")
    assert run_alias(config, "add", "alice", "@team.test") == (0, "", "")
    assert run_alias(config, "list", "alice") == (0, "@team.test\nsales@example.test\n", "")
    assert run_alias(config, "list") == (0, "alice @team.test\nalice sales@example.test\n", "")
    assert run_alias(config, "add", "alice", "sales@example.test") == (
        1, "", "postillion: user alice already has alias sales@example.test\n")
    assert run_alias(config, "add", "zed", "z@example.test") == (
        1, "", "postillion: user zed does not exist\n")
    assert run_alias(config, "del", "alice", "nope@example.test") == (
        1, "", "postillion: user alice has no alias nope@example.test\n")
    assert run_alias(config, "del", "alice", "@team.test") == (0, "", "")
    assert run_alias(config, "list", "alice") == (0, "sales@example.test\n", "")
    assert run_alias(config, "add", "alice")[0] == 2
    # The alias table lives in the user database file next to the users table.
    con = sqlite3.connect(config / "users.sqlite")
    assert con.execute("SELECT user, address FROM user_aliases").fetchall() == [
        ("alice", "sales@example.test")]
    con.close()


def test_alias_cli_through_main(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["-c", str(config), "user", "alias", "add", "bob", "b@example.org"]) == 0
    assert cli_main(["-c", str(config), "user", "alias", "list", "bob"]) == 0
    assert capsys.readouterr().out == "b@example.org\n"


def engine_for(config: Path, restriction: str = "reject_sender_login_mismatch"):
    return make_engine(config, smtpd_sasl_auth_enable="yes",
                       postillion_user_database=str(config / "users.sqlite"),
                       mydomain="example.test", myorigin="example.test",
                       smtpd_sender_restrictions=restriction)


@pytest.mark.parametrize(
    ("sender", "user", "expected"),
    [
        ("alice@example.test", "alice", None),
        ("sales@example.test", "alice", None),  # alias
        ("bob@example.test", "alice",
         "553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice"),
        ("someone@remote.test", "alice",
         "553 5.7.1 <someone@remote.test>: Sender address rejected: not owned by user alice"),
        ("alice@example.test", None,
         "553 5.7.1 <alice@example.test>: Sender address rejected: not logged in"),
        ("someone@remote.test", None, None),  # owned by nobody: not a login mismatch
    ],
)
def test_default_login_maps_are_the_user_store(config: Path, sender: str, user: str | None,
                                               expected: str | None) -> None:
    AliasStore(config / "users.sqlite").add("alice", "sales@example.test")
    c = ctx(sender=sender, sasl_username=user, sasl_method="PLAIN" if user else None,
            recipient="root@localhost")
    assert check(engine_for(config), "recipient", c) == expected


def test_explicit_login_maps_replace_the_user_store(config: Path) -> None:
    engine = make_engine(config, smtpd_sasl_auth_enable="yes",
                         postillion_user_database=str(config / "users.sqlite"),
                         smtpd_sender_login_maps="inline:{alice@example.test=bob}",
                         smtpd_sender_restrictions="reject_sender_login_mismatch")
    c = ctx(sender="alice@example.test", sasl_username="alice", sasl_method="PLAIN",
            recipient="root@localhost")
    assert check(engine, "recipient", c) == \
        "553 5.7.1 <alice@example.test>: Sender address rejected: not owned by user alice"


def test_params_from_dict(config: Path) -> None:
    p = Params.from_dict({"postillion_user_database": str(config / "users.sqlite"),
                          "mydomain": "example.test", "myorigin": "mx.example.test"},
                         config_dir=config)
    t = UserStoreTable.from_params(p)
    assert t.domains == ("example.test", "mx.example.test")
    assert lookup(t, "bob@mx.example.test") == "bob"
