"""``postillion -c DIR auth-server``: serve the Dovecot auth protocol from postillion's users.

Owns: the command line (``--listen unix:/path|inet:host:port``, ``--mode``, ``--group``,
``--failure-delay``), wiring the user database verifier into ``sasl.dovecot_server``, and
running in the foreground until SIGTERM/SIGINT (the socket file is removed on exit).
Must not import: server (this runs beside, not inside, the smtpd supervisor).
Follows: Postfix SASL_README "Dovecot SASL" (the Postfix side: ``smtpd_sasl_type = dovecot``,
``smtpd_sasl_path = private/auth``); Dovecot 10-master.conf ``unix_listener`` (mode, group).

The default socket is Postfix's usual ``/var/spool/postfix/private/auth``, so a Postfix on the
same host works with ``smtpd_sasl_path = private/auth`` (use ``--group postfix``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from postillion.cli.user import user_database_path
from postillion.config import load_config
from postillion.errors import ConfigError
from postillion.sasl.dovecot_server import FAILURE_DELAY, DovecotAuthServer
from postillion.sasl.verifiers import UserDBVerifier

DEFAULT_LISTEN = "unix:/var/spool/postfix/private/auth"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postillion auth-server")
    p.add_argument("--listen", default=DEFAULT_LISTEN,
                   help=f"unix:/path or inet:host:port (default {DEFAULT_LISTEN})")
    p.add_argument("--mode", default="0660", help="UNIX socket permissions (default 0660)")
    p.add_argument("--group", default=None, help="UNIX socket group, e.g. postfix")
    p.add_argument("--failure-delay", type=float, default=FAILURE_DELAY,
                   help=f"seconds before answering a failure (default {FAILURE_DELAY:g})")
    return p


def main(config_dir: Path, argv: list[str], *, stderr: TextIO | None = None) -> int:
    """Run until SIGTERM/SIGINT; exit status 0, 1 on a configuration or listen error."""
    err = stderr or sys.stderr
    opts = _parser().parse_args(argv)
    try:
        mode = int(opts.mode, 8)
    except ValueError:
        print(f"postillion: auth-server: --mode {opts.mode}: not an octal number", file=err)
        return 2
    try:
        params = load_config(Path(config_dir)).params()
        verifier = UserDBVerifier(user_database_path(params), cache_ttl=params.get_time("postillion_auth_cache_ttl"))
    except ConfigError as exc:
        print(f"postillion: fatal: {exc}", file=err)
        return 1

    def log(text: str) -> None:
        print(f"postillion/auth-server: {text}", file=err, flush=True)

    server = DovecotAuthServer(verifier, failure_delay=opts.failure_delay, log=log)
    try:
        return asyncio.run(_serve(server, opts.listen, mode, opts.group, log))
    except (OSError, KeyError, ValueError) as exc:
        print(f"postillion: fatal: auth-server: {opts.listen}: {exc}", file=err)
        return 1


async def _serve(server: DovecotAuthServer, listen: str, mode: int, group: str | None,
                 log: Callable[[str], None]) -> int:
    path: str | None = None
    if listen.startswith("inet:"):
        host, sep, port = listen[5:].rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError("expected inet:host:port")
        listener = await server.start_tcp(host.strip("[]") or "127.0.0.1", int(port))
    else:
        path = listen.removeprefix("unix:")
        listener = await server.start_unix(path, mode=mode, group=group)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"listening on {listen}")
    try:
        await stop.wait()
    finally:
        listener.close()
        if path is not None:
            Path(path).unlink(missing_ok=True)
    log("stopped")
    return 0
