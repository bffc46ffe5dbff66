"""Process and port helpers for the benchmark: free loopback ports, greetings, process trees, RSS/PSS, CPU.

Owns: how the benchmark finds free ports, waits for a 220 greeting, walks a process tree in /proc,
sums memory (RSS and PSS from smaps_rollup) and CPU (utime+stime+cutime+cstime), scans a log for
problem lines, runs a command and stops a process it started.
Must not import postillion or the other bench modules.
Follows: proc(5) for /proc/PID/stat and smaps_rollup; Postfix msg(3) severities for log scanning.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

# Lines a healthy server should not write under load (Postfix severities, plus Python's own).
PROBLEM_RE = re.compile(
    r"(warning|error|fatal|panic): |Traceback \(most recent call last\)"
)


class PeerError(RuntimeError):
    """A peer could not be set up or started; the message says what to look at."""


def free_ports(n: int) -> list[int]:
    """*n* distinct ports free on 127.0.0.1 right now (bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base(offsets: tuple[int, ...] = (25, 587, 465)) -> int:
    """A BASE for ``postillion init --ports BASE`` whose BASE+offsets are all free."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 1000)
        if all(port_free(base + o) for o in offsets):
            return base
    raise PeerError("no free port base found for postillion between 20000 and 60000")


def wait_banner(port: int, timeout: float = 20.0, tls: bool = False) -> str:
    """Wait until 127.0.0.1:*port* answers with a 220 greeting; return it."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if tls:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    s = ctx.wrap_socket(s)
                line = s.makefile("rb").readline().decode("ascii", "replace").strip()
                if tls:
                    s.close()
                if line.startswith("220"):
                    return line
                last = line
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise PeerError(
        f"127.0.0.1:{port} did not greet with 220 within {timeout:.0f}s (last: {last!r})"
    )


def process_tree(roots: list[int]) -> list[int]:
    """*roots* and all their live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [r for r in roots if Path(f"/proc/{r}").exists()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB; PSS splits shared pages fairly between forked processes."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU of *pids*, including their reaped children (Postfix's smtpd processes come
    and go; their time lands in master's cutime when they exit)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def scan_problems(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if PROBLEM_RE.search(line):
                out.append(line)
                if line.startswith("Traceback"):
                    out.extend(lines[i + 1 : i + 30])
    return out


def run(
    cmd: list[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [str(c) for c in cmd], input=input, capture_output=True, text=True, check=False
    )
    if check and p.returncode != 0:
        raise PeerError(
            f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}{p.stderr}"
        )
    return p


def stop_process(pid: int, timeout: float = 15.0, *, group: bool = False) -> None:
    """SIGTERM *pid* (or the process group it leads, when we started it with its own session),
    wait, then SIGKILL."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for it
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.05)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
