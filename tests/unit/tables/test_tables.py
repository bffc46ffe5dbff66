"""Table types: inline, static, fail, texthash, unix, proxy, and the registry's errors."""

from __future__ import annotations

import asyncio
import pwd
from pathlib import Path

import pytest

from postillion.errors import ConfigError, TableLookupError
from postillion.tables import TABLE_TYPES, TableList, open_table, open_tables


def lookup(table, key):
    return asyncio.run(table.lookup(key))


@pytest.mark.parametrize(
    ("spec", "key", "value"),
    [
        ("inline:{alice@example.test=alice}", "alice@example.test", "alice"),
        ("inline:{alice@example.test=alice}", "ALICE@Example.TEST", "alice"),
        ("inline:{ a=1, b=2 }", "b", "2"),
        ("inline:{ a=1 b=2 }", "b", "2"),
        ("inline:{ { key = value with spaces }, k2=v2 }", "key", "value with spaces"),
        ("inline:{ a=1, a=2 }", "a", "1"),
        ("inline:{ a=1 }", "b", None),
        ("inline:{ a= }", "a", ""),
        ("static:OK", "anything", "OK"),
        ("static:{REJECT go away}", "x", "REJECT go away"),
        ("proxy:inline:{a=1}", "a", "1"),
        ("proxy:static:yes", "a", "yes"),
    ],
)
def test_inline_and_static(spec: str, key: str, value: str | None) -> None:
    assert lookup(open_table(spec, Path(".")), key) == value


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("inline:a=1", "inline:a=1: bad syntax: 'inline:a=1'"),
        ("inline:{ a }", "inline:{ a }: bad entry 'a': need key=value"),
        ("inline:{ =1 }", "inline:{ =1 }: bad entry '=1': need key=value"),
        ("hash:/etc/aliases", "hash:/etc/aliases: unsupported dictionary type: hash"),
        ("nosuch:x", "nosuch:x: unsupported dictionary type: nosuch"),
        ("noname", "noname: bad table name 'noname': need type:name"),
        ("texthash:", "texthash:: bad table name 'texthash:': need type:name"),
        ("unix:shadow.byname", "unix:shadow.byname: unknown table: shadow.byname"),
    ],
)
def test_open_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_table(spec, Path("."))
    assert info.value.render().split("; ")[0] == message


def test_unsupported_type_fix_names_texthash() -> None:
    with pytest.raises(ConfigError) as info:
        open_table("hash:/etc/postfix/access", Path("."))
    assert info.value.fix == ("postillion does not support hash: tables; use texthash:/path "
                              "for a postmap source file")


def test_fail_table_raises_lookup_error() -> None:
    with pytest.raises(TableLookupError):
        lookup(open_table("fail:x", Path(".")), "k")


def test_registry_is_lazy_module_class_strings() -> None:
    assert TABLE_TYPES["texthash"] == "postillion.tables.texthash:TextHashTable"
    assert all(":" in target for target in TABLE_TYPES.values())


SOURCE = """\
# access table
example.com     REJECT   no thanks
  # a comment between entries is skipped
Friend@Example.COM OK
multi   first part
    second part
	third part

192.0.2   DUNNO
example.com     OK
"""


def test_texthash_syntax(tmp_path: Path) -> None:
    (tmp_path / "access").write_text(SOURCE)
    table = open_table("texthash:access", tmp_path)  # relative to config_dir
    assert lookup(table, "example.com") == "REJECT   no thanks"  # first definition wins
    assert lookup(table, "friend@example.com") == "OK"
    assert lookup(table, "multi") == "first part second part third part"
    assert lookup(table, "192.0.2") == "DUNNO"
    assert lookup(table, "missing") is None
    assert table.warnings == [f'{tmp_path / "access"}, line 10: duplicate entry: "example.com"']


def test_texthash_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("k v\n")
    assert lookup(open_table(f"texthash:{tmp_path / 't'}", Path("/nonexistent")), "k") == "v"


@pytest.mark.parametrize(
    ("text", "lineno", "what"),
    [
        ("good value\nlonely\n", 2, "expected format: key whitespace value, got 'lonely'"),
        ("# c\n\n   leading continuation\n", 3, "continuation line without a preceding entry"),
    ],
)
def test_texthash_bad_lines(tmp_path: Path, text: str, lineno: int, what: str) -> None:
    path = tmp_path / "map"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        open_table(f"texthash:{path}", tmp_path)
    assert info.value.path == path
    assert info.value.lineno == lineno
    assert str(info.value).startswith(f"{path}:{lineno}: {what}")


def test_texthash_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_table("texthash:nope", tmp_path)
    assert str(info.value) == (f"{tmp_path / 'nope'}: texthash:nope: open: no such file; "
                               "create the file or fix the path")


def test_unix_passwd_byname() -> None:
    pw = pwd.getpwuid(0)
    table = open_table("proxy:unix:passwd.byname", Path("."))
    assert lookup(table, pw.pw_name) == (
        f"{pw.pw_name}:{pw.pw_passwd}:0:{pw.pw_gid}:{pw.pw_gecos}:{pw.pw_dir}:{pw.pw_shell}")
    assert lookup(table, pw.pw_name.upper()) == lookup(table, pw.pw_name)
    assert lookup(table, "no-such-user-postillion") is None


def test_table_list_first_hit_and_find_order() -> None:
    tables = TableList(open_tables("inline:{a=1}, inline:{ a=2, b=3 }", Path(".")))
    assert lookup(tables, "a") == "1"
    assert lookup(tables, "b") == "3"
    assert asyncio.run(tables.find(["x", "b", "a"])) == "3"
    assert tables.spec == "inline:{a=1}, inline:{ a=2, b=3 }"


def test_table_list_stops_at_error() -> None:
    tables = TableList(open_tables("fail:x inline:{a=1}", Path(".")))
    with pytest.raises(TableLookupError):
        lookup(tables, "a")
