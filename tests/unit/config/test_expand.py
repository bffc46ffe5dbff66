"""$name expansion: every form, checked against Postfix 3.7 `postconf -x` results."""

from __future__ import annotations

import pytest

from postillion.config.expand import expand
from postillion.errors import ConfigError

VALUES = {"a": "one", "e": "", "lvl": "3.6", "ref": "$a!", "c1": "$c2", "c2": "x $c1",
          "self": "$self"}


def lookup(name: str) -> str | None:
    return VALUES.get(name)


@pytest.mark.parametrize(("text", "expected"), [
    # Expected values are what `postconf -x` printed for the same main.cf lines.
    ("${a?yes}|${e?yes}|${zz?yes}|${a:no}|${e:no}|${zz:no}", "yes||||no|no"),
    ("${a?{has:colon}}|${e?{y}:{n}}|${a?{y}:{n}}", "has:colon|n|y"),
    ("$(a) ${a} $$a $a.b $a-c", "one one $a one.b one-c"),
    ("${{$a} == {one} ? {eq} : {ne}}", "eq"),
    ("${{$a} != {one} ? {eq} : {ne}}", "ne"),
    ("${a?{x}} ${a?x:y}", "x x:y"),
    ("${a?$a $a}", "one one"),
    ("${e:{$a}}", "one"),
    ("${a?{ spaced }}", "spaced"),
    ("$ref$ref", "one!one!"),
    ("$undefined|", "|"),
    ("${{$lvl} <level {2} ? {subnet} : {host}}", "host"),
    ("${{$lvl} <level {3.10} ? {old} : {new}}", "old"),
    ("${{$lvl} >=level {3.6} ? {new}}", "new"),
    ("no dollars", "no dollars"),
])
def test_expansion_forms(text: str, expected: str) -> None:
    assert expand(text, lookup) == expected


def test_cycle_names_the_loop() -> None:
    with pytest.raises(ConfigError) as info:
        expand("$c1", lookup, name="start")
    assert info.value.message == "parameter expansion loop: c1 -> c2 -> c1"


def test_self_reference_is_a_loop() -> None:
    with pytest.raises(ConfigError) as info:
        expand(VALUES["self"], lookup, name="self")
    assert info.value.message == "parameter expansion loop: self -> self"


@pytest.mark.parametrize(("text", "message"), [
    ("x$ y", 'empty macro name: "x$ y"'),
    ("$", 'empty macro name: "$"'),
    ("${a", 'truncated macro reference: "${a"'),
])
def test_postfix_fatal_macro_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand(text, lookup)
    assert info.value.message == message
