"""``postillion -c DIR user add|del|list|passwd NAME``: manage the SASL user database.

Owns: the command line of ``postillion user``, reading passwords, file ownership after changes.
Must not import: server (this runs without a running postillion).
Follows: the on-disk format in ``sasl.userdb``; the database path is ``postillion_user_database``
from main.cf, readable by ``mail_owner`` (the unprivileged smtpd workers).

Passwords come from standard input (one line, newline stripped) when it is not a terminal, so
scripts can do ``echo secret | postillion user add alice``; on a terminal they are asked twice.
"""

from __future__ import annotations

import getpass
import os
import pwd
import sys
from pathlib import Path
from typing import TextIO

from postillion.config import load_config
from postillion.errors import ConfigError
from postillion.sasl.userdb import UserDB, UserDBError

USAGE = "usage: postillion -c DIR user add NAME | del NAME | passwd NAME | list"


class _UsageError(Exception):
    pass


def main(
    config_dir: Path,
    argv: list[str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one ``user`` subcommand; returns the exit status (0 ok, 1 error, 2 usage)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        command, name = _parse(argv)
    except _UsageError as exc:
        if str(exc):
            print(f"postillion: {exc}", file=stderr)
        print(USAGE, file=stderr)
        return 2
    try:
        params = load_config(Path(config_dir)).params()
        path = params.path("postillion_user_database")
        if path is None:
            raise ConfigError("is empty", name="postillion_user_database",
                              fix="set it to a file name, e.g. $data_directory/users.sqlite")
        db = UserDB(path)
        if command == "list":
            for user in db.list_names():
                print(user, file=stdout)
            return 0
        assert name is not None
        if command == "del":
            db.delete(name)
        else:
            password = _read_password(stdin)
            if command == "add":
                db.add(name, password)
            else:
                db.set_password(name, password)
        warning = _give_to_mail_owner(path, params.get("mail_owner"))
        if warning:
            print(f"postillion: warning: {warning}", file=stderr)
        return 0
    except (ConfigError, UserDBError, _PasswordError) as exc:
        print(f"postillion: {exc}", file=stderr)
        return 1


def _parse(argv: list[str]) -> tuple[str, str | None]:
    if not argv:
        raise _UsageError("")
    command, rest = argv[0], argv[1:]
    command = {"delete": "del", "password": "passwd"}.get(command, command)
    if command == "list":
        if rest:
            raise _UsageError("user list takes no arguments")
        return command, None
    if command in ("add", "del", "passwd"):
        if len(rest) != 1:
            raise _UsageError(f"user {command} takes one user name")
        return command, rest[0]
    raise _UsageError(f"unknown user command {command!r}")


class _PasswordError(Exception):
    pass


def _read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Retype password: ") != first:
            raise _PasswordError("passwords do not match")
        password = first
    else:
        password = stdin.readline()
        if password.endswith("\n"):
            password = password[:-1]
            if password.endswith("\r"):
                password = password[:-1]
    if not password:
        raise _PasswordError("empty password")
    return password


def _give_to_mail_owner(path: Path, mail_owner: str) -> str | None:
    """As root, make the database belong to mail_owner so the smtpd workers can read it."""
    if os.geteuid() != 0:
        return None
    try:
        owner = pwd.getpwnam(mail_owner)
    except KeyError:
        return (
            f"mail_owner {mail_owner} does not exist: {path} stays readable by root only, "
            f"so smtpd workers running as another user cannot check passwords"
        )
    os.chown(path, owner.pw_uid, owner.pw_gid)
    return None
