"""``postillion postconf``: Postfix's postconf(1), byte-for-byte where postillion supports it.

Owns: option parsing and output formatting of postconf: parameter display (none, names,
``-n``, ``-d``, ``-h``, ``-H``, ``-x``, ``-o``, ``-c``), main.cf editing (``-e``, ``-X``, ``-#``),
master.cf display (``-M``, ``-F``, ``-P``, ``-f``), ``-a``, ``-A``, ``-m``.
Must not import: server, queue, policy (it only reads and writes configuration files).
Follows: postconf(1) of Postfix 3.7 and its output formats (postconf_main.c, postconf_master.c):
``name = value`` sorted by name, ``name =`` when empty, warnings as ``postconf: warning: ...``
on stderr, ``postconf: fatal: ...`` with exit status 1.
"""

from __future__ import annotations

import fnmatch
import getopt
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from postillion.config.expand import expand
from postillion.config.maincf import edit_main_cf, read_main_cf, split_nameval
from postillion.config.mastercf import (
    FIELD_NAMES,
    Service,
    command_text,
    format_service,
    read_master_cf,
)
from postillion.config.params import (
    PARAMETERS,
    RAW_PARAMETERS,
    SUPPORTED_TABLE_TYPES,
    default_value,
    postfix_defaults,
    service_parameters,
)
from postillion.errors import ConfigError

PROG = "postconf"
SASL_SERVER_TYPES = ("cyrus", "dovecot")  # -a
SASL_CLIENT_TYPES: tuple[str, ...] = ("cyrus",)  # -A: as Postfix; delivery/smtp.py does the SASL itself
_SHORT_OPTS = "aAc:dDeEfFhHlmMno:pPtTvxX#"
_UNSUPPORTED = {"-l": "mailbox locking", "-t": "bounce templates", "-T": "TLS information",
                "-b": "bounce templates", "-C": "parameter classes", "-D": "deprecated flag",
                "-E": "deprecated flag"}


# Values postconf reports about itself, as Postfix's does.
_RUNTIME: dict[str, Callable[[], str]] = {
    "process_name": lambda: PROG,
    "process_id": lambda: str(os.getpid()),
}


class _Fatal(Exception):
    pass


class _Out:
    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout, self.stderr = stdout, stderr

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def warn(self, text: str) -> None:
        self.stderr.write(f"{PROG}: warning: {text}\n")


def _words(value: str) -> str:
    """postconf_print.c prints parameter values word by word, single-spaced."""
    return " ".join(value.split())


def _show(name: str, value: str, *, values_only: bool, names_only: bool) -> str:
    if names_only:
        return name
    if values_only:
        return value
    return f"{name} = {value}" if value else f"{name} ="


def main(config_dir: Path, argv: list[str], *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run postconf with ``argv`` (without the program name); returns the exit status."""
    out = _Out(stdout or sys.stdout, stderr or sys.stderr)
    try:
        return _run(Path(config_dir), argv, out)
    except _Fatal as exc:
        out.stderr.write(f"{PROG}: fatal: {exc}\n")
        return 1
    except ConfigError as exc:
        out.stderr.write(f"{PROG}: fatal: {exc.render()}\n")
        return 1


def _run(config_dir: Path, argv: list[str], out: _Out) -> int:
    try:
        opts, args = getopt.getopt(argv, _SHORT_OPTS)
    except getopt.GetoptError as exc:
        raise _Fatal(f"usage: {PROG} [-aAdefFhHmMnPxX#] [-c config_dir] [-o name=value] "
                     f"[name...] ({exc.msg})") from None
    flags: set[str] = set()
    overrides: dict[str, str] = {}
    explicit_dir = "MAIL_CONFIG" in os.environ
    for opt, val in opts:
        if opt == "-c":
            config_dir, explicit_dir = Path(val), True
        elif opt == "-o":
            nv = split_nameval(val)
            if nv is None:
                raise _Fatal(f"invalid parameter override: {val}: missing '='")
            overrides[nv[0]] = nv[1]
        elif opt in _UNSUPPORTED:
            raise _Fatal(f"{opt}: {_UNSUPPORTED[opt]} is not supported by postillion")
        else:
            flags.add(opt)
    if "-a" in flags:
        for t in SASL_SERVER_TYPES:
            out.line(t)
        return 0
    if "-A" in flags:
        for t in SASL_CLIENT_TYPES:
            out.line(t)
        return 0
    if "-m" in flags:
        for t in sorted(SUPPORTED_TABLE_TYPES):
            out.line(t)
        return 0
    editing = flags & {"-e", "-X", "-#"}
    if flags & {"-M", "-F", "-P"}:
        if editing:
            raise _Fatal("editing master.cf is not supported by postillion; edit it by hand")
        return _master(config_dir, flags, args, overrides, out)
    if "-e" in flags:
        return _edit(config_dir, args)
    if "-X" in flags:
        edit_main_cf(config_dir / "main.cf", remove=args)
        return 0
    if "-#" in flags:
        edit_main_cf(config_dir / "main.cf", comment_out=args)
        return 0
    return _parameters(config_dir, flags, args, overrides, explicit_dir, out)


def _edit(config_dir: Path, args: list[str]) -> int:
    updates: dict[str, str] = {}
    for arg in args:
        nv = split_nameval(arg)
        if nv is None:
            raise _Fatal(f"missing '=' after attribute name: \"{arg.strip()}\"")
        updates[nv[0]] = nv[1]
    edit_main_cf(config_dir / "main.cf", set_values=updates)
    return 0


# --- parameters --------------------------------------------------------------------------

def _default_text(name: str, explicit: dict[str, str],
                  derived: dict[str, str] | None = None) -> str | None:
    value = default_value(name, explicit.get)
    if value is None:
        value = postfix_defaults().get(name)
    if value is None and derived:
        value = derived.get(name)
    return value


def _derived_parameters(config_dir: Path) -> dict[str, str]:
    """Per-transport parameters of master.cf delivery services (missing master.cf: none)."""
    try:
        entries = read_master_cf(config_dir / "master.cf").entries
    except ConfigError:
        return {}
    return service_parameters((s.name, s.command) for s in entries)


def _parameters(config_dir: Path, flags: set[str], names: list[str],
                overrides: dict[str, str], explicit_dir: bool, out: _Out) -> int:
    main_path = config_dir / "main.cf"
    if not main_path.exists() and "-d" not in flags:
        raise _Fatal(f"open {main_path}: No such file or directory")
    main = read_main_cf(main_path)
    explicit = {**main.values, **overrides}
    if explicit_dir and "config_directory" not in explicit:
        explicit["config_directory"] = str(config_dir)  # Postfix sets it when -c is given
    referenced = _referenced(explicit.values())
    derived = _derived_parameters(config_dir)
    known = set(PARAMETERS) | postfix_defaults().keys() | derived.keys()

    def is_known(name: str) -> bool:
        return name in known or name in referenced

    def raw(name: str) -> str | None:
        if name in _RUNTIME:
            return _RUNTIME[name]()
        if "-d" in flags:
            return _default_text(name, {}, derived)
        if name in explicit:
            return explicit[name]
        if name == "config_directory":
            return str(config_dir)
        return _default_text(name, explicit, derived)

    lookup: Callable[[str], str | None] = raw
    if names:
        selected = names
    elif "-n" in flags:
        selected = sorted(n for n in explicit if is_known(n))
    elif "-d" in flags:
        selected = sorted(known)
    else:
        selected = sorted(known | {n for n in explicit if is_known(n)})
    for name in selected:
        if not is_known(name) or ("-n" in flags and name not in explicit):
            if not ("-n" in flags and is_known(name)):
                out.warn(f"{name}: unknown parameter")
            continue
        value = raw(name) or ""
        if "-x" in flags and name not in RAW_PARAMETERS:
            try:
                value = expand(value, lookup, name=name)
            except ConfigError as exc:
                out.warn(exc.message)  # like postconf: complain, show the value unexpanded
        out.line(_show(name, _words(value), values_only="-h" in flags,
                       names_only="-H" in flags))
    return 0


def _referenced(values: Iterable[str]) -> set[str]:
    import re
    ref = re.compile(r"\$[{(]?([A-Za-z0-9_]+)")
    return {m.group(1) for v in values for m in ref.finditer(v)}


# --- master.cf ---------------------------------------------------------------------------

def _match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _master(config_dir: Path, flags: set[str], filters: list[str],
            overrides: dict[str, str], out: _Out) -> int:
    master_path = config_dir / "master.cf"
    if not master_path.exists():
        raise _Fatal(f"open {master_path}: No such file or directory")
    entries = read_master_cf(master_path).entries
    if "-M" in flags:
        _show_entries(entries, filters, "-f" in flags, out)
    elif "-F" in flags:
        _show_fields(entries, filters, flags, out)
    else:
        _show_params(config_dir, entries, filters, flags, overrides, out)
    return 0


def _split_filter(text: str, parts: int) -> list[str]:
    pieces = text.split("/")
    if len(pieces) > parts or not all(pieces):
        raise _Fatal(f'invalid service pattern: "{text}"')
    return pieces + ["*"] * (parts - len(pieces))


def _show_entries(entries: list[Service], filters: list[str], fold: bool, out: _Out) -> None:
    if not filters:
        for s in entries:
            out.line(format_service(s, fold=fold))
        return
    patterns = [(f, _split_filter(f, 2)) for f in filters]
    hits = {f: 0 for f in filters}
    for s in entries:
        for raw, (name, typ) in patterns:
            if _match(name, s.name) and _match(typ, s.type):
                hits[raw] += 1
                out.line(format_service(s, fold=fold))
    for raw, count in hits.items():
        if not count:
            out.warn(f'unmatched request: "{raw}"')


def _fields(s: Service) -> list[tuple[str, str]]:
    values = (s.name, s.type, s.private, s.unpriv, s.chroot, s.wakeup, s.maxproc,
              command_text(s))
    return list(zip(FIELD_NAMES, values))


def _show_fields(entries: list[Service], filters: list[str], flags: set[str], out: _Out) -> None:
    patterns = [(f, _split_filter(f, 3)) for f in filters] or [("", ["*", "*", "*"])]
    hits = {raw: 0 for raw, _ in patterns}
    for s in entries:
        for field_name, value in _fields(s):
            for raw, (name, typ, fld) in patterns:
                if _match(name, s.name) and _match(typ, s.type) and _match(fld, field_name):
                    hits[raw] += 1
                    out.line(_show(f"{s.key}/{field_name}", value, values_only="-h" in flags,
                                   names_only="-H" in flags))
                    break
    for raw, count in hits.items():
        if raw and not count:
            out.warn(f'unmatched request: "{raw}"')


def _show_params(config_dir: Path, entries: list[Service], filters: list[str], flags: set[str],
                 overrides: dict[str, str], out: _Out) -> None:
    patterns = [(f, _split_filter(f, 3)) for f in filters] or [("", ["*", "*", "*"])]
    hits = {raw: 0 for raw, _ in patterns}
    main_values: dict[str, str] | None = None
    for s in entries:
        for pname in sorted(s.overrides):
            for raw, (name, typ, par) in patterns:
                if _match(name, s.name) and _match(typ, s.type) and _match(par, pname):
                    hits[raw] += 1
                    value = s.overrides[pname]
                    if "-x" in flags:
                        if main_values is None:
                            main_values = {**read_main_cf(config_dir / "main.cf").values,
                                           **overrides}
                        value = _expand_for_service(value, s, main_values)
                    out.line(_show(f"{s.key}/{pname}", _words(value), values_only="-h" in flags,
                                   names_only="-H" in flags))
                    break
    for raw, count in hits.items():
        if raw and not count:
            out.warn(f'unmatched request: "{raw}"')


def _expand_for_service(value: str, s: Service, main_values: dict[str, str]) -> str:
    values = {**main_values, **s.overrides}

    def lookup(name: str) -> str | None:
        if name == "service_name":
            return s.name
        if name in values:
            return values[name]
        return _default_text(name, values, derived)

    derived = service_parameters([(s.name, s.command)])
    return expand(value, lookup)
