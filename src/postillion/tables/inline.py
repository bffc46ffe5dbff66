"""In-line tables: ``inline:{ key=value, { key = value with spaces } }`` and ``static:value``.

Owns: parsing and lookups for the two table types whose content is the table name itself.
Must not import: anything above ``errors`` and ``tables._base``.
Follows: postconf(5) / DATABASE_README "inline" (Postfix 3.0+) and "static" tables.
"""

from __future__ import annotations

from pathlib import Path

from postillion.errors import ConfigError
from postillion.tables._base import fold, split_words, strip_braces


class InlineTable:
    """``inline:{ key=value, ... }``: a fixed table written in main.cf or master.cf."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"inline:{name}"
        body = name.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise ConfigError(f"bad syntax: {self.spec!r}", name=self.spec,
                              fix='write it as "inline:{ key=value, key2=value2 }"')
        self._data: dict[str, str] = {}
        for word in split_words(body[1:-1]):
            item = strip_braces(word, spec=self.spec, what="entry")
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise ConfigError(f"bad entry {word!r}: need key=value", name=self.spec,
                                  fix='use "{ key = value with spaces }" for values with spaces')
            # Postfix keeps the first definition and warns about later ones.
            self._data.setdefault(fold(key), value)

    async def lookup(self, key: str) -> str | None:
        return self._data.get(fold(key))

    def __len__(self) -> int:
        return len(self._data)


class StaticTable:
    """``static:value`` / ``static:{value with spaces}``: every key maps to the same value."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"static:{name}"
        self._value = strip_braces(name, spec=self.spec)

    async def lookup(self, key: str) -> str | None:
        return self._value


class FailTable:
    """``fail:name``: every lookup fails with a temporary error (for tests and drills)."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"fail:{name}"

    async def lookup(self, key: str) -> str | None:
        from postillion.errors import TableLookupError

        raise TableLookupError(f"{self.spec}: table lookup failed (fail: table)")
