"""Our saslauthd: the "mux" socket server, its credential cache, run directory and pid file.

Owns: the server side of the saslauthd wire protocol (four counted strings in, one counted
string out, one request per connection), do_auth (realm concatenation for ``-r``, the cache,
calling the mechanism in a bounded thread pool, saslauthd's log lines), the ``-c`` cache, and
the files in the run directory (``mux`` socket mode 0777, ``saslauthd.pid`` with its lock).
Must not import: config, server, cli (the command line in ``cli.saslauthd`` builds the backend
and runs this).
Follows: cyrus-sasl 2.1.28 saslauthd/ipc_unix.c (do_request, send_no), saslauthd-main.c
(do_auth, the pid lock), cache.c (what is cached and its debug texts), utils.c (log format);
saslauthd(8).

Differences from Cyrus, on purpose: worker *threads* in one process instead of worker
processes (``-n``); the cache lives in memory and stores an HMAC-SHA256 of the password under a
per-process random key (Cyrus keeps an unsalted MD5 in an mmap file); a read timeout for clients
that connect and send nothing.  At most ``PENDING_PER_WORKER * -n`` accepted connections are held
at once (Cyrus's workers never accept more than they serve); beyond that we stop calling accept()
and further clients wait in the kernel's listen backlog, as they do for Cyrus, instead of in our
memory.  Requests are read before a worker thread is asked, so a silent client holds a connection
slot for at most the read timeout and never a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import hashlib
import hmac
import os
import socket
import stat
import struct
import sys
import syslog
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TextIO

from postillion.errors import AuthBackendError
from postillion.sasl.backends import Backend

MAX_REQ_LEN = 256  # saslauthd.h: longest login, password, service or realm
SOCKET_FILE = "mux"  # saslauthd.h SOCKET_FILE, inside the -m directory
PID_FILE = "saslauthd.pid"
SOCKET_BACKLOG = 32  # saslauthd.h SOCKET_BACKLOG
DEFAULT_RUN_PATH = "/var/run/saslauthd"  # Debian's PATH_SASLAUTHD_RUNDIR
DEFAULT_CACHE_TIMEOUT = 28800  # cache.h CACHE_DEFAULT_TIMEOUT (seconds)
DEFAULT_WORKERS = 5  # saslauthd-main.c num_procs
READ_TIMEOUT = 30.0  # ours: Cyrus waits forever for a silent client
WRITE_TIMEOUT = 30.0  # ours: a client that never reads its answer frees its slot after this
PENDING_PER_WORKER = 4  # ours: accepted connections held per worker before accept() pauses

# syslog priorities as Cyrus's logger() uses them (utils.h L_ERR/L_INFO/L_DEBUG)
L_ERR = syslog.LOG_ERR
L_INFO = syslog.LOG_INFO
L_DEBUG = syslog.LOG_DEBUG


class SaslauthdLog:
    """saslauthd's logger(): ``saslauthd[PID] :text`` on stderr while in the foreground, and
    ``saslauthd[PID]: function        : text`` to syslog (facility auth).  Debug lines only with
    ``verbose`` (-d / -V)."""

    def __init__(self, *, verbose: bool, stderr: TextIO | None = sys.stderr,
                 use_syslog: bool = True) -> None:
        self.verbose = verbose
        self.stderr = stderr
        self.use_syslog = use_syslog
        self._opened = False
        self._lock = threading.Lock()

    def log(self, priority: int, function: str, text: str) -> None:
        if priority == L_DEBUG and not self.verbose:
            return
        with self._lock:
            if self.stderr is not None:
                self.stderr.write(f"saslauthd[{os.getpid()}] :{text}\n")
                self.stderr.flush()
            if self.use_syslog:
                if not self._opened:
                    syslog.openlog("saslauthd", syslog.LOG_PID | syslog.LOG_NDELAY, syslog.LOG_AUTH)
                    self._opened = True
                syslog.syslog(priority, f"{function:<16}: {text}")

    def error_line(self, function: str, text: str) -> None:
        self.log(L_ERR, function, text)

    def info_line(self, function: str, text: str) -> None:
        self.log(L_INFO, function, text)

    def debug_line(self, function: str, text: str) -> None:
        self.log(L_DEBUG, function, text)


# --- the credential cache (-c, -t) ----------------------------------------------------------


class CacheLookup(Enum):
    FOUND = "found with valid passwd"
    WRONG = "found with invalid passwd, update pending"
    MISSING = "not found, update pending"


@dataclass(frozen=True)
class PendingEntry:
    """What cache_commit() stores if the mechanism says OK."""

    key: tuple[str, str, str]
    digest: bytes


class CredentialCache:
    """Successful logins per (login, realm, service), as saslauthd -c keeps them.

    Only successes are stored.  A different password for a cached name is checked by the
    mechanism (and replaces the entry if it succeeds); the old password keeps working from the
    cache until ``ttl`` seconds after it was stored, exactly as in Cyrus.  The password itself is
    never kept: only HMAC-SHA256 under a random key made at start-up.
    """

    def __init__(self, ttl: float = DEFAULT_CACHE_TIMEOUT, *, max_entries: int = 10266,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries  # Cyrus's default table holds 10266 buckets
        self._clock = clock
        self._secret = os.urandom(32)
        self._entries: OrderedDict[tuple[str, str, str], tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._secret, password.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).digest()

    def lookup(self, login: str, realm: str, service: str,
               password: str) -> tuple[CacheLookup, PendingEntry]:
        key = (login, realm, service)
        digest = self._digest(password)
        pending = PendingEntry(key, digest)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] + self.ttl <= self._clock():
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
                return CacheLookup.MISSING, pending
            if hmac.compare_digest(entry[0], digest):
                self.hits += 1
                return CacheLookup.FOUND, pending
            self.misses += 1
            return CacheLookup.WRONG, pending

    def commit(self, pending: PendingEntry) -> None:
        with self._lock:
            self._entries[pending.key] = (pending.digest, self._clock())
            self._entries.move_to_end(pending.key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


# --- the request ----------------------------------------------------------------------------

FIELDS = ("login", "password", "service", "realm")


@dataclass(frozen=True)
class Request:
    login: str
    password: str
    service: str
    realm: str


class _Refused(Exception):
    """The request is answered with NO before any mechanism sees it (send_no)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


async def read_request(reader: asyncio.StreamReader, log: SaslauthdLog) -> Request | None:
    """Four counted strings; None if the client went away mid-request (Cyrus just closes)."""
    values: list[str] = []
    for field in FIELDS:
        try:
            (count,) = struct.unpack("!H", await reader.readexactly(2))
            if count > MAX_REQ_LEN:
                log.error_line("do_request", f"{field} exceeded MAX_REQ_LEN: {MAX_REQ_LEN}")
                raise _Refused("")
            raw = await reader.readexactly(count)
        except asyncio.IncompleteReadError:
            return None
        # C strings in Cyrus: anything after a NUL is not seen by the mechanism.
        values.append(raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"))
    request = Request(*values)
    if not request.login:
        log.error_line("do_request", "NULL login received")
        raise _Refused("NULL login received")
    if not request.password:
        log.error_line("do_request", "NULL password received")
        raise _Refused("NULL password received")
    return request


def encode_response(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")[:1023]  # send_no's 1024-byte buffer
    return struct.pack("!H", len(raw)) + raw


# --- the server -----------------------------------------------------------------------------


class SaslauthdServer:
    """Answers mux requests with ``backend``; at most ``workers`` mechanism calls at a time."""

    def __init__(self, backend: Backend, *, workers: int = DEFAULT_WORKERS,
                 cache: CredentialCache | None = None, concat_realm: bool = False,
                 log: SaslauthdLog | None = None, read_timeout: float = READ_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, max_connections: int | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.concat_realm = concat_realm
        self.log = log or SaslauthdLog(verbose=False, stderr=None, use_syslog=False)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.workers = workers
        self.max_connections = max_connections or PENDING_PER_WORKER * workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="saslauthd")
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Accepted connections not yet closed (at most ``max_connections``)."""
        return len(self._connections)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read, authenticate, answer, close (ipc_unix.c do_request)."""
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    request = await read_request(reader, self.log)
            except _Refused as refused:
                await self._send(writer, f"NO {refused.text}")
                return
            except TimeoutError:
                return
            if request is None:
                return
            response = await self.do_auth(request)
            await self._send(writer, response)
        except OSError:
            pass  # the client hung up before reading its answer: nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, response: str) -> None:
        writer.write(encode_response(response))
        try:
            async with asyncio.timeout(self.write_timeout):
                await writer.drain()
        except TimeoutError:
            return
        # Cyrus's tx_rec() check compares with sizeof(count), so only 2-byte answers ("OK",
        # "NO") get this debug line; we keep that, so the two daemons' debug logs match.
        if len(response) == 2:
            self.log.debug_line("do_request", f"response: {response}")

    async def do_auth(self, request: Request) -> str:
        """saslauthd-main.c do_auth(): the answer text, with its log lines."""
        login = request.login
        if self.concat_realm and request.realm:
            login = f"{login}@{request.realm}"
        service, realm = request.service, request.realm
        pending = None
        response: str | None = None
        if self.cache is not None:
            found, pending = self.cache.lookup(login, realm, service, request.password)
            self.log.debug_line("cache_lookup",
                           f"[login={login}] [service={service}] [realm={realm}]: {found.value}")
            if found is CacheLookup.FOUND:
                response = "OK"
        cached = response is not None
        if response is None:
            response = await self._mechanism(login, request.password, service, realm)
        name = self.backend.name
        if response.startswith("OK"):
            if self.cache is not None and pending is not None and not cached:
                self.cache.commit(pending)
                self.log.debug_line("cache_commit", "lookup committed")
            if cached:
                self.log.debug_line("do_auth", f"auth success (cached): [user={login}] "
                                          f"[service={service}] [realm={realm}]")
            else:
                self.log.debug_line("do_auth", f"auth success: [user={login}] [service={service}] "
                                          f"[realm={realm}] [mech={name}]")
            return response
        if response.startswith("NO"):
            reason = response[3:] if len(response) >= 4 else "Unknown"
            self.log.info_line("do_auth", f"auth failure: [user={login}] [service={service}] "
                                     f"[realm={realm}] [mech={name}] [reason={reason}]")
            return response
        self.log.error_line("do_auth", f"mechanism returned unknown response: {name}")
        return "NO internal mechanism failure"

    async def _mechanism(self, login: str, password: str, service: str, realm: str) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, self.backend.authenticate, login, password, service, realm)
        except AuthBackendError as exc:
            self.log.error_line("do_auth", f"internal mechanism failure: {self.backend.name}: "
                                      f"{exc.detail}")
        except Exception as exc:  # noqa: BLE001 - the per-request boundary: answer NO, keep serving
            self.log.error_line("do_auth", f"internal mechanism failure: {self.backend.name}: "
                                      f"{type(exc).__name__}: {exc}")
        return "NO internal mechanism failure"

    async def start(self, sock: socket.socket) -> None:
        """Serve on an already bound and listening UNIX socket (see bind_socket)."""
        self._sock = sock
        self._accepting = asyncio.create_task(self._accept_loop(sock))

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.max_connections)
        while True:
            # Taking the slot before accept() is what leaves the surplus in the kernel backlog.
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and friends: keep the daemon up, retry shortly
                slots.release()
                self.log.error_line("ipc_accept", f"accept: {exc.strerror or exc}")
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._connection(conn))
            self._connections.add(task)

            def done(task: asyncio.Task[None]) -> None:
                self._connections.discard(task)
                slots.release()

            task.add_done_callback(done)

    async def _connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except OSError:
            conn.close()
            return
        await self.handle(reader, writer)

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- run directory, socket, pid file ----------------------------------------------------------


def make_run_dir(path: Path) -> bool:
    """Create the -m directory if missing, as Debian's package has it: root:sasl 0710 (group
    ``sasl`` when it exists, else 0755 so clients can reach the socket).  True if created."""
    if path.is_dir():
        return False
    path.mkdir(parents=True, mode=0o700)
    try:
        gid = grp.getgrnam("sasl").gr_gid
    except KeyError:
        path.chmod(0o755)
    else:
        os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
        path.chmod(0o710)
    return True


def bind_socket(path: Path) -> socket.socket:
    """The listening ``mux`` socket, mode 0777 (access is the directory's business)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o777)
        sock.listen(SOCKET_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AlreadyRunningError(Exception):
    def __init__(self, pid_file: Path, pid: int | None, strerror: str) -> None:
        super().__init__(f"could not lock pid file {pid_file}: {strerror}")
        self.pid_file = pid_file
        self.pid = pid
        self.strerror = strerror


class PidFile:
    """``DIR/saslauthd.pid``, holding an fcntl write lock for as long as we run.

    The lock (not the file's existence) says whether an instance runs, so a pid file left by a
    crash does not stop a restart.  Cyrus's saslauthd locks the same file the same way when it
    runs detached, so the two refuse to share a run directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # O_NOFOLLOW: a symlink planted in the run directory must not make root truncate its target
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raw = os.read(fd, 32)
            os.close(fd)
            pid = int(raw) if raw.strip().isdigit() else None
            raise AlreadyRunningError(self.path, pid, exc.strerror or str(exc)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing drops the lock
        self._fd = None
