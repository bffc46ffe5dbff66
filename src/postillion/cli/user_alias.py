"""``postillion -c DIR user alias add|del|list``: the addresses a user may send as.

Owns: the command line of ``postillion user alias``.
Must not import: server (this runs without a running postillion).
Follows: ``sasl.aliases_store`` (storage) and ``sasl.login_table`` (how the aliases are used:
``postillion:users``, the default smtpd_sender_login_maps for reject_*_sender_login_mismatch).

    postillion user alias add USER ADDRESS     USER may send as ADDRESS (or @domain)
    postillion user alias del USER ADDRESS
    postillion user alias list [USER]          "USER ADDRESS" lines (only ADDRESS with USER)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from postillion.cli.user import user_database_path
from postillion.config import load_config
from postillion.errors import ConfigError
from postillion.sasl.aliases_store import AliasStore
from postillion.sasl.userdb import UserDBError

USAGE = ("usage: postillion -c DIR user alias add USER ADDRESS | del USER ADDRESS | "
         "list [USER]")


def main(config_dir: Path, argv: list[str], *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run one ``user alias`` subcommand; returns the exit status (0 ok, 1 error, 2 usage)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    command = {"delete": "del"}.get(command, command)
    valid = (command in ("add", "del") and len(rest) == 2) or (command == "list" and len(rest) <= 1)
    if not valid:
        if command:
            print(f"postillion: bad arguments for user alias {command}", file=stderr)
        print(USAGE, file=stderr)
        return 2
    try:
        store = AliasStore(user_database_path(load_config(Path(config_dir)).params()))
        if command == "add":
            store.add(rest[0], rest[1])
        elif command == "del":
            store.delete(rest[0], rest[1])
        elif rest:
            for _user, address in store.list(rest[0]):
                print(address, file=stdout)
        else:
            for user, address in store.list():
                print(f"{user} {address}", file=stdout)
        return 0
    except (ConfigError, UserDBError) as exc:
        print(f"postillion: {exc}", file=stderr)
        return 1
