"""main.cf reading and in-place editing (``postconf -e``, ``-X``, ``-#``).

Owns: ``parse_main_cf`` (text -> ``MainCf``: values, where each name is defined, duplicate
definitions) and ``edit_main_cf`` (replace definitions in place or append, keeping comments and
order; written atomically: temp file, fsync, rename, fsync directory).
Must not import: anything from postillion except ``postillion.errors``.
Follows: postconf(5) "main.cf syntax" and postconf(1) ``-e``/``-X``/``-#`` as Postfix 3.7 does
them: comments only where a line's first non-blank is ``#``; a line starting with whitespace
continues the previous one (its leading whitespace kept); the later definition wins.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from postillion.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Definition:
    """One ``name = value`` logical line spanning lines ``lineno``..``end_lineno``."""

    name: str
    value: str
    lineno: int
    end_lineno: int


@dataclass(slots=True)
class MainCf:
    path: Path | None
    definitions: list[Definition] = field(default_factory=list)

    @property
    def values(self) -> dict[str, str]:
        """Effective values: the last definition of each name wins."""
        return {d.name: d.value for d in self.definitions}

    @property
    def linenos(self) -> dict[str, int]:
        """Line of the effective (last) definition of each name."""
        return {d.name: d.lineno for d in self.definitions}

    def duplicates(self) -> list[tuple[Definition, Definition]]:
        """(earlier, later) pairs for names defined more than once."""
        last: dict[str, Definition] = {}
        out: list[tuple[Definition, Definition]] = []
        for d in self.definitions:
            if d.name in last:
                out.append((last[d.name], d))
            last[d.name] = d
        return out


def split_nameval(text: str) -> tuple[str, str] | None:
    """Postfix split_nameval(): ``name = value`` with blanks stripped; None when no name/``=``."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name or any(c.isspace() for c in name):
        return None
    return name, value.strip()


def _logical_lines(text: str) -> list[tuple[int, int, str]]:
    """(first line, last line, joined text) for every logical line (readlline() rules)."""
    out: list[tuple[int, int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and out:
            first, _, joined = out[-1]
            out[-1] = (first, lineno, joined + line.rstrip())
        else:
            out.append((lineno, lineno, line.rstrip()))
    return out


def parse_main_cf(text: str, path: Path | None = None) -> MainCf:
    """Parse main.cf text; ConfigError (with path and line) on a line without ``name =``."""
    cf = MainCf(path)
    for first, last, joined in _logical_lines(text):
        if joined[0].isspace():
            raise ConfigError("continuation line without a parameter before it", path=path,
                              lineno=first, fix='start the line in column 1 or remove it')
        nv = split_nameval(joined)
        if nv is None:
            raise ConfigError(f"missing '=' after parameter name: \"{joined.strip()}\"",
                              path=path, lineno=first, fix='write "name = value"')
        cf.definitions.append(Definition(nv[0], nv[1], first, last))
    return cf


def read_main_cf(path: Path) -> MainCf:
    """Read main.cf; a missing file is an empty configuration."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return MainCf(path)
    return parse_main_cf(text, path)


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same directory, fsync, rename over ``path``, fsync the directory."""
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def edit_main_cf_text(
    text: str,
    *,
    set_values: Mapping[str, str] | None = None,
    remove: Iterable[str] = (),
    comment_out: Iterable[str] = (),
) -> str:
    """Return the edited text.

    Every definition of a name in ``set_values`` is replaced in place (its continuation lines
    dropped); names never seen are appended in argument order.  Names in ``remove`` lose all
    their definitions; names in ``comment_out`` get ``#`` before each of their lines.
    """
    set_values = dict(set_values or {})
    remove_set, comment_set = set(remove), set(comment_out)
    lines = text.splitlines()
    # Map each physical line to the logical definition that owns it.
    owner: dict[int, Definition] = {}
    try:
        cf = parse_main_cf(text)
    except ConfigError:
        cf = MainCf(None, [])
        for first, last, joined in _logical_lines(text):
            nv = split_nameval(joined)
            if nv:
                cf.definitions.append(Definition(nv[0], nv[1], first, last))
    for d in cf.definitions:
        for n in range(d.lineno, d.end_lineno + 1):
            owner[n] = d
    out: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        d = owner.get(lineno)
        # Comment lines inside a continued definition belong to nobody; keep them.
        if d is None or (line.strip().startswith("#") or not line.strip()):
            out.append(line)
            continue
        if d.name in set_values:
            if lineno == d.lineno:
                out.append(f"{d.name} = {set_values[d.name]}")
                seen.add(d.name)
        elif d.name in remove_set:
            continue
        elif d.name in comment_set:
            out.append("#" + line)
        else:
            out.append(line)
    for name, value in set_values.items():
        if name not in seen:
            out.append(f"{name} = {value}")
    return "".join(line + "\n" for line in out)


def edit_main_cf(
    path: Path,
    *,
    set_values: Mapping[str, str] | None = None,
    remove: Iterable[str] = (),
    comment_out: Iterable[str] = (),
) -> None:
    """Edit main.cf in place (see ``edit_main_cf_text``), atomically."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        text = ""
    new = edit_main_cf_text(text, set_values=set_values, remove=remove, comment_out=comment_out)
    write_atomically(path, new)
