"""``texthash:/path``: a plain ``key value`` file read once when the table is opened.

Owns: the Postfix lookup-table source-file syntax (the input of postmap(1)).
Must not import: anything above ``errors`` and ``tables._base``.
Follows: postmap(1) "INPUT FILE FORMAT" and DATABASE_README "texthash":
lines whose first non-blank character is ``#`` and blank lines are ignored; a line that
starts with whitespace continues the previous logical line; a logical line is a key, then
whitespace, then the value (leading and trailing whitespace removed).  Keys are folded to
lower case.  Relative paths are relative to the configuration directory.
"""

from __future__ import annotations

from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables._base import fold, read_table_file


def parse_source(text: str, *, path: Path | str) -> tuple[dict[str, str], list[str]]:
    """Parse postmap source text into ``{key: value}`` and a list of warnings.

    A line without a value is a ConfigError naming ``path:line``.  Duplicate keys keep the
    first value, like ``postmap`` (which warns).
    """
    data: dict[str, str] = {}
    warnings: list[str] = []
    logical: list[tuple[int, str]] = []  # (line number where it starts, text)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not logical:
                raise ConfigError("continuation line without a preceding entry",
                                  path=path, lineno=lineno,
                                  fix="start each entry at the beginning of a line")
            start, prev = logical[-1]
            logical[-1] = (start, f"{prev} {stripped}")
        else:
            logical.append((lineno, line))
    for lineno, line in logical:
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ConfigError(f"expected format: key whitespace value, got {line!r}",
                              path=path, lineno=lineno, fix="add a value after the key")
        key, value = fold(parts[0]), parts[1].strip()
        if key in data:
            warnings.append(f"{path}, line {lineno}: duplicate entry: \"{key}\"")
            continue
        data[key] = value
    return data, warnings


class TextHashTable:
    """The file is read at open time; a later edit needs a reload, as with Postfix."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"texthash:{name}"
        self.path, text = read_table_file(name, config_dir, spec=self.spec,
                                          fix="create the file or fix the path")
        self._data, self.warnings = parse_source(text, path=self.path)

    async def lookup(self, key: str) -> str | None:
        return self._data.get(fold(key))

    def __len__(self) -> int:
        return len(self._data)
