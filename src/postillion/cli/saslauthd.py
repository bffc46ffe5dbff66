"""``postillion [-c DIR] saslauthd -a MECH [-cdrVl] [-O opt] [-m dir] [-n N] [-t sec] [-s kb]``.

Owns: saslauthd(8)'s command line, daemonizing (fork, setsid, the parent reporting start-up
failure through a pipe as Cyrus does), the start-up and exit log lines, signals.
Must not import: server (this is a separate daemon; postillion's smtpd talks to it over the mux
socket like to Cyrus's).
Follows: cyrus-sasl 2.1.28 saslauthd/saslauthd-main.c (options, messages, exit codes: 1 for
errors, 2 when another instance holds the pid lock), saslauthd(8), Debian /etc/default/saslauthd.

Differences: ``-n`` counts threads in one process (0 = ``ZERO_WORKERS`` threads, since "one
process per connection" has no thread equivalent worth having); ``-l`` and ``-s`` are accepted
and ignored (no accept lock; the cache is sized in entries, not kilobytes); mechanisms are
pam, shadow, userdb (postillion's user store) and rimap.
"""

from __future__ import annotations

import asyncio
import contextlib
import getopt
import os
import signal
import sys
from pathlib import Path

from postillion import __version__
from postillion.sasl.backends import MECHANISMS, make_backend
from postillion.sasl.saslauthd_server import (
    DEFAULT_CACHE_TIMEOUT,
    DEFAULT_RUN_PATH,
    DEFAULT_WORKERS,
    PID_FILE,
    SOCKET_FILE,
    AlreadyRunningError,
    CredentialCache,
    PidFile,
    SaslauthdLog,
    SaslauthdServer,
    bind_socket,
    make_run_dir,
)

ZERO_WORKERS = 64  # -n 0: Cyrus forks per connection; we bound it by this many threads
EXIT_ERROR = 1
EXIT_ALREADY_RUNNING = 2  # saslauthd-main.c: the detached child's "another instance" code

USAGE = """\
usage: saslauthd [options]

option information:
  -a <authmech>  Selects the authentication mechanism to use.
  -c             Enable credential caching.
  -d             Debugging (don't detach from tty, implies -V)
  -r             Combine the realm with the login before passing to authentication mechanism
                 Ex. login: "foo" realm: "bar" will get passed as login: "foo@bar"
                 The realm name is passed untouched.
  -O <option>    Optional argument to pass to the authentication
                 mechanism.
  -l             Disable accept() locking. Increases performance, but
                 may not be compatible with some operating systems.
  -m <path>      Alternate path for the saslauthd working directory,
                 must be absolute.
  -n <procs>     Number of worker processes to create.
  -s <kilobytes> Size of the credential cache (in kilobytes)
  -t <seconds>   Timeout for items in the credential cache (in seconds)
  -v             Display version information and available mechs
  -V             Enable verbose logging
  -h             Display this message.

"""
VERSION = f"saslauthd postillion-{__version__}\nauthentication mechanisms: {' '.join(MECHANISMS)}\n\n"
USAGE += VERSION  # show_usage() ends with show_version()


class _Options:
    mech: str | None = None
    option: str | None = None
    cache = False
    debug = False
    verbose = False
    concat_realm = False
    run_path = Path(DEFAULT_RUN_PATH)
    workers = DEFAULT_WORKERS
    ttl = DEFAULT_CACHE_TIMEOUT


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def parse(argv: list[str], log: SaslauthdLog) -> _Options:
    """getopt("a:cdhO:lm:n:rs:t:vVTH:") as saslauthd-main.c; _Exit on -h, -v and errors."""
    try:
        pairs, rest = getopt.getopt(argv, "a:cdhO:lm:n:rs:t:vVTH:")
    except getopt.GetoptError as exc:
        sys.stderr.write(f"saslauthd: {exc.msg}\n{USAGE}")
        raise _Exit(EXIT_ERROR) from None
    opts = _Options()
    for flag, value in pairs:
        if flag == "-a":
            if opts.mech is not None:  # "Only one at a time, please!"
                sys.stderr.write(USAGE)
                raise _Exit(EXIT_ERROR)
            opts.mech = value
        elif flag == "-c":
            opts.cache = True
        elif flag == "-d":
            opts.debug = opts.verbose = True
        elif flag == "-r":
            opts.concat_realm = True
        elif flag == "-V":
            opts.verbose = True
        elif flag in ("-O", "-H"):  # -H host: the old spelling of rimap's -O
            opts.option = value
        elif flag == "-m":
            if not value.startswith("/"):
                log.error_line("set_run_path", "-m requires an absolute pathname")
                raise _Exit(EXIT_ERROR)
            opts.run_path = Path(value)
        elif flag == "-n":
            opts.workers = _number(value, "invalid number of worker processes defined", log)
        elif flag == "-t":
            opts.ttl = _number(value, "invalid cache timeout", log)
        elif flag == "-h":
            sys.stderr.write(USAGE)
            raise _Exit(0)
        elif flag == "-v":
            sys.stderr.write(VERSION)
            raise _Exit(0)
        # -l (accept lock), -s (cache size in KB), -T (time-of-day checks): accepted, no effect
    if rest:
        sys.stderr.write(f"saslauthd: unexpected argument {rest[0]!r}\n{USAGE}")
        raise _Exit(EXIT_ERROR)
    if opts.mech is None:
        log.error_line("main", "no authentication mechanism specified")
        sys.stderr.write(USAGE)
        raise _Exit(EXIT_ERROR)
    return opts


def _number(value: str, message: str, log: SaslauthdLog) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        log.error_line("main", message)
        raise _Exit(EXIT_ERROR)
    return number


def main(config_dir: Path, argv: list[str]) -> int:
    log = SaslauthdLog(verbose="-d" in argv or "-V" in argv)
    try:
        opts = parse(argv, log)
        log.verbose = opts.verbose
        return _run(config_dir, opts, log)
    except _Exit as done:
        return done.code


def _userdb_default(config_dir: Path, log: SaslauthdLog) -> Path | None:
    from postillion.config import load_config
    from postillion.errors import ConfigError

    try:
        return load_config(config_dir).params().path("postillion_user_database")
    except ConfigError as exc:
        log.error_line("main", f"userdb: {exc}")
        raise _Exit(EXIT_ERROR) from None


def _run(config_dir: Path, opts: _Options, log: SaslauthdLog) -> int:
    assert opts.mech is not None
    mech = opts.mech.lower()
    if mech not in MECHANISMS:
        log.error_line("set_auth_mech", f"unknown authentication mechanism: {opts.mech}")
        return EXIT_ERROR
    userdb_path = _userdb_default(config_dir, log) if mech == "userdb" and not opts.option else None
    try:
        backend = make_backend(mech, opts.option, userdb_path=userdb_path)
    except (ValueError, OSError, ImportError) as exc:
        log.error_line("set_auth_mech", f"failed to initialize mechanism {mech}: {exc}")
        return EXIT_ERROR
    try:
        make_run_dir(opts.run_path)
    except OSError as exc:
        log.error_line("main", f"can not mkdir: {opts.run_path}: {exc.strerror}")
        log.error_line("main", "Check to make sure the parent directory exists and is")
        log.error_line("main", "writeable by the user this process runs as.")
        return EXIT_ERROR
    workers = opts.workers or ZERO_WORKERS
    log.debug_line("main", f"num_procs  : {opts.workers}")
    log.debug_line("main", f"mech_option: {opts.option if opts.option is not None else 'NULL'}")
    log.debug_line("main", f"run_path   : {opts.run_path}")
    log.debug_line("main", f"auth_mech  : {mech}")
    if opts.cache:
        log.debug_line("cache_init", f"timeout    : {opts.ttl} seconds")
    report = None if opts.debug else _detach(log)
    pid_file = PidFile(opts.run_path / PID_FILE)
    try:
        pid_file.acquire()
    except AlreadyRunningError as exc:
        log.error_line("detach_tty", str(exc))
        log.error_line("detach_tty", "Cannot start saslauthd")
        log.error_line("detach_tty", "Another instance of saslauthd is currently running"
                                + (f" (pid {exc.pid})" if exc.pid else ""))
        return _fail(report, EXIT_ALREADY_RUNNING if report is not None else EXIT_ERROR)
    except OSError as exc:
        log.error_line("detach_tty", f"could not open pid file {pid_file.path}: {exc.strerror}")
        return _fail(report, EXIT_ERROR)
    try:
        sock_path = opts.run_path / SOCKET_FILE
        try:
            sock = bind_socket(sock_path)
        except OSError as exc:
            log.error_line("ipc_init", f"could not bind to socket: {sock_path}")
            log.error_line("ipc_init", f"bind: {exc.strerror}")
            return _fail(report, EXIT_ERROR)
        cache = CredentialCache(opts.ttl) if opts.cache else None
        server = SaslauthdServer(backend, workers=workers, cache=cache,
                                 concat_realm=opts.concat_realm, log=log)
        try:
            asyncio.run(_serve(server, sock, sock_path, log, report))
        finally:
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
            log.debug_line("ipc_cleanup", f"socket removed: {sock_path}")
    finally:
        pid_file.release()
    log.info_line("server_exit", f"master exited: {os.getpid()}")
    return 0


async def _serve(server: SaslauthdServer, sock: object, sock_path: Path, log: SaslauthdLog,
                 report: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # Cyrus ignores SIGHUP
    await server.start(sock)  # type: ignore[arg-type]
    log.info_line("ipc_init", f"listening on socket: {sock_path}")
    log.info_line("detach_tty", f"master pid is: {os.getpid()}")
    if report is not None:
        _tell_parent(report, 0)
    try:
        await stop.wait()
    finally:
        await server.close()


def _detach(log: SaslauthdLog) -> int:
    """Fork into the background.  The parent waits for the child's start-up result and exits
    with it (so an init script sees "another instance" as exit 2); returns the child's pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        data = os.read(read_end, 1)
        code = data[0] if data else EXIT_ERROR
        if code:
            log.error_line("detach_tty", "Cannot start saslauthd")
            log.error_line("detach_tty", "Another instance of saslauthd is currently running"
                      if code == EXIT_ALREADY_RUNNING else "Check syslog for errors")
        os._exit(code)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    log.stderr = None  # from here on, syslog only (LOG_USE_STDERR cleared)
    return write_end


def _tell_parent(report: int, code: int) -> None:
    with contextlib.suppress(OSError):
        os.write(report, bytes([code]))
        os.close(report)


def _fail(report: int | None, code: int) -> int:
    if report is not None:
        _tell_parent(report, code)
    return code
