"""The privileged local delivery service (master.cf ``local unix - n n - - local``) and its client.

Owns: the process the supervisor starts as root for the ``local`` service, serving
``$queue_directory/private/local`` (a UNIX socket only ``mail_owner`` can reach: ``private/``
is 0700 and owned by mail_owner, the socket 0600 and chowned to it, and the peer's uid is
checked with SO_PEERCRED); running ``delivery.local.LocalAgent`` there, as root, so that every
mailbox, file and command delivery happens in a child that has switched to the recipient's
rights; and ``LocalServiceAgent``, the queue manager's ``DeliveryAgent`` for ``local`` that
sends one request per batch and gets the per-member results back.  Members in other
domains are handed back to the queue manager, which queues the forwarded copy as mail_owner
(root never writes queue files).
Must not import: cli, server.supervisor.
Follows: Postfix local(8) ("needs a dual personality"), master(5) (private unix services),
deliver_request(3) (one request: queue id, sender, recipients; one status per recipient).

Wire protocol, one connection per request (JSON objects, one per line; ``size`` bytes of raw
content follow a line that has ``size``):

    client:  {"queue_id", "sender", "nexthop", "recipients": [[index, address, orcpt]],
              "size": N} + N bytes of queue content
    service: {"forward": {"recipients": [...], "sender": s}, "size": N} + N bytes
    client:  {"queue_id": ID} | {"error": text}
    service: {"result": {rcpt, status, dsn, relay, text, xfer_time, address}} ... {"done": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import pwd
import signal
import socket
import struct
from pathlib import Path
from typing import Any

from postillion.config import Configuration
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.errors import PostillionError
from postillion.maillog import QueueLog
from postillion.queue.envelope import Envelope, Recipient

LINE_LIMIT = 16 * 1024 * 1024  # a request line lists every recipient of a batch
SOCKET_NAME = "private/local"
PRIVATE_MODE = 0o700  # Postfix: private/ is drwx------ postfix
SOCKET_MODE = 0o600
UNAVAILABLE = "mail transport unavailable"


class LocalServiceError(PostillionError):
    """The other end broke the protocol or could not queue a forwarded copy."""

    temporary = True


def socket_path(queue_directory: Path | str) -> Path:
    return Path(queue_directory) / SOCKET_NAME


def is_local_service(service: Any) -> bool:
    """master.cf's ``local unix - n n - - local``: a unix service whose command is local."""
    return service.type == "unix" and os.path.basename(service.command) == "local"


def bind_local_socket(path: Path, owner_uid: int | None, owner_gid: int | None) -> socket.socket:
    """Create ``private/`` (0700, mail_owner) and the listening socket (root creates it,
    then gives it to mail_owner, mode 0600).  A stale socket file is replaced."""
    private = path.parent
    private.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
    if owner_uid is not None and owner_gid is not None:
        os.chown(private, owner_uid, owner_gid)
    os.chmod(private, PRIVATE_MODE)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        if owner_uid is not None and owner_gid is not None:
            os.chown(path, owner_uid, owner_gid)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ------------------------------------------------------------------------------ framing


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any],
                data: bytes | None = None) -> None:
    if data is not None:
        obj = {**obj, "size": len(data)}
    writer.write(json.dumps(obj).encode() + b"\n" + (data or b""))
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise LocalServiceError("connection closed")
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise LocalServiceError(f"bad request line: {exc}") from None
    if not isinstance(obj, dict):
        raise LocalServiceError("bad request line: not an object")
    size = obj.get("size", 0)
    data = await reader.readexactly(size) if isinstance(size, int) and size > 0 else b""
    return obj, data


# ------------------------------------------------------------------------------ client


class LocalServiceAgent:
    """The queue manager's ``local`` agent when the privileged service runs."""

    def __init__(self, path: Path | str, *, forwarder: Any = None) -> None:
        self.path = str(path)
        self.forwarder = forwarder

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        results: list[RecipientResult] = []
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=LINE_LIMIT)
        except OSError:
            return _unavailable(request, results)
        try:
            await _send(writer, {
                "queue_id": request.queue_id, "sender": request.envelope.sender,
                "nexthop": request.nexthop,
                "recipients": [[i, r.address, r.orcpt] for i, r in request.recipients],
            }, request.content)
            while True:
                obj, data = await _receive(reader)
                if "forward" in obj:
                    await _send(writer, await self._forward(obj["forward"], data))
                elif "result" in obj:
                    r = obj["result"]
                    results.append(RecipientResult(
                        rcpt=int(r["rcpt"]), status=str(r["status"]), dsn=str(r["dsn"]),
                        relay=str(r["relay"]), text=str(r["text"]),
                        xfer_time=float(r.get("xfer_time", 0.0)), address=r.get("address")))
                elif obj.get("done"):
                    break
        except (OSError, LocalServiceError, asyncio.IncompleteReadError, KeyError, ValueError):
            pass  # what arrived stands; the rest is deferred below
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return _unavailable(request, results)

    async def _forward(self, spec: dict[str, Any], content: bytes) -> dict[str, Any]:
        if self.forwarder is None:
            return {"error": "no forwarding queue configured"}
        try:
            queue_id = await self.forwarder.forward(
                sender=str(spec["sender"]), recipients=[str(r) for r in spec["recipients"]],
                content=content)
        except (OSError, PostillionError) as exc:
            return {"error": str(exc)}
        return {"queue_id": queue_id}


def _unavailable(request: DeliveryRequest, results: list[RecipientResult]) -> list[RecipientResult]:
    """Every recipient without a result is deferred: the service is down or went away."""
    have = {r.rcpt for r in results}
    return results + [RecipientResult(rcpt=i, status="deferred", dsn="4.3.0", relay="none",
                                      text=UNAVAILABLE)
                      for i, _ in request.recipients if i not in have]


# ------------------------------------------------------------------------------ service


class _ConnectionForwarder:
    """LocalAgent's Forwarder inside the service: asks the client to queue the copy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()

    async def forward(self, *, sender: str, recipients: list[str], content: bytes) -> str:
        async with self.lock:
            await _send(self.writer, {"forward": {"sender": sender, "recipients": recipients}},
                        content)
            answer, _ = await _receive(self.reader)
        if "queue_id" not in answer:
            raise LocalServiceError(str(answer.get("error", "forwarding failed")))
        return str(answer["queue_id"])


def _peer_uid(sock: Any) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class LocalService:
    """Serves delivery requests with one LocalAgent (aliases read when the service starts)."""

    def __init__(self, agent: Any, log: QueueLog, allowed_uids: set[int]) -> None:
        self.agent = agent
        self.log = log
        self.allowed_uids = allowed_uids

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer.get_extra_info("socket"))
            if uid is None or uid not in self.allowed_uids:
                self.log.warning(f"connection from UID {uid} refused: only mail_owner may "
                                 "request local delivery", process="local")
                return
            obj, content = await _receive(reader)
            recipients = [(int(i), Recipient(address=str(a), orcpt=o if o is None else str(o)))
                          for i, a, o in obj["recipients"]]
            envelope = Envelope(sender=str(obj["sender"]), recipients=[r for _, r in recipients])
            request = DeliveryRequest(
                queue_id=str(obj["queue_id"]), envelope=envelope,
                content=content, recipients=recipients,
                transport="local", nexthop=str(obj.get("nexthop", "")))
            agent = copy.copy(self.agent)
            agent.forwarder = _ConnectionForwarder(reader, writer)
            for res in await agent.deliver(request):
                await _send(writer, {"result": {
                    "rcpt": res.rcpt, "status": res.status, "dsn": res.dsn, "relay": res.relay,
                    "text": res.text, "xfer_time": res.xfer_time, "address": res.address}})
            await _send(writer, {"done": True})
        except (LocalServiceError, asyncio.IncompleteReadError, KeyError, TypeError,
                ValueError) as exc:
            self.log.warning(f"bad delivery request: {type(exc).__name__}: {exc}",
                             process="local")
        except OSError:
            pass  # the queue manager went away; it defers what it did not hear about
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def allowed_uids(mail_owner: str) -> set[int]:
    uids = {0}
    try:
        uids.add(pwd.getpwnam(mail_owner or "postillion").pw_uid)
    except KeyError:
        pass
    return uids


def local_main(cfg: Configuration, listeners: list[Any], wctx: Any) -> int:
    return asyncio.run(_serve(cfg, listeners, wctx))


async def _serve(cfg: Configuration, listeners: list[Any], wctx: Any) -> int:
    from postillion.delivery.local import LocalAgent

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    params = cfg.params(listeners[0].service)
    log = QueueLog(params.get("syslog_name") or "postfix", sink=wctx.sinks)
    agent = LocalAgent(params, warn=lambda text: log.warning(text, process="local"))
    service = LocalService(agent, log, allowed_uids(params.get("mail_owner")))
    handlers: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            await service.handle(reader, writer)
        finally:
            if task is not None:
                handlers.discard(task)

    servers = [await asyncio.start_unix_server(on_connect, sock=l.sock, limit=LINE_LIMIT)
               for l in listeners]
    await stop.wait()
    for server in servers:
        server.close()
    if handlers:  # deliveries in progress finish (a command may take command_time_limit)
        await asyncio.wait(set(handlers), timeout=agent.command_time_limit + 10)
    return 0
