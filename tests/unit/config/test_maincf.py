"""main.cf parsing and postconf -e/-X/-# editing (expected texts observed with Postfix 3.7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postillion.config.maincf import edit_main_cf, edit_main_cf_text, parse_main_cf
from postillion.errors import ConfigError


def test_parse_continuations_comments_and_later_wins() -> None:
    cf = parse_main_cf(
        "# c\n"
        "a = 1\n"
        "b = $a two\n"
        "  three\n"
        "# comment inside\n"
        "\tfour\n"
        "c=x # not a comment  \n"
        "a = 2\n"
    )
    assert cf.values == {"a": "2", "b": "$a two  three\tfour", "c": "x # not a comment"}
    assert cf.linenos == {"a": 8, "b": 3, "c": 7}
    assert [(e.lineno, l.lineno) for e, l in cf.duplicates()] == [(2, 8)]
    assert cf.definitions[1].end_lineno == 6


@pytest.mark.parametrize(("text", "lineno"), [("a = 1\njunk\n", 2), ("  leading = 1\n", 1)])
def test_parse_errors_name_the_line(text: str, lineno: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_main_cf(text, Path("main.cf"))
    assert info.value.lineno == lineno
    assert info.value.path == Path("main.cf")


def test_edit_replaces_all_definitions_in_place_and_appends() -> None:
    # Same input and result as `postconf -e a=9 'd = new val' ' e=  5 '` (Postfix appends the
    # new names in hash order; we keep argument order).
    before = "# top\na = 1\n  cont\nb = 2\n# mid\na = 3\n   more\nc = x\n"
    after = edit_main_cf_text(before, set_values={"a": "9", "d": "new val", "e": "5"})
    assert after == "# top\na = 9\nb = 2\n# mid\na = 9\nc = x\nd = new val\ne = 5\n"


def test_edit_remove_and_comment_out() -> None:
    assert edit_main_cf_text("# top\na = 1\n  cont\nb = 2\na = 3\n", remove=["a"]) == \
        "# top\nb = 2\n"
    assert edit_main_cf_text("a = 1\n  cont\nb = 2\n", comment_out=["a"]) == \
        "#a = 1\n#  cont\nb = 2\n"


def test_edit_empty_value_and_missing_final_newline() -> None:
    assert edit_main_cf_text("a = 1", set_values={"c": ""}) == "a = 1\nc = \n"


def test_edit_writes_atomically_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "main.cf"
    path.write_text("a = 1\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    edit_main_cf(path, set_values={"a": "2"})
    assert path.read_text() == "a = 2\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.cf"]
