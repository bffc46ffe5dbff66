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
              "client": {name: value}, "size": N} + N bytes of queue content
             ("client": the envelope's client and SASL attributes that are set, for the
             CLIENT_* and SASL_* variables of |command deliveries)
    service: {"forward": {"recipients": [...], "sender": s}, "size": N} + N bytes
    client:  {"queue_id": ID} | {"error": text}
    service: {"results": [{rcpt, status, dsn, relay, text, xfer_time, address}, ...]}
             (one line per recipient, every member of its alias expansion) ... {"done": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
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
# Envelope attributes sent along with a request (local(8) exports them to commands).
CLIENT_ATTRS = ("client_name", "client_addr", "helo_name", "protocol", "sasl_method",
                "sasl_sender", "sasl_username")
DEFAULT_SIZE_LIMIT = 10240000  # message_size_limit's default


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
    mode 0600, then gives it to mail_owner).  A stale socket file is replaced.

    The queue directory belongs to mail_owner, who could put a symlink where ``private``
    or the socket should be: root works through a descriptor of ``private`` opened without
    following symlinks, binds through ``/proc/self/fd``, and never follows a symlink when
    it changes an owner."""
    private = path.parent
    with contextlib.suppress(FileExistsError):
        private.mkdir(mode=PRIVATE_MODE, parents=True)
    dfd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if owner_uid is not None and owner_gid is not None:
            os.fchown(dfd, owner_uid, owner_gid)
        os.fchmod(dfd, PRIVATE_MODE)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=dfd)
        via = f"/proc/self/fd/{dfd}"
        where = f"{via}/{path.name}" if os.path.isdir(via) else str(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_mask = os.umask(0o777 & ~SOCKET_MODE)  # born 0600: no chmod by name
            try:
                sock.bind(where)
            finally:
                os.umask(old_mask)
            if owner_uid is not None and owner_gid is not None:
                os.chown(path.name, owner_uid, owner_gid, dir_fd=dfd, follow_symlinks=False)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(dfd)
    return sock


def remove_local_socket(path: Path | str) -> None:
    """Remove the socket file at stop, without following a symlink put in place of
    ``private``."""
    path = Path(path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.unlink(path.name, dir_fd=dfd)
    finally:
        os.close(dfd)


# ------------------------------------------------------------------------------ framing


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any],
                data: bytes | None = None) -> None:
    if data is not None:
        obj = {**obj, "size": len(data)}
    writer.write(json.dumps(obj).encode() + b"\n" + (data or b""))
    await writer.drain()


async def _receive(reader: asyncio.StreamReader,
                   max_size: int | None = None) -> tuple[dict[str, Any], bytes]:
    """One JSON line and the ``size`` bytes after it; ``max_size`` bounds ``size``."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise LocalServiceError("connection closed")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise LocalServiceError(f"bad request line: {exc}") from None
    if not isinstance(obj, dict):
        raise LocalServiceError("bad request line: not an object")
    size = obj.get("size", 0)
    if type(size) is not int or size < 0:
        raise LocalServiceError("bad request line: bad size")
    if max_size is not None and size > max_size:
        raise LocalServiceError(f"request of {size} bytes is larger than {max_size}")
    data = await reader.readexactly(size) if size > 0 else b""
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
                "client": {name: getattr(request.envelope, name) for name in CLIENT_ATTRS
                           if getattr(request.envelope, name)},
            }, request.content)
            while True:
                obj, data = await _receive(reader)
                if "forward" in obj:
                    await _send(writer, await self._forward(obj["forward"], data))
                elif "results" in obj:  # all members of one recipient, or nothing
                    results += [RecipientResult(
                        rcpt=int(r["rcpt"]), status=str(r["status"]), dsn=str(r["dsn"]),
                        relay=str(r["relay"]), text=str(r["text"]),
                        xfer_time=float(r.get("xfer_time", 0.0)), address=r.get("address"))
                        for r in obj["results"]]
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
    """Serves delivery requests with one LocalAgent (which re-opens alias_maps before a
    request when one of its files changed)."""

    def __init__(self, agent: Any, log: QueueLog, allowed_uids: set[int],
                 max_size: int | None = None) -> None:
        self.agent = agent
        self.log = log
        self.allowed_uids = allowed_uids
        self.max_size = max_size

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer.get_extra_info("socket"))
            if uid is None or uid not in self.allowed_uids:
                self.log.warning(f"connection from UID {uid} refused: only mail_owner may "
                                 "request local delivery", process="local")
                return
            obj, content = await _receive(reader, self.max_size)
            recipients = [(int(i), Recipient(address=str(a), orcpt=o if o is None else str(o)))
                          for i, a, o in obj["recipients"]]
            client = obj.get("client")
            client = client if isinstance(client, dict) else {}
            envelope = Envelope(sender=str(obj["sender"]), recipients=[r for _, r in recipients],
                                **{name: client[name] for name in CLIENT_ATTRS
                                   if isinstance(client.get(name), str)})
            request = DeliveryRequest(
                queue_id=str(obj["queue_id"]), envelope=envelope,
                content=content, recipients=recipients,
                transport="local", nexthop=str(obj.get("nexthop", "")))
            agent = copy.copy(self.agent)
            agent.forwarder = _ConnectionForwarder(reader, writer)
            # One line per recipient, sent as soon as it is done: a recipient's members
            # arrive together or not at all, and a later crash defers only the rest.
            for member in recipients:
                results = await self._deliver_one(agent, request, member)
                await _send(writer, {"results": [
                    {"rcpt": r.rcpt, "status": r.status, "dsn": r.dsn, "relay": r.relay,
                     "text": r.text, "xfer_time": r.xfer_time, "address": r.address}
                    for r in results]})
            await _send(writer, {"done": True})
        except (LocalServiceError, asyncio.IncompleteReadError, KeyError, TypeError,
                ValueError) as exc:
            self.log.warning(f"bad delivery request: {type(exc).__name__}: {exc}",
                             process="local")
        except OSError:
            pass  # the queue manager went away; it defers what it did not hear about
        except Exception as exc:  # noqa: BLE001 -- one request must not stop the service
            self.log.warning(f"delivery request failed: {type(exc).__name__}: {exc}",
                             process="local")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _deliver_one(self, agent: Any, request: DeliveryRequest,
                           member: tuple[int, Recipient]) -> list[RecipientResult]:
        """The results for one recipient; a bug in the agent defers it, and the service
        goes on with the next recipient."""
        index = member[0]
        try:
            results = [r for r in await agent.deliver(
                dataclasses.replace(request, recipients=[member])) if r.rcpt == index]
        except Exception as exc:  # noqa: BLE001 -- the recipient is deferred, not lost
            self.log.warning(f"{request.queue_id}: local delivery to {member[1].address}: "
                             f"{type(exc).__name__}: {exc}", process="local")
            results = []
        return results or [RecipientResult(rcpt=index, status="deferred", dsn="4.3.0",
                                           relay="local", text="local delivery failed")]


def allowed_uids(mail_owner: str) -> set[int]:
    uids = {0}
    try:
        uids.add(pwd.getpwnam(mail_owner or "postillion").pw_uid)
    except KeyError:
        pass
    return uids


def request_limit(params: Any) -> int | None:
    """The largest queue content a request may carry: twice message_size_limit plus
    room for the headers cleanup adds; None when message_size_limit is 0 (no limit)."""
    try:
        limit = int(params.get_int("message_size_limit") or 0)
    except (PostillionError, ValueError):
        limit = DEFAULT_SIZE_LIMIT
    return None if limit <= 0 else 2 * limit + 1024 * 1024


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
    agent = LocalAgent(params, warn=lambda text: log.warning(text, process="local"),
                       info=lambda text: log.info(text, process="local"))
    service = LocalService(agent, log, allowed_uids(params.get("mail_owner")),
                           max_size=request_limit(params))
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
