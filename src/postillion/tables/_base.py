"""The lookup-table protocol and the small parsing helpers every table type shares.

Owns: ``Table`` (async ``lookup(key) -> str | None``), brace handling for ``{ ... }`` values,
and the case folding rule.
Must not import: anything above ``errors`` and ``tokens`` (no config, policy or server).
Follows: Postfix DATABASE_README and postconf(5) "type:name" tables; keys are folded to
lower case like Postfix's DICT_FLAG_FOLD_FIX, values are returned as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from postillion.errors import ConfigError
from postillion.tokens import split_words as split_words  # re-exported for the table types


@runtime_checkable
class Table(Protocol):
    """One opened lookup table.

    ``lookup`` returns the value for ``key`` or None when the key is not in the table.
    It raises ``TableLookupError`` when the table cannot be asked (Postfix's
    DICT_ERR_RETRY), which callers turn into ``451 4.3.0 ... Temporary lookup failure``.
    ``spec`` is the ``type:name`` the table was opened from, for log messages.
    """

    spec: str

    async def lookup(self, key: str) -> str | None: ...


def fold(key: str) -> str:
    """Case folding for lookup keys (Postfix folds fixed-string keys to lower case)."""
    return key.lower()


def strip_braces(text: str, *, spec: str, what: str = "value") -> str:
    """``{ text }`` -> ``text``; plain text is returned stripped.

    An opening brace without its closing brace is a configuration error, as in Postfix's
    extpar() ("missing '}'").
    """
    t = text.strip()
    if not t.startswith("{"):
        return t
    if not t.endswith("}"):
        raise ConfigError(f"missing '}}' in {what}: {text!r}", name=spec,
                          fix="close the { ... } group")
    return t[1:-1].strip()


def read_table_file(name: str, config_dir: Path | None, *, spec: str, fix: str) -> tuple[Path, str]:
    """The path (relative names are relative to the config directory) and text of a table
    source file, read once at open time; a later edit needs a reload, as with Postfix."""
    path = Path(name)
    if not path.is_absolute() and config_dir is not None:
        path = Path(config_dir) / path
    try:
        return path, path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise ConfigError("open: no such file", path=path, name=spec, fix=fix) from None
    except OSError as exc:
        raise ConfigError(f"open: {exc.strerror or exc}", path=path, name=spec) from exc
