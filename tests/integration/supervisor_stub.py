"""A stand-in ``worker_main`` for the supervisor tests: a tiny line server, not SMTP.

On connect it sends ``<pid> <generation> <uid> <gids>`` so a test can tell which worker (and
which user) serves it; ``anvil`` asks the anvil service through ``AnvilClient`` and answers with
the counts; ``quit`` closes; anything else is echoed.  On SIGTERM it stops accepting, lets open
connections finish and exits 0 — the worker contract the supervisor relies on for reload.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from postillion.server.anvil import AnvilClient


def worker_main(cfg, listeners, ctx) -> int:  # noqa: ANN001 - the contract's types
    return asyncio.run(_serve(listeners, ctx))


async def _serve(listeners, ctx) -> int:  # noqa: ANN001
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    active: set[asyncio.Task] = set()
    idle = asyncio.Event()
    idle.set()
    total = 0
    anvil = AnvilClient(ctx.anvil_path, log=ctx.log) if ctx.anvil_path else None
    if os.environ.get("STUB_FAIL_AT_START") and os.path.exists(os.environ["STUB_FAIL_AT_START"]):
        return 3

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total
        task = asyncio.current_task()
        assert task is not None
        active.add(task)
        idle.clear()
        total += 1
        ctx.report(sessions_active=len(active), sessions_total=total)
        gids = ",".join(str(g) for g in sorted(os.getgroups()))
        try:
            writer.write(f"{os.getpid()} {ctx.generation} {os.getuid()} {gids}\n".encode())
            await writer.drain()
            while line := await reader.readline():
                word = line.strip()
                if word == b"quit":
                    break
                if word == b"anvil" and anvil is not None:
                    count, rate = await anvil.connect(ctx.service, "192.0.2.1")
                    auth = await anvil.auth(ctx.service, "192.0.2.1")
                    writer.write(f"anvil {count} {rate} {auth}\n".encode())
                else:
                    writer.write(b"echo " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            active.discard(task)
            if not active:
                idle.set()
            ctx.report(sessions_active=len(active))
            writer.close()

    servers = [await asyncio.start_server(handle, sock=listener.sock) for listener in listeners]
    ctx.log(f"stub worker listening, generation {ctx.generation}")
    await stop.wait()
    for server in servers:
        server.close()  # stop accepting; open connections go on
    await idle.wait()
    ctx.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    # python supervisor_stub.py CONFIG_DIR: a foreground supervisor running this stub.
    from postillion.cli.daemon import start

    raise SystemExit(start(sys.argv[1], True, worker_main))
