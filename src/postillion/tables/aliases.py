"""aliases(5) files: ``name: value, value``, for ``alias_maps``.

Owns: the aliases(5) source syntax (what postalias(1) and newaliases read),
``open_alias_maps``, which reads the source file of an indexed table named in ``alias_maps``
(``hash:/etc/aliases`` -> ``/etc/aliases``) so an existing Postfix setting works without
postalias (other table types go through the normal registry), and ``AliasMaps``, which
re-opens the tables when a file behind them changed (Postfix's local(8) checks
dict_changed_name() before each request and restarts; we re-open in place instead).
Must not import: anything above ``errors`` and ``tables``.
Follows: aliases(5) and postalias(1): ``#`` comment lines and blank lines are ignored; a line
that starts with whitespace continues the previous one; an entry is ``name: value``, the
name may be in double quotes; names are folded to lower case; on a duplicate name the first
entry wins (postalias warns).  Relative paths are relative to the configuration directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables._base import Table, fold, read_table_file, split_words
from postillion.tables._registry import TableList, open_table, split_spec
from postillion.tables.regexp import PcreTable, RegexpTable

# Indexed types whose source file is an aliases(5) file when named in alias_maps.
INDEXED_TYPES = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash"})


def parse_aliases(text: str, *, path: Path | str) -> tuple[dict[str, str], list[str]]:
    """aliases(5) text -> ``{name: value}`` and warnings; a line without ``:`` is a
    ConfigError naming the file and line (postalias: "need name:value pair")."""
    data: dict[str, str] = {}
    warnings: list[str] = []
    logical: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not logical:
                raise ConfigError("continuation line without a preceding entry", path=path,
                                  lineno=lineno, fix="start each alias at the beginning of a line")
            start, prev = logical[-1]
            logical[-1] = (start, f"{prev} {stripped}")
        else:
            logical.append((lineno, line))
    for lineno, line in logical:
        name, value = _split_entry(line)
        if name is None:
            raise ConfigError(f"need name:value pair, got {line!r}", path=path, lineno=lineno,
                              fix='write it as "name: address, address"')
        key = fold(name)
        if key in data:
            warnings.append(f'{path}, line {lineno}: duplicate entry: "{key}"')
            continue
        data[key] = value
    return data, warnings


def _split_entry(line: str) -> tuple[str | None, str]:
    if line.startswith('"'):
        end = line.find('"', 1)
        if end < 0:
            return None, ""
        name, rest = line[1:end], line[end + 1:].lstrip()
        if not rest.startswith(":"):
            return None, ""
        return name, rest[1:].strip()
    name, colon, value = line.partition(":")
    if not colon or not name.strip() or any(c in name for c in " \t"):
        return None, ""
    return name.strip(), value.strip()


class AliasFileTable:
    """An aliases(5) file, read at open time (``AliasMaps`` notices a later edit)."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"aliases:{name}"
        self.path, text = read_table_file(name, config_dir, spec=self.spec,
                                          fix="create the aliases file or fix alias_maps")
        self._data, self.warnings = parse_aliases(text, path=self.path)

    async def lookup(self, key: str) -> str | None:
        return self._data.get(fold(key))

    def __len__(self) -> int:
        return len(self._data)


def open_alias_maps(value: str, config_dir: Path | str) -> list[Table]:
    """The tables of an ``alias_maps`` value: ``hash:/etc/aliases`` (and the other indexed
    types) read ``/etc/aliases`` as an aliases(5) file; ``inline:``, ``static:`` and the rest
    open as usual.  ``spec`` keeps the name written in main.cf, for log messages."""
    tables: list[Table] = []
    for word in split_words(value):
        type_name, name = split_spec(word)
        if type_name == "proxy":
            type_name, name = split_spec(name)
        if type_name in INDEXED_TYPES:
            table = AliasFileTable(name, Path(config_dir))
            table.spec = f"{type_name}:{name}"
            tables.append(table)
        elif type_name in ("regexp", "pcre"):
            # local(8) opens alias_maps with DICT_FLAG_NO_REGSUB: no $1 in results
            cls = PcreTable if type_name == "pcre" else RegexpTable
            tables.append(cls(name, Path(config_dir), substitution=False))
        else:
            tables.append(open_table(word, config_dir))
    return tables


# A file's identity and contents as far as stat() tells: (device, inode, size, mtime in ns);
# None when the file cannot be stat()ed (removed, or renamed away during an edit).
Stamp = tuple[int, int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _files(tables: list[Table]) -> dict[str, Path]:
    """``spec`` -> file of each table read from a file (inline ``regexp:{...}`` has none)."""
    files = {}
    for table in tables:
        path = getattr(table, "path", None)
        if isinstance(path, Path):
            files[str(getattr(table, "spec", ""))] = path
    return files


@dataclass(frozen=True, slots=True)
class Refresh:
    """What ``AliasMaps.refresh`` did: ``changed`` lists the specs of the changed tables
    (empty: nothing changed), ``error`` is why the new files were not taken ("" when they
    were)."""

    changed: tuple[str, ...] = ()
    error: str = ""


class AliasMaps:
    """The tables of an ``alias_maps`` value, re-opened when one of their files changed.

    ``tables`` is replaced as a whole, so an expansion that already holds the old TableList
    finishes with it.  A change that does not open (a syntax error, a missing file) keeps
    the previous tables; the same files are not tried again until they change once more.
    """

    def __init__(self, value: str, config_dir: Path | str) -> None:
        self.value = value
        self.config_dir = Path(config_dir)
        self.tables = TableList(open_alias_maps(value, self.config_dir))
        self._stamps = self._current(self.tables)

    def _current(self, tables: TableList) -> dict[str, Stamp]:
        return {spec: _stamp(path) for spec, path in _files(tables.tables).items()}

    def refresh(self) -> Refresh:
        """stat() each file; when one changed (inode, size or mtime), re-open them all."""
        seen = self._current(self.tables)
        changed = tuple(spec for spec, stamp in seen.items() if stamp != self._stamps.get(spec))
        if not changed:
            return Refresh()
        # The stamps are taken before the files are read again: an edit that lands while
        # they are read is seen at the next refresh.  After a failure the same files are
        # not tried again (one warning per edit, not one per delivery).
        self._stamps = seen
        try:
            tables = TableList(open_alias_maps(self.value, self.config_dir))
        except (ConfigError, OSError) as exc:
            return Refresh(changed, str(exc))
        self.tables = tables
        return Refresh(changed)
