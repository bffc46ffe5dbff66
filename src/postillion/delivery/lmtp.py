"""The LMTP delivery agent: one LMTP transaction per request, one reply per recipient.

Owns: ``LmtpAgent`` (a ``DeliveryAgent``), next-hop parsing (``unix:/path``,
``inet:host:port``, ``host:port``, ``[addr]:port``, ``host``), a small LMTP client
(``ReplyParser`` is sans-IO: bytes in, replies out), and Postfix's status texts
(``host NAME[ADDR] said: ... (in reply to RCPT TO command)``, ``connect to ...``,
``lost connection with ...``, ``conversation with ... timed out while ...``).
Must not import: server, cli.
Follows: RFC 2033 (LHLO; after the final dot one reply per accepted RCPT, in RCPT order),
RFC 5321 4.2 (reply syntax), 4.5.2 (dot-stuffing); Postfix lmtp(8)/smtp(8), smtp_connect.c
(``relay=$myhostname[/path]`` for UNIX-domain servers), smtp_proto.c and smtp_trouble.c.

Commands are sent in lock step (no PIPELINING): LMTP peers are local and a request is one
transaction, so the round trips cost little.  No TLS, SASL or DSN parameters are sent.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.queue.envelope import Recipient

LINE_LIMIT = 4096  # longest reply line we keep reading (RFC 5321 4.5.3.1.5 says 512)
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


class LmtpProtocolError(Exception):
    """The server sent something that is not an SMTP/LMTP reply."""


@dataclass(frozen=True, slots=True)
class LmtpReply:
    code: int
    lines: tuple[str, ...]  # text after "ddd-" / "ddd "

    @property
    def dsn(self) -> str:
        """The enhanced status code of the reply, or ``X.0.0`` from its class."""
        m = _ENHANCED.match(self.lines[0] if self.lines else "")
        if m and m.group(1) == str(self.code)[0]:
            return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        return f"{str(self.code)[0]}.0.0"

    def __str__(self) -> str:
        """One line, as Postfix logs it: continuation lines joined with spaces."""
        return f"{self.code} " + " ".join(line for line in self.lines if line) \
            if any(self.lines) else str(self.code)


class ReplyParser:
    """Sans-IO reply reader: ``feed(bytes)``, then ``next_reply()`` until it returns None."""

    def __init__(self) -> None:
        self._buf = b""
        self._lines: list[str] = []

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self) -> LmtpReply | None:
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > LINE_LIMIT:
                    raise LmtpProtocolError("reply line too long")
                return None
            raw, self._buf = self._buf[:end], self._buf[end + 1:]
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise LmtpProtocolError(f"malformed reply: {line[:100]!r}")
            self._lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                code, lines = int(line[:3]), tuple(self._lines)
                self._lines = []
                return LmtpReply(code, lines)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: ``path`` for UNIX-domain, else ``host`` and ``port``."""

    host: str
    port: int = 0
    path: str = ""


def parse_nexthop(nexthop: str, *, default_port: int = 24) -> Endpoint:
    """``unix:/path``; ``inet:host:port``, ``host:port``, ``[addr]:port``, ``host``
    (port ``lmtp_tcp_port``).  ValueError on an empty or malformed name."""
    spec = nexthop.strip()
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise ValueError(f"bad LMTP destination {nexthop!r}")
        return Endpoint(host="", path=path)
    spec = spec.removeprefix("inet:")
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise ValueError(f"bad LMTP destination {nexthop!r}")
        host, rest = spec[1:close], spec[close + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad LMTP destination {nexthop!r}")
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    else:
        host, port_text = spec, ""
    if not host:
        raise ValueError(f"bad LMTP destination {nexthop!r}")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad network port in destination: {nexthop}")
        port = int(port_text)
    return Endpoint(host=host, port=port)


def dot_stuff(content: bytes) -> bytes:
    """CRLF line ends, leading dots doubled, and the final ``.`` line (RFC 5321 4.5.2)."""
    text = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class _Failure(Exception):
    """The session ended early: every recipient without a result gets ``dsn``/``text``."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 label: str) -> None:
        self.reader, self.writer, self.label = reader, writer, label
        self.parser = ReplyParser()
        self.extensions: set[str] = set()
        self.broken = False  # after a timeout or lost connection: no QUIT

    async def reply(self, timeout: float, doing: str) -> LmtpReply:
        try:
            return await self._reply(timeout, doing)
        except _Failure:
            self.broken = True
            raise

    async def _reply(self, timeout: float, doing: str) -> LmtpReply:
        try:
            return await asyncio.wait_for(self._read(), timeout or None)
        except TimeoutError:
            raise _Failure("4.4.2", f"conversation with {self.label} timed out while "
                                    f"{doing}") from None
        except (ConnectionError, EOFError, asyncio.IncompleteReadError):
            raise _Failure("4.4.2", f"lost connection with {self.label} while {doing}") from None
        except LmtpProtocolError as exc:
            raise _Failure("4.5.0", f"{self.label}: {exc} while {doing}") from None

    async def _read(self) -> LmtpReply:
        while (reply := self.parser.next_reply()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError
            self.parser.feed(data)
        return reply

    async def send(self, data: bytes, timeout: float, doing: str) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout or None)
        except TimeoutError:
            self.broken = True
            raise _Failure("4.4.2", f"conversation with {self.label} timed out while "
                                    f"{doing}") from None
        except ConnectionError:
            self.broken = True
            raise _Failure("4.4.2", f"lost connection with {self.label} while {doing}") from None

    async def command(self, line: str, timeout: float, doing: str) -> LmtpReply:
        await self.send(line.encode("utf-8", "surrogateescape") + b"\r\n", timeout, doing)
        return await self.reply(timeout, doing)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, TimeoutError):
            pass


class LmtpAgent:
    """lmtp(8).  ``deliver()`` never raises for delivery problems."""

    def __init__(self, params: Params) -> None:
        self.myhostname = params.get("myhostname") or socket.getfqdn()
        self.lhlo_name = params.get("lmtp_lhlo_name") or self.myhostname
        self.default_port = int(params.get("lmtp_tcp_port") or 24)
        self.t_connect = params.get_time("lmtp_connect_timeout")
        self.t_lhlo = params.get_time("lmtp_lhlo_timeout")
        self.t_mail = params.get_time("lmtp_mail_timeout")
        self.t_rcpt = params.get_time("lmtp_rcpt_timeout")
        self.t_data_init = params.get_time("lmtp_data_init_timeout")
        self.t_data_xfer = params.get_time("lmtp_data_xfer_timeout")
        self.t_data_done = params.get_time("lmtp_data_done_timeout")
        self.t_quit = params.get_time("lmtp_quit_timeout")

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        start = time.monotonic()
        results: dict[int, RecipientResult] = {}
        relay = "none"
        conn_time = 0.0
        session: _Session | None = None

        def finish(index: int, status: str, dsn: str, text: str) -> None:
            now = time.monotonic()
            results[index] = RecipientResult(
                rcpt=index, status=status, dsn=dsn, relay=relay, text=text,
                conn_time=conn_time, xfer_time=max(0.0, now - start - conn_time))

        try:
            try:
                endpoint = parse_nexthop(request.nexthop, default_port=self.default_port)
            except ValueError as exc:
                raise _Failure("4.3.5", f"mail system configuration error: {exc}") from None
            session, relay = await self._connect(endpoint)
            await self._hello(session)
            conn_time = time.monotonic() - start
            await self._transaction(session, request, finish)
        except _Failure as failure:
            status = "deferred" if failure.dsn.startswith("4") else "bounced"
            for index, _rcpt in request.recipients:
                if index not in results:
                    finish(index, status, failure.dsn, failure.text)
        finally:
            if session is not None:
                await self._quit(session)
        return [results[index] for index, _ in request.recipients]

    async def _connect(self, endpoint: Endpoint) -> tuple[_Session, str]:
        if endpoint.path:
            name, addr, port = self.myhostname, endpoint.path, 0
            label = f"{name}[{addr}]"
            connect = asyncio.open_unix_connection(endpoint.path)
        else:
            name, port = endpoint.host, endpoint.port
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    endpoint.host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise _Failure("4.4.4", f"Host or domain name not found. Name service error "
                                        f"for name={endpoint.host} type=A: {exc.strerror}"
                               ) from None
            addr = str(infos[0][4][0])
            label = f"{name}[{addr}]"
            connect = asyncio.open_connection(addr, port)
        where = f"{label}:{port}" if port else label
        try:
            reader, writer = await asyncio.wait_for(connect, self.t_connect or None)
        except TimeoutError:
            raise _Failure("4.4.1", f"connect to {where}: Connection timed out") from None
        except OSError as exc:
            # asyncio's strerror is "Connect call failed (...)"; Postfix logs strerror(errno).
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise _Failure("4.4.1", f"connect to {where}: {reason}") from None
        return _Session(reader, writer, label), where

    async def _hello(self, session: _Session) -> None:
        greeting = await session.reply(self.t_lhlo, "receiving the initial server greeting")
        if greeting.code // 100 != 2:
            raise _Failure(greeting.dsn, f"host {session.label} refused to talk to me: "
                                         f"{greeting}")
        lhlo = await session.command(f"LHLO {self.lhlo_name}", self.t_lhlo,
                                     "performing the LHLO handshake")
        if lhlo.code // 100 != 2:
            raise _Failure(lhlo.dsn, _said(session, lhlo, "LHLO"))
        session.extensions = {line.split()[0].upper() for line in lhlo.lines[1:] if line.split()}

    async def _transaction(self, session: _Session, request: DeliveryRequest,
                           finish: Callable[[int, str, str, str], None]) -> None:
        env = request.envelope
        params = []
        ext = session.extensions
        if "SIZE" in ext:
            params.append(f"SIZE={len(request.content)}")
        if env.body_type == "8BITMIME" and "8BITMIME" in ext:
            params.append("BODY=8BITMIME")
        if env.smtputf8 and "SMTPUTF8" in ext:
            params.append("SMTPUTF8")
        mail = await session.command(" ".join([f"MAIL FROM:<{env.sender}>", *params]),
                                     self.t_mail, "sending MAIL FROM")
        if mail.code // 100 != 2:
            raise _Failure(mail.dsn, _said(session, mail, "MAIL FROM"))
        accepted: list[tuple[int, Recipient]] = []
        for index, rcpt in request.recipients:
            reply = await session.command(f"RCPT TO:<{rcpt.address}>", self.t_rcpt,
                                          "sending RCPT TO")
            if reply.code // 100 == 2:
                accepted.append((index, rcpt))
            else:
                finish(index, _status(reply), reply.dsn, _said(session, reply, "RCPT TO"))
        if not accepted:
            return
        data = await session.command("DATA", self.t_data_init, "sending DATA")
        if data.code != 354:
            for index, _ in accepted:
                finish(index, _status(data), data.dsn, _said(session, data, "DATA"))
            return
        await session.send(dot_stuff(request.content), self.t_data_xfer, "sending message body")
        for index, _rcpt in accepted:
            reply = await session.reply(
                self.t_data_done, "sending end of data -- message may be sent more than once")
            if reply.code // 100 == 2:
                finish(index, "sent", reply.dsn, str(reply))
            else:
                finish(index, _status(reply), reply.dsn, _said(session, reply, "end of DATA"))

    async def _quit(self, session: _Session) -> None:
        if session.broken:
            await session.close()
            return
        try:
            await session.command("QUIT", min(self.t_quit, 10.0), "sending QUIT")
        except _Failure:
            pass
        await session.close()


def _status(reply: LmtpReply) -> str:
    return "deferred" if reply.code // 100 == 4 else "bounced"


def _said(session: _Session, reply: LmtpReply, command: str) -> str:
    return f"host {session.label} said: {reply} (in reply to {command} command)"
