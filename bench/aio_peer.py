#!/usr/bin/env python3
"""aiosmtpd + uvloop submission peer for the benchmark: what a plain asyncio SMTP server costs.

Owns: two listeners on loopback, configured like the Postfix submission recipe where aiosmtpd can:
  --port        submission: STARTTLS required, AUTH PLAIN/LOGIN required (one user, --user/--password)
  --plain-port  plain SMTP: no TLS, no AUTH
Every accepted message is appended to --spool and fsync()ed (in a thread, so the event loop stays
free) before the 250 reply, so it is as durable as an MTA's queue.  No delivery.
Must not import postillion (it is the yardstick).  Needs aiosmtpd (bench only, not a project
dependency: `.venv/bin/pip install aiosmtpd`).
Follows: aiosmtpd 1.4 documentation (handlers, authenticator, require_starttls).

Each spool record starts with one `From SENDER ...` line, so records can be counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Spool:
    """Append-only mbox-like spool; one write + fsync per message."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _write(self, blob: bytes) -> None:
        os.write(self.fd, blob)  # O_APPEND + one write: records never interleave
        os.fsync(self.fd)

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        hdr = f"From {envelope.mail_from} rcpt={','.join(envelope.rcpt_tos)}\n".encode()  # type: ignore[attr-defined]
        blob = hdr + envelope.original_content + b"\n"  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(None, self._write, blob)
        return "250 2.0.0 Ok: queued"


def make_authenticator(user: str, password: str):  # type: ignore[no-untyped-def]
    want = (user.encode(), password.encode())

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password) == want
        )
        return AuthResult(success=ok, handled=False)

    return authenticator


async def serve(a: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    spool = Spool(a.spool)
    auth = make_authenticator(a.user, a.password)
    loop = asyncio.get_running_loop()
    common = {
        "hostname": a.hostname,
        "ident": "aiosmtpd bench peer",
        "data_size_limit": 10240000,
    }
    sub = await loop.create_server(
        lambda: SMTP(
            spool,
            tls_context=ctx,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=auth,
            **common,
        ),
        "127.0.0.1",
        a.port,
        backlog=1000,
        reuse_address=True,
    )
    plain = await loop.create_server(
        lambda: SMTP(spool, **common),
        "127.0.0.1",
        a.plain_port,
        backlog=1000,
        reuse_address=True,
    )
    print(
        f"aio_peer pid={os.getpid()} loop={type(loop).__module__} submission=127.0.0.1:{a.port} "
        f"plain=127.0.0.1:{a.plain_port} spool={a.spool}",
        flush=True,
    )
    async with sub, plain:
        await asyncio.gather(sub.serve_forever(), plain.serve_forever())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--plain-port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--hostname", default="bench.test")
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="s3cret-pw")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    a = p.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(serve(a))
    else:
        asyncio.run(serve(a))


if __name__ == "__main__":
    main()
