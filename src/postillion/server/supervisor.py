"""The supervisor ("master"): listening sockets, forked worker processes, reload, stop.

Owns: which sockets each generation shares (binding is ``server.addresses``), how many workers
each service gets, the
fork → reset signals → close descriptors → drop privileges → ``worker_main`` sequence, restart
with throttling when a worker dies, generation-based reload (new workers first, then SIGTERM
to the old ones so in-flight sessions finish), orderly stop, the anvil service, and the
supervisor's status file, and the socket of the privileged local delivery service
(``private/local``, whose process alone keeps root).  The SMTP server inside a worker is not here: ``worker_main`` is
passed in (the composition root in ``cli`` supplies ``postillion.server.worker.worker_main``).
Must not import: cli, server.worker, smtp, sasl, policy, queue (keeps the fork path small).
Follows: Postfix master(8) and master_spawn.c: its log texts (``daemon started -- version X,
configuration DIR``, ``reload -- ...``, ``terminating on signal 15``, ``process PATH pid N exit
status S`` / ``killed by signal S``, ``PATH: bad command startup -- throttling``), SIGHUP = reload,
SIGTERM = stop.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postillion import __version__
from postillion.errors import ConfigError
from postillion.server.addresses import (
    Endpoint,
    bind_endpoint,
    bind_failure,
    endpoints_for,
    is_qmgr_service,
    is_smtpd_service,
)
from postillion.server.anvil import DEFAULT_RATE_TIME_UNIT, DEFAULT_STATUS_UPDATE_TIME, AnvilServer, AnvilState
from postillion.server.privileges import (
    MailOwner,
    drop_privileges,
    is_root,
    lookup_mail_owner,
    unreadable_for,
)
from postillion.server.proclog import LogSinks, ProcessLog
from postillion.server.runstate import (
    AlreadyRunningError,
    PidFile,
    RunPaths,
    remove_quietly,
    write_json_atomic,
)

if TYPE_CHECKING:
    from postillion.config import Configuration, Service

STOP_GRACE = 10.0  # seconds workers get to finish sessions on stop before SIGKILL
MIN_LIFETIME = 1.0  # a worker dying sooner is "failing too fast": at most one start per second
DEFAULT_THROTTLE = 60.0  # service_throttle_time: the longest restart delay
REPORT_INTERVAL = 1.0  # worker status files are rewritten at most once a second
DEFAULT_DAEMON_DIRECTORY = "/usr/libexec/postillion"
ALREADY_RUNNING = "the postillion mail system is already running"
_PR_SET_PDEATHSIG = 1
_SUPERVISOR_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)

WorkerLog = Callable[[str], None]


# --------------------------------------------------------------------- the worker contract


@dataclass(frozen=True)
class Listener:
    """One bound, listening, non-blocking socket of a master.cf service."""

    service: Service
    sock: socket.socket


@dataclass
class WorkerContext:
    """What a worker gets besides the configuration and its listeners.

    ``log`` writes ``<syslog_name>/smtpd[pid]: text`` lines; ``sinks`` is the destination it
    writes to (a ``maillog.LogSink``: ``emit(tag, text, pid=)``), inherited from the supervisor
    with ``maillog_file`` already open, because mail_owner may not be allowed to open it.
    ``foreground`` says whether lines also go to stderr."""

    generation: int
    anvil_path: Path | None
    status_path: Path
    log: WorkerLog
    service: str = ""
    sinks: LogSinks | None = None
    foreground: bool = False
    _counts: dict[str, Any] = field(default_factory=dict, repr=False)
    _last_write: float = field(default=float("-inf"), repr=False)
    _pending: asyncio.TimerHandle | None = field(default=None, repr=False)

    def report(self, **counts: Any) -> None:
        """Merge ``counts`` (sessions_active=…, messages_accepted=…) into the status file.

        Writes at most once per second; a later update inside that second is written when the
        second is over (if an event loop runs), so the file never stays behind for long."""
        self._counts.update(counts)
        now = time.monotonic()
        due = self._last_write + REPORT_INTERVAL
        if now >= due:
            self.flush()
            return
        if self._pending is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._pending = loop.call_later(due - now, self.flush)

    def flush(self) -> None:
        """Write the status file now."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._last_write = time.monotonic()
        data = {**self._counts, "pid": os.getpid(), "service": self.service,
                "generation": self.generation, "updated": time.time()}
        try:
            write_json_atomic(self.status_path, data)
        except OSError as exc:
            self.log(f"warning: cannot write {self.status_path}: {exc.strerror}")


WorkerMain = Callable[["Configuration", list[Listener], WorkerContext], int]


# --------------------------------------------------------------------- configuration checks


def load_checked(config_dir: Path) -> tuple[Configuration | None, list[str], list[str]]:
    """(configuration, error messages, warning messages), as ``postillion check`` renders them;
    the configuration is None when there is an error."""
    from postillion.config import check_config, load_config

    diagnostics = check_config(config_dir)
    errors = [d.render() for d in diagnostics if d.severity == "error"]
    warnings = [d.render() for d in diagnostics if d.severity != "error"]
    if errors:
        return None, errors, warnings
    try:
        return load_config(config_dir), [], warnings
    except ConfigError as exc:
        return None, [exc.render()], warnings


# --------------------------------------------------------------------- bookkeeping


@dataclass
class _Generation:
    number: int
    cfg: Configuration
    listeners: dict[str, list[Listener]]  # service name -> its sockets
    endpoints: dict[str, list[Endpoint]]


@dataclass(eq=False)
class _Slot:
    """One place for a worker of one service in one generation."""

    generation: _Generation
    service: Service
    index: int
    pid: int | None = None
    last_start: float = float("-inf")
    fast_failures: int = 0
    restart: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Worker:
    pid: int
    slot: _Slot
    started: float  # wall clock, for status
    started_mono: float
    endpoints: frozenset[Endpoint]
    retiring: bool = False


def describe_exit(status: int) -> tuple[str, bool]:
    """(Postfix's text for a wait status, whether it was a normal exit 0)."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}", False
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"exit status {code}", code == 0


# --------------------------------------------------------------------- the supervisor


class Supervisor:
    """Runs inside ``asyncio.run``; all state changes happen in loop callbacks (no threads)."""

    def __init__(
        self,
        *,
        config_dir: Path,
        cfg: Configuration,
        worker_main: WorkerMain,
        run: RunPaths,
        sinks: LogSinks,
        owner: MailOwner | None,
        detach_stdio: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_dir = config_dir
        self.cfg = cfg
        self.worker_main = worker_main
        self.run = run
        self.sinks = sinks
        self.owner = owner
        self._detach_stdio = detach_stdio
        self._clock = clock
        params = cfg.params()
        self.log = ProcessLog(sinks, params.get("syslog_name") or "postfix", "master")
        self._sockets: dict[Endpoint, socket.socket] = {}
        self._retired_sockets: dict[Endpoint, socket.socket] = {}
        self._workers: dict[int, _Worker] = {}
        self._slots: list[_Slot] = []
        self._generation: _Generation | None = None
        self._started = time.time()
        self._stop_signal: int | None = None
        self._stop_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.anvil: AnvilServer | None = None

    # ----------------------------------------------------------------- start and run

    async def main(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            generation = self._prepare_generation(self.cfg, 1)
        except ConfigError as exc:
            return self._fatal(exc.render())
        params = self.cfg.params()
        self.anvil = AnvilServer(
            AnvilState(_time_param(params, "anvil_rate_time_unit", DEFAULT_RATE_TIME_UNIT)),
            self.run.anvil_socket, log=ProcessLog(self.sinks, self.log.syslog_name, "anvil"),
            owner_uid=self.owner.uid if self.owner else None,
            owner_gid=self.owner.gid if self.owner else None,
            status_update_time=_time_param(params, "anvil_status_update_time",
                                           DEFAULT_STATUS_UPDATE_TIME),
        )
        try:
            await self.anvil.start()
        except OSError as exc:
            self._close_all_sockets()
            return self._fatal(f"bind {self.run.anvil_socket}: {exc.strerror}")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._request_stop, sig)
        self._loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._loop.add_signal_handler(signal.SIGCHLD, self._reap)
        if self._detach_stdio:
            _redirect_stdio_to_devnull()
        self._install_generation(generation)
        self.log(f"daemon started -- version {__version__}, configuration {self.config_dir}")
        self.write_status()
        poll = self._loop.create_task(self._poll_children())
        await self._stop_requested.wait()
        poll.cancel()
        await self._shutdown()
        return 0

    def _fatal(self, text: str) -> int:
        return _fatal(self.log, text)

    async def _poll_children(self) -> None:
        # SIGCHLD can coalesce or arrive while the handler is being installed; poll as well.
        while True:
            await asyncio.sleep(1.0)
            self._reap()

    # ----------------------------------------------------------------- generations

    def _prepare_generation(self, cfg: Configuration, number: int) -> _Generation:
        """Bind what ``cfg`` needs (reusing sockets already bound to the same address).
        On failure, closes only the sockets it bound itself and raises ConfigError."""
        new: dict[Endpoint, socket.socket] = {}
        listeners: dict[str, list[Listener]] = {}
        endpoints: dict[str, list[Endpoint]] = {}
        owner_of: dict[Endpoint, str] = {}
        try:
            for service in cfg.services:
                if is_qmgr_service(service):
                    listeners[service.name] = []  # a process without a listening socket
                    endpoints[service.name] = []
                    continue
                if _is_local_service(service):
                    if self.owner is None:
                        continue  # not root: local(8) runs inside the queue manager
                    endpoint, sock = self._local_listener(cfg, new)
                    listeners[service.name] = [Listener(service, sock)]
                    endpoints[service.name] = [endpoint]
                    continue
                if not is_smtpd_service(service):
                    continue
                params = cfg.params(service)
                listeners[service.name] = []
                endpoints[service.name] = []
                for endpoint, optional in endpoints_for(service, params):
                    if endpoint in owner_of:
                        raise ConfigError(f"{endpoint} is already used by service {owner_of[endpoint]}",
                                          path=getattr(service, "path", None), lineno=service.lineno,
                                          name=service.name, fix="give each service its own port")
                    sock = self._sockets.get(endpoint) or self._retired_sockets.get(endpoint) \
                        or new.get(endpoint)
                    if sock is None:
                        try:
                            sock = bind_endpoint(endpoint)
                        except OSError as exc:
                            if optional and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                                continue
                            raise bind_failure(service, endpoint, exc) from exc
                        new[endpoint] = sock
                    owner_of[endpoint] = service.name
                    listeners[service.name].append(Listener(service, sock))
                    endpoints[service.name].append(endpoint)
                if not listeners[service.name]:
                    raise ConfigError("no address to listen on", path=getattr(service, "path", None),
                                      lineno=service.lineno, name=service.name,
                                      fix="check inet_interfaces and inet_protocols")
        except BaseException:
            for sock in new.values():
                sock.close()
            raise
        for endpoint, sock in new.items():
            self._sockets[endpoint] = sock
        return _Generation(number, cfg, listeners, endpoints)

    def _local_listener(self, cfg: Configuration,
                        new: dict[Endpoint, socket.socket]) -> tuple[Endpoint, socket.socket]:
        """``$queue_directory/private/local``, bound as root and given to mail_owner;
        reused across reloads like the inet sockets."""
        from postillion.server.local_service import bind_local_socket, socket_path

        params = cfg.params()
        queue_directory = params.path("queue_directory") or Path(params.config_dir) / "spool"
        path = socket_path(queue_directory)
        endpoint = Endpoint(str(path), 0, socket.AF_UNIX)
        sock = self._sockets.get(endpoint) or self._retired_sockets.get(endpoint) \
            or new.get(endpoint)
        if sock is None:
            assert self.owner is not None
            try:
                sock = bind_local_socket(path, self.owner.uid, self.owner.gid)
            except OSError as exc:
                raise ConfigError(f"bind {path}: {exc.strerror}", name="local",
                                  fix="check the queue_directory permissions") from exc
            new[endpoint] = sock
        return endpoint, sock

    def _install_generation(self, generation: _Generation) -> None:
        """Make ``generation`` current: retire unused sockets, fork its workers."""
        self._generation = generation
        self.cfg = generation.cfg
        in_use = {e for eps in generation.endpoints.values() for e in eps}
        for endpoint in list(self._sockets):
            if endpoint not in in_use:
                self._retired_sockets[endpoint] = self._sockets.pop(endpoint)
        for endpoint in list(self._retired_sockets):
            if endpoint in in_use:
                self._sockets[endpoint] = self._retired_sockets.pop(endpoint)
        self._slots = []
        for service in generation.cfg.services:
            if service.name not in generation.listeners:
                continue
            for index in range(self._worker_count(generation.cfg, service)):
                self._slots.append(_Slot(generation, service, index))
        for slot in self._slots:
            self._spawn(slot)
        self._close_retired_sockets()

    def _worker_count(self, cfg: Configuration, service: Service) -> int:
        if is_qmgr_service(service) or _is_local_service(service):
            # exactly one queue manager; one local service, which forks per delivery
            return 1
        params = cfg.params(service)
        try:
            n = params.get_int("postillion_worker_processes")
        except ConfigError:
            n = 0
        if n <= 0:
            n = os.cpu_count() or 1
        maxproc = service.maxproc
        if maxproc == "-":
            try:
                maxproc = str(params.get_int("default_process_limit"))
            except ConfigError:
                maxproc = "0"
        if str(maxproc).isdigit() and int(maxproc) > 0:
            n = min(n, int(maxproc))
        return n

    def reload(self) -> None:
        """SIGHUP: new configuration → new generation; a bad one keeps the running generation."""
        if self._stop_signal is not None or self._generation is None:
            return
        current = self._generation.number
        cfg, errors, _warnings = load_checked(self.config_dir)
        owner = self.owner
        if cfg is not None and not errors and self.owner is not None:
            try:
                owner = lookup_mail_owner(cfg.params().get("mail_owner"), main_cf=cfg.main_cf)
            except ConfigError as exc:
                errors.append(exc.render())
        generation = None
        if cfg is not None and not errors:
            try:
                generation = self._prepare_generation(cfg, current + 1)
            except ConfigError as exc:
                errors.append(exc.render())
        if generation is None:
            for text in errors:
                self.log(f"error: {text}")
            self.log(f"error: reload of configuration {self.config_dir} failed; "
                     f"generation {current} keeps running")
            return
        self.owner = owner
        self.sinks.reopen()
        old_slots = self._slots
        for slot in old_slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
        old_workers = [w for w in self._workers.values() if not w.retiring]
        self._install_generation(generation)
        if self.anvil is not None:
            self.anvil.state.rate_time_unit = _time_param(cfg.params(), "anvil_rate_time_unit",
                                                          DEFAULT_RATE_TIME_UNIT)
        # New workers already accept on the shared sockets; now the old ones may go.
        for worker in old_workers:
            worker.retiring = True
            _kill(worker.pid, signal.SIGTERM)
        self.log(f"reload -- version {__version__}, configuration {self.config_dir}")
        self.write_status()

    # ----------------------------------------------------------------- workers

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stop_signal is not None or slot not in self._slots or slot.pid is not None:
            return
        listeners = slot.generation.listeners[slot.service.name]
        keep = {0, 1, 2, *(l.sock.fileno() for l in listeners), *self.sinks.fds()}
        # Blocked across fork(): a signal reaching the child before it resets its handlers
        # would otherwise be written into the supervisor's event-loop wakeup pipe.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        supervisor_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.log(f"warning: fork: {exc.strerror}")
            self._schedule_restart(slot, MIN_LIFETIME)
            return
        if pid == 0:
            self._child(slot, listeners, keep, old_mask, supervisor_pid)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        now = self._clock()
        slot.pid = pid
        slot.last_start = now
        self._workers[pid] = _Worker(pid, slot, time.time(), now,
                                     frozenset(slot.generation.endpoints[slot.service.name]))
        self.write_status()

    def _child(self, slot: _Slot, listeners: list[Listener], keep: set[int],
               old_mask: set[signal.Signals], supervisor_pid: int) -> None:
        status = 1
        log: WorkerLog = self.log
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            # Ctrl-C in a foreground terminal reaches the whole process group; the supervisor
            # alone decides how workers stop.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            # Objects inherited from the supervisor must never be finalized here: their
            # descriptors are closed below, and the numbers will be reused.
            gc.freeze()
            asyncio.events._set_running_loop(None)
            asyncio.set_event_loop_policy(None)
            self.sinks.prepare_child()
            _close_fds_except(keep)
            params = slot.generation.cfg.params(slot.service)
            log = ProcessLog(self.sinks, params.get("syslog_name") or "postfix",
                             os.path.basename(slot.service.command) or "smtpd")
            if self.owner is not None and not _stays_root(slot.service):
                drop_privileges(self.owner)
            _set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != supervisor_pid:
                os._exit(0)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            ctx = WorkerContext(
                generation=slot.generation.number,
                anvil_path=self.run.anvil_socket if self.anvil is not None else None,
                status_path=self.run.worker_status(os.getpid()),
                log=log,
                service=slot.service.name,
                sinks=self.sinks,
                foreground=self.sinks.writes_stderr,
            )
            status = int(self.worker_main(slot.generation.cfg, list(listeners), ctx) or 0)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # the worker must never return into the supervisor's loop
            try:
                log(f"fatal: {type(exc).__name__}: {exc}")
                for line in traceback.format_exc().rstrip().splitlines():
                    log(f"fatal: {line}")
            except BaseException:
                pass
            status = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status & 0xFF)

    def _process_path(self, service: Service) -> str:
        directory = self.cfg.params().get("daemon_directory") or DEFAULT_DAEMON_DIRECTORY
        return f"{directory.rstrip('/')}/{service.command}"

    def _reap(self) -> None:
        changed = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            changed = True
            remove_quietly(self.run.worker_status(pid))
            self._worker_exited(worker, status)
        if changed:
            self._close_retired_sockets()
            self.write_status()

    def _worker_exited(self, worker: _Worker, status: int) -> None:
        slot = worker.slot
        if slot.pid == worker.pid:
            slot.pid = None
        text, normal = describe_exit(status)
        path = self._process_path(slot.service)
        if worker.retiring:
            if not normal and not (os.WIFSIGNALED(status)
                                   and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGKILL)):
                self.log(f"warning: process {path} pid {worker.pid} {text}")
            return
        if not normal:
            self.log(f"warning: process {path} pid {worker.pid} {text}")
        if self._stop_signal is not None or slot not in self._slots:
            return
        lifetime = self._clock() - worker.started_mono
        if lifetime < MIN_LIFETIME:
            slot.fast_failures += 1
            limit = _time_param(slot.generation.cfg.params(), "service_throttle_time", DEFAULT_THROTTLE)
            delay = min(MIN_LIFETIME * 2 ** (slot.fast_failures - 1), limit)
            self.log(f"warning: {path}: bad command startup -- throttling")
        else:
            slot.fast_failures = 0
            delay = 0.0
        self._schedule_restart(slot, delay)

    def _schedule_restart(self, slot: _Slot, delay: float) -> None:
        assert self._loop is not None
        if delay <= 0:
            self._spawn(slot)
        else:
            slot.restart = self._loop.call_later(delay, self._spawn, slot)

    def _close_retired_sockets(self) -> None:
        """Close sockets no generation uses once no worker holding them is left."""
        held = {e for w in self._workers.values() for e in w.endpoints}
        for endpoint in list(self._retired_sockets):
            if endpoint not in held:
                _close_socket(endpoint, self._retired_sockets.pop(endpoint))

    # ----------------------------------------------------------------- stop

    def _request_stop(self, signum: int) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
            assert self._stop_requested is not None
            self._stop_requested.set()

    async def _shutdown(self) -> None:
        self.log(f"terminating on signal {self._stop_signal}")
        for slot in self._slots:
            if slot.restart is not None:
                slot.restart.cancel()
        for worker in self._workers.values():
            worker.retiring = True
            _kill(worker.pid, signal.SIGTERM)
        self.write_status(state="stopping")
        deadline = self._clock() + STOP_GRACE
        while self._workers and self._clock() < deadline:
            await asyncio.sleep(0.05)
            self._reap()
        for worker in list(self._workers.values()):
            self.log(f"warning: process {self._process_path(worker.slot.service)} pid {worker.pid} "
                     f"did not exit within {STOP_GRACE:g}s; killing it")
            _kill(worker.pid, signal.SIGKILL)
        while self._workers:
            try:
                pid, _status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._workers.pop(pid, None)
            remove_quietly(self.run.worker_status(pid))
        self._close_all_sockets()
        if self.anvil is not None:
            await self.anvil.close()
        remove_quietly(self.run.status_file)

    def _close_all_sockets(self) -> None:
        for endpoint, sock in [*self._sockets.items(), *self._retired_sockets.items()]:
            _close_socket(endpoint, sock)
        self._sockets.clear()
        self._retired_sockets.clear()

    # ----------------------------------------------------------------- status

    def write_status(self, *, state: str = "running") -> None:
        generation = self._generation
        listeners = []
        if generation is not None:
            for name, endpoints in generation.endpoints.items():
                listeners += [{"service": name, "address": e.host, "port": e.port}
                              for e in endpoints if e.family != socket.AF_UNIX]
        workers = [
            {"pid": w.pid, "service": w.slot.service.name, "generation": w.slot.generation.number,
             "started": w.started, "retiring": w.retiring}
            for w in sorted(self._workers.values(), key=lambda w: w.pid)
        ]
        data = {
            "pid": os.getpid(), "version": __version__, "config_directory": str(self.config_dir),
            "started": self._started, "generation": generation.number if generation else 0,
            "state": state, "listeners": listeners, "workers": workers,
            "anvil": str(self.run.anvil_socket),
        }
        try:
            write_json_atomic(self.run.status_file, data)
        except OSError as exc:
            self.log(f"warning: cannot write {self.run.status_file}: {exc.strerror}")


# --------------------------------------------------------------------- process helpers


def _fatal(log: ProcessLog, text: str) -> int:
    """Log a start-up failure; also on stderr when the log does not go there. Returns 1."""
    log(f"fatal: {text}")
    if not log.sinks.writes_stderr:
        print(f"postillion: fatal: {text}", file=sys.stderr)
    return 1


def _is_local_service(service: Service) -> bool:
    """master.cf ``local unix - n n - - local``: the privileged local delivery service."""
    return service.type == "unix" and os.path.basename(service.command) == "local"


def _stays_root(service: Service) -> bool:
    """Only local(8) keeps root (unpriv = n), to switch to each recipient's rights."""
    return _is_local_service(service) and service.unpriv == "n"


def _close_socket(endpoint: Endpoint, sock: socket.socket) -> None:
    sock.close()
    if endpoint.family == socket.AF_UNIX:
        from postillion.server.local_service import remove_local_socket

        # never through a symlink mail_owner may have put in place of private/
        remove_local_socket(endpoint.host)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _time_param(params: Any, name: str, default: float) -> float:
    if not params.get(name):
        return default
    try:
        return float(params.get_time(name))
    except ConfigError:
        return default


def _close_fds_except(keep: set[int]) -> None:
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, os.sysconf("SC_OPEN_MAX")))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _set_parent_death_signal(sig: int) -> None:
    """Linux: get ``sig`` when the supervisor dies, so no worker outlives it unnoticed.
    Must follow setuid(), which clears it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _redirect_stdio_to_devnull() -> None:
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


# --------------------------------------------------------------------- entry point


def run_supervisor(config_dir: Path | str, worker_main: WorkerMain, *, foreground: bool,
                   detached: bool = False) -> int:
    """Check, lock, bind, fork, and serve until SIGTERM.  0 after a clean stop, 1 on a fatal
    start-up error (printed on stderr).  ``detached``: started by ``postillion start`` in the
    background; logs do not go to stderr and stdio is let go once the daemon runs."""
    config_dir = Path(os.path.abspath(config_dir))
    cfg, errors, warnings = load_checked(config_dir)
    # The same lines `postillion check` prints.
    for text in warnings:
        print(f"postillion: warning: {text}", file=sys.stderr)
    if cfg is None or errors:
        for text in errors:
            print(f"postillion: error: {text}", file=sys.stderr)
        return 1
    params = cfg.params()
    try:
        sinks = log_sinks(params, stderr=foreground and not detached)
    except OSError as exc:
        print(f"postillion: fatal: open {params.get('maillog_file')}: {exc.strerror}", file=sys.stderr)
        return 1
    log = ProcessLog(sinks, params.get("syslog_name") or "postfix", "master")

    def fatal(text: str) -> int:
        return _fatal(log, text)

    owner: MailOwner | None = None
    if is_root():
        try:
            owner = lookup_mail_owner(params.get("mail_owner"), main_cf=cfg.main_cf)
        except ConfigError as exc:
            return fatal(exc.render())
        import postillion

        problem = unreadable_for(
            owner, [Path(sys.base_prefix), Path(sys.prefix), Path(postillion.__file__).parent]
        )
        if problem:
            return fatal(problem)
    else:
        log(f"not running as root: worker processes keep user ID {os.getuid()} "
            f"(mail_owner {params.get('mail_owner')} is used only when started as root)")
    data_directory = params.path("data_directory")
    if data_directory is None:
        return fatal("parameter data_directory: empty value")
    run = RunPaths.for_data_directory(data_directory)
    try:
        run.create(owner_uid=owner.uid if owner else None, owner_gid=owner.gid if owner else None)
    except OSError as exc:
        return fatal(f"create directory {run.run_dir}: {exc.strerror}")
    pid_file = PidFile(run.pid_file)
    try:
        pid_file.acquire()
    except AlreadyRunningError:
        print(f"postillion: fatal: {ALREADY_RUNNING}", file=sys.stderr)
        return 1
    except OSError as exc:
        return fatal(f"open lock file {run.pid_file}: {exc.strerror}")
    try:
        for stale in run.workers_dir.glob("worker-*.json"):
            remove_quietly(stale)
        supervisor = Supervisor(config_dir=config_dir, cfg=cfg, worker_main=worker_main, run=run,
                                sinks=sinks, owner=owner, detach_stdio=detached)
        return asyncio.run(supervisor.main())
    finally:
        pid_file.release()
        sinks.close()


def log_sinks(params: Any, *, stderr: bool = False) -> LogSinks:
    """Where main.cf sends log lines (maillog_file, syslog); OSError when the file cannot be
    opened.  Also for commands that log like Postfix's postsuper."""
    # Postfix's postlogd writes the first label of $myhostname, not the kernel's host name.
    return LogSinks(stderr=stderr, maillog_file=params.path("maillog_file"),
                    hostname=(params.get("myhostname").split(".")[0] or None),
                    syslog_also=_bool_param(params, "postillion_syslog_enable"),
                    facility=params.get("syslog_facility") or "mail")


def _bool_param(params: Any, name: str) -> bool:
    try:
        return bool(params.get_bool(name))
    except ConfigError:
        return False

