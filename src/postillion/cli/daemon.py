"""``postillion start | stop | reload | status``: talking to the supervisor from the command line.

Owns: running the supervisor in the foreground or detaching it, and the signals and files the
other verbs use (pid file → SIGTERM / SIGHUP; status.json + worker files → the status table).
Must not import: server.worker (``worker_main`` is passed in by the dispatcher in cli.main).
Follows: postfix(1) and postfix-script: ``start``, ``stop``, ``reload``, ``status``, ``start-fg``,
and their messages (``the Postfix mail system is running: PID: N`` / ``is not running``),
with "postfix" spelled "postillion".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from postillion.errors import ConfigError
from postillion.server.runstate import RunPaths, read_json, read_running_pid
from postillion.server.supervisor import ALREADY_RUNNING, WorkerMain, run_supervisor

DETACHED_ENV = "POSTILLION_DETACHED"  # set for the background supervisor spawned by `start`
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # longer than the supervisor's own 10 s grace for its workers
NOT_RUNNING = "the postillion mail system is not running"
_COUNT_COLUMNS = (
    ("active", "sessions_active"), ("sessions", "sessions_total"),
    ("accepted", "messages_accepted"), ("auth-fail", "auth_failures"),
)


def _say(text: str) -> None:
    print(f"postillion: {text}", file=sys.stderr)


def _run_paths(config_dir: Path | str) -> RunPaths | None:
    """Where the running instance keeps its files.  Only main.cf is read: stop, reload and
    status must work while master.cf has a mistake in it."""
    from postillion.config.maincf import read_main_cf
    from postillion.config.params import Params

    config_dir = Path(config_dir)
    try:
        main = read_main_cf(config_dir / "main.cf")
        data_directory = Params(main.values, config_dir=config_dir).path("data_directory")
    except ConfigError as exc:
        _say(f"fatal: {exc.render()}")
        return None
    if data_directory is None:
        _say("fatal: parameter data_directory: empty value")
        return None
    return RunPaths.for_data_directory(data_directory)


def start(config_dir: Path | str, foreground: bool, worker_main: WorkerMain, *,
          command: Sequence[str] | None = None) -> int:
    """Run the supervisor (``foreground``) or start it in the background and wait until it
    serves.  ``command`` replaces ``python -m postillion -c DIR start --foreground`` (tests)."""
    if foreground:
        return run_supervisor(config_dir, worker_main, foreground=True,
                              detached=os.environ.get(DETACHED_ENV) == "1")
    run = _run_paths(config_dir)
    if run is None:
        return 1
    if read_running_pid(run.pid_file) is not None:
        _say(f"fatal: {ALREADY_RUNNING}")
        return 1
    argv = list(command) if command else [
        sys.executable, "-m", "postillion", "-c", os.path.abspath(config_dir), "start", "--foreground"]
    _say("starting the postillion mail system")
    # Until it is ready the child's stderr goes to an unlinked file we show if it dies;
    # then it lets go of stdio itself.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                                start_new_session=True, env={**os.environ, DETACHED_ENV: "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            status = read_json(run.status_file)
            if status is not None and status.get("pid") == proc.pid:
                return 0
            if proc.poll() is not None:
                errors.seek(0)
                sys.stderr.write(errors.read().decode("utf-8", "replace"))
                return 1
            time.sleep(0.05)
    _say(f"fatal: the supervisor (pid {proc.pid}) did not report ready within {START_TIMEOUT:g}s")
    return 1


def _running_supervisor(config_dir: Path | str) -> tuple[RunPaths, int] | None:
    """The run paths and supervisor pid, or None after saying why there is none."""
    run = _run_paths(config_dir)
    if run is None:
        return None
    pid = read_running_pid(run.pid_file)
    if pid is None:
        _say(f"fatal: {NOT_RUNNING}")
        return None
    return run, pid


def stop(config_dir: Path | str) -> int:
    """SIGTERM the supervisor and wait until it has released its pid file."""
    found = _running_supervisor(config_dir)
    if found is None:
        return 1
    run, pid = found
    _say("stopping the postillion mail system")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if read_running_pid(run.pid_file) is None:
            return 0
        time.sleep(0.05)
    _say(f"fatal: the supervisor (pid {pid}) did not stop within {STOP_TIMEOUT:g}s")
    return 1


def reload(config_dir: Path | str) -> int:
    """SIGHUP the supervisor; it checks the configuration and logs the outcome."""
    found = _running_supervisor(config_dir)
    if found is None:
        return 1
    _, pid = found
    _say("refreshing the postillion mail system")
    os.kill(pid, signal.SIGHUP)
    return 0


def status(config_dir: Path | str) -> int:
    """Print the supervisor, its listeners and workers; 0 running, 1 not running."""
    run = _run_paths(config_dir)
    if run is None:
        return 1
    pid = read_running_pid(run.pid_file)
    if pid is None:
        _say(NOT_RUNNING)
        return 1
    _say(f"the postillion mail system is running: PID: {pid}")
    data = read_json(run.status_file) or {}
    workers = []
    for w in data.get("workers", []):
        counts = read_json(run.worker_status(int(w["pid"]))) or {}
        workers.append((w, counts))
    sys.stdout.write(format_status(pid, data, workers, now=time.time()))
    return 0


def _uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def _address(listener: dict[str, Any]) -> str:
    host = str(listener.get("address", ""))
    return f"[{host}]:{listener.get('port')}" if ":" in host else f"{host}:{listener.get('port')}"


def format_status(pid: int, data: dict[str, Any], workers: list[tuple[dict[str, Any], dict[str, Any]]],
                  *, now: float) -> str:
    """The human-readable table ``postillion status`` prints (pure, for tests)."""
    lines = []
    started = data.get("started")
    uptime = _uptime(now - started) if isinstance(started, (int, float)) else "?"
    lines.append(f"supervisor  pid {pid}  uptime {uptime}  generation {data.get('generation', '?')}  "
                 f"configuration {data.get('config_directory', '?')}")
    listeners = data.get("listeners", [])
    width = max([len(str(entry.get("service", ""))) for entry in listeners] + [7])
    lines.append("listeners:")
    for entry in listeners:
        lines.append(f"  {str(entry.get('service', '')):<{width}}  {_address(entry)}")
    names = [name for name, _key in _COUNT_COLUMNS]
    swidth = max([len(str(w.get("service", ""))) for w, _ in workers] + [7])
    lines.append("workers:")
    lines.append(f"  {'pid':>7}  {'service':<{swidth}}  {'gen':>3}  {'uptime':>9}  "
                 + "  ".join(f"{n:>9}" for n in names))
    totals = [0] * len(_COUNT_COLUMNS)
    for w, counts in workers:
        values = []
        for i, (_name, key) in enumerate(_COUNT_COLUMNS):
            v = counts.get(key, 0)
            v = v if isinstance(v, int) else 0
            totals[i] += v
            values.append(v)
        w_started = w.get("started")
        w_up = _uptime(now - w_started) if isinstance(w_started, (int, float)) else "?"
        retiring = "  (stopping)" if w.get("retiring") else ""
        lines.append(f"  {w.get('pid', '?'):>7}  {str(w.get('service', '')):<{swidth}}  "
                     f"{w.get('generation', '?'):>3}  {w_up:>9}  "
                     + "  ".join(f"{v:>9}" for v in values) + retiring)
    lines.append(f"  {'total':>7}  {'':<{swidth}}  {'':>3}  {'':>9}  "
                 + "  ".join(f"{v:>9}" for v in totals))
    return "\n".join(lines) + "\n"
