"""master.cf parsing: service entries, their ``-o`` overrides, and ``postconf -M`` formatting.

Owns: ``Service`` (one master.cf entry, columns kept as written so ``-`` stays visible),
``parse_master_cf`` (text -> ``MasterCf``), ``format_service`` (``postconf -M``/``-Mf`` lines).
Must not import: anything from postillion except ``postillion.errors``.
Follows: master(5) of Postfix 3.7 (8 columns, ``-`` = default, continuation lines start with
whitespace, ``-o name=value`` and 3.0+ ``-o { name = value }``), and postconf(1) ``-M``, ``-F``,
``-P`` output as produced by Postfix's postconf_master.c (column goals 0/11/17/25/33/41/49/57,
folding at 80 columns with a 4-space indent).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from postillion.errors import ConfigError

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
               "process_limit", "command")
# Well-known ports we must not need /etc/services for (it may be missing in containers).
WELL_KNOWN_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}

_COLUMN_GOALS = (0, 11, 17, 25, 33, 41, 49, 57)  # postconf_master.c column_goal[]
_LINE_LIMIT = 80  # PCF_LINE_LIMIT
_INDENT = "    "  # PCF_INDENT_TEXT
_OPTIONS_WITH_VALUE = "o"  # pcf_daemon_options_expecting_value


@dataclass(frozen=True, slots=True)
class Service:
    """One master.cf entry.  Columns are the text as written (``-`` means the default).

    ``args`` are the normalized command arguments (``-o`` and ``name=value`` as separate items,
    braces removed); ``overrides`` are the ``-o`` settings (the last one of a name wins);
    ``override_linenos`` says on which master.cf line each override was written.
    """

    name: str
    type: str
    private: str = "-"
    unpriv: str = "-"
    chroot: str = "-"
    wakeup: str = "-"
    maxproc: str = "-"
    command: str = ""
    args: tuple[str, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict, hash=False)
    lineno: int = 0
    end_lineno: int = 0
    override_linenos: Mapping[str, int] = field(default_factory=dict, hash=False, compare=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """``name/type``, as postconf -M/-P/-F spell a service."""
        return f"{self.name}/{self.type}"

    @property
    def is_private(self) -> bool:
        return self.private != "n"

    @property
    def is_unprivileged(self) -> bool:
        return self.unpriv != "n"

    @property
    def is_chrooted(self) -> bool:
        return self.chroot == "y"  # the default is "n" since Postfix 3.0

    def process_limit(self, default_process_limit: int) -> int:
        """0 means unlimited; ``-`` means $default_process_limit."""
        return default_process_limit if self.maxproc == "-" else int(self.maxproc)

    def _split_endpoint(self) -> tuple[str | None, str]:
        name = self.name
        if name.startswith("["):
            close = name.find("]")
            if close > 0 and name[close + 1:close + 2] == ":":
                return name[1:close], name[close + 2:]
        host, colon, port = name.rpartition(":")
        if colon:
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            return (host or None), port
        return None, name

    @property
    def listen_host(self) -> str | None:
        """Host part of an inet service name (``127.0.0.1:2525``, ``[::1]:smtp``); None if none."""
        self._require_inet()
        return self._split_endpoint()[0]

    @property
    def listen_port(self) -> int:
        """TCP port of an inet service: a number, a well-known name, or /etc/services."""
        self._require_inet()
        port = self._split_endpoint()[1]
        if port.isdigit():
            return int(port)
        if port in WELL_KNOWN_PORTS:
            return WELL_KNOWN_PORTS[port]
        try:
            return socket.getservbyname(port, "tcp")
        except OSError:
            raise ConfigError(f'unknown service name "{port}"', path=self.path,
                              lineno=self.lineno, name=self.name,
                              fix="use a port number, or add the name to /etc/services") from None

    def _require_inet(self) -> None:
        if self.type != "inet":
            raise ConfigError(f"{self.key} is not an inet service", path=self.path,
                              lineno=self.lineno, name=self.name)


@dataclass(slots=True)
class MasterCf:
    path: Path | None
    entries: list[Service] = field(default_factory=list)  # every entry, in file order

    @property
    def services(self) -> list[Service]:
        """Effective services: for a repeated name/type the last entry wins (at its place)."""
        last = {s.key: s for s in self.entries}
        return [s for s in self.entries if last[s.key] is s]

    def duplicates(self) -> list[tuple[Service, Service]]:
        seen: dict[str, Service] = {}
        out: list[tuple[Service, Service]] = []
        for s in self.entries:
            if s.key in seen:
                out.append((seen[s.key], s))
            seen[s.key] = s
        return out


def _logical_entries(text: str) -> list[list[tuple[int, str]]]:
    """Group physical lines into entries (readlline() rules), keeping each line's number."""
    entries: list[list[tuple[int, str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1].append((lineno, line))
        else:
            entries.append([(lineno, line)])
    return entries


def _tokenize(lines: list[tuple[int, str]], path: Path | None) -> list[tuple[str, int]]:
    """Blank-separated tokens; a token starting with ``{`` runs to its matching ``}``."""
    tokens: list[tuple[str, int]] = []
    # Join lines but remember where each character came from.
    text = ""
    line_at: list[int] = []
    for lineno, line in lines:
        text += line + "\n"
        line_at.extend([lineno] * (len(line) + 1))
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        depth = 0
        while i < n:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}" and depth > 0:
                depth -= 1
            elif depth == 0 and c.isspace():
                break
            i += 1
        if depth:
            raise ConfigError(f'missing "}}" in "{text[start:].strip()}"', path=path,
                              lineno=line_at[start], fix='close the "{" group')
        tokens.append((text[start:i], line_at[start]))
    return tokens


def _extract_braces(token: str, path: Path | None, lineno: int) -> str:
    """``{ text }`` -> ``text`` (Postfix pcf_extract_field()); other tokens unchanged."""
    if not token.startswith("{"):
        return token
    if not token.endswith("}"):
        raise ConfigError(f'syntax error after "}}" in "{token}"', path=path, lineno=lineno,
                          fix='put whitespace after the closing "}"')
    return token[1:-1].strip()


def _check_columns(cols: list[str], raw: str, path: Path | None, lineno: int) -> None:
    def bad(what: str, value: str, fix: str) -> ConfigError:
        return ConfigError(f'invalid {what} field "{value}" in "{raw}"', path=path,
                           lineno=lineno, name=cols[0], fix=fix)

    if cols[1] not in SERVICE_TYPES:
        raise bad("type", cols[1], "use one of " + ", ".join(SERVICE_TYPES))
    for what, value in zip(("private", "unprivileged", "chroot"), cols[2:5]):
        if value not in ("y", "n", "-"):
            raise bad(what, value, 'use "y", "n" or "-"')
    wakeup = cols[5][:-1] if cols[5].endswith("?") else cols[5]
    if not (cols[5] == "-" or wakeup.isdigit()):
        raise bad("wakeup", cols[5], 'use a number of seconds (optionally followed by "?") or "-"')
    if not (cols[6] == "-" or cols[6].isdigit()):
        raise bad("maxproc", cols[6], 'use a number (0 = no limit) or "-"')


def _normalize_args(
    tokens: list[tuple[str, int]], path: Path | None, service: str,
) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Postfix pcf_normalize_options(): split ``-vo`` / ``-oname=value``, extract ``{ }``."""
    args: list[str] = []
    overrides: dict[str, str] = {}
    linenos: dict[str, int] = {}
    toks = list(tokens)
    k = 0
    in_options = True
    while k < len(toks):
        tok, lineno = toks[k]
        k += 1
        if in_options and tok.startswith("-") and tok != "--" and len(tok) > 1:
            # "-vo" -> "-v" "-o": an option taking a value ends a cluster of flags.
            for pos in range(2, len(tok)):
                if tok[pos] in _OPTIONS_WITH_VALUE:
                    toks.insert(k, ("-" + tok[pos:], lineno))
                    tok = tok[:pos]
                    break
            if tok[1] not in _OPTIONS_WITH_VALUE:
                args.append(tok)
                continue
            if len(tok) > 2:
                value_tok, value_line = tok[2:], lineno
                tok = tok[:2]
            elif k < len(toks):
                value_tok, value_line = toks[k]
                k += 1
            else:
                raise ConfigError(f'option "{tok}" requires a value', path=path, lineno=lineno,
                                  name=service, fix=f'write "{tok} name=value"')
            value = _extract_braces(value_tok, path, value_line)
            if tok == "-o":
                name, eq, val = value.partition("=")
                name, val = name.strip(), val.strip()
                if not eq or not name or any(c.isspace() for c in name):
                    raise ConfigError(f'bad "-o" argument "{value}": missing "name=value"',
                                      path=path, lineno=value_line, name=service,
                                      fix='write "-o name=value" or "-o { name = value }"')
                value = f"{name}={val}"
                overrides[name] = val
                linenos[name] = value_line
            args.extend((tok, value))
            continue
        in_options = False
        args.append(_extract_braces(tok, path, lineno))
    return args, overrides, linenos


def parse_master_cf(text: str, path: Path | None = None) -> MasterCf:
    """Parse master.cf text; ConfigError naming the line on a malformed entry."""
    mcf = MasterCf(path)
    for lines in _logical_entries(text):
        first = lines[0][0]
        raw = " ".join(line.strip() for _, line in lines)
        if lines[0][1][0].isspace():
            raise ConfigError("continuation line without a service before it", path=path,
                              lineno=first, fix="start the service line in column 1")
        tokens = _tokenize(lines, path)
        if len(tokens) < 8:
            raise ConfigError(f'bad field count ({len(tokens)} instead of at least 8) in "{raw}"',
                              path=path, lineno=first, name=tokens[0][0],
                              fix="write: service type private unpriv chroot wakeup "
                                  "maxproc command [args]")
        cols = [t for t, _ in tokens[:8]]
        _check_columns(cols, raw, path, first)
        args, overrides, linenos = _normalize_args(tokens[8:], path, cols[0])
        mcf.entries.append(Service(
            name=cols[0], type=cols[1], private=cols[2], unpriv=cols[3], chroot=cols[4],
            wakeup=cols[5], maxproc=cols[6], command=cols[7], args=tuple(args),
            overrides=overrides, lineno=first, end_lineno=lines[-1][0],
            override_linenos=linenos, path=path,
        ))
    return mcf


def read_master_cf(path: Path) -> MasterCf:
    """Read master.cf; a missing file has no services."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return MasterCf(path)
    return parse_master_cf(text, path)


def _quote(arg: str) -> str:
    return "{" + arg + "}" if any(c.isspace() for c in arg) else arg


def command_text(service: Service) -> str:
    """The command and arguments as ``postconf -F .../command`` shows them."""
    return " ".join([service.command, *(_quote(a) for a in service.args)])


def format_service(service: Service, *, fold: bool = False) -> str:
    """One entry as ``postconf -M`` (``fold=True``: ``-Mf``) prints it, without newline."""
    out: list[str] = []
    line_len = 0
    cols = (service.name, service.type, service.private, service.unpriv, service.chroot,
            service.wakeup, service.maxproc, service.command)
    for goal, text in zip(_COLUMN_GOALS, cols):
        if line_len > 0:
            out.append(" ")
            line_len += 1
            while line_len < goal:
                out.append(" ")
                line_len += 1
        out.append(text)
        line_len += len(text)
    args = list(service.args)
    k = 0
    in_options = True
    while k < len(args):
        arg = _quote(args[k])
        aval: str | None = None
        arg_len = len(arg)
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
            elif arg[1:2] in _OPTIONS_WITH_VALUE and arg[1:2] and k + 1 < len(args):
                aval = _quote(args[k + 1])
                line_len = _LINE_LIMIT  # wrap before an option with a value
                arg_len += len(aval) + 1
        if line_len > len(_INDENT):
            if not fold or line_len + 1 + arg_len < _LINE_LIMIT:
                out.append(" ")
                line_len += 1
            else:
                out.append("\n" + _INDENT)
                line_len = len(_INDENT)
        out.append(arg)
        line_len += len(arg)
        k += 1
        if aval is not None:
            out.append(" " + aval)
            k += 1
            line_len = _LINE_LIMIT  # and after it
    return "".join(out)
