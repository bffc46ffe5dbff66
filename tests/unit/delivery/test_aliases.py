"""Alias expansion: aliases(5) files, local(8) expansion trees, virtual_alias_maps rewriting."""

from __future__ import annotations

import dataclasses
import asyncio
import os
from pathlib import Path

import pytest

from postillion.delivery.aliases import (
    Leaf,
    LocalNaming,
    Token,
    VirtualAliasError,
    expand_local,
    expand_virtual_aliases,
    parse_alias_value,
)
from postillion.errors import ConfigError
from postillion.tables import TableList, open_table
from postillion.tables.aliases import (
    AliasFileTable,
    AliasMaps,
    Refresh,
    open_alias_maps,
    parse_aliases,
)


def run(coro):
    return asyncio.run(coro)


def inline(pairs: dict[str, str]) -> TableList:
    body = ", ".join(f"{{ {k} = {v} }}" for k, v in pairs.items())
    return TableList([open_table(f"inline:{{ {body} }}", ".")])


async def _is_local(domain: str) -> bool:
    return domain.lower() in {"mx.test", "localhost"}


NAMING = LocalNaming(is_local_domain=_is_local, myorigin="mx.test", recipient_delimiter="+")


# --- aliases(5) files


def rewrite(path: Path, text: str, mtime: int) -> None:
    """Write and set an mtime of its own, so the change never hides in one clock tick."""
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_alias_maps_reopen_when_a_file_changes(tmp_path: Path) -> None:
    aliases, rules = tmp_path / "aliases", tmp_path / "aliases.regexp"
    rewrite(aliases, "team: alice\n", 1_000_000)
    rewrite(rules, "/^list-(.*)$/ carol\n", 1_000_000)
    maps = AliasMaps("hash:aliases, regexp:aliases.regexp, inline:{x=y}", tmp_path)
    first = maps.tables
    assert maps.refresh() == Refresh()
    assert maps.tables is first
    rewrite(aliases, "team: bob\n", 1_000_001)
    assert maps.refresh() == Refresh(changed=("hash:aliases",))
    assert run(maps.tables.lookup("team")) == "bob"
    assert run(first.lookup("team")) == "alice"  # an expansion in progress keeps its tables
    assert maps.refresh() == Refresh()
    rewrite(rules, "/^list-(.*)$/ ellen\n", 1_000_000)  # same size and mtime, new text
    assert maps.refresh() == Refresh()  # what stat() cannot see, Postfix misses too
    os.utime(rules, (1_000_002, 1_000_002))
    assert maps.refresh() == Refresh(changed=("regexp:aliases.regexp",))
    assert run(maps.tables.lookup("list-x")) == "ellen"
    os.replace(tmp_path / "aliases", tmp_path / "old")  # an editor's rename: a new inode
    rewrite(tmp_path / "new", "team: eve\n", 1_000_001)  # only the inode differs
    os.replace(tmp_path / "new", aliases)
    assert maps.refresh() == Refresh(changed=("hash:aliases",))
    assert run(maps.tables.lookup("team")) == "eve"


def test_alias_maps_keep_the_old_tables_when_the_change_is_broken(tmp_path: Path) -> None:
    aliases = tmp_path / "aliases"
    rewrite(aliases, "team: alice\n", 1_000_000)
    maps = AliasMaps("texthash:aliases", tmp_path)
    rewrite(aliases, "team alice\n", 1_000_001)
    assert maps.refresh() == Refresh(
        changed=("texthash:aliases",),
        error=str(ConfigError("need name:value pair, got 'team alice'", path=aliases,
                              lineno=1, fix='write it as "name: address, address"')))
    assert run(maps.tables.lookup("team")) == "alice"
    assert maps.refresh() == Refresh()  # the same broken file is not tried again
    aliases.unlink()
    refresh = maps.refresh()
    assert refresh.changed == ("texthash:aliases",) and "open: no such file" in refresh.error
    assert run(maps.tables.lookup("team")) == "alice"
    rewrite(aliases, "team: bob\n", 1_000_002)
    assert maps.refresh() == Refresh(changed=("texthash:aliases",))
    assert run(maps.tables.lookup("team")) == "bob"


def test_aliases_file_syntax(tmp_path: Path) -> None:
    f = tmp_path / "aliases"
    f.write_text('# comment\nPostmaster: root\nroot: alice,\n  bob@example.org\n'
                 '"sales team": carol\nroot: ignored\n')
    data, warnings = parse_aliases(f.read_text(), path=f)
    assert data == {"postmaster": "root", "root": "alice, bob@example.org",
                    "sales team": "carol"}
    assert warnings == [f'{f}, line 6: duplicate entry: "root"']


def test_aliases_file_needs_colon(tmp_path: Path) -> None:
    f = tmp_path / "aliases"
    f.write_text("root alice\n")
    with pytest.raises(ConfigError) as info:
        AliasFileTable(str(f))
    assert info.value.lineno == 1
    assert "need name:value pair" in str(info.value)


def test_hash_alias_maps_read_the_source_file(tmp_path: Path) -> None:
    (tmp_path / "aliases").write_text("root: alice\n")
    tables = open_alias_maps("hash:aliases, inline:{ x=y }", tmp_path)
    assert [t.spec for t in tables] == ["hash:aliases", "inline:{ x=y }"]
    assert run(tables[0].lookup("ROOT")) == "alice"
    assert run(tables[1].lookup("x")) == "y"


# --- alias values


def test_parse_alias_value_kinds() -> None:
    assert parse_alias_value('alice, Bob <bob@example.org>, "|/usr/bin/vacation -a x", '
                             '/var/log/mail.copy, :include:/etc/list, \\carol') == [
        Token("address", "alice"), Token("address", "bob@example.org"),
        Token("command", "/usr/bin/vacation -a x"), Token("file", "/var/log/mail.copy"),
        Token("include", "/etc/list"), Token("address", "\\carol")]


# --- local(8) expansion


def test_unaliased_user_is_a_mailbox() -> None:
    assert run(expand_local("alice+news@mx.test", inline({}), NAMING)) == [
        Leaf("mailbox", "alice+news@mx.test", user="alice", extension="+news")]


def test_alias_to_several_recipients() -> None:
    aliases = inline({"team": "alice, bob@mx.test, carol@remote.example"})
    leaves = run(expand_local("team@mx.test", aliases, NAMING))
    assert leaves == [
        Leaf("mailbox", "alice@mx.test", user="alice", via=("team",)),
        Leaf("mailbox", "bob@mx.test", user="bob", via=("team",)),
        Leaf("forward", "carol@remote.example", via=("team",)),
    ]


def test_alias_lookup_with_then_without_extension() -> None:
    aliases = inline({"info": "alice", "info+sales": "bob"})
    assert [l.user for l in run(expand_local("info+sales@mx.test", aliases, NAMING))] == ["bob"]
    assert [l.user for l in run(expand_local("info+misc@mx.test", aliases, NAMING))] == ["alice"]


def test_unmatched_extension_reaches_members_only_when_alias_is_propagated() -> None:
    """propagate_unmatched_extensions (default "canonical, virtual") without and with "alias":
    local/resolve.c puts the extension onto each member address that has none."""
    aliases = inline({"info": "alice, bob+own@mx.test, carol@remote.example, |/bin/true"})
    plain = run(expand_local("info+sales@mx.test", aliases, NAMING))
    assert [l.address for l in plain] == ["alice@mx.test", "bob+own@mx.test",
                                          "carol@remote.example", "info+sales@mx.test"]
    naming = dataclasses.replace(NAMING, propagate_extension=True)
    leaves = run(expand_local("info+sales@mx.test", aliases, naming))
    assert [(l.kind, l.address, l.extension) for l in leaves] == [
        ("mailbox", "alice+sales@mx.test", "+sales"),
        ("mailbox", "bob+own@mx.test", "+own"),
        ("forward", "carol+sales@remote.example", None),
        ("command", "info+sales@mx.test", None),
    ]
    # an alias matched with its extension has nothing unmatched to pass on
    exact = inline({"info+sales": "alice"})
    assert [l.address for l in run(expand_local("info+sales@mx.test", exact, naming))] == [
        "alice@mx.test"]


def test_alias_that_names_itself_delivers_to_the_user() -> None:
    aliases = inline({"alice": "alice, bob"})
    leaves = run(expand_local("alice@mx.test", aliases, NAMING))
    assert [(l.kind, l.user) for l in leaves] == [("mailbox", "alice"), ("mailbox", "bob")]


def test_nested_aliases_and_duplicates() -> None:
    aliases = inline({"all": "staff, alice", "staff": "alice, bob"})
    leaves = run(expand_local("all@mx.test", aliases, NAMING))
    assert [(l.user, l.via) for l in leaves] == [("alice", ("all", "staff")),
                                                   ("bob", ("all", "staff"))]


def test_alias_loop_bounces() -> None:
    aliases = inline({"a": "b", "b": "a"})
    leaves = run(expand_local("a@mx.test", aliases, NAMING))
    assert leaves == [Leaf("failed", "a@mx.test", dsn="5.4.6",
                           text="alias database loop for a", via=("a", "b"))]


def test_commands_and_files_are_leaves_and_include_is_refused() -> None:
    aliases = inline({"list": '"|/usr/bin/procmail -a x", /tmp/x, :include:/etc/l, alice'})
    leaves = run(expand_local("list@mx.test", aliases, NAMING))
    assert [(l.kind, l.address, l.target, l.dsn, l.text) for l in leaves] == [
        ("command", "list@mx.test", "/usr/bin/procmail -a x", "", ""),
        ("file", "list@mx.test", "/tmp/x", "", ""),
        ("failed", "/etc/l", "", "5.7.1", "mail to file is restricted"),
        ("mailbox", "alice@mx.test", "", "", "")]


def test_backslash_is_not_expanded_again() -> None:
    aliases = inline({"alice": "\\alice, bob"})
    leaves = run(expand_local("alice@mx.test", aliases, NAMING))
    assert [l.user for l in leaves] == ["alice", "bob"]


# --- virtual_alias_maps


def virtual(address: str, pairs: dict[str, str], **kw) -> list[str] | None:
    return run(expand_virtual_aliases(address, inline(pairs), recipient_delimiter="+",
                                      myorigin="mx.test", **kw))


def test_virtual_alias_no_match() -> None:
    assert virtual("x@example.com", {"y@example.com": "z@example.net"}) is None


def test_virtual_alias_multiple_and_recursive() -> None:
    pairs = {"sales@example.com": "alice@example.net, team@example.com",
             "team@example.com": "bob@example.org, carol"}
    assert virtual("sales@example.com", pairs) == [
        "alice@example.net", "bob@example.org", "carol@mx.test"]


def test_virtual_alias_into_itself() -> None:
    pairs = {"alice@example.com": "alice@example.com, archive@example.net"}
    assert virtual("alice@example.com", pairs) == ["alice@example.com", "archive@example.net"]


def test_virtual_alias_extension_and_catchall() -> None:
    pairs = {"alice@example.com": "al@example.net", "@example.org": "@example.net"}
    assert virtual("alice+tag@example.com", pairs) == ["al+tag@example.net"]
    assert virtual("bob@example.org", pairs) == ["bob@example.net"]
    assert virtual("alice+tag@example.com", pairs, propagate_extension=False) == [
        "al@example.net"]


def test_virtual_alias_loop_is_refused() -> None:
    pairs = {"a@example.com": "b@example.com", "b@example.com": "a@example.com"}
    with pytest.raises(VirtualAliasError) as info:
        virtual("a@example.com", pairs, recursion_limit=20)
    assert info.value.text == "unreasonable virtual_alias_maps map nesting for a@example.com"


def test_virtual_alias_expansion_limit() -> None:
    pairs = {"list@example.com": ", ".join(f"u{i}@example.net" for i in range(5))}
    with pytest.raises(VirtualAliasError) as info:
        virtual("list@example.com", pairs, expansion_limit=3)
    assert info.value.text == ("unreasonable virtual_alias_maps map expansion size for "
                               "list@example.com")
