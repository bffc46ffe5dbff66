"""regexp: and pcre: tables: syntax, flags, substitution, if/endif, and what is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postillion.errors import ConfigError
from postillion.tables import open_table

RULES = """\
# comment
/^Subject: (.*) spam/  REJECT got $1 ${1} $(1) $$ end
!/foo/ DUNNO $1
/a(b)?c/  X=$1=
/q/ R $2
if /^if/
/^ifx/ IN-IF
endif
endif
/^cont/ first
  second
/[[:digit:]]+x/ DIG
/x$/ DOLLAR
/^y.z$/ DOT
/^case/ CI
/^Sens/i SENS
/ab c/x BASIC
"""


def table(tmp_path: Path, kind: str, text: str):
    (tmp_path / "t").write_text(text)
    return open_table(f"{kind}:t", tmp_path)


@pytest.mark.parametrize(("key", "value"), [
    ("Subject: buy spam", "REJECT got buy buy buy $ end"),
    ("abc", "X=b="),
    ("ac", "X=="),
    ("q", None),
    ("ifx", "IN-IF"),
    ("cont", "first  second"),
    ("12x", "DIG"),
    ("ax\n", None),          # POSIX $: end of string only
    ("y\nz", "DOT"),         # . matches a newline
    ("CASE", "CI"),
    ("sens", None),
    ("Sens", "SENS"),
    ("ab c", "BASIC"),       # x off: basic RE, the space is literal
])
def test_regexp_lookups(tmp_path: Path, key: str, value: str | None) -> None:
    t = table(tmp_path, "regexp", RULES)
    assert t.match(key) == value
    assert asyncio.run(t.lookup(key)) == value


def test_regexp_warnings_like_postmap(tmp_path: Path) -> None:
    t = table(tmp_path, "regexp", RULES)
    path = tmp_path / "t"
    assert t.warnings == [
        f"regexp map {path}, line 3: $number found in negative match replacement text: skipping this rule",
        f'regexp map {path}, line 5: out of range replacement index "2": skipping this rule',
        f"regexp map {path}, line 9: ignoring ENDIF without matching IF",
    ]


@pytest.mark.parametrize(("rule", "warning"), [
    ("/(a)/ v=$1x", 'non-numeric replacement index "1x"'),
    ("/(a)/ v=$0", 'out-of-range replacement index "0"'),
    ("/a/Q v", 'unknown regexp option "Q": skipping this rule'),
    ("/a v", 'no closing regexp delimiter "/": skipping this rule'),
    ("foo bar", "ignoring unrecognized request"),
])
def test_skipped_rules(tmp_path: Path, rule: str, warning: str) -> None:
    t = table(tmp_path, "regexp", rule + "\n/a/ LAST\n")
    assert warning in t.warnings[0]
    assert t.match("a") == "LAST"


@pytest.mark.parametrize(("key", "value"), [
    ("ax\n", "DOLLAR"),       # PCRE $: also before a final newline
    ("end\n", None),          # \z: the very end
    ("end", "ENDZ"),
    ("a word here", "WORD"),
    ("abcdef", "NAMED abc"),
    ("ta.b", "QUOTE"),
    ("taxb", None),
    ("hA", "HEX"),
    ("m1\nz", None),          # s toggled off: . does not match newline
    ("12d", "DIG"),
])
def test_pcre_lookups(tmp_path: Path, key: str, value: str | None) -> None:
    t = table(tmp_path, "pcre", "/x$/ DOLLAR\n/^m1.z$/s M1\n/[[:digit:]]+d/ DIG\n"
              "/\\bword\\b/ WORD\n/^(?<n>abc)/ NAMED $1\n/^t\\Qa.b\\E/ QUOTE\n"
              "/^h\\x{41}/ HEX\n/end\\z/ ENDZ\n")
    assert t.match(key) == value


def test_pcre_anchored_flag(tmp_path: Path) -> None:
    t = table(tmp_path, "pcre", "/b/A ANCHORED\n")
    assert t.match("b") == "ANCHORED"
    assert t.match("ab") is None


@pytest.mark.parametrize("rule", ["/a/U x", "/a\\Kb/ x", "/(?R)/ x", "/\\p{L}/ x", "/(*UTF)a/ x"])
def test_pcre_python_cannot_refused_with_line(tmp_path: Path, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        table(tmp_path, "pcre", "/ok/ fine\n" + rule + "\n")
    assert info.value.lineno == 2
    assert info.value.path == tmp_path / "t"


def test_inline_form() -> None:
    t = open_table("pcre:{ {/^Subject:.*free/ REJECT no}, {/x/ X} }", Path("."))
    assert t.match("Subject: free money") == "REJECT no"
    assert t.match("x") == "X"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="open: no such file"):
        open_table("regexp:nothere", tmp_path)


def test_leading_bracket_in_negated_set_with_m_flag(tmp_path: Path) -> None:
    # postmap -q: "bx" -> BRK, "]x" and "ax" -> not found (the first "]" is literal).
    t = table(tmp_path, "regexp", "/[^]a]x/m BRK\n")
    assert [t.match(k) for k in ("bx", "]x", "ax")] == ["BRK", None, None]


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
@pytest.mark.timeout(60, method="thread")  # the signal method would take SIGALRM, which the limit needs
def test_runaway_match_is_stopped_like_pcre_match_limit(tmp_path: Path, kind: str) -> None:
    import time

    t = table(tmp_path, kind, "/^(a+)+$/ EXP\n/b$/ LATER\n")
    start = time.monotonic()
    assert t.match("a" * 40 + "b") == "LATER"
    assert time.monotonic() - start < 5
    assert t.match("a" * 40 + "b") == "LATER"
    assert t.warnings == [f"{kind} map {tmp_path / 't'}, line 1: match limit exceeded"]
    assert t.match("aaa") == "EXP"


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_alias_maps_refuse_substitution(tmp_path: Path, kind: str) -> None:
    """local(8) opens alias_maps without $n substitution (DICT_FLAG_NO_REGSUB), so recipient
    text cannot reach a |command; other rules of the table still work."""
    from postillion.tables.aliases import open_alias_maps

    (tmp_path / "aliases").write_text('/^(.*)-run$/ "|/bin/echo $1"\n/^team$/ a, b\n')
    (table,) = open_alias_maps(f"{kind}:aliases", tmp_path)
    assert table.warnings == [f"{kind} map {tmp_path / 'aliases'}, line 1: regular expression "
                              "substitution is not allowed: skipping this rule"]
    assert asyncio.run(table.lookup("x;rm -rf /-run")) is None
    assert asyncio.run(table.lookup("team")) == "a, b"
