"""sqlite: tables (sqlite_table(5)) against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from postillion.errors import ConfigError, TableLookupError
from postillion.tables import open_table
from postillion.tables.sqlite import SqliteTable


def lookup(table, key):
    return asyncio.run(table.lookup(key))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "maps.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE logins (address TEXT, login TEXT);
        INSERT INTO logins VALUES ('alice@example.test', 'alice');
        INSERT INTO logins VALUES ('team@example.test', 'alice');
        INSERT INTO logins VALUES ('team@example.test', 'bob');
        INSERT INTO logins VALUES ('@shared.test', 'carol');
        INSERT INTO logins VALUES ('o''brien@example.test', 'obrien');
        INSERT INTO logins VALUES ('null@example.test', NULL);
        INSERT INTO logins VALUES ('empty@example.test', '');
        INSERT INTO logins VALUES ('dave@example.test', 'dave@corp.test');
        INSERT INTO logins VALUES ('erin@example.test', 'erin');
        CREATE TABLE users (local TEXT, domain TEXT, login TEXT);
        INSERT INTO users VALUES ('frank', 'mail.example.test', 'frank');
    """)
    con.commit()
    con.close()
    return path


def make(tmp_path: Path, db: Path, body: str) -> SqliteTable:
    cf = tmp_path / "sender.cf"
    cf.write_text(f"# sqlite_table(5)\ndbpath = {db}\n{body}")
    table = open_table(f"sqlite:{cf}", tmp_path)
    assert isinstance(table, SqliteTable)
    return table


QUERY = "query = SELECT login FROM logins WHERE address='%s'\n"


def test_lookup_joins_rows_with_commas(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY)
    assert t.spec == f"sqlite:{tmp_path / 'sender.cf'}"
    assert lookup(t, "alice@example.test") == "alice"
    assert lookup(t, "ALICE@Example.TEST") == "alice"  # keys are folded
    assert lookup(t, "team@example.test") == "alice,bob"
    assert lookup(t, "nobody@example.test") is None
    assert lookup(t, "@shared.test") == "carol"


def test_quotes_are_doubled_not_injected(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY)
    assert lookup(t, "o'brien@example.test") == "obrien"
    assert lookup(t, "x' OR '1'='1") is None


def test_null_and_empty_values_are_skipped(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY)
    assert lookup(t, "null@example.test") is None
    assert lookup(t, "empty@example.test") is None
    assert t.warnings == [f'table "{t.spec}": empty lookup result for: "empty@example.test" -- ignored']


def test_user_and_domain_expansions(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT login FROM users WHERE local='%u' AND domain='%d'\n")
    assert lookup(t, "frank@mail.example.test") == "frank"
    assert lookup(t, "frank") is None           # no domain: %d suppresses the query
    assert lookup(t, "@mail.example.test") is None  # empty local part: %u suppresses it


def test_domain_label_expansions(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT login FROM users WHERE local='%u' AND "
                           "domain='%3.%2.%1'\n")
    assert lookup(t, "frank@mail.example.test") == "frank"
    assert lookup(t, "frank@example.test") is None  # too few labels: no query
    assert lookup(t, "frank@mail..test") is None


def test_u_without_domain_is_the_whole_key(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT login FROM logins WHERE address='%u@example.test'\n")
    assert lookup(t, "alice") == "alice"
    assert lookup(t, "alice@elsewhere.test") == "alice"


def test_result_format(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY + "result_format = <%s> %u/%d for %S %U\n")
    # A result without a domain is skipped when the format needs %d.
    assert lookup(t, "dave@example.test") == "<dave@corp.test> dave/corp.test for dave@example.test dave"
    assert lookup(t, "alice@example.test") is None
    t2 = make(tmp_path, db, QUERY + "result_format = %u 100%%\n")
    assert lookup(t2, "team@example.test") == "alice 100%,bob 100%"


def test_domain_restricts_the_keys_queried(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY + "domain = shared.test, example.test, !never.test\n")
    assert lookup(t, "alice@example.test") == "alice"
    assert lookup(t, "@shared.test") is None   # empty local part
    assert lookup(t, "alice") is None          # no domain
    (tmp_path / "domains").write_text("other.test\n")
    t2 = make(tmp_path, db, QUERY + "domain = /" + str(tmp_path / "domains").lstrip("/") + "\n")
    assert lookup(t2, "alice@example.test") is None


def test_expansion_limit(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, QUERY + "expansion_limit = 1\n")
    assert lookup(t, "alice@example.test") == "alice"
    with pytest.raises(TableLookupError, match="Expansion limit exceeded for key: 'team@example.test'"):
        lookup(t, "team@example.test")


def test_legacy_table_fields(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "table = logins\nselect_field = login\nwhere_field = address\n"
                           "additional_conditions = AND login <> 'bob'\n")
    assert lookup(t, "team@example.test") == "alice"


def test_sql_error_is_a_lookup_error(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT login FROM missing WHERE a='%s'\n")
    with pytest.raises(TableLookupError, match="no such table: missing"):
        lookup(t, "alice@example.test")


@pytest.mark.parametrize("key", ["alice\0@example.test", "caf\udce9@example.test"])
def test_unqueryable_key_is_a_lookup_error(tmp_path: Path, db: Path, key: str) -> None:
    # A NUL, or an 8-bit byte kept as a surrogate, cannot go into SQL text: a lookup
    # failure (451), not an exception that ends the session.
    t = make(tmp_path, db, QUERY)
    with pytest.raises(TableLookupError, match=r"^sqlite:.*: SQL query failed: "):
        lookup(t, key)


def test_database_is_read_only(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = DELETE FROM logins WHERE address='%s'\n")
    with pytest.raises(TableLookupError, match="readonly"):
        lookup(t, "alice@example.test")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "dbpath is not set"),
        ("dbpath = {db}\n", "neither query nor table, select_field, where_field is set"),
        ("dbpath = {db}\nquery = SELECT x WHERE y='%x'\n", "invalid query template"),
        ("dbpath = {db}\n" + QUERY + "result_format = %1\n", None),
        ("dbpath = {tmp}/absent.sqlite\n" + QUERY, "cannot open database"),
        ("dbpath = {db}\n" + QUERY + "expansion_limit = many\n", "bad expansion_limit"),
    ],
)
def test_configuration_errors(tmp_path: Path, db: Path, body: str, message: str | None) -> None:
    cf = tmp_path / "bad.cf"
    cf.write_text(body.format(db=db, tmp=tmp_path))
    if message is None:
        open_table(f"sqlite:{cf}", tmp_path)  # %1 in result_format reads the key's labels
        return
    with pytest.raises(ConfigError, match=message):
        open_table(f"sqlite:{cf}", tmp_path)


def test_relative_paths_are_relative_to_the_config_dir(tmp_path: Path, db: Path) -> None:
    (tmp_path / "rel.cf").write_text(f"dbpath = {db.name}\n{QUERY}")
    assert lookup(open_table("sqlite:rel.cf", tmp_path), "alice@example.test") == "alice"


def test_sender_login_maps_over_sqlite(tmp_path: Path, db: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "policy"))
    from policy_helpers import check, ctx, make_engine

    (tmp_path / "sender.cf").write_text(f"dbpath = {db}\n{QUERY}")
    engine = make_engine(tmp_path, smtpd_sasl_auth_enable="yes",
                         smtpd_sender_login_maps="sqlite:sender.cf",
                         smtpd_sender_restrictions="reject_sender_login_mismatch")
    c = ctx(sender="team@example.test", sasl_username="bob", sasl_method="PLAIN",
            recipient="root@localhost")
    assert check(engine, "recipient", c) is None
    c = ctx(sender="erin@example.test", sasl_username="bob", sasl_method="PLAIN",
            recipient="root@localhost")
    assert check(engine, "recipient", c) == \
        "553 5.7.1 <erin@example.test>: Sender address rejected: not owned by user bob"
