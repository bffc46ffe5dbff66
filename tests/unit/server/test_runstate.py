"""Pid-file locking, the log line format, and the status table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postillion.cli.daemon import format_status
from postillion.server.proclog import LogSinks, ProcessLog, syslog_timestamp
from postillion.server.runstate import AlreadyRunningError, PidFile, read_running_pid


def test_pid_file_is_locked_while_held(tmp_path: Path) -> None:
    path = tmp_path / "master.pid"
    held = PidFile(path)
    held.acquire()
    assert path.read_text() == f"{os.getpid():>32}\n"
    assert read_running_pid(path) == os.getpid()
    with pytest.raises(AlreadyRunningError):
        PidFile(path).acquire()
    held.release()
    assert not path.exists()
    assert read_running_pid(path) is None


def test_stale_pid_file_is_not_a_running_supervisor(tmp_path: Path) -> None:
    path = tmp_path / "master.pid"
    # A supervisor killed with -9 leaves its pid file behind, unlocked.
    subprocess.run([sys.executable, "-c",
                    "import sys; from pathlib import Path; from postillion.server.runstate import PidFile; "
                    "PidFile(Path(sys.argv[1])).acquire()", str(path)], check=True)
    assert path.exists()
    assert read_running_pid(path) is None
    fresh = PidFile(path)
    fresh.acquire()
    fresh.release()


def test_log_line_format_in_maillog_file(tmp_path: Path) -> None:
    sinks = LogSinks(maillog_file=tmp_path / "maillog", syslog=False, hostname="mail")
    ProcessLog(sinks, "postfix", "master")("daemon started -- version 0.1.0, configuration /etc/x")
    sinks.close()
    line = (tmp_path / "maillog").read_text()
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d mail "
                        rf"postfix/master\[{os.getpid()}\]: "
                        r"daemon started -- version 0\.1\.0, configuration /etc/x\n", line)


def test_syslog_timestamp_pads_the_day_with_a_space() -> None:
    assert syslog_timestamp(time.mktime((2024, 11, 5, 8, 13, 40, 0, 0, -1))) == "Nov  5 08:13:40"


def test_status_table() -> None:
    data = {"started": 1000.0, "generation": 2, "config_directory": "/etc/postillion",
            "listeners": [{"service": "submission", "address": "127.0.0.1", "port": 587},
                          {"service": "submission", "address": "::1", "port": 587}]}
    workers = [({"pid": 41, "service": "submission", "generation": 2, "started": 1010.0},
                {"sessions_active": 1, "sessions_total": 7, "messages_accepted": 3, "auth_failures": 2}),
               ({"pid": 40, "service": "submission", "generation": 1, "started": 1000.0, "retiring": True},
                {"sessions_active": 1, "sessions_total": 5})]
    assert format_status(12, data, workers, now=4723.0) == (
        "supervisor  pid 12  uptime 1:02:03  generation 2  configuration /etc/postillion\n"
        "listeners:\n"
        "  submission  127.0.0.1:587\n"
        "  submission  [::1]:587\n"
        "workers:\n"
        "      pid  service     gen     uptime     active   sessions   accepted  auth-fail\n"
        "       41  submission    2    1:01:53          1          7          3          2\n"
        "       40  submission    1    1:02:03          1          5          0          0  (stopping)\n"
        "    total                                      2         12          3          2\n"
    )
