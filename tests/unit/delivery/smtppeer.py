"""A real SMTP server for delivery tests: postillion's own ``ServerConnection`` over loopback.

Owns: a small asyncio driver for the server engine with a scripted policy (per-recipient
replies, a MAIL or end-of-data reply, STARTTLS with a trustme certificate, AUTH PLAIN/LOGIN
against a fixed user) and a record of what the client sent (events and message contents).
Must not import: postillion.server (the real session is tested elsewhere; this is a peer).
Follows: the ServerConnection driver contract (docs/design.md "SMTP engine").

    async with serve_smtp(Policy(rcpt={"bad@x.test": R(550, "5.1.1", "...")})) as peer:
        peer.port, peer.sessions[0].events, peer.messages
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from postillion import replies
from postillion.replies import Reply
from postillion.sasl.exchange import AuthExchange, Challenge, Outcome, Verify
from postillion.smtp import (
    Auth,
    AuthResponse,
    ConnectionLost,
    DataStart,
    Helo,
    MailFrom,
    MessageComplete,
    Notice,
    RcptTo,
    ServerConnection,
    Settings,
    StartTls,
)
from postillion.smtp._events import Sentinel

QUEUE_ID = "5B7C9D1E2F"


@dataclass
class Policy:
    hostname: str = "peer.test"
    greeting: Reply | None = None  # None: "220 <hostname> ESMTP Postfix"
    mail: Reply | None = None  # None: 250 2.1.0 Ok
    rcpt: dict[str, Reply] = field(default_factory=dict)  # address → reply (default 250)
    end_of_data: Reply | None = None  # None: 250 2.0.0 Ok: queued as QUEUE_ID
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    tls_required: bool = False
    auth: dict[str, str] | None = None  # users → passwords; offer AUTH when set
    auth_tls_only: bool = False
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    discard: frozenset[str] = frozenset()  # EHLO keywords not announced
    smtputf8: bool = True
    message_size_limit: int = 10240000
    drop_after: str = ""  # "greeting" | "mail" | "data": hang up there without a reply
    stall_greeting: bool = False  # accept the connection and say nothing
    idle_timeout: float | None = None  # like smtpd_timeout: "421 ... timeout exceeded", hang up
    hangup_after_message: bool = False  # close silently right after the end-of-data reply


@dataclass
class Session:
    events: list = field(default_factory=list)
    tls: bool = False
    authenticated: str | None = None
    quit: bool = False  # the client said QUIT (the engine answers it without an event)


class Peer:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.sessions: list[Session] = []
        self.messages: list[bytes] = []
        self.port = 0

    def settings(self) -> Settings:
        p = self.policy
        return Settings(
            hostname=p.hostname,
            tls_available=p.tls is not None,
            tls_required=p.tls_required,
            auth_enabled=p.auth is not None,
            auth_tls_only=p.auth_tls_only,
            auth_mechanisms=p.mechanisms,
            auth_mechanisms_tls=p.mechanisms,
            smtputf8_enable=p.smtputf8,
            discard_ehlo_keywords=p.discard,
            message_size_limit=p.message_size_limit,
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session()
        self.sessions.append(session)
        p = self.policy
        conn = ServerConnection(self.settings())
        exchange: AuthExchange | None = None
        hangup_pending = False
        try:
            if p.drop_after == "greeting":
                return
            if p.stall_greeting:
                await reader.read()  # until the client gives up
                return
            conn.send(p.greeting or replies.greeting(f"{p.hostname} ESMTP Postfix"))
            writer.write(conn.data_to_send())
            while True:
                ev = conn.next_event()
                if isinstance(ev, Sentinel):
                    writer.write(conn.data_to_send())
                    await writer.drain()
                    if conn.closing:
                        session.quit = True
                        return
                    if hangup_pending:
                        hangup_pending = False
                        return
                    try:
                        data = await asyncio.wait_for(reader.read(65536), p.idle_timeout)
                    except TimeoutError:
                        writer.write(f"421 4.4.2 {p.hostname} Error: timeout exceeded\r\n".encode())
                        await writer.drain()
                        return
                    conn.receive_data(data)
                    continue
                session.events.append(ev)
                if isinstance(ev, ConnectionLost):
                    return
                if isinstance(ev, Notice):
                    continue
                if isinstance(ev, Helo):
                    conn.send(conn.ehlo_reply() if ev.extended else conn.helo_reply())
                elif isinstance(ev, MailFrom):
                    if p.drop_after == "mail":
                        return
                    conn.send(p.mail or replies.MAIL_OK)
                elif isinstance(ev, RcptTo):
                    conn.send(p.rcpt.get(ev.address, replies.RCPT_OK))
                elif isinstance(ev, DataStart):
                    if p.drop_after == "data":
                        return
                    conn.send(replies.DATA_GO)
                elif isinstance(ev, MessageComplete):
                    self.messages.append(ev.content)
                    conn.send(p.end_of_data or replies.queued(QUEUE_ID))
                    hangup_pending = p.hangup_after_message
                elif isinstance(ev, StartTls):
                    conn.send(replies.STARTTLS_GO)
                    writer.write(conn.data_to_send())
                    await writer.drain()
                    assert p.tls is not None
                    try:
                        await writer.start_tls(p.tls)
                    except (ssl.SSLError, OSError):
                        return
                    conn.tls_started()
                    session.tls = True
                elif isinstance(ev, Auth):
                    if ev.refusal is not None:
                        conn.send(ev.refusal)
                        continue
                    exchange = AuthExchange(ev.mechanism, offered=list(p.mechanisms))
                    self._auth_step(conn, session, exchange, exchange.start(ev.initial_response))
                elif isinstance(ev, AuthResponse):
                    assert exchange is not None
                    self._auth_step(conn, session, exchange, exchange.respond(ev.line))
                else:
                    raise AssertionError(f"unexpected event {ev!r}")
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    def _auth_step(self, conn: ServerConnection, session: Session, ex: AuthExchange, action) -> None:
        while True:
            if isinstance(action, Challenge):
                conn.send(action.reply)
                return
            if isinstance(action, Verify):
                users = self.policy.auth or {}
                action = ex.verified(users.get(action.authcid) == action.password)
                continue
            assert isinstance(action, Outcome)
            if action.success:
                session.authenticated = action.username
            conn.send(action.reply)
            return


@contextlib.asynccontextmanager
async def serve_smtp(
    policy: Policy | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Peer]:
    peer = Peer(policy or Policy())
    server = await asyncio.start_server(peer.handle, host, port)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


async def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
