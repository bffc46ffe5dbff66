#!/usr/bin/env python3
"""SMTP load generator: N concurrent sessions, M messages, K messages per connection; one JSON line out.

Owns: the client side of the benchmark dialogue (EHLO, optional STARTTLS or implicit TLS, optional
AUTH PLAIN/LOGIN, MAIL/RCPT/DATA per message, QUIT) and its timing.  Standard library only, so it
measures every server the same way; it must not import postillion.
Follows: RFC 5321 (dialogue), RFC 3207 (STARTTLS), RFC 8314 (implicit TLS), RFC 4616 (PLAIN),
draft-murchison-sasl-login (LOGIN).

One client SSLContext per process: building a default context per session loads the CA bundle
(~20 ms of CPU each on a 2-core box), which would be measured as server slowness.

  subload.py HOST PORT --sessions 20 --messages 2000 --per-conn 10 --size 1000 \
      --tls starttls --auth plain --user alice --password s3cret-pw

Output keys: ok, failed_sessions, sessions, seconds, msgs_per_s, msg_p50_ms, msg_p99_ms (MAIL ..
end-of-data reply), sess_p50_ms, sess_p99_ms (connect .. QUIT reply), errors {"STEP -> reply": n}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import statistics
import time
from dataclasses import dataclass, field

CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False  # the servers use throwaway self-signed certificates
CTX.verify_mode = ssl.CERT_NONE


class ReplyError(Exception):
    """The server answered a command with an unexpected reply class."""


@dataclass
class Stats:
    ok: int = 0
    failed: int = 0
    sessions: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    msg_lat: list[float] = field(default_factory=list)
    sess_lat: list[float] = field(default_factory=list)

    def error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1


async def read_reply(r: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await asyncio.wait_for(r.readline(), timeout)
        if not line:
            raise ConnectionError("connection closed by server")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def command(
    r: asyncio.StreamReader,
    w: asyncio.StreamWriter,
    data: bytes,
    want: int,
    step: str,
    timeout: float,
) -> None:
    w.write(data)
    await w.drain()
    code, text = await read_reply(r, timeout)
    if code // 100 != want:
        # Keep the server's last reply line: it names the bug when a server misbehaves.
        last = text.rstrip(b"\r\n").split(b"\r\n")[-1].decode("ascii", "replace")
        raise ReplyError(f"{step} -> {last[:150]}")


async def session(
    a: argparse.Namespace, n_msgs: int, body: bytes, stats: Stats
) -> None:
    t0 = time.perf_counter()
    w: asyncio.StreamWriter | None = None
    to = a.timeout
    try:
        if a.tls == "implicit":
            r, w = await asyncio.wait_for(
                asyncio.open_connection(a.host, a.port, ssl=CTX), to
            )
        else:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), to)
        code, text = await read_reply(r, to)
        if code != 220:
            raise ReplyError(
                f"banner -> {text[:150].decode('ascii', 'replace').strip()}"
            )
        await command(r, w, b"EHLO load.test\r\n", 2, "EHLO", to)
        if a.tls == "starttls":
            await command(r, w, b"STARTTLS\r\n", 2, "STARTTLS", to)
            await asyncio.wait_for(w.start_tls(CTX), to)
            await command(r, w, b"EHLO load.test\r\n", 2, "EHLO after TLS", to)
        if a.auth == "plain":
            tok = base64.b64encode(f"\0{a.user}\0{a.password}".encode()).decode()
            await command(r, w, f"AUTH PLAIN {tok}\r\n".encode(), 2, "AUTH PLAIN", to)
        elif a.auth == "login":
            await command(r, w, b"AUTH LOGIN\r\n", 3, "AUTH LOGIN", to)
            await command(
                r,
                w,
                base64.b64encode(a.user.encode()) + b"\r\n",
                3,
                "AUTH LOGIN user",
                to,
            )
            await command(
                r,
                w,
                base64.b64encode(a.password.encode()) + b"\r\n",
                2,
                "AUTH LOGIN password",
                to,
            )
        for _ in range(n_msgs):
            m0 = time.perf_counter()
            await command(r, w, f"MAIL FROM:<{a.sender}>\r\n".encode(), 2, "MAIL", to)
            for i in range(a.rcpts):
                rcpt = a.rcpt.replace("@", f"{i}@", 1) if a.rcpts > 1 else a.rcpt
                await command(r, w, f"RCPT TO:<{rcpt}>\r\n".encode(), 2, "RCPT", to)
            await command(r, w, b"DATA\r\n", 3, "DATA", to)
            await command(r, w, body, 2, "end of data", to)
            stats.msg_lat.append(time.perf_counter() - m0)
            stats.ok += 1
        await command(r, w, b"QUIT\r\n", 2, "QUIT", to)
    except ReplyError as e:
        stats.failed += 1
        stats.error(str(e))
    except (TimeoutError, OSError, ConnectionError, ssl.SSLError) as e:
        # A load test reports failures and goes on; it does not stop at the first one.
        stats.failed += 1
        stats.error(f"{type(e).__name__}: {e}"[:160])
    finally:
        stats.sessions += 1
        if w is not None:
            w.close()
        stats.sess_lat.append(time.perf_counter() - t0)


def make_body(sender: str, rcpt: str, size: int) -> bytes:
    line = b"X" * 76 + b"\r\n"
    hdr = f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: load\r\n\r\n".encode()
    return hdr + line * max(1, (size - len(hdr)) // len(line)) + b".\r\n"


def pct(xs: list[float], p: int) -> float:
    if not xs:
        return 0.0
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1]


async def run(a: argparse.Namespace) -> dict[str, object]:
    body = make_body(a.sender, a.rcpt, a.size)
    stats = Stats()
    n_sessions = (a.messages + a.per_conn - 1) // a.per_conn
    sem = asyncio.Semaphore(a.sessions)
    deadline = time.perf_counter() + a.max_seconds
    skipped = 0

    async def one(k: int) -> None:
        nonlocal skipped
        async with sem:
            # Bounded runs: after the deadline no new session starts (a stuck server must not
            # blow the benchmark's time budget); the ones in flight finish.
            if time.perf_counter() > deadline:
                skipped += 1
                return
            await session(a, min(a.per_conn, a.messages - k * a.per_conn), body, stats)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(n_sessions)))
    dt = time.perf_counter() - t0
    ms = lambda x: round(x * 1e3, 2)
    return {
        "ok": stats.ok,
        "failed_sessions": stats.failed,
        "sessions": stats.sessions,
        "skipped_sessions": skipped,
        "seconds": round(dt, 3),
        "msgs_per_s": round(stats.ok / dt, 1) if dt > 0 else 0.0,
        "msg_p50_ms": ms(pct(stats.msg_lat, 50)),
        "msg_p99_ms": ms(pct(stats.msg_lat, 99)),
        "sess_p50_ms": ms(pct(stats.sess_lat, 50)),
        "sess_p99_ms": ms(pct(stats.sess_lat, 99)),
        "errors": stats.errors,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    p.add_argument("--messages", type=int, default=1000, help="messages in total")
    p.add_argument("--per-conn", type=int, default=10, help="messages per connection")
    p.add_argument(
        "--size", type=int, default=1000, help="message size in bytes (approximate)"
    )
    p.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    p.add_argument(
        "--tls", choices=["starttls", "implicit", "none"], default="starttls"
    )
    p.add_argument("--auth", choices=["plain", "login", "none"], default="plain")
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="s3cret-pw")
    p.add_argument("--sender", default="alice@bench.test")
    p.add_argument("--rcpt", default="bob@example.org")
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for any one reply"
    )
    p.add_argument(
        "--max-seconds", type=float, default=120.0, help="start no session after this"
    )
    return p.parse_args(argv)


def main() -> None:
    print(json.dumps(asyncio.run(run(parse_args()))), flush=True)


if __name__ == "__main__":
    main()
