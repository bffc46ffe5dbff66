"""``regexp:/path`` and ``pcre:/path``: ordered pattern tables, matched with Python ``re``.

Owns: the regexp_table(5) / pcre_table(5) source syntax (``/pattern/flags result``,
``!/pattern/``, nested ``if`` ... ``endif``, ``$1``/``${1}``/``$(1)``/``$$`` substitution,
continuation lines, comments, the ``regexp:{ {rule}, {rule} }`` inline form) and the
translation of POSIX extended/basic regular expressions and PCRE patterns into Python ``re``.
Must not import: anything above ``errors`` and ``tables._base``.
Follows: Postfix util/dict_regexp.c and util/dict_pcre.c, checked against ``postmap -q``
(tests/interop/test_regexp_postmap.py).  Matching is on bytes (UTF-8), like Postfix in the C
locale: ``i`` folds ASCII letters only.

Rules Postfix skips with a warning (bad pattern, unknown flag, ``$2`` with one group, ``$1``
after ``!/.../``, ``$name``) are skipped here too, with Postfix's warning text in
``warnings``.  PCRE features Python ``re`` cannot do (``U``, ``\\K``, recursion, ``\\p{..}``,
...) and POSIX constructs we do not translate raise ConfigError naming file:line: a table
must never silently match differently.

Known differences: POSIX leftmost-longest alternation is matched leftmost-first (only
``$n`` values can differ); ``regexp:`` negated bracket expressions exclude newline only with
the ``m`` flag (as REG_NEWLINE does).
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables._base import read_table_file, split_words, strip_braces

_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "print": r" -~",
    "graph": r"!-~", "cntrl": r"\x00-\x1f\x7f", "xdigit": "0-9A-Fa-f", "word": "a-zA-Z0-9_",
}
_CLASS_NAME = re.compile(r"\[:([a-z]+):\]")


# PCRE stops a match after match_limit steps; Python re has no such limit, so a pattern like
# /^(a+)+$/ would hold the process for hours on 40 characters.  A timer signal stands in for
# it (sre checks for signals while it matches).  Postfix's text: "match limit exceeded".
MATCH_TIME_LIMIT = 0.25  # seconds: a rule still matching at two ticks this far apart is stopped


class _MatchLimit(Exception):
    """One rule ran longer than MATCH_TIME_LIMIT against one key."""


class _Watchdog:
    """Ticks every MATCH_TIME_LIMIT while one key is matched.  ``rule`` counts the rules
    started (one increment per rule keeps the cost off each match); a tick that sees the
    same count as the tick before stops that rule."""

    def __init__(self) -> None:
        self.rule = 0
        self.seen = -1
        self.active = True

    def tick(self, signum: int, frame: object) -> None:
        if not self.active:
            return
        if self.rule == self.seen:
            raise _MatchLimit()
        self.seen = self.rule


@contextmanager
def _watchdog() -> Iterator[_Watchdog]:
    """Only in the main thread, and only when nobody else uses SIGALRM or the real-time
    timer; otherwise the watchdog never ticks (no limit)."""
    dog = _Watchdog()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None)
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield dog
        return
    signal.signal(signal.SIGALRM, dog.tick)
    try:
        signal.setitimer(signal.ITIMER_REAL, MATCH_TIME_LIMIT, MATCH_TIME_LIMIT)
        yield dog
    finally:
        dog.active = False  # a tick already pending must not raise after we return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


class _Unsupported(Exception):
    """A construct Python ``re`` cannot express: becomes a ConfigError with file:line."""


class _Skip(Exception):
    """A rule Postfix itself skips (with this warning text).

    ``before`` are warnings logged first; ``before_raw`` ones without the map/line prefix.
    """

    def __init__(self, text: str, *, before: str = "", before_raw: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.before = before
        self.before_raw = before_raw


# --- pattern translation ----------------------------------------------------------------


def _bracket(p: str, i: int, *, pcre: bool, newline_excluded: bool) -> tuple[str, int]:
    """Translate the bracket expression starting at ``p[i] == "["``; (python text, next i)."""
    out = ["["]
    i += 1
    if i < len(p) and p[i] == "^":
        out.append("^")
        if newline_excluded:
            out.append(r"\n")
        i += 1
    first = True
    while i < len(p):
        c = p[i]
        if c == "]":
            if not first:
                out.append("]")
                return "".join(out), i + 1
            # A leading "]" is literal: escaped, because after the newline that the "m"
            # flag adds behind "^" it would close the Python set.
            out.append("\\]")
            first = False
            i += 1
            continue
        first = False
        if c == "[" and p.startswith("[:", i):
            m = _CLASS_NAME.match(p, i)
            if not m or m.group(1) not in _POSIX_CLASSES:
                raise _Unsupported(f"unknown character class in {p[i:i + 12]!r}")
            out.append(_POSIX_CLASSES[m.group(1)])
            i = m.end()
            continue
        if c == "[" and p[i:i + 2] in ("[=", "[."):
            raise _Unsupported("collating elements ([= =], [. .]) are not supported")
        if c == "\\":
            if not pcre:
                out.append(r"\\")  # POSIX: a backslash in brackets is literal
                i += 1
                continue
            esc, i = _pcre_escape(p, i, in_class=True)
            out.append(esc)
            continue
        if c in "[&~|":
            out.append("\\" + c)  # Python warns about (future) set operations on these
        else:
            out.append(c)
        i += 1
    raise _Skip("brackets ([ ]) not balanced")


def _pcre_escape(p: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """Translate the PCRE escape at ``p[i] == "\\\\"``."""
    if i + 1 >= len(p):
        raise _Skip("\\ at end of pattern")
    c = p[i + 1]
    if c == "x" and p.startswith("{", i + 2):
        end = p.find("}", i + 3)
        if end < 0:
            raise _Skip("missing } after \\x{")
        try:
            value = int(p[i + 3:end], 16)
        except ValueError as exc:
            raise _Skip(f"bad \\x{{...}} escape {p[i:end + 1]!r}") from exc
        if value > 0xFF:
            raise _Unsupported(f"{p[i:end + 1]} above \\x{{ff}} needs PCRE UTF mode")
        return f"\\x{value:02x}", end + 1
    if c == "e":
        return r"\x1b", i + 2
    if c == "h":
        return (r" \t" if in_class else r"[ \t]"), i + 2
    if c == "v":
        return (r"\n\x0b\f\r" if in_class else r"[\n\x0b\f\r]"), i + 2
    if c in "HV" and not in_class:
        return (r"[^ \t]" if c == "H" else r"[^\n\x0b\f\r]"), i + 2
    if not in_class:
        if c == "z":
            return r"\Z", i + 2
        if c == "Z":
            return r"(?=\n?\Z)", i + 2
    if c in "KGRXCpPgkNoc" or (c in "HV" and in_class):
        raise _Unsupported(f"\\{c} is not supported by Python re")
    return p[i:i + 2], i + 2


def _quoted(p: str, i: int) -> tuple[str, int]:
    r"""``\Q...\E``: everything between is literal."""
    end = p.find(r"\E", i + 2)
    text = p[i + 2:] if end < 0 else p[i + 2:end]
    return re.escape(text), (len(p) if end < 0 else end + 2)


def translate_pcre(p: str, *, dollar_endonly: bool) -> str:
    """PCRE pattern -> Python pattern (raises _Unsupported for what Python cannot do)."""
    out: list[str] = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            if p.startswith(r"\Q", i):
                text, i = _quoted(p, i)
                out.append(text)
                continue
            if p.startswith(r"\E", i):
                i += 2
                continue
            esc, i = _pcre_escape(p, i, in_class=False)
            out.append(esc)
            continue
        if c == "[":
            text, i = _bracket(p, i, pcre=True, newline_excluded=False)
            out.append(text)
            continue
        if c == "(" and p.startswith("(?", i):
            rest = p[i + 2:]
            m = re.match(r"<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'", rest)
            if m:
                out.append(f"(?P<{m.group(1) or m.group(2)}>")
                i += 2 + m.end()
                continue
            if rest[:1] in ("R", "&", "|", "C", "+", "-") or rest[:1].isdigit() or rest.startswith("P>"):
                raise _Unsupported(f"(?{rest[:2]}... (recursion, branch reset, callouts) "
                                   "is not supported by Python re")
        if c == "(" and p.startswith("(*", i):
            raise _Unsupported("(*VERB) control verbs are not supported by Python re")
        if c == "$" and dollar_endonly:
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


_QUANT = re.compile(r"[*+?]|\{\d*(?:,\d*)?\}")


def translate_posix(p: str, *, extended: bool, newline: bool) -> str:
    """POSIX ERE (``extended``) or BRE pattern -> Python pattern (glibc regcomp semantics)."""
    out: list[str] = []
    i = 0
    last_quantified = False
    while i < len(p):
        c = p[i]
        quantifier = False
        if c == "\\":
            if i + 1 >= len(p):
                raise _Skip("Trailing backslash")
            n = p[i + 1]
            i += 2
            if not extended and n in "(){}|+?":
                # BRE: \( \) \{ \} are the operators (\| \+ \? are GNU extensions)
                out.append(n)
                quantifier = n in "+?}"
            elif n == "<":
                out.append(r"\b(?=\w)")
            elif n == ">":
                out.append(r"\b(?<=\w)")
            elif n == "`":
                out.append(r"\A")
            elif n == "'":
                out.append(r"\Z")
            elif n in "wWsSbB" or n.isdigit():
                out.append("\\" + n)
            else:
                out.append(re.escape(n))  # glibc: other escaped characters are literal
        elif c == "[":
            text, i = _bracket(p, i, pcre=False, newline_excluded=newline)
            out.append(text)
        elif c == "$":
            out.append("$" if newline else r"\Z")
            i += 1
        elif extended:
            if c == "(" and p.startswith("(?", i):
                raise _Skip("Invalid preceding regular expression")
            m = _QUANT.match(p, i) if c in "*+?{" else None
            if m and (c != "{" or m.group(0) != "{}"):
                if last_quantified:
                    raise _Unsupported(f"stacked repetition {p[max(0, i - 1):m.end()]!r} "
                                       "(use a group: (a+)?)")
                out.append(m.group(0))
                i = m.end()
                quantifier = True
            else:
                out.append(re.escape(c) if c in "{}" else c)
                i += 1
        else:
            if c == "*" and out and not last_quantified:
                out.append("*")
                quantifier = True
            else:
                out.append(re.escape(c) if c in "(){}|+?*" else c)
            i += 1
        last_quantified = quantifier
    return "".join(out)


# --- result substitution ------------------------------------------------------------------

_Piece = str | int  # literal text, or a group number
_BAD_SYNTAX = "bad replacement syntax: skipping this rule"


def parse_result(text: str, *, ngroups: int, negated: bool) -> list[_Piece]:
    """``"got $1 ${2}"`` -> ``["got ", 1, " ", 2]``; _Skip with Postfix's warning text."""
    pieces: list[_Piece] = []
    lit: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$":
            lit.append(c)
            i += 1
            continue
        if text.startswith("$$", i):
            lit.append("$")
            i += 2
            continue
        if i + 1 < len(text) and text[i + 1] in "{(":
            close = "}" if text[i + 1] == "{" else ")"
            end = text.find(close, i + 2)
            if end < 0:
                raise _Skip(_BAD_SYNTAX, before=f'truncated macro reference: "{text}"',
                            before_raw=True)
            name, i = text[i + 2:end], end + 1
        else:
            m = re.match(r"[A-Za-z0-9_]+", text[i + 1:])
            if not m:
                raise _Skip(_BAD_SYNTAX, before=f'empty macro name: "{text}"', before_raw=True)
            name, i = m.group(0), i + 1 + m.end()
        if not name.isdigit():
            raise _Skip(_BAD_SYNTAX, before=f'non-numeric replacement index "{name}"')
        index = int(name)
        if index == 0:
            raise _Skip(_BAD_SYNTAX, before=f'out-of-range replacement index "{name}"')
        if negated:
            raise _Skip("$number found in negative match replacement text: skipping this rule")
        if index > ngroups:
            raise _Skip(f'out of range replacement index "{name}": skipping this rule')
        if lit:
            pieces.append("".join(lit))
            lit = []
        pieces.append(index)
    if lit:
        pieces.append("".join(lit))
    return pieces


# --- the table --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str  # "match", "if", "endif"
    lineno: int
    regex: re.Pattern[bytes] | None = None
    negated: bool = False
    anchored: bool = False
    result: tuple[_Piece, ...] = ()
    skip_to: int = 0  # for "if": index of the matching endif


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """readllines(): comments and blank lines dropped, indented lines continue the previous
    one (the newline goes, the indentation stays), trailing white space removed."""
    lines: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t" and lines:
            start, prev = lines[-1]
            lines[-1] = (start, prev + raw)
        else:
            lines.append((lineno, raw))
    return [(n, line.rstrip()) for n, line in lines]


class RegexpTable:
    """``regexp:`` table: POSIX regular expressions (glibc semantics) in Python ``re``."""

    TYPE = "regexp"
    FLAGS = "imx"

    def __init__(self, name: str, config_dir: Path | None = None, *,
                 substitution: bool = True) -> None:
        self.spec = f"{self.TYPE}:{name}"
        self.warnings: list[str] = []
        # alias_maps open with Postfix's DICT_FLAG_NO_REGSUB: recipient text must never reach
        # a "|command" or "/file" result through $1.
        self.substitution = substitution
        if name.lstrip().startswith("{"):
            # Postfix 3.7 inline form: each { rule } is one line of an in-memory file
            self.path: Path | str = self.spec
            body = strip_braces(name, spec=self.spec)
            text = "\n".join(strip_braces(w, spec=self.spec, what="rule") for w in split_words(body))
        else:
            self.path, text = read_table_file(name, config_dir, spec=self.spec,
                                              fix="create the file or fix the path")
        self._rules = self._parse(text)

    # -- parsing
    def _warn(self, lineno: int, text: str) -> None:
        self.warnings.append(f"{self.TYPE} map {self.path}, line {lineno}: {text}")

    def _parse(self, text: str) -> list[_Rule]:
        rules: list[_Rule] = []
        open_ifs: list[int] = []
        for lineno, line in _logical_lines(text):
            word = re.match(r"[A-Za-z0-9]+", line)
            if word:
                keyword = word.group(0).lower()
                if keyword == "if":
                    rule = self._pattern_rule(lineno, line[2:].lstrip(), kind="if")
                    if rule is not None:
                        open_ifs.append(len(rules))
                        rules.append(rule)
                elif keyword == "endif":
                    if not open_ifs:
                        self._warn(lineno, "ignoring ENDIF without matching IF")
                        continue
                    start = open_ifs.pop()
                    rules[start] = _replace_skip(rules[start], len(rules))
                    rules.append(_Rule("endif", lineno))
                else:
                    self._warn(lineno, "ignoring unrecognized request")
                continue
            rule = self._pattern_rule(lineno, line, kind="match")
            if rule is not None:
                rules.append(rule)
        for start in reversed(open_ifs):
            self._warn(rules[start].lineno, "IF has no matching ENDIF")
            rules[start] = _replace_skip(rules[start], len(rules))
        return rules

    def _pattern_rule(self, lineno: int, text: str, *, kind: str) -> _Rule | None:
        try:
            return self._compile_rule(lineno, text, kind=kind)
        except _Skip as skip:
            if skip.before_raw:
                self.warnings.append(skip.before)
            elif skip.before:
                self._warn(lineno, skip.before)
            self._warn(lineno, skip.text)
            return None
        except _Unsupported as exc:
            raise ConfigError(f"{self.TYPE}: {exc}", path=self.path, lineno=lineno, name=self.spec,
                              fix="rewrite the pattern with constructs Python re supports") from None

    def _compile_rule(self, lineno: int, text: str, *, kind: str) -> _Rule:
        negated = text.startswith("!")
        if negated:
            text = text[1:].lstrip()
        if not text or text[0].isalnum() or text[0].isspace():
            raise _Skip("ignoring unrecognized request")
        delim = text[0]
        i = 1
        while i < len(text) and text[i] != delim:
            i += 2 if text[i] == "\\" and i + 1 < len(text) else 1
        if i >= len(text):
            raise _Skip(f'no closing regexp delimiter "{delim}": skipping this rule')
        pattern = text[1:i]
        m = re.match(r"\S*", text[i + 1:])
        flags_text = m.group(0) if m else ""
        rest = text[i + 1 + len(flags_text):].strip()
        regex, anchored = self._compile(pattern, flags_text)
        if kind == "if":
            if rest:
                self._warn(lineno, f"ignoring extra text after IF condition: \"{rest}\"")
            return _Rule("if", lineno, regex, negated)
        if not rest:
            self._warn(lineno, "no replacement text: using empty string")
        result = parse_result(rest, ngroups=regex.groups, negated=negated)
        if not self.substitution and any(isinstance(p, int) for p in result):
            raise _Skip("regular expression substitution is not allowed: skipping this rule")
        return _Rule("match", lineno, regex, negated, anchored, tuple(result))

    def _flags(self, flags_text: str, defaults: dict[str, bool]) -> dict[str, bool]:
        on = dict(defaults)
        for f in flags_text:
            if f not in on:
                raise _Skip(f'unknown regexp option "{f}": skipping this rule')
            on[f] = not on[f]
        return on

    def _compile(self, pattern: str, flags_text: str) -> tuple[re.Pattern[bytes], bool]:
        on = self._flags(flags_text, {"i": True, "m": False, "x": True})
        py = translate_posix(pattern, extended=on["x"], newline=on["m"])
        flags = (re.IGNORECASE if on["i"] else 0) | (re.MULTILINE if on["m"] else re.DOTALL)
        return _re_compile(py, flags, unsupported=False), False

    # -- lookups
    def match(self, key: str) -> str | None:
        """The result of the first rule that matches *key*, substituted; None if none."""
        with _watchdog() as dog:
            return self._match(key.encode("utf-8", "surrogateescape"), dog)

    def _match(self, data: bytes, dog: _Watchdog) -> str | None:
        rules = self._rules
        i = 0
        while i < len(rules):
            rule = rules[i]
            if rule.kind == "endif":
                i += 1
                continue
            assert rule.regex is not None
            dog.rule += 1
            try:
                m = rule.regex.match(data) if rule.anchored else rule.regex.search(data)
            except _MatchLimit:
                # Postfix logs this and goes on as if the pattern did not match; the text
                # is kept once per rule (the table lives as long as the process).
                text = f"{self.TYPE} map {self.path}, line {rule.lineno}: match limit exceeded"
                if text not in self.warnings:
                    self.warnings.append(text)
                m = None
            dog.rule += 1
            if rule.kind == "if":
                i = i + 1 if (m is None) == rule.negated else rule.skip_to
                continue
            if (m is None) != rule.negated:
                i += 1
                continue
            out = []
            for piece in rule.result:
                if isinstance(piece, int):
                    assert m is not None
                    out.append((m.group(piece) or b"").decode("utf-8", "surrogateescape"))
                else:
                    out.append(piece)
            value = "".join(out)
            return value or None  # Postfix's maps layer refuses an empty result
        return None

    async def lookup(self, key: str) -> str | None:
        return self.match(key)

    def __len__(self) -> int:
        return sum(1 for r in self._rules if r.kind == "match")


class PcreTable(RegexpTable):
    """``pcre:`` table: Perl-compatible patterns, translated to Python ``re`` where they differ."""

    TYPE = "pcre"
    FLAGS = "imsxAEUX"

    def _compile(self, pattern: str, flags_text: str) -> tuple[re.Pattern[bytes], bool]:
        on = self._flags(flags_text, {"i": True, "m": False, "s": True, "x": False,
                                      "A": False, "E": False, "U": False, "X": False})
        if on["U"]:
            raise _Unsupported('flag "U" (PCRE UNGREEDY) is not supported by Python re')
        if on["X"]:
            raise _Unsupported('flag "X" (PCRE EXTRA) is not supported (Postfix with PCRE2 '
                               "does not support it either)")
        py = translate_pcre(pattern, dollar_endonly=on["E"] and not on["m"])
        flags = ((re.IGNORECASE if on["i"] else 0) | (re.MULTILINE if on["m"] else 0)
                 | (re.DOTALL if on["s"] else 0) | (re.VERBOSE if on["x"] else 0))
        return _re_compile(py, flags, unsupported=True), on["A"]


def _re_compile(py: str, flags: int, *, unsupported: bool) -> re.Pattern[bytes]:
    try:
        return re.compile(py.encode("utf-8", "surrogateescape"), flags)
    except re.error as exc:
        if unsupported:
            # PCRE accepts more than Python: we cannot tell a PCRE syntax error from a
            # construct Python lacks, so refuse the table rather than skip the rule.
            raise _Unsupported(f"pattern not supported by Python re: {exc.msg}") from None
        raise _Skip(f"Invalid regular expression ({exc.msg})") from None


def _replace_skip(rule: _Rule, skip_to: int) -> _Rule:
    return _Rule(rule.kind, rule.lineno, rule.regex, rule.negated, rule.anchored, rule.result,
                 skip_to)
