"""The supervisor as real processes: a foreground ``postillion start`` running a stand-in worker
(tests/integration/supervisor_stub.py) on a free 127.0.0.1 port.

Each test waits for log lines or status files, never for fixed times.  As root, workers must run
as a throwaway mail_owner (``postillion-test``, created here); as another user there is no drop
and the privilege test is skipped.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postillion.cli import daemon
from postillion.server.runstate import RunPaths, read_json

STUB = Path(__file__).with_name("supervisor_stub.py")
TEST_USER = "postillion-test"
TEST_GROUP = "postillion-tgrp"  # a supplementary group of TEST_USER, like "sasl" for saslauthd
ROOT = os.geteuid() == 0
TIMEOUT = 15.0


def _ensure_test_user() -> pwd.struct_passwd:
    try:
        grp.getgrnam(TEST_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", TEST_GROUP], check=True)
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], check=True)
    if TEST_USER not in grp.getgrnam(TEST_GROUP).gr_mem:
        subprocess.run(["usermod", "-a", "-G", TEST_GROUP, TEST_USER], check=True)
    return pwd.getpwnam(TEST_USER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """A config directory and (once started) the foreground supervisor running it."""

    def __init__(self, base: Path, port: int, *, workers: int = 2) -> None:
        self.base = base
        self.conf = base / "conf"
        self.conf.mkdir()
        self.port = port
        self.run = RunPaths.for_data_directory(base / "data")
        self.write_config(port=port, workers=workers)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def write_config(self, *, port: int, workers: int, extra_master: str = "") -> None:
        owner = f"mail_owner = {TEST_USER}\n" if ROOT else ""
        (self.conf / "main.cf").write_text(
            f"data_directory = {self.base / 'data'}\n{owner}"
            f"postillion_worker_processes = {workers}\n")
        (self.conf / "master.cf").write_text(
            f"127.0.0.1:{port} inet n - n - - smtpd\n{extra_master}")

    def start(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(STUB), str(self.conf)], stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_log(r"postfix/master\[\d+\]: daemon started -- version \S+, configuration "
                      + re.escape(str(self.conf)))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_log(self, pattern: str, *, start: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if m := re.search(pattern, line):
                        return m
                if time.monotonic() > deadline:
                    raise AssertionError(f"no log line matching {pattern!r} in:\n" + "\n".join(self.lines))
                self._cond.wait(0.2)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def status(self) -> dict[str, Any]:
        data = read_json(self.run.status_file)
        assert data is not None
        return data

    def worker_pids(self, generation: int | None = None) -> set[int]:
        return {w["pid"] for w in self.status()["workers"]
                if generation is None or w["generation"] == generation}

    def wait_for(self, predicate: Any, what: str) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; log:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Client:
    """One connection; ``hello`` is the worker's ``pid generation uid gids`` line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rwb", buffering=0)
        fields = self.file.readline().decode().split()
        self.pid, self.generation, self.uid = int(fields[0]), int(fields[1]), int(fields[2])
        self.gids = {int(g) for g in fields[3].split(",")} if len(fields) > 3 else set()

    def ask(self, line: str) -> str:
        self.file.write(line.encode() + b"\n")
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        try:
            self.file.write(b"quit\n")
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700 root, and workers run as mail_owner.
    path = Path(tempfile.mkdtemp(prefix="postillion-sup-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def inst(base: Path) -> Iterator[Instance]:
    if ROOT:
        _ensure_test_user()
    instance = Instance(base, free_port())
    yield instance
    instance.stop()


def test_start_binds_forks_and_reports_status(inst: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    inst.start()
    status = inst.status()
    assert status["pid"] == inst.proc.pid
    assert status["generation"] == 1
    assert status["listeners"] == [{"service": f"127.0.0.1:{inst.port}", "address": "127.0.0.1",
                                    "port": inst.port}]
    workers = inst.worker_pids(1)
    assert len(workers) == 2
    assert int(inst.run.pid_file.read_text()) == inst.proc.pid

    c = Client(inst.port)
    assert c.pid in workers
    assert c.generation == 1
    assert c.ask("hello") == "echo hello"
    # The worker reports through WorkerContext.report into its own status file.
    report = inst.wait_for(lambda: read_json(inst.run.worker_status(c.pid)), "worker status file")
    assert report["sessions_total"] == 1
    assert report["generation"] == 1
    c.close()

    assert daemon.status(inst.conf) == 0
    out, err = capsys.readouterr()
    assert f"postillion: the postillion mail system is running: PID: {inst.proc.pid}" in err
    assert f"  127.0.0.1:{inst.port}  127.0.0.1:{inst.port}" in out
    assert f"{c.pid}  127.0.0.1:{inst.port}    1" in out


def test_worker_reaches_anvil_through_the_private_socket(inst: Instance) -> None:
    inst.start()
    assert (inst.run.anvil_socket.stat().st_mode & 0o777) == 0o600
    c = Client(inst.port)
    assert c.ask("anvil") == "anvil 1 1 1"
    c.close()


def test_second_start_is_refused(inst: Instance) -> None:
    inst.start()
    second = subprocess.run([sys.executable, str(STUB), str(inst.conf)], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert second.returncode == 1
    assert second.stderr == "postillion: fatal: the postillion mail system is already running\n"
    assert inst.proc.poll() is None


def test_bind_conflict_names_the_service_and_address(inst: Instance) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", inst.port))
        squatter.listen()
        result = subprocess.run([sys.executable, str(STUB), str(inst.conf)], capture_output=True,
                                text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert (f"postfix/master[{result.stderr.split('[')[1].split(']')[0]}]: fatal: "
            f"{inst.conf / 'master.cf'}:1: 127.0.0.1:{inst.port}: bind 127.0.0.1 port {inst.port}: "
            "Address already in use; ") in result.stderr
    assert not inst.run.pid_file.exists()


def test_killed_worker_is_replaced(inst: Instance) -> None:
    inst.start()
    victim = min(inst.worker_pids())
    mark = inst.mark()
    os.kill(victim, signal.SIGKILL)
    inst.wait_log(rf"postfix/master\[\d+\]: warning: process /usr/libexec/postillion/smtpd "
                  rf"pid {victim} killed by signal 9", start=mark)
    workers = inst.wait_for(lambda: (w := inst.worker_pids()) and len(w) == 2 and victim not in w and w,
                            "a replacement worker")
    for _ in range(4):
        c = Client(inst.port)
        assert c.pid in workers
        c.close()


def test_worker_failing_at_startup_is_throttled(inst: Instance) -> None:
    marker = inst.base / "fail"
    inst.start(env={"STUB_FAIL_AT_START": str(marker)})
    marker.touch()
    victim = min(inst.worker_pids())
    mark = inst.mark()
    os.kill(victim, signal.SIGKILL)
    inst.wait_log(r"warning: process /usr/libexec/postillion/smtpd pid \d+ exit status 3", start=mark)
    inst.wait_log(r"warning: /usr/libexec/postillion/smtpd: bad command startup -- throttling",
                  start=mark)
    marker.unlink()
    inst.wait_for(lambda: len(inst.worker_pids()) == 2 and victim not in inst.worker_pids(),
                  "a healthy replacement after throttling")
    Client(inst.port).close()


def test_reload_lets_open_sessions_finish_on_the_old_generation(inst: Instance) -> None:
    inst.start()
    old_workers = inst.worker_pids(1)
    held = Client(inst.port)
    assert held.generation == 1
    inst.write_config(port=inst.port, workers=1)
    mark = inst.mark()
    assert daemon.reload(inst.conf) == 0
    inst.wait_log(r"postfix/master\[\d+\]: reload -- version \S+, configuration "
                  + re.escape(str(inst.conf)), start=mark)
    assert inst.status()["generation"] == 2
    new_workers = inst.worker_pids(2)
    assert len(new_workers) == 1
    assert not new_workers & old_workers

    # The idle old worker goes; the one holding a session stays until the session ends.
    inst.wait_for(lambda: inst.worker_pids(1) == {held.pid}, "the idle old worker to exit")
    for _ in range(3):
        fresh = Client(inst.port)
        assert (fresh.pid, fresh.generation) == (min(new_workers), 2)
        fresh.close()
    assert held.ask("still there") == "echo still there"
    held.close()
    inst.wait_for(lambda: not inst.worker_pids(1), "the last old worker to exit")
    assert f"pid {held.pid}" not in "\n".join(inst.lines[mark:])  # no warning: a clean exit


def test_reload_moves_a_listener_and_closes_the_old_port(inst: Instance) -> None:
    inst.start()
    new_port = free_port()
    inst.write_config(port=new_port, workers=1)
    mark = inst.mark()
    assert daemon.reload(inst.conf) == 0
    inst.wait_log(r"reload -- version", start=mark)
    assert Client(new_port).generation == 2
    inst.wait_for(lambda: not inst.worker_pids(1), "the old workers to exit")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", inst.port), timeout=TIMEOUT)
    assert inst.status()["listeners"] == [
        {"service": f"127.0.0.1:{new_port}", "address": "127.0.0.1", "port": new_port}]


def test_reload_with_a_broken_configuration_keeps_the_old_generation(inst: Instance) -> None:
    inst.start()
    workers = inst.worker_pids(1)
    (inst.conf / "master.cf").write_text(f"127.0.0.1:{inst.port} inet n - n - lots smtpd\n")
    mark = inst.mark()
    assert daemon.reload(inst.conf) == 0
    inst.wait_log(r"postfix/master\[\d+\]: error: .*master\.cf:1: .*maxproc", start=mark)
    inst.wait_log(rf"error: reload of configuration {re.escape(str(inst.conf))} failed; "
                  r"generation 1 keeps running", start=mark)
    assert inst.status()["generation"] == 1
    assert inst.worker_pids() == workers
    c = Client(inst.port)
    assert (c.generation, c.pid in workers) == (1, True)
    c.close()


def test_stop_terminates_workers_and_removes_the_pid_file(inst: Instance,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    inst.start()
    workers = inst.worker_pids()
    assert daemon.stop(inst.conf) == 0
    assert inst.proc.wait(TIMEOUT) == 0
    inst.wait_log(r"postfix/master\[\d+\]: terminating on signal 15")
    assert not inst.run.pid_file.exists()
    assert not inst.run.status_file.exists()
    assert not inst.run.anvil_socket.exists()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    capsys.readouterr()
    assert daemon.status(inst.conf) == 1
    assert capsys.readouterr().err == "postillion: the postillion mail system is not running\n"
    assert daemon.stop(inst.conf) == 1


def test_start_in_the_background_returns_once_serving(inst: Instance) -> None:
    rc = daemon.start(inst.conf, False, lambda *a: 1,
                      command=[sys.executable, str(STUB), str(inst.conf)])
    assert rc == 0
    try:
        pid = inst.status()["pid"]
        os.kill(pid, 0)
        assert os.getsid(pid) == pid  # its own session, away from our terminal
        Client(inst.port).close()
    finally:
        assert daemon.stop(inst.conf) == 0
    assert not inst.run.pid_file.exists()


def test_background_start_shows_why_it_failed(inst: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    (inst.conf / "master.cf").write_text(f"127.0.0.1:{inst.port} inet n - n - lots smtpd\n")
    rc = daemon.start(inst.conf, False, lambda *a: 1,
                      command=[sys.executable, str(STUB), str(inst.conf)])
    assert rc == 1
    assert "maxproc" in capsys.readouterr().err


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="privilege drop needs root")
def test_workers_run_as_mail_owner_with_its_groups(inst: Instance) -> None:
    user = _ensure_test_user()
    inst.start()
    assert _uids(inst.proc.pid) == [0, 0, 0, 0]
    c = Client(inst.port)
    assert c.uid == user.pw_uid
    assert c.gids == {user.pw_gid, grp.getgrnam(TEST_GROUP).gr_gid}
    for pid in inst.worker_pids():
        assert _uids(pid) == [user.pw_uid] * 4
        assert _gids(pid) == [user.pw_gid] * 4
    assert inst.run.workers_dir.stat().st_uid == user.pw_uid
    assert inst.run.run_dir.stat().st_uid == 0
    c.close()


def _proc_status_field(pid: int, name: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError(name)


def _uids(pid: int) -> list[int]:
    return _proc_status_field(pid, "Uid")


def _gids(pid: int) -> list[int]:
    return _proc_status_field(pid, "Gid")
