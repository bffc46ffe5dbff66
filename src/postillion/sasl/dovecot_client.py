"""SMTP AUTH against a Dovecot auth server: ``smtpd_sasl_type = dovecot``.

Owns: finding the socket (``smtpd_sasl_path``: relative to ``queue_directory``, ``unix:`` or
``inet:host:port``), one kept-open connection per worker process with request ids and
replies dispatched by id, reconnecting once when the connection has dropped (as Postfix does),
and the ``DovecotVerifier`` that checks PLAIN/LOGIN credentials by relaying them as
``AUTH PLAIN``.
Must not import: server, policy, queue, cli (``sasl.verifiers.make_sasl_server`` calls
``dovecot_sasl_server``).
Follows: Postfix 3.7 src/xsasl/xsasl_dovecot_server.c (AUTH line, timeouts, warning texts),
Postfix SASL_README "Enabling SASL authentication in the Postfix SMTP server" (Dovecot),
the Dovecot 2.3 authentication protocol (``sasl.dovecot_proto``).

The mechanism list offered to SMTP clients is Dovecot's MECH list (in its order) reduced to
what postillion can relay: PLAIN and LOGIN, and only when Dovecot offers PLAIN.  It is read
once when the worker starts; if Dovecot cannot be reached then, PLAIN LOGIN is assumed.

Differences from Postfix: a Dovecot ``FAIL`` is answered with postillion's usual
``535 5.7.8 Error: authentication failed: authentication failure`` (the Verifier protocol
carries no reason text), and ``FAIL`` with ``code=temp_fail`` is a temporary failure (454),
where Postfix answers 535 to every FAIL.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from postillion.errors import AuthBackendError, AuthRejected
from postillion.sasl import dovecot_proto as proto
from postillion.sasl.verifiers import SaslServerConfig

if TYPE_CHECKING:
    from postillion.config import Params

AUTH_TIMEOUT = 10.0  # xsasl_dovecot_server.c AUTH_TIMEOUT, for connect and every read
# Dovecot delays failures (auth_failure_delay 2 s, plus anvil penalties of up to 15 s), so a
# whole request may take much longer than one read.
REQUEST_TIMEOUT = 60.0
RELAYABLE = ("PLAIN", "LOGIN")  # the SMTP mechanisms whose credentials we pass on as AUTH PLAIN
REASON_UNAVAILABLE = "(reason unavailable)"  # smtpd_sasl_glue.c, when Dovecot gives no reason=


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the Dovecot auth-client socket is; ``name`` is the path as configured (for logs)."""

    name: str
    path: str | None = None  # UNIX socket
    host: str | None = None  # TCP
    port: int = 0


def parse_endpoint(spec: str, queue_directory: Path | str) -> Endpoint:
    """``private/auth`` (relative to queue_directory), ``/abs``, ``unix:/abs`` or ``inet:h:p``."""
    if spec.startswith("inet:"):
        host, sep, port = spec[5:].rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"{spec!r}: expected inet:host:port")
        return Endpoint(spec, host=host, port=int(port))
    path = spec.removeprefix("unix:")
    if not path:
        raise ValueError("empty socket path")
    return Endpoint(spec, path=str(Path(queue_directory) / path))


def connect_failed(endpoint: Endpoint, exc: OSError | str) -> AuthBackendError:
    """Postfix's ``warning: SASL: Connect to Dovecot auth socket 'private/auth' failed: No such
    file or directory``, as the session's backend failure."""
    if isinstance(exc, str):
        why = exc
    else:  # asyncio's "Connect call failed (addr)" hides the errno text Postfix logs (%m)
        why = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    text = f"Connect to Dovecot auth socket '{endpoint.name}' failed: {why}"
    return AuthBackendError(text, log_line=f"SASL: {text}")


class _Connection:
    """One open auth-client connection: the handshake result and a reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handshake: proto.ServerHandshake) -> None:
        self.reader = reader
        self.writer = writer
        self.handshake = handshake
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Queue[proto.AuthReply | None]] = {}
        self.closed = False
        self.task = asyncio.create_task(self._read_replies())

    async def _read_replies(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    break  # EOF (or a line beyond the limit): Postfix calls it "lost"
                try:
                    reply = proto.parse_reply(line)
                except proto.ProtocolViolation:
                    continue  # Postfix warns and keeps reading
                if reply is not None and reply.id in self.pending:
                    self.pending[reply.id].put_nowait(reply)
        except (OSError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed = True
            for queue in self.pending.values():
                queue.put_nowait(None)

    def close(self) -> None:
        self.closed = True
        self.task.cancel()
        self.writer.close()


class DovecotAuthClient:
    """A kept-open connection to one Dovecot auth server, shared by a worker's sessions.

    Requests are numbered per connection from 1 (as Postfix); replies are matched by id, so
    sessions may wait for Dovecot at the same time.
    """

    def __init__(self, endpoint: Endpoint, *, timeout: float = AUTH_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._conn: _Connection | None = None
        self._next_id = 0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def mechanisms(self) -> list[str]:
        """Dovecot's mechanism names (``private`` ones left out), connecting if needed."""
        conn = await self._connection()
        return conn.handshake.mechanism_names

    async def start(self, mechanism: str, *, service: str, local_addr: str = "",
                    client_addr: str = "", secured: bool = False,
                    resp: str | None = None) -> tuple[int, proto.AuthReply]:
        """Send AUTH (reconnecting once if the connection is gone); (request id, first reply)."""
        for attempt in (1, 2):
            conn = await self._connection()
            self._next_id += 1
            request_id = self._next_id
            conn.pending[request_id] = asyncio.Queue()
            try:
                conn.writer.write(proto.auth_request(
                    request_id, mechanism, service=service, local_addr=local_addr,
                    client_addr=client_addr, secured=secured, resp=resp))
                await conn.writer.drain()
            except OSError as exc:
                self._drop(conn, request_id)
                if attempt == 2:
                    raise AuthBackendError(
                        f"Can't connect to authentication server '{self.endpoint.name}': "
                        f"{exc.strerror or exc}") from exc
                continue
            return request_id, await self._reply(conn, request_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def cont(self, request_id: int, data: str) -> proto.AuthReply:
        """Answer a CONT reply with ``data`` (base64, may be empty)."""
        conn = self._conn
        if conn is None or conn.closed or request_id not in conn.pending:
            raise AuthBackendError("Connection lost to authentication server")
        try:
            conn.writer.write(proto.cont_request(request_id, data))
            await conn.writer.drain()
        except OSError as exc:
            self._drop(conn, request_id)
            raise AuthBackendError("Connection lost to authentication server") from exc
        return await self._reply(conn, request_id)

    def finish(self, request_id: int) -> None:
        """Forget a request (after OK or FAIL, or when the caller gives up)."""
        if self._conn is not None:
            self._conn.pending.pop(request_id, None)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- internals -----------------------------------------------------------------------

    async def _reply(self, conn: _Connection, request_id: int) -> proto.AuthReply:
        try:
            async with asyncio.timeout(self.request_timeout):
                reply = await conn.pending[request_id].get()
        except TimeoutError:
            self._drop(conn, request_id)
            raise AuthBackendError(
                f"Dovecot auth server '{self.endpoint.name}' did not answer within "
                f"{self.request_timeout:g} seconds") from None
        except asyncio.CancelledError:
            conn.pending.pop(request_id, None)  # the session went away: forget the request
            raise
        if reply is None:
            self._drop(conn, request_id)
            raise AuthBackendError(
                f"Connection lost to authentication server '{self.endpoint.name}'")
        if reply.kind != "CONT":
            conn.pending.pop(request_id, None)
        return reply

    def _drop(self, conn: _Connection, request_id: int) -> None:
        conn.pending.pop(request_id, None)
        if self._conn is conn:
            conn.close()
            self._conn = None

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            conn = self._conn
            if conn is not None and (conn.closed or conn.loop is not loop):
                if conn.loop is loop:
                    conn.close()
                self._conn = conn = None
            if conn is None:
                conn = await self._open()
                self._conn = conn
                self._next_id = 0
            return conn

    async def _open(self) -> _Connection:
        ep = self.endpoint
        try:
            async with asyncio.timeout(self.timeout):
                if ep.path is not None:
                    reader, writer = await asyncio.open_unix_connection(
                        ep.path, limit=proto.LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_connection(
                        ep.host, ep.port, limit=proto.LINE_LIMIT)
        except TimeoutError:
            raise connect_failed(ep, "Connection timed out") from None
        except OSError as exc:
            raise connect_failed(ep, exc) from exc
        handshake = proto.ServerHandshake()
        try:
            writer.write(proto.client_handshake(os.getpid()))
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):
                        raise AuthBackendError(
                            f"Connection lost to authentication server '{ep.name}' "
                            "during the handshake")
                    if handshake.feed(line):
                        break
        except proto.ProtocolViolation as exc:
            writer.close()
            raise AuthBackendError(f"{exc} ('{ep.name}')") from None
        except TimeoutError:
            writer.close()
            raise AuthBackendError(
                f"Dovecot auth server '{ep.name}': no handshake within {self.timeout:g} "
                "seconds") from None
        except (OSError, ValueError) as exc:
            writer.close()
            raise AuthBackendError(f"Couldn't send handshake to '{ep.name}': {exc}") from exc
        except AuthBackendError:
            writer.close()
            raise
        return _Connection(reader, writer, handshake)


class DovecotVerifier:
    """Checks PLAIN/LOGIN credentials by sending them to Dovecot as ``AUTH PLAIN``."""

    def __init__(self, client: DovecotAuthClient, service: str = "smtp") -> None:
        self.client = client
        self.service = service

    async def verify(
        self,
        username: str,
        password: str,
        *,
        service: str | None = None,
        realm: str | None = None,
        client_addr: str | None = None,
        local_addr: str | None = None,
        secured: bool = False,
    ) -> bool:
        # realm is ignored, as by Postfix's Dovecot backend (smtpd_sasl_local_domain).
        message = f"\0{username}\0{password}".encode()
        request_id, reply = await self.client.start(
            "PLAIN",
            service=service or self.service,
            local_addr=local_addr or "",
            client_addr=client_addr or "",
            secured=secured,
            resp=base64.b64encode(message).decode("ascii"),
        )
        if reply.kind == "OK":
            return True
        if reply.kind == "FAIL":
            if reply.temporary:
                why = reply.reason or "temporary failure"
                raise AuthBackendError(
                    f"Dovecot auth server '{self.client.endpoint.name}': {why}")
            # Postfix puts Dovecot's reason= in the 535 reply and its log line
            # (xsasl_dovecot_parse_reply_args); without one, smtpd says "(reason unavailable)".
            raise AuthRejected(reply.reason or REASON_UNAVAILABLE)
        # A CONT to a complete PLAIN message: not a Dovecot we understand.
        self.client.finish(request_id)
        raise AuthBackendError(
            f"Dovecot auth server '{self.client.endpoint.name}': unexpected CONT to AUTH PLAIN")

    def __repr__(self) -> str:
        return f"DovecotVerifier({self.client.endpoint.name!r})"


def handshake_sync(endpoint: Endpoint, timeout: float = AUTH_TIMEOUT) -> proto.ServerHandshake:
    """Connect, read the handshake and hang up (blocking): for the mechanism list at startup.

    Raises AuthBackendError with Postfix's texts.
    """
    try:
        if endpoint.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(endpoint.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise connect_failed(endpoint, exc) from exc
    handshake = proto.ServerHandshake()
    with sock, sock.makefile("rb") as stream:
        try:
            sock.sendall(proto.client_handshake(os.getpid()))
            while True:
                line = stream.readline(proto.LINE_LIMIT)
                if not line.endswith(b"\n"):
                    raise AuthBackendError(
                        f"Connection lost to authentication server '{endpoint.name}' "
                        "during the handshake")
                if handshake.feed(line):
                    return handshake
        except proto.ProtocolViolation as exc:
            raise AuthBackendError(f"{exc} ('{endpoint.name}')") from None
        except (OSError, ValueError) as exc:
            raise AuthBackendError(f"Couldn't send handshake to '{endpoint.name}': {exc}") from exc


def relayed_mechanisms(dovecot_mechanisms: list[str]) -> list[str]:
    """Dovecot's list, in its order, reduced to what we relay (nothing without PLAIN)."""
    names = [m.upper() for m in dovecot_mechanisms]
    if "PLAIN" not in names:
        return []
    out: list[str] = []
    for name in names:
        if name in RELAYABLE and name not in out:
            out.append(name)
    return out


def dovecot_sasl_server(params: Params) -> SaslServerConfig:
    """``smtpd_sasl_type = dovecot``: a DovecotVerifier for ``smtpd_sasl_path``."""
    from postillion.config.saslconf import param_error

    spec = params.get("smtpd_sasl_path").strip()
    queue_directory = Path(params.get("queue_directory") or ".")
    if not queue_directory.is_absolute():
        queue_directory = params.config_dir / queue_directory
    try:
        endpoint = parse_endpoint(spec, queue_directory)
    except ValueError as exc:
        raise param_error(
            params, "smtpd_sasl_path", f"not a Dovecot auth socket: {exc}",
            "use private/auth (relative to queue_directory), unix:/path or inet:host:port",
        ) from None
    notes: list[str] = []
    try:
        offered = handshake_sync(endpoint).mechanism_names
    except AuthBackendError as exc:
        mechanisms = list(RELAYABLE)
        notes.append(f"{exc.detail}; offering {' '.join(mechanisms)} until it answers")
    else:
        mechanisms = relayed_mechanisms(offered)
        if not mechanisms:
            notes.append(
                f"Dovecot auth socket '{spec}' offers {' '.join(offered) or 'no mechanism'}: "
                "postillion needs PLAIN (auth_mechanisms = plain login); AUTH is not offered")
    client = DovecotAuthClient(endpoint)
    return SaslServerConfig(
        verifier=DovecotVerifier(client, params.get("smtpd_sasl_service") or "smtp"),
        mechanisms=mechanisms,
        description=f"Dovecot auth server {spec}",
        notes=notes,
    )
