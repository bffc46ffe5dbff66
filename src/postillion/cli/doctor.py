"""`postillion -c DIR doctor [--user U --password-stdin] [--host H --port P] [--service NAME] [--json]`.

Runs the recipe's "Test" section against the running service and prints a checklist: ``✔ step``
or ``✘ step`` with the cause and the fix indented below.  Exit status 0 when every step passed
(warnings included), 1 otherwise, 2 for a usage error.  The password is read from the first
line of standard input (never from the command line, where ps(1) would show it).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from postillion.doctor import all_ok, render_json, render_text, run_checks


def main(config_dir: Path, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postillion doctor")
    parser.add_argument("--user", help="SASL user name to log in with")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    parser.add_argument("--host", help="address to connect to (default: the service's)")
    parser.add_argument("--port", type=int, help="port to connect to (default: the service's)")
    parser.add_argument("--service", help="master.cf service (name, port, or submission/smtps/smtp)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the checklist")
    opts = parser.parse_args(argv)
    password = None
    if opts.password_stdin:
        if opts.user is None:
            parser.error("--password-stdin needs --user")
        if sys.stdin.isatty():
            # Typed at a terminal: without echo (getpass talks to the terminal itself).
            password = getpass.getpass("Password: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    elif opts.user is not None:
        parser.error("--user needs --password-stdin")
    checkup = run_checks(config_dir, user=opts.user, password=password, host=opts.host,
                         port=opts.port, service_name=opts.service)
    render = render_json if opts.json else render_text
    sys.stdout.write(render(checkup.steps, checkup.skipped))
    return 0 if all_ok(checkup.steps) else 1
