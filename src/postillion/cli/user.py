"""``postillion -c DIR user add|del|list|passwd NAME``, ``user import-sasldb|import-passwd-file
FILE``: manage the SASL user database.

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from postillion.config import load_config
from postillion.errors import ConfigError
from postillion.sasl import importers
from postillion.sasl.userdb import UserDB, UserDBError, UserExistsError

if TYPE_CHECKING:
    from postillion.config import Params

USAGE = ("usage: postillion -c DIR user add NAME | del NAME | passwd NAME | list\n"
         "       postillion -c DIR user import-sasldb FILE | import-passwd-file FILE")


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
        path = user_database_path(params)
        db = UserDB(
            path,
            scram_iterations=params.get_int("postillion_scram_iterations"),
            store_cram_md5=params.get_bool("postillion_cram_md5_enable"),
        )
        if command.startswith("import-"):
            assert name is not None
            status = _import(db, command, Path(name), params, stdout, stderr)
        elif command == "list":
            for user in db.list_names():
                print(user, file=stdout)
            return 0
        elif command == "del":
            assert name is not None
            db.delete(name)
        else:
            assert name is not None
            password = _read_password(stdin)
            if command == "add":
                db.add(name, password)
            else:
                db.set_password(name, password)
        warning = _give_to_mail_owner(path, params.get("mail_owner"))
        if warning:
            print(f"postillion: warning: {warning}", file=stderr)
        return status if command.startswith("import-") else 0
    except (ConfigError, UserDBError, _PasswordError) as exc:
        print(f"postillion: {exc}", file=stderr)
        return 1


def user_database_path(params: Params) -> Path:
    """``postillion_user_database`` for the commands that manage or serve the store."""
    path = params.path("postillion_user_database")
    if path is None:
        raise ConfigError("is empty", name="postillion_user_database",
                          fix="set it to a file name, e.g. $data_directory/users.sqlite")
    return path


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
    if command in ("import-sasldb", "import-passwd-file"):
        if len(rest) != 1:
            raise _UsageError(f"user {command} takes one file name")
        return command, rest[0]
    raise _UsageError(f"unknown user command {command!r}")


class _PasswordError(Exception):
    pass


def _import(db: UserDB, command: str, path: Path, params: Params, stdout: TextIO,
            stderr: TextIO) -> int:
    """Add every user of a Cyrus sasldb2 or Dovecot passwd-file; users that already exist are
    left as they are (and named), so an import can be repeated after fixing a few lines."""
    added: list[str] = []
    skipped: list[str] = []

    def add(name: str, write: Callable[[], None]) -> None:
        try:
            write()
            added.append(name)
        except UserExistsError:
            skipped.append(name)
            print(f"postillion: user {name} already exists; not changed", file=stderr)

    if command == "import-sasldb":
        # Cyrus puts a login without @ in the default realm (smtpd_sasl_local_domain, else the
        # server's host name): those users log in with the bare name, all others as user@realm.
        default_realms = {params.get("smtpd_sasl_local_domain"), params.get("myhostname")}
        for u in importers.read_sasldb(path):
            name = u.user if u.realm in default_realms else f"{u.user}@{u.realm}"
            add(name, lambda n=name, pw=u.password: db.add(n, pw))  # type: ignore[misc]
    else:
        for entry in importers.read_passwd_file(path):
            add(entry.user, lambda e=entry: db.add_hashed(e.user, e.stored))  # type: ignore[misc]
    print(f"postillion: imported {len(added)} user{'s' if len(added) != 1 else ''} from {path}"
          + (f", {len(skipped)} already present" if skipped else ""), file=stdout)
    return 1 if skipped else 0


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
