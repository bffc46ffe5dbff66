#!/usr/bin/env python3
"""Benchmark driver: postillion vs. a real Postfix vs. aiosmtpd, same workloads, same run, interleaved.

Owns: the workload table, the interleaving (rounds × workloads × systems, system order rotated
each round), one fresh ``subload.py`` process per measurement, medians and spreads, the ratios
postillion/postfix and postillion/aiosmtpd, server CPU per message, memory at the end, and the
health checks a benchmark can make for free: non-2xx replies seen by the client, warning/error
lines in each server's log, and accepted-vs-stored message counts.
Must not import postillion (it measures the installed command from outside).
Follows: nothing normative; the Postfix recipe is in ``peers.py``.

Run it through ``bench/run [--quick]`` (root: it starts a Postfix instance and saslauthd).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import peers

SYSTEMS = ("postillion", "postfix", "aiosmtpd")


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    port: str  # "submission" or "smtp"
    tls: str
    auth: str
    per_conn: int
    quick_msgs: int
    full_msgs: int
    latency: (
        str  # which latency the table shows: "msg" (MAIL..250) or "sess" (connect..221)
    )


WORKLOADS = (
    Workload(
        "sub10",
        "submission STARTTLS + AUTH PLAIN, 10 msg/conn",
        "submission",
        "starttls",
        "plain",
        10,
        600,
        3000,
        "msg",
    ),
    Workload(
        "sub1",
        "submission STARTTLS + AUTH PLAIN, 1 msg/conn",
        "submission",
        "starttls",
        "plain",
        1,
        200,
        1000,
        "sess",
    ),
    Workload(
        "smtp1",
        "plain SMTP (smtp port, client in mynetworks), 1 msg/conn",
        "smtp",
        "none",
        "none",
        1,
        400,
        2000,
        "sess",
    ),
)


def subload(
    peer: object, w: Workload, messages: int, a: argparse.Namespace, max_seconds: float
) -> dict:
    port = getattr(peer, f"{w.port}_port")
    cmd = [
        sys.executable,
        str(peers.BENCH_DIR / "subload.py"),
        "127.0.0.1",
        str(port),
        "--sessions",
        str(a.sessions),
        "--messages",
        str(messages),
        "--per-conn",
        str(w.per_conn),
        "--size",
        str(a.size),
        "--tls",
        w.tls,
        "--auth",
        w.auth,
        "--user",
        peers.USER,
        "--password",
        peers.PASSWORD,
        "--sender",
        f"{peers.USER}@{peers.HOSTNAME}",
        "--timeout",
        str(a.timeout),
        "--max-seconds",
        str(max_seconds),
    ]
    roots = peer.pids()  # type: ignore[attr-defined]
    cpu0 = peers.cpu_seconds(roots)
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=max_seconds + 4 * a.timeout + 30,
        check=False,
    )
    cpu1 = peers.cpu_seconds(peer.pids())  # type: ignore[attr-defined]
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"subload failed ({p.returncode}): {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["server_cpu_s"] = round(cpu1 - cpu0, 3)
    return r


def settle(peer: object, a: argparse.Namespace) -> float:
    """Let background work finish so it is not charged to the next system: Postfix relays what it
    queued to smtp-sink after the client is gone.  Returns the seconds waited."""
    t0 = time.monotonic()
    if isinstance(peer, peers.Postfix):
        left = peer.drain(timeout=30)
        if left:
            print(
                f"  postfix: {left} messages still queued after 30 s", file=sys.stderr
            )
    time.sleep(a.pause)
    return time.monotonic() - t0


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def fmt_range(xs: list[float], digits: int = 0) -> str:
    return f"{min(xs):.{digits}f}–{max(xs):.{digits}f}" if xs else "-"


def spread_pct(xs: list[float]) -> str:
    m = med(xs)
    return f"±{(max(xs) - min(xs)) / 2 / m * 100:.0f}%" if xs and m else "-"


NORMALIZE = [
    (re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ "), ""),  # syslog time + host
    (re.compile(r"\[\d+\]"), "[PID]"),
    (re.compile(r"\b[0-9A-F]{10,}\b"), "QUEUEID"),
    (re.compile(r"\b\d+\.\d+\.\d+\.\d+\]:\d+"), "ADDR]:PORT"),
]


def normalize(line: str) -> str:
    for rx, sub in NORMALIZE:
        line = rx.sub(sub, line)
    return line


def summarize_problems(lines: list[str], limit: int = 12) -> list[tuple[int, str, str]]:
    """(count, normalized, first example) for distinct problem lines, most frequent first."""
    seen: dict[str, list] = {}
    for line in lines:
        k = normalize(line)
        if k in seen:
            seen[k][0] += 1
        else:
            seen[k] = [1, line]
    out = sorted(((c, k, ex) for k, (c, ex) in seen.items()), key=lambda t: -t[0])
    return out[:limit]


def loadavg() -> float:
    """1-minute load average: other work on a shared 2-core box is the main source of spread."""
    return os.getloadavg()[0]


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="small runs, about one minute in all"
    )
    ap.add_argument(
        "--rounds", type=int, help="interleaved rounds (default 3 with --quick, else 5)"
    )
    ap.add_argument(
        "--sessions", type=int, default=20, help="concurrent client sessions"
    )
    ap.add_argument("--size", type=int, default=1000, help="message size in bytes")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    ap.add_argument(
        "--only",
        help="comma-separated workloads: " + ",".join(w.key for w in WORKLOADS),
    )
    ap.add_argument(
        "--workers", type=int, help="postillion_worker_processes (default: CPUs)"
    )
    ap.add_argument(
        "--no-saslauthd-cache", action="store_true", help="run saslauthd without -c"
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="client: seconds to wait for a reply",
    )
    ap.add_argument(
        "--pause", type=float, default=0.3, help="seconds of quiet between measurements"
    )
    ap.add_argument("--run-dir", help="default: a new /tmp/postillion-bench-*")
    ap.add_argument("--json", help="also write all raw results here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print(
            "bench/run: run as root (it starts a Postfix instance and saslauthd, and adds user alice)",
            file=sys.stderr,
        )
        return 2
    rounds = a.rounds or (3 if a.quick else 5)
    max_seconds = 15.0 if a.quick else 60.0
    workloads = [w for w in WORKLOADS if not a.only or w.key in a.only.split(",")]
    count = {
        w.key: max(
            a.sessions, int((w.quick_msgs if a.quick else w.full_msgs) * a.scale)
        )
        for w in workloads
    }

    t_start = time.monotonic()
    load_start = loadavg()
    started = datetime.datetime.now(datetime.UTC)
    run_dir = peers.make_run_dir(a.run_dir)
    print(
        f"bench: run dir {run_dir}; starting postillion, postfix, aiosmtpd ...",
        file=sys.stderr,
    )
    try:
        systems = peers.start_all(
            run_dir, a.workers, saslauthd_cache=not a.no_saslauthd_cache
        )
    except peers.PeerError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    by_name = {p.name: p for p in systems}
    results: dict[str, dict[str, list[dict]]] = {
        w.key: {s: [] for s in SYSTEMS} for w in workloads
    }
    accepted = {s: 0 for s in SYSTEMS}
    client_errors: dict[str, dict[str, int]] = {s: {} for s in SYSTEMS}
    mem: dict[str, dict[str, object]] = {}
    stored: dict[str, int] = {}
    descr = {p.name: p.describe() for p in systems}
    alive: dict[str, bool] = {}

    def record(name: str, r: dict) -> None:
        accepted[name] += r["ok"]
        for k, n in r["errors"].items():
            client_errors[name][k] = client_errors[name].get(k, 0) + n

    try:
        for p in systems:
            mem.setdefault(p.name, {})["idle"] = (
                len(p.pids()),
                *peers.memory_kb(p.pids()),
            )
        # Warm-up: first TLS handshakes, imports, Postfix spawning its smtpd/cleanup processes.
        for p in systems:
            for w in workloads:
                record(
                    p.name,
                    subload(
                        p,
                        w,
                        max(a.sessions, 40 // w.per_conn * w.per_conn),
                        a,
                        max_seconds,
                    ),
                )
            settle(p, a)
        for rnd in range(rounds):
            order = (
                SYSTEMS[rnd % 3 :] + SYSTEMS[: rnd % 3]
            )  # rotate: nobody always runs after Postfix's drain
            for w in workloads:
                for name in order:
                    p = by_name[name]
                    r = subload(p, w, count[w.key], a, max_seconds)
                    record(name, r)
                    results[w.key][name].append(r)
                    print(
                        f"  round {rnd + 1}/{rounds} {w.key:<6} {name:<10} {r['msgs_per_s']:>8.1f} msg/s "
                        f"p50 {r[w.latency + '_p50_ms']:>7.1f} ms  failed {r['failed_sessions']}",
                        file=sys.stderr,
                    )
                    settle(p, a)
        for p in systems:
            mem[p.name]["end"] = (len(p.pids()), *peers.memory_kb(p.pids()))
        by_name["postfix"].drain(timeout=30)  # type: ignore[attr-defined]
        for p in systems:
            stored[p.name] = p.stored()
        alive = {p.name: bool(p.pids()) for p in systems}
    finally:
        peers.stop_all(systems)
    problems = {p.name: p.problems() for p in systems}
    load = (load_start, loadavg())
    elapsed = time.monotonic() - t_start

    out = report(
        a,
        workloads,
        count,
        results,
        mem,
        accepted,
        stored,
        client_errors,
        problems,
        descr,
        started,
        elapsed,
        rounds,
        run_dir,
        alive,
        load,
    )
    print(out)
    (run_dir / "report.txt").write_text(out + "\n")
    raw = {
        "started": started.isoformat(),
        "machine": machine(),
        "systems": descr,
        "count": count,
        "results": results,
        "memory_kb": mem,
        "accepted": accepted,
        "stored": stored,
        "client_errors": client_errors,
        "problems": problems,
        "elapsed_s": elapsed,
        "loadavg": load,
    }
    (run_dir / "results.json").write_text(json.dumps(raw, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(raw, indent=1))
    return 0


def report(
    a,
    workloads,
    count,
    results,
    mem,
    accepted,
    stored,
    client_errors,
    problems,
    descr,
    started,
    elapsed,
    rounds,
    run_dir,
    alive,
    load,
) -> str:  # type: ignore[no-untyped-def]
    L: list[str] = []
    L.append(
        f"postillion benchmark, {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s{' (--quick)' if a.quick else ''}"
    )
    L.append(f"machine  {machine()}")
    busy = (
        " (other work was running: expect a wide spread)"
        if max(load) > (os.cpu_count() or 1)
        else ""
    )
    L.append(f"load avg {load[0]:.2f} at start, {load[1]:.2f} at end{busy}")
    for s in SYSTEMS:
        L.append(f"{s:<10} {descr[s]}")
    L.append(
        f"load     {a.sessions} concurrent sessions, {a.size}-byte messages, 1 recipient, client on the "
        f"same CPUs; {rounds} interleaved rounds, median (min–max)"
    )
    for w in workloads:
        lat = (
            "MAIL..250 per message"
            if w.latency == "msg"
            else "connect..221 per session"
        )
        L.append("")
        L.append(f"{w.title}: {count[w.key]} msgs per run; latency = {lat}")
        L.append(
            f"  {'system':<11}{'msgs/s':>8} {'(min–max)':<13}{'spread':>7}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'srv CPU ms/msg':>16}{'failed':>8}"
        )
        for s in SYSTEMS:
            rs = results[w.key][s]
            rate = [r["msgs_per_s"] for r in rs]
            cpu = [r["server_cpu_s"] * 1e3 / r["ok"] for r in rs if r["ok"]]
            failed = sum(r["failed_sessions"] for r in rs)
            L.append(
                f"  {s:<11}{med(rate):>8.0f} {'(' + fmt_range(rate) + ')':<13}{spread_pct(rate):>7}"
                f"{med([r[w.latency + '_p50_ms'] for r in rs]):>9.1f}"
                f"{med([r[w.latency + '_p99_ms'] for r in rs]):>9.1f}"
                f"{med(cpu):>16.2f}{failed:>8}"
            )
        pil = results[w.key]["postillion"]
        for other in ("postfix", "aiosmtpd"):
            os_ = results[w.key][other]
            paired = [
                x["msgs_per_s"] / y["msgs_per_s"]
                for x, y in zip(pil, os_)
                if y["msgs_per_s"]
            ]
            r_med = med([x["msgs_per_s"] for x in pil]) / (
                med([y["msgs_per_s"] for y in os_]) or 1
            )
            p50 = med([x[w.latency + "_p50_ms"] for x in pil]) / (
                med([y[w.latency + "_p50_ms"] for y in os_]) or 1
            )
            L.append(
                f"  postillion/{other:<9} throughput {r_med:.2f} (per round {fmt_range(paired, 2)}), "
                f"p50 latency {p50:.2f}x"
            )
    L.append("")
    L.append(
        "memory (whole process tree; Postfix includes saslauthd)  idle after start -> end of run"
    )
    for s in SYSTEMS:
        i, e = mem[s].get("idle", (0, 0, 0)), mem[s].get("end", (0, 0, 0))
        L.append(
            f"  {s:<11}{i[0]:>3} procs RSS {i[1] / 1024:6.1f} MiB PSS {i[2] / 1024:6.1f} MiB  ->  "
            f"{e[0]:>3} procs RSS {e[1] / 1024:6.1f} MiB PSS {e[2] / 1024:6.1f} MiB"
        )
    L.append("")
    L.append("health")
    for s in SYSTEMS:
        what = {
            "postillion": "files in spool/incoming",
            "postfix": "status=sent to smtp-sink",
            "aiosmtpd": "records in spool",
        }[s]
        ok = "OK" if stored.get(s) == accepted[s] else "MISMATCH"
        L.append(
            f"  {s:<11}accepted (250 to client) {accepted[s]}, {what} {stored.get(s)}: {ok}"
            f"{'' if alive.get(s, True) else '; PROCESS GONE'}"
        )
        for k, n in sorted(client_errors[s].items(), key=lambda t: -t[1]):
            L.append(f"    client saw {n} x {k}")
        for c, _k, ex in summarize_problems(problems[s]):
            L.append(f"    log {c} x {ex}")
    L.append(f"logs and raw results: {run_dir}")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
