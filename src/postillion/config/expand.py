"""Postfix ``$name`` parameter expansion.

Owns: ``expand(text, lookup)``: the forms of postconf(5) "parameter expansion":
``$name``, ``${name}``, ``$(name)``, ``${name?value}``, ``${name:value}``, ``${name?{value}}``,
``${name:{value}}``, ``${name?{value1}:{value2}}``, ``$$``, and the 3.0+/3.6+ expressions
``${{a} == {b} ? {x} : {y}}`` (also ``!=``, ``<level`` ``<=level`` ``>level`` ``>=level``).
Undefined parameters expand to "", as in Postfix.  A reference loop raises ConfigError naming
the loop; "empty macro name" and "truncated macro reference" raise ConfigError too (Postfix
calls them fatal).
Must not import: anything from postillion except ``postillion.errors``.
Follows: Postfix util/mac_expand.c, util/mac_parse.c; postconf(5) introduction.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postillion.errors import ConfigError

Lookup = Callable[[str], "str | None"]

_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
# Postfix gives up after this depth ("unreasonable macro call nesting").
MAX_DEPTH = 100
_CLOSE = {"{": "}", "(": ")"}


def expand(text: str, lookup: Lookup, *, name: str | None = None) -> str:
    """Expand ``text`` using ``lookup(name) -> raw value or None`` (values are expanded too).

    ``name`` is the parameter whose value ``text`` is, so that a self-reference is caught.
    """
    stack = [name] if name else []
    return _expand(text, lookup, stack)


def _loop_error(stack: list[str], name: str) -> ConfigError:
    start = stack.index(name)
    cycle = " -> ".join([*stack[start:], name])
    return ConfigError(f"parameter expansion loop: {cycle}", name=name,
                       fix="remove one of these $name references")


def _value_of(name: str, lookup: Lookup, stack: list[str]) -> str:
    if name in stack:
        raise _loop_error(stack, name)
    if len(stack) >= MAX_DEPTH:
        raise ConfigError("unreasonable macro call nesting", name=name)
    raw = lookup(name)
    if raw is None:
        return ""
    stack.append(name)
    try:
        return _expand(raw, lookup, stack)
    finally:
        stack.pop()


def _expand(text: str, lookup: Lookup, stack: list[str]) -> str:
    if "$" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        i = j + 1
        if i >= n:
            raise ConfigError(f'empty macro name: "{text}"', fix='write "$$" for a literal "$"')
        c = text[i]
        if c == "$":
            out.append("$")
            i += 1
        elif c in _CLOSE:
            end = _matching(text, i, c, _CLOSE[c])
            if end < 0:
                raise ConfigError(f'truncated macro reference: "{text}"',
                                  fix=f'add the missing "{_CLOSE[c]}"')
            out.append(_expand_ref(text[i + 1:end], text, lookup, stack))
            i = end + 1
        else:
            m = _NAME_RE.match(text, i)
            if not m:
                raise ConfigError(f'empty macro name: "{text}"', fix='write "$$" for a literal "$"')
            out.append(_value_of(m.group(), lookup, stack))
            i = m.end()
    return "".join(out)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing text[start] (same-kind nesting), or -1."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == open_:
            depth += 1
        elif text[k] == close:
            depth -= 1
            if depth == 0:
                return k
    return -1


def _braced(s: str, pos: int) -> tuple[str, int] | None:
    """Parse ``{ text }`` at s[pos:] (after optional blanks): stripped text and end index."""
    while pos < len(s) and s[pos].isspace():
        pos += 1
    if pos >= len(s) or s[pos] != "{":
        return None
    end = _matching(s, pos, "{", "}")
    if end < 0:
        return None
    return s[pos + 1:end].strip(), end + 1


def _expand_ref(body: str, whole: str, lookup: Lookup, stack: list[str]) -> str:
    if body.lstrip().startswith("{"):
        return _expand_expression(body, whole, lookup, stack)
    m = _NAME_RE.match(body)
    if not m:
        raise ConfigError(f'empty macro name: "{whole}"', fix="put a parameter name after the $")
    name, rest = m.group(), body[m.end():]
    if not rest:
        return _value_of(name, lookup, stack)
    op, arg = rest[0], rest[1:]
    if op not in "?:":
        raise ConfigError(f'unknown operator "{op}" in macro reference: "{whole}"',
                          fix='use "${name?value}" or "${name:value}"')
    if name in stack:
        raise _loop_error(stack, name)
    raw = lookup(name)
    defined = raw is not None and raw != ""
    first = _braced(arg, 0)
    if first is not None:
        then_text, after = first
        else_text: str | None = None
        tail = arg[after:].strip()
        if tail:
            if not tail.startswith(":") or (second := _braced(tail, 1)) is None \
                    or tail[second[1]:].strip():
                raise ConfigError(f'bad conditional macro reference: "{whole}"',
                                  fix='use "${name?{value1}:{value2}}"')
            else_text = second[0]
            if op == ":":
                raise ConfigError(f'bad conditional macro reference: "{whole}"',
                                  fix='only "${name?{value1}:{value2}}" has an else part')
        if op == "?":
            chosen = then_text if defined else (else_text or "")
        else:
            chosen = then_text if not defined else ""
    else:
        chosen = arg if (defined if op == "?" else not defined) else ""
    return _expand(chosen, lookup, stack)


_OPS = ("==", "!=", "<=level", ">=level", "<level", ">level")


def _level(value: str) -> tuple[int, ...]:
    parts = value.strip().split(".") if value.strip() else ["0"]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f'bad compatibility level: "{value}"',
                          fix="use a level such as 3.6") from None


def _expand_expression(body: str, whole: str, lookup: Lookup, stack: list[str]) -> str:
    def bad() -> ConfigError:
        return ConfigError(f'bad expression: "{whole}"',
                           fix='use "${{value1} == {value2} ? {true} : {false}}"')

    left = _braced(body, 0)
    if left is None:
        raise bad()
    rest = body[left[1]:].lstrip()
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise bad()
    right = _braced(rest, len(op))
    if right is None:
        raise bad()
    rest = rest[right[1]:].strip()
    if not rest.startswith("?"):
        raise bad()
    yes = _braced(rest, 1)
    if yes is None:
        raise bad()
    rest = rest[yes[1]:].strip()
    no = ""
    if rest:
        if not rest.startswith(":") or (parsed := _braced(rest, 1)) is None \
                or rest[parsed[1]:].strip():
            raise bad()
        no = parsed[0]
    a = _expand(left[0], lookup, stack)
    b = _expand(right[0], lookup, stack)
    if op == "==":
        truth = a == b
    elif op == "!=":
        truth = a != b
    else:
        la, lb = _level(a), _level(b)
        truth = {"<level": la < lb, "<=level": la <= lb,
                 ">level": la > lb, ">=level": la >= lb}[op]
    return _expand(yes[0] if truth else no, lookup, stack)
