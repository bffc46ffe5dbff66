"""The process model under real load: a worker killed with SIGKILL while another worker holds
a session, `postillion reload` with a session in progress, and `postillion status`.

One server with two workers per service; connections are plain SMTP on port 25 from
127.0.0.1 (in mynetworks, so relaying to example.org is permitted).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator

import pytest
from harness import HOSTNAME, Server, Wire, cleanup, make_server, postillion

HELO = "client.example.test"
BANNER = f"220 {HOSTNAME} ESMTP Postfix"
QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{6,})")


@pytest.fixture(scope="module")
def procs() -> Iterator[Server]:
    server = make_server(workers=2)
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


@pytest.fixture
def srv(procs: Server) -> Server:
    procs.settle()
    procs.wait_for_workers()
    return procs


def smtp_service(srv: Server) -> str:
    return f"127.0.0.1:{srv.ports['smtp']}"


def open_session(srv: Server, banner: str = BANNER) -> tuple[Wire, int]:
    """A session on port 25 after EHLO, and the pid of the worker serving it."""
    mark = srv.mark()
    w = Wire(srv.ports["smtp"])
    assert w.reply() == banner
    pid = int(srv.wait_for_log(r"postfix/smtpd\[(\d+)\]: connect from localhost", start=mark).group(1))
    assert w.cmd(f"EHLO {HELO}").endswith("250 CHUNKING")
    return w, pid


def send_message(w: Wire, subject: str) -> str:
    assert w.cmd("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
    assert w.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    assert w.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    m = QUEUED.fullmatch(w.cmd(f"Subject: {subject}\r\n\r\nbody\r\n."))
    assert m
    return m.group(1)


def test_killed_worker_is_restarted_and_others_keep_serving(srv: Server) -> None:
    w, serving = open_session(srv)
    with w:
        pids = srv.worker_pids(smtp_service(srv))
        assert serving in pids and len(pids) == 2
        victim = next(pid for pid in pids if pid != serving)
        mark = srv.mark()
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(
            rf"postfix/master\[{srv.proc.pid}\]: warning: process \S+/smtpd pid {victim} killed by signal 9$",
            start=mark,
        )
        # The session on the other worker is not disturbed.
        queue_id = send_message(w, "survivor")
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
    assert queue_id in srv.queue_ids()
    srv.wait_for_workers(exclude={victim})
    replacement = set(srv.worker_pids(smtp_service(srv))) - set(pids)
    assert len(replacement) == 1 and set(srv.worker_pids(smtp_service(srv))) == {serving, *replacement}
    # New connections work; several at once, so both workers get some.
    sessions = [open_session(srv) for _ in range(4)]
    for w, _pid in sessions:
        send_message(w, "after restart")
        assert w.cmd("QUIT") == "221 2.0.0 Bye"
        w.close()
    assert {pid for _w, pid in sessions} <= {serving, *replacement}


def test_reload_lets_sessions_finish_and_applies_new_config(srv: Server) -> None:
    old, old_pid = open_session(srv)
    with old:
        assert old.cmd("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
        mark = srv.mark()
        srv.postconf("smtpd_banner=$myhostname ESMTP reloaded")
        try:
            result = postillion(srv.config_dir, "reload")
            assert (result.returncode, result.stderr, result.stdout) == (
                0, "postillion: refreshing the postillion mail system\n", "")
            srv.wait_for_log(
                rf"postfix/master\[{srv.proc.pid}\]: reload -- version \S+, configuration {re.escape(str(srv.config_dir))}$",
                start=mark,
            )
            assert srv.status()["generation"] >= 2
            # Until the old workers have closed their listening sockets a connection may
            # still reach one; wait (bounded) for the first new banner.
            deadline = time.monotonic() + 20
            while True:
                with Wire(srv.ports["smtp"]) as probe:
                    banner = probe.reply()
                    probe.cmd("QUIT")
                if banner == f"220 {HOSTNAME} ESMTP reloaded" or time.monotonic() > deadline:
                    break
            assert banner == f"220 {HOSTNAME} ESMTP reloaded"
            new, new_pid = open_session(srv, banner=f"220 {HOSTNAME} ESMTP reloaded")
            with new:
                assert new_pid != old_pid
                send_message(new, "new generation")
                assert new.cmd("QUIT") == "221 2.0.0 Bye"
            # The session that started before the reload completes its message.
            assert old.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
            assert old.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
            m = QUEUED.fullmatch(old.cmd("Subject: old generation\r\n\r\nbody\r\n."))
            assert m and m.group(1) in srv.queue_ids()
            assert old.cmd("QUIT") == "221 2.0.0 Bye"
            # Then the old worker exits (quietly: SIGTERM on reload is normal).
            deadline = time.monotonic() + 20
            while old_pid in {int(w["pid"]) for w in srv.status().get("workers", [])}:
                assert time.monotonic() < deadline, srv.status()
                time.sleep(0.05)
            assert f"pid {old_pid} " not in srv.log_since(mark)
        finally:
            srv.postconf("smtpd_banner=$myhostname ESMTP $mail_name")
            mark = srv.mark()
            postillion(srv.config_dir, "reload")
            srv.wait_for_log(r"postfix/master\[\d+\]: reload -- ", start=mark)


def test_status_lists_listeners_and_workers(srv: Server) -> None:
    # Workers of an earlier generation (reload test) may still be finishing: wait until only
    # the current generation runs, so the CLI output and status.json describe the same set.
    deadline = time.monotonic() + 30
    while any(w.get("retiring") for w in srv.status().get("workers", [])):
        assert time.monotonic() < deadline, srv.status()
        time.sleep(0.05)
    srv.wait_for_workers()
    result = postillion(srv.config_dir, "status", check=False)
    assert (result.returncode, result.stderr) == (
        0, f"postillion: the postillion mail system is running: PID: {srv.proc.pid}\n")
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        rf"supervisor  pid {srv.proc.pid}  uptime \d+:\d\d:\d\d  generation \d+  configuration "
        + re.escape(str(srv.config_dir)), lines[0])
    listeners = lines[lines.index("listeners:") + 1:lines.index("workers:")]
    assert sorted(line.split() for line in listeners) == sorted(
        [f"127.0.0.1:{port}", f"127.0.0.1:{port}"] for port in srv.ports.values())
    status = srv.status()
    rows = lines[lines.index("workers:") + 2:-1]
    expected = {(str(w["pid"]), w["service"]) for w in status["workers"]}
    assert {tuple(row.split()[:2]) for row in rows} == expected
    assert len(expected) == 6  # two per service
    assert lines[-1].split()[0] == "total"
