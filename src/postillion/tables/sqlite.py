"""``sqlite:/path/to/file.cf``: lookups through an SQL query against an SQLite database.

Owns: the sqlite_table(5) configuration file (``dbpath``, ``query``, ``result_format``,
``domain``, ``expansion_limit``, and the older ``table``/``select_field``/``where_field``/
``additional_conditions`` form) and the ``%`` expansions of Postfix's db_common.c.
Must not import: anything above ``errors`` and ``tables``.
Follows: Postfix sqlite_table(5), global/dict_sqlite.c and global/db_common.c:

* The lookup key is folded to lower case (the callers' DICT_FLAG_FOLD_FIX).
* Query expansions: ``%%`` a percent sign; ``%s`` the key; ``%u`` its local part (the whole
  key when it has no ``@``); ``%d`` its domain; ``%[1-9]`` the domain's labels from the
  right (``%1`` = ``com`` for ``user@mail.example.com``).  A key without a domain, with an
  empty local part (for ``%u``), or with too few labels is not queried: no result.  Upper
  case ``%S %U %D`` behave like lower case in the query.  Each inserted value is quoted with
  SQLite's ``%q`` rule (single quotes doubled).
* ``domain``: when set, only ``user@domain`` keys with a non-empty local part and a listed
  domain are queried (``!domain`` excludes; ``/file`` names a file of domains; ``type:name``
  a table whose keys are domains).
* Only the first column of each row counts.  NULL values are skipped; empty ones are skipped
  with a warning.  Each value is expanded through ``result_format`` (``%s %u %d`` of the
  value, ``%S %U %D`` of the key; a value without the domain ``%d`` needs is skipped) and
  the results are joined with commas.
* ``expansion_limit`` (0 = none): more results than that is a temporary lookup failure.

The database is opened read-only when the table is opened; a missing file is a configuration
error.  A failing query (bad SQL, locked database) is a TableLookupError: Postfix treats a
failed prepare as fatal, postillion answers 451 instead of stopping the service.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from postillion.errors import ConfigError, TableLookupError
from postillion.tables._base import fold, read_table_file, split_words

_KNOWN = frozenset({"dbpath", "query", "result_format", "domain", "expansion_limit", "table",
                    "select_field", "where_field", "additional_conditions"})
_PARAM_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_QUERY_CODES = frozenset("%sudSUD123456789")
_RESULT_CODES = frozenset("%sudSUD")


def parse_cf(text: str, *, path: Path | str) -> dict[str, str]:
    """A ``name = value`` file as cfg_parser reads it: ``#`` comments, blank lines, and lines
    that start with whitespace continuing the previous one."""
    out: dict[str, str] = {}
    last: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if last is None:
                raise ConfigError("continuation line without a preceding parameter", path=path,
                                  lineno=lineno, fix="start each parameter at the line start")
            out[last] = f"{out[last]} {stripped}".strip()
            continue
        m = _PARAM_RE.match(stripped)
        if not m:
            raise ConfigError(f"missing '=' after parameter name: {stripped!r}", path=path,
                              lineno=lineno, fix='write "name = value"')
        last = m.group(1)
        out[last] = m.group(2).strip()
    return out


@dataclass(frozen=True, slots=True)
class _Template:
    """A parsed query or result template: what its expansion needs from its input."""

    text: str
    key_user: bool = False      # %u in a query, %U anywhere
    key_domain: bool = False    # %d in a query, %D or %1-9 anywhere
    value_user: bool = False    # %u in a result template
    value_domain: bool = False  # %d in a result template
    nparts: int = 0             # highest %[1-9]

    @classmethod
    def parse(cls, text: str, *, query: bool, spec: str) -> _Template:
        flags = {"key_user": False, "key_domain": False, "value_user": False,
                 "value_domain": False}
        nparts = 0
        allowed = _QUERY_CODES if query else _RESULT_CODES | frozenset("123456789")
        i = 0
        while i < len(text):
            if text[i] == "%":
                code = text[i + 1] if i + 1 < len(text) else ""
                if code not in allowed:
                    what = "query" if query else "result_format"
                    raise ConfigError(f"invalid {what} template: {text!r}", name=spec,
                                      fix="use %%, %s, %u, %d, %S, %U, %D or %1 ... %9")
                if code == "u":
                    flags["key_user" if query else "value_user"] = True
                elif code == "d":
                    flags["key_domain" if query else "value_domain"] = True
                elif code == "U":
                    flags["key_user"] = True
                elif code == "D":
                    flags["key_domain"] = True
                elif code.isdigit():
                    flags["key_domain"] = True
                    nparts = max(nparts, int(code))
                i += 2
            else:
                i += 1
        return cls(text, nparts=nparts, **flags)


def sqlite_quote(text: str) -> str:
    """sqlite3_mprintf("%q"): single quotes doubled."""
    return text.replace("'", "''")


def _split(address: str) -> tuple[str, str | None]:
    """(local part, domain or None) split at the last ``@``, as strrchr() does."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, None)


def expand(template: _Template, value: str, key: str | None, *, quote: bool) -> str | None:
    """db_common_expand(): the expansion, or None when the input lacks a needed part.

    ``key`` is None for a query (``value`` is the lookup key) and the lookup key for a
    result (``value`` is the database value)."""
    q = sqlite_quote if quote else (lambda s: s)
    vuser, vdomain = _split(value)
    if key is not None:
        if (vdomain is None or not vdomain) and template.value_domain:
            return None
        if vdomain is not None and not vuser and template.value_user:
            return None
        kuser, kdomain = _split(key)
        if ((kdomain is None or not kdomain) and template.key_domain) or \
                (kdomain is not None and not kuser and template.key_user):
            return None
    else:
        if ((vdomain is None or not vdomain) and template.key_domain) or \
                (vdomain is not None and not vuser and template.key_user):
            return None
        kuser, kdomain = vuser, vdomain
    parts: list[str] = []
    if template.nparts:
        parts = (kdomain or "").split(".")
        if len(parts) < template.nparts or any(not p for p in parts[-template.nparts:]):
            return None
    out: list[str] = []
    text = template.text
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        code = text[i + 1]
        i += 2
        if code == "%":
            out.append("%")
        elif code == "s":
            out.append(q(value))
        elif code == "u":
            out.append(q(vuser if vdomain is not None else value))
        elif code == "d":
            out.append(q(vdomain or ""))
        elif code == "S":
            out.append(q(key if key is not None else value))
        elif code == "U":
            if key is not None:
                out.append(q(kuser if kdomain is not None else key))
            else:
                out.append(q(vuser if vdomain is not None else value))
        elif code == "D":
            out.append(q(kdomain or ""))
        else:
            out.append(q(parts[len(parts) - int(code)]))
    return "".join(out)


class _DomainList:
    """The ``domain`` parameter: names, ``!name``, ``/file`` of names, ``type:name`` tables.
    The first match decides; a ``!`` match excludes."""

    def __init__(self, value: str, config_dir: Path | None, spec: str) -> None:
        self.items: list[tuple[bool, str, object]] = []
        for word in split_words(value):
            negate = word.startswith("!")
            word = word[1:] if negate else word
            if word.startswith("/"):
                _, text = read_table_file(word, config_dir, spec=spec,
                                          fix="create the file or fix the domain path")
                for name in split_words(text):
                    if not name.startswith("#"):
                        self.items.append((negate, "name", fold(name)))
            elif ":" in word:
                from postillion.tables._registry import open_table

                self.items.append((negate, "table", open_table(word, config_dir or ".")))
            else:
                self.items.append((negate, "name", fold(word)))

    async def match(self, domain: str) -> bool:
        for negate, kind, item in self.items:
            if kind == "name":
                hit = item == domain
            else:
                hit = await item.lookup(domain) is not None  # type: ignore[attr-defined]
            if hit:
                return not negate
        return False


class SqliteTable:
    """One ``sqlite:`` table; the configuration file is read and the database opened once."""

    def __init__(self, name: str, config_dir: Path | None = None) -> None:
        self.spec = f"sqlite:{name}"
        self.warnings: list[str] = []
        path, text = read_table_file(name, config_dir, spec=self.spec,
                                     fix="create the sqlite_table(5) file or fix the path")
        cf = parse_cf(text, path=path)
        self.cf_path = path
        dbpath = cf.get("dbpath", "")
        if not dbpath:
            raise ConfigError("dbpath is not set", path=path, name=self.spec,
                              fix="add dbpath = /path/to/database.sqlite")
        if "query" in cf:
            query = cf["query"]
        else:
            missing = [n for n in ("table", "select_field", "where_field") if not cf.get(n)]
            if missing:
                raise ConfigError(f"neither query nor {', '.join(missing)} is set", path=path,
                                  name=self.spec, fix="add query = SELECT ... WHERE x='%s'")
            # db_common_sql_build_query(): the backwards-compatible form.
            query = (f"SELECT {cf['select_field']} FROM {cf['table']} "
                     f"WHERE {cf['where_field']} = '%s' {cf.get('additional_conditions', '')}")
            query = query.rstrip()
        self.query = _Template.parse(query, query=True, spec=self.spec)
        self.result_format = _Template.parse(cf.get("result_format", "%s") or "%s",
                                             query=False, spec=self.spec)
        try:
            self.expansion_limit = int(cf.get("expansion_limit", "0") or "0")
        except ValueError:
            raise ConfigError(f"bad expansion_limit {cf['expansion_limit']!r}", path=path,
                              name=self.spec, fix="use a whole number (0 = no limit)") from None
        base = Path(config_dir) if config_dir is not None else None
        self.domain = (_DomainList(cf["domain"], base, self.spec) if cf.get("domain") else None)
        db = Path(dbpath)
        if not db.is_absolute() and base is not None:
            db = base / db
        self.dbpath = db
        uri = f"file:{urllib.parse.quote(str(db.absolute()))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {db}: {exc}", path=path, name=self.spec,
                              fix="fix dbpath, or make the file readable by mail_owner") from exc

    def close(self) -> None:
        self._db.close()

    async def lookup(self, key: str) -> str | None:
        key = fold(key)
        if not key:
            self.warnings.append(f'table "{self.spec}": empty query string -- ignored')
            return None
        if self.domain is not None:
            local, domain = _split(key)
            if not domain or not local or not await self.domain.match(domain):
                return None
        sql = expand(self.query, key, None, quote=True)
        if sql is None:
            return None
        try:
            rows = self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise TableLookupError(f"{self.spec}: SQL query failed: {exc}") from exc
        except ValueError as exc:
            # A NUL or a byte that is not UTF-8 in the key: sqlite3 refuses the SQL text.
            raise TableLookupError(f"{self.spec}: SQL query failed: {exc}") from exc
        results: list[str] = []
        for row in rows:
            value = row[0] if row else None
            if value is None:
                continue
            value = str(value)
            if not value:
                self.warnings.append(f'table "{self.spec}": empty lookup result for: "{key}" '
                                     "-- ignored")
                continue
            expanded = expand(self.result_format, value, key, quote=False)
            if expanded is None:
                continue
            if self.expansion_limit and len(results) >= self.expansion_limit:
                raise TableLookupError(f"{self.spec}: Expansion limit exceeded for key: '{key}'")
            results.append(expanded)
        return ",".join(results) if results else None
