"""`postillion [-c DIR] COMMAND ...`: dispatch to the subcommands.

Owns: the command line surface (init, start, stop, reload, status, check, postconf, user).
Each subcommand lives in its own module with ``main(config_dir, argv) -> int`` or a typed function.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from postillion import __version__

DEFAULT_CONFIG_DIR = "/etc/postillion"

USAGE = """\
usage: postillion [-c DIR] COMMAND [ARGS]

commands:
  init [--hostname H]       write a working configuration, certificate and data directory
  start [--foreground]      start the mail system (refuses a config that `check` rejects)
  stop | reload | status    stop it, re-read the configuration, show processes and counts
  check                     validate main.cf, master.cf and smtpd.conf
  doctor [--user U --password-stdin] [--service S] [--json]   test the running service
  postconf [FLAGS] [NAME]   Postfix's postconf: -n -d -h -x -e -X -a -A -M -P
  user add|del|list|passwd  manage the embedded user store
  user import-sasldb|import-passwd-file FILE   move users over from Cyrus sasldb2 / Dovecot
  user alias add|del|list USER ADDR   sender addresses a user owns (reject_sender_login_mismatch)
  saslauthd -a pam|shadow|userdb|rimap [-m DIR] ...   Cyrus saslauthd(8), drop-in
  testsaslauthd -u U -p P [-s S] [-f SOCKET]           Cyrus testsaslauthd(8)
  auth-server [--listen unix:PATH|inet:H:P]  serve the Dovecot auth protocol (for Postfix)
  queue [-j]                the mail queue, like mailq / postqueue -p (-j: JSON lines)
  flush                     retry deferred mail now
  delete|hold|release|requeue ID|ALL   like postsuper -d / -h / -H / -r
  show ID                   a queued message, like postcat -q
  sendmail [-t] [-i] [-f S] [rcpt...] | -bs   Postfix's sendmail(1): a message (or SMTP, -bs) on stdin

-c DIR is the configuration directory (default $POSTILLION_CONFIG or /etc/postillion).
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config_dir = Path(os.environ.get("POSTILLION_CONFIG", DEFAULT_CONFIG_DIR))
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "-c" and args:
            config_dir = Path(args.pop(0))
        elif opt.startswith("-c") and len(opt) > 2:
            config_dir = Path(opt[2:])
        elif opt in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        elif opt == "--version":
            print(f"postillion {__version__}")
            return 0
        else:
            sys.stderr.write(f"postillion: unknown option {opt}\n{USAGE}")
            return 2
    if not args:
        sys.stderr.write(USAGE)
        return 2
    command, rest = args[0], args[1:]
    config_dir = config_dir.absolute()
    if command == "init":
        from postillion.cli import init

        return init.main(config_dir, rest)
    if command == "postconf":
        from postillion.cli import postconf

        return postconf.main(config_dir, rest)
    if command == "user" and rest[:1] == ["alias"]:
        from postillion.cli import user_alias

        return user_alias.main(config_dir, rest[1:])
    if command == "user":
        from postillion.cli import user

        return user.main(config_dir, rest)
    if command in ("queue", "flush", "delete", "hold", "release", "requeue", "show"):
        from postillion.cli import queue

        return queue.main(config_dir, [command, *rest])
    if command == "sendmail":
        from postillion.cli import sendmail

        return sendmail.main(config_dir, rest)
    if command == "auth-server":
        from postillion.cli import auth_server

        return auth_server.main(config_dir, rest)
    if command in ("saslauthd", "testsaslauthd"):  # issue 5: drop-ins for Cyrus's programs
        from postillion.cli import saslauthd, testsaslauthd

        if command == "saslauthd":
            return saslauthd.main(config_dir, rest)
        return testsaslauthd.main(rest)
    if command == "check":
        from postillion.cli import check

        return check.main(config_dir, rest)
    if command == "doctor":  # issue 5: the recipe's "Test" section against the live service
        from postillion.cli import doctor

        return doctor.main(config_dir, rest)
    if command in ("start", "stop", "reload", "status"):
        from postillion.cli import daemon

        if command == "start":
            parser = argparse.ArgumentParser(prog="postillion start")
            parser.add_argument("--foreground", action="store_true")
            opts = parser.parse_args(rest)
            from postillion.server.worker import worker_main

            return daemon.start(config_dir, foreground=opts.foreground, worker_main=worker_main)
        return int(getattr(daemon, command)(config_dir))
    sys.stderr.write(f"postillion: unknown command {command!r}\n{USAGE}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
