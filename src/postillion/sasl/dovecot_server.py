"""A Dovecot auth-client server: lets a real Postfix (``smtpd_sasl_type = dovecot``) check
passwords against postillion's users.

Owns: the server side of the Dovecot authentication protocol on one connection (handshake,
``AUTH`` PLAIN and LOGIN with ``CONT`` prompts, ``OK``/``FAIL`` with ``user=``, the failure
delay), and the UNIX/TCP listeners (socket mode and group).
Must not import: config, server, cli (``cli.auth_server`` wires a Verifier in).
Follows: Dovecot 2.3 auth-request-handler.c and mech-plain.c/mech-login.c (what a real 2.3.19
answers, checked live: no ``reason=`` for a wrong password, ``code=temp_fail`` for a backend
failure, ``FAIL`` delayed by auth_failure_delay), Postfix 3.7 xsasl_dovecot_server.c (the client).
A request still open ``REQUEST_TIMEOUT`` seconds after its ``AUTH`` (typically a LOGIN waiting
for ``CONT``) is dropped without a reply, as Dovecot's auth_request_timeout() does; a later
``CONT`` for it gets ``FAIL`` with ``reason=Authentication request timed out``.

Mechanisms are the sans-IO ones from ``sasl.mechanisms``; passwords are checked by any
``Verifier`` (``UserDBVerifier`` runs argon2 in a worker thread), so the event loop never blocks.
Requests on one connection may overlap (each has its own id), as Dovecot allows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import grp
import itertools
import os
import secrets
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from postillion.errors import AuthBackendError
from postillion.sasl import dovecot_proto as proto
from postillion.sasl import mechanisms
from postillion.sasl.mechanisms import Credentials, Failed, Mechanism, NeedMore, Step

if TYPE_CHECKING:
    from postillion.sasl.verifiers import Verifier

FAILURE_DELAY = 2.0  # Dovecot auth_failure_delay default
# Ours: requests one connection may have open at once (Postfix has one per smtpd process); a
# client beyond it is dropped, so it cannot queue unbounded password checks.
MAX_REQUESTS = 100
# Dovecot's MASTER_AUTH_SERVER_TIMEOUT_SECS (master-interface.h): a request's whole life.
REQUEST_TIMEOUT = 150.0
MECHANISMS = (
    proto.Mech("PLAIN", frozenset({"plaintext"})),
    proto.Mech("LOGIN", frozenset({"plaintext"})),
)

# Dovecot's reason texts (auth-request-handler.c).
INVALID_BASE64_INITIAL = "Invalid base64 data in initial response"
INVALID_BASE64_CONTINUED = "Invalid base64 data in continued response"
UNEXPECTED_CONT = "Unexpected continuation"
TIMED_OUT = "Authentication request timed out"
UNSUPPORTED_MECH = "Unsupported authentication mechanism"

_cuids = itertools.count(1)


class _Request:
    def __init__(self, mech: Mechanism, req: proto.AuthRequest) -> None:
        self.mech = mech
        self.mech_name = req.mechanism.lower()
        self.params = req.params
        self.accept_cont = False
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None


class DovecotAuthServer:
    """Serves the auth-client protocol; ``log`` gets one line per notable event."""

    def __init__(
        self,
        verifier: Verifier,
        *,
        failure_delay: float = FAILURE_DELAY,
        request_timeout: float = REQUEST_TIMEOUT,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.verifier = verifier
        self.failure_delay = failure_delay
        self.request_timeout = request_timeout
        self.log = log or (lambda text: None)
        self._mechs = {m.name: m for m in MECHANISMS}

    # --- listeners -----------------------------------------------------------------------

    async def start_unix(
        self, path: str, *, mode: int = 0o660, group: str | None = None
    ) -> asyncio.base_events.Server:
        """Listen on a UNIX socket (a stale socket file is replaced)."""
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(self.handle, path, limit=proto.LINE_LIMIT)
        if group is not None:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        os.chmod(path, mode)
        return server

    async def start_tcp(self, host: str, port: int) -> asyncio.base_events.Server:
        return await asyncio.start_server(self.handle, host, port, limit=proto.LINE_LIMIT)

    # --- one connection ------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(proto.server_handshake(
            MECHANISMS, spid=os.getpid(), cuid=next(_cuids), cookie=secrets.token_hex(16)))
        requests: dict[int, _Request] = {}
        tasks: set[asyncio.Task[None]] = set()
        cpid = "?"
        try:
            first = True
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    self.log(f"client {cpid}: line longer than {proto.LINE_LIMIT} bytes")
                    break
                if not line.endswith(b"\n"):
                    break
                if first:
                    first = False
                    fields = proto.split_line(line)
                    if fields[0] != "VERSION" or len(fields) < 2 or proto.number(fields[1]) is None:
                        self.log("client did not start with VERSION; disconnecting")
                        break
                    if int(fields[1]) != proto.MAJOR_VERSION:
                        self.log(f"client protocol version {fields[1]} is not supported "
                                 f"(we speak {proto.MAJOR_VERSION}); disconnecting")
                        break
                    continue
                try:
                    req = proto.parse_request(line)
                except proto.ProtocolViolation as exc:
                    self.log(f"client {cpid}: {exc}; disconnecting")
                    break
                if isinstance(req, tuple):
                    cmd, args = req
                    if cmd == "CPID" and args:
                        cpid = args[0]
                    continue  # unknown commands are ignored
                if isinstance(req, proto.AuthRequest):
                    if req.id in requests:
                        self.log(f"client {cpid}: duplicate request id {req.id}; disconnecting")
                        break
                    if len(requests) >= MAX_REQUESTS or len(tasks) >= MAX_REQUESTS:
                        self.log(f"client {cpid}: more than {MAX_REQUESTS} requests at once; "
                                 "disconnecting")
                        break
                    self._auth(req, requests, tasks, writer)
                else:
                    self._cont(req, requests, tasks, writer)
                # A client that does not read its replies must not make us buffer them forever.
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            for request in requests.values():
                if request.timer is not None:
                    request.timer.cancel()
            writer.close()

    def _auth(self, req: proto.AuthRequest, requests: dict[int, _Request],
              tasks: set[asyncio.Task[None]], writer: asyncio.StreamWriter) -> None:
        name = req.mechanism.upper()
        mech = mechanisms.new_mechanism(name) if name in self._mechs else None
        if mech is None:
            writer.write(proto.fail_reply(req.id, reason=UNSUPPORTED_MECH))
            return
        if req.resp is None:
            data: bytes | None = None
        else:
            data = _decode(req.resp)
            if data is None:
                writer.write(proto.fail_reply(
                    req.id, code=proto.CODE_INVALID_BASE64, reason=INVALID_BASE64_INITIAL))
                return
        request = requests[req.id] = _Request(mech, req)
        loop = asyncio.get_running_loop()
        request.started = loop.time()
        request.timer = loop.call_later(self.request_timeout, self._expire, req.id, request,
                                        requests)
        self._step(req.id, request, mech.start(data), requests, tasks, writer)

    def _expire(self, request_id: int, request: _Request, requests: dict[int, _Request]) -> None:
        """auth_request_timeout(): forget the request, silently, and free its slot."""
        if not _finish(requests, request_id, request):
            return
        secs = int(asyncio.get_running_loop().time() - request.started)
        rip = request.params.values.get("rip", "")
        if request.accept_cont:
            self.log(f"{request.mech_name}(?,{rip}): Request timed out waiting for client to "
                     f"continue authentication ({secs} secs)")
        else:
            self.log(f"{request.mech_name}(?,{rip}): Request {request_id} timed out after "
                     f"{secs} secs")

    def _cont(self, req: proto.ContRequest, requests: dict[int, _Request],
              tasks: set[asyncio.Task[None]], writer: asyncio.StreamWriter) -> None:
        request = requests.get(req.id)
        if request is None:
            writer.write(proto.fail_reply(req.id, reason=TIMED_OUT))
            return
        if not request.accept_cont:
            _finish(requests, req.id, request)
            writer.write(proto.fail_reply(req.id, reason=UNEXPECTED_CONT))
            return
        request.accept_cont = False
        data = _decode(req.data)
        if data is None:
            _finish(requests, req.id, request)
            writer.write(proto.fail_reply(
                req.id, code=proto.CODE_INVALID_BASE64, reason=INVALID_BASE64_CONTINUED))
            return
        self._step(req.id, request, request.mech.step(data), requests, tasks, writer)

    def _step(self, request_id: int, request: _Request, step: Step,
              requests: dict[int, _Request], tasks: set[asyncio.Task[None]],
              writer: asyncio.StreamWriter) -> None:
        if isinstance(step, NeedMore):
            request.accept_cont = True
            writer.write(proto.cont_reply(request_id, base64.b64encode(step.challenge).decode()))
            return
        if isinstance(step, Credentials):
            coro = self._verify(request_id, request, step, requests, writer)
        elif isinstance(step, Failed):
            coro = self._fail(request_id, request, step, requests, writer)
        else:  # steps of secret-based mechanisms (SCRAM): never offered here
            coro = self._fail(request_id, request, Failed(reason=mechanisms.AUTH_FAILURE),
                              requests, writer)
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _fail(self, request_id: int, request: _Request, step: Failed,
                    requests: dict[int, _Request], writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.failure_delay)
        if _finish(requests, request_id, request):
            writer.write(proto.fail_reply(request_id, user=step.username))

    async def _verify(self, request_id: int, request: _Request, cred: Credentials,
                      requests: dict[int, _Request], writer: asyncio.StreamWriter) -> None:
        p = request.params
        where = f"user={cred.authcid}, rip={p.values.get('rip', '')}, " \
                f"service={p.values.get('service', '')}"
        try:
            ok = await self.verifier.verify(
                cred.authcid,
                cred.password,
                service=p.values.get("service"),
                client_addr=p.values.get("rip") or None,
                local_addr=p.values.get("lip") or None,
                secured="secured" in p.flags,
            )
        except AuthBackendError as exc:
            self.log(f"{where}: temporary failure: {exc.detail}")
            if _finish(requests, request_id, request):
                writer.write(proto.fail_reply(request_id, user=cred.authcid,
                                              code=proto.CODE_TEMPFAIL))
            return
        if ok:
            self.log(f"{where}: authenticated")
            if _finish(requests, request_id, request):
                writer.write(proto.ok_reply(request_id, cred.authcid))
            return
        self.log(f"{where}: password mismatch")
        await asyncio.sleep(self.failure_delay)
        if _finish(requests, request_id, request):
            writer.write(proto.fail_reply(request_id, user=cred.authcid))


def _finish(requests: dict[int, _Request], request_id: int, request: _Request) -> bool:
    """Forget the request; False when it had already ended (a CONT sent while it was being
    checked got "Unexpected continuation"), so no second reply goes out for its id, which the
    client may already be using for a new request."""
    if requests.get(request_id) is not request:
        return False
    del requests[request_id]
    if request.timer is not None:
        request.timer.cancel()
    return True


def _decode(text: str) -> bytes | None:
    """Dovecot's base64: ``=`` or empty is the empty response; anything invalid is None."""
    if text in ("", "="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
