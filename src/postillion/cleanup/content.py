"""Content inspection set-up: the check tables named by main.cf, opened once per process,
and the recipients cleanup adds (always_bcc, BCC actions).

Owns: turning ``header_checks``, ``mime_header_checks``, ``nested_header_checks``,
``body_checks``, ``body_checks_size_limit`` and ``disable_mime_input_processing`` into a
``checks.ContentChecks`` (``content_checks(params)``, cached per process, so a worker opens
each table once and a reload, which starts new workers, re-reads them), and
``added_recipients`` for ``always_bcc``.
Must not import: server, queue, maillog.
Follows: postconf(5) header_checks, body_checks, always_bcc; cleanup(8) (always_bcc and
BCC recipients are added with NOTIFY=NEVER, duplicates are not added twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from postillion.cleanup.checks import ContentChecks, Lookup
from postillion.config import Params
from postillion.errors import ConfigError
from postillion.tables import open_tables

CHECK_PARAMETERS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
# Tables whose lookups never wait for I/O: content checks run synchronously, per line.
IN_MEMORY_TYPES = ("regexp", "pcre", "texthash", "inline", "static")

_cache: dict[tuple[object, ...], ContentChecks] = {}
# Every table opened for content inspection in this process, and how many of its warnings
# (rules skipped when it was read, "match limit exceeded" since) have been logged.
_tables: list[object] = []
_reported: dict[int, int] = {}


def new_table_warnings() -> list[str]:
    """Warnings the check tables gave since the last call, for cleanup's log (Postfix logs a
    skipped rule when cleanup opens the map, and a runaway pattern when it happens)."""
    out: list[str] = []
    for table in _tables:
        warnings = getattr(table, "warnings", ())
        done = _reported.get(id(table), 0)
        out += [f"warning: {w}" for w in warnings[done:]]
        _reported[id(table)] = len(warnings)
    return out


def _sync_lookup(table: object) -> Callable[[str], str | None]:
    match = getattr(table, "match", None)
    if callable(match):
        return match

    def lookup(key: str) -> str | None:
        # In-memory tables answer without awaiting anything: run the coroutine to its end.
        coro = table.lookup(key)  # type: ignore[attr-defined]
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        coro.close()
        raise RuntimeError(f"{table.spec}: lookup waited for I/O")  # type: ignore[attr-defined]

    return lookup


def open_checks(name: str, value: str, config_dir: Path) -> Lookup | None:
    """One check parameter's tables as a single lookup (first table with an answer wins)."""
    if not value.strip():
        return None
    tables = open_tables(value, config_dir)
    _tables.extend(tables)
    for t in tables:
        kind = t.spec.split(":", 1)[0].lower()
        if kind not in IN_MEMORY_TYPES:
            raise ConfigError(f"{t.spec}: {kind}: tables cannot be used for content inspection",
                              name=name, fix="use " + ", ".join(f"{k}:" for k in IN_MEMORY_TYPES))
    lookups = [_sync_lookup(t) for t in tables]
    if len(lookups) == 1:
        return lookups[0]

    def first(key: str) -> str | None:
        for lookup in lookups:
            value = lookup(key)
            if value is not None:
                return value
        return None

    return first


def content_checks(params: Params) -> ContentChecks:
    """The ContentChecks for these parameters, opened on first use in this process.

    ConfigError for unreadable tables or PCRE patterns Python cannot run.
    """
    values = tuple(params.get(n) for n in CHECK_PARAMETERS)
    limit = params.get_int("body_checks_size_limit")
    no_mime = params.get_bool("disable_mime_input_processing")
    key = (str(params.config_dir), values, limit, no_mime)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    opened: dict[str, Lookup | None] = {}
    by_value: dict[str, Lookup | None] = {}
    for name, value in zip(CHECK_PARAMETERS, values):
        # mime_/nested_header_checks default to $header_checks: share the opened tables
        if value not in by_value:
            by_value[value] = open_checks(name, value, Path(params.config_dir))
        opened[name] = by_value[value]
    checks = ContentChecks(
        header_checks=opened["header_checks"],
        mime_header_checks=opened["mime_header_checks"],
        nested_header_checks=opened["nested_header_checks"],
        body_checks=opened["body_checks"],
        body_checks_size_limit=limit,
        disable_mime_input_processing=no_mime,
    )
    _cache[key] = checks
    return checks


def added_recipients(existing: Sequence[str], bcc: Sequence[str], always_bcc: str) -> list[str]:
    """Addresses to add as NOTIFY=NEVER recipients: the BCC actions' then ``always_bcc``,
    leaving out any already present (compared without case, as cleanup's duplicate filter)."""
    seen = {a.lower() for a in existing}
    out = []
    for address in (*bcc, always_bcc.strip()):
        if address and address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out
