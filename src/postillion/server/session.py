"""One inbound SMTP session: drives the sans-IO engine over an asyncio transport.

Owns: reading and writing, timeouts, STARTTLS (loop.start_tls), the tarpit, asking policy, SASL
and the queue for decisions, and the session's log lines.  This is the one place where an
unexpected exception becomes a ``451 4.3.0 Error: internal error`` reply plus a panic log line.
Must not import: cli.
Follows: Postfix smtpd(8) behaviour and log lines (docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import socket
import ssl
from dataclasses import dataclass, field

from postillion import replies
from postillion.cleanup.headers import add_missing_headers
from postillion.cleanup.received import received_header
from postillion.cleanup.checks import Disposition, MessageContext, inspect_message
from postillion.cleanup.content import added_recipients, content_checks, new_table_warnings
from postillion.errors import AuthBackendError, AuthRejected, PostillionError, QueueWriteError, TableLookupError
from postillion.maillog import CommandCounters, client_id
from postillion.policy import PolicyContext
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.wakeup import wake_qmgr
from postillion.queue.store import HOLD, INCOMING, PendingMessage
from postillion.replies import Reply
from postillion.sasl.exchange import AuthExchange, Challenge, Lookup, Outcome, Verify
from postillion.server import channel_binding, tls
from postillion.server.service import ServiceContext
from postillion import smtp
from postillion.smtp import NEED_DATA, PAUSED, ServerConnection

READ_HIGH_WATER = 1 << 20  # pause reading when this much unprocessed input is buffered


@dataclass(slots=True)
class SessionCounters:
    """Per-worker totals for `postillion status`."""

    sessions_active: int = 0
    sessions_total: int = 0
    messages_accepted: int = 0
    auth_failures: int = 0
    auth_successes: int = 0
    rejects: int = 0


@dataclass(slots=True)
class _Transaction:
    sender: str = ""
    params: smtp.MailParams = field(default_factory=smtp.MailParams)
    recipients: list[Recipient] = field(default_factory=list)
    pending: PendingMessage | None = None

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.abort()
            self.pending = None


class SmtpProtocol(asyncio.Protocol):
    """asyncio glue: bytes in → engine; a task per connection handles the events."""

    def __init__(self, ctx: ServiceContext, counters: SessionCounters, sessions: set[asyncio.Task[None]]) -> None:
        self.ctx = ctx
        self.counters = counters
        self.sessions = sessions
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection | None = None
        self._data_ready = asyncio.Event()
        self._closed = False
        self._paused = False
        self._accepting_data = True  # False between STARTTLS 220 and the handshake

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio subclasses
        task = asyncio.get_running_loop().create_task(Session(self).run())
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    def data_received(self, data: bytes) -> None:
        if self.conn is None or not self._accepting_data:
            return
        self.conn.receive_data(data)
        self._data_ready.set()
        if len(self.conn._in) > READ_HIGH_WATER and not self._paused and self.transport:
            self.transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.receive_data(b"")
        self._data_ready.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.conn is not None:
            self.conn.receive_data(b"")
        self._data_ready.set()

    async def wait_for_data(self, timeout: float) -> bool:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._data_ready.clear()
        try:
            await asyncio.wait_for(self._data_ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Session:
    """The per-connection logic; runs as a task until the connection ends."""

    def __init__(self, proto: SmtpProtocol) -> None:
        self.proto = proto
        self.ctx = proto.ctx
        self.log = proto.ctx.log
        transport = proto.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self.client_addr: str = str(peer[0])
        if self.client_addr.startswith("::ffff:") and "." in self.client_addr:
            self.client_addr = self.client_addr[7:]
        self.client_port: int = int(peer[1]) if len(peer) > 1 else 0
        local = transport.get_extra_info("sockname") or ("", 0)
        self.local_addr: str = str(local[0])
        if self.local_addr.startswith("::ffff:") and "." in self.local_addr:
            self.local_addr = self.local_addr[7:]
        self.client_name: str = "unknown"
        self.sasl_username: str | None = None
        self.sasl_method: str | None = None
        self.tls_description: str | None = None
        self.tx = _Transaction()
        self.exchange: AuthExchange | None = None
        self.anvil_connected = False
        tls_active = self.ctx.wrappermode
        self.conn = ServerConnection(self.ctx.settings, tls_active=tls_active)
        proto.conn = self.conn

    @property
    def client(self) -> str:
        return client_id(self.client_name, self.client_addr, self.client_port, self.ctx.port_logging)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        counters = self.proto.counters
        counters.sessions_active += 1
        counters.sessions_total += 1
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session boundary: log the bug, tell the client, hang up
            self.log.panic(f"unexpected error in session with {self.client}", exc)
            self.conn.close_with(replies.INTERNAL_ERROR)
            self._flush()
        finally:
            counters.sessions_active -= 1
            self.tx.abort()
            if self.anvil_connected and self.ctx.anvil is not None:
                await self.ctx.anvil.disconnect(self.ctx.service.name, self.client_addr)
            self.log.disconnect(self.client, _counters(self.conn.stats.counts))
            if self.proto.transport is not None:
                self.proto.transport.close()

    async def _run(self) -> None:
        ctx = self.ctx
        if ctx.peername_lookup:
            self.client_name = await _reverse_name(self.client_addr)
        if ctx.settings.auth_enabled and await ctx.sasl_exceptions.match(
            self.client_name, self.client_addr
        ):
            # smtpd_sasl_exceptions_networks: this client is not offered AUTH at all
            self.conn.settings = dataclasses.replace(ctx.settings, auth_enabled=False)
        self.log.connect(self.client)
        if ctx.wrappermode:
            self._log_tls()
        if not await self._connection_limits_ok():
            return
        self.conn.send(replies.greeting(ctx.banner))
        if not ctx.params.get_bool("smtpd_delay_reject"):
            reject = await self._policy("check_client", "CONNECT")
            if reject is not None:
                self.conn.close_with(reject)
        await self._loop()

    async def _loop(self) -> None:
        conn = self.conn
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA:
                await self._flush_tarpit()
                if conn.closing:
                    return
                if not await self.proto.wait_for_data(self.ctx.timeout):
                    self.log.timeout(self.client, self._last_for_log())
                    conn.close_with(replies.timeout(self.ctx.myhostname))
                    self._flush()
                    return
                continue
            if ev is PAUSED:
                await self._flush_tarpit()
                if conn.closing:
                    return
                # Every handler answers its event before returning, so the engine can only be
                # paused here if one forgot to: fail loudly rather than spin.
                raise RuntimeError(f"engine paused in phase {conn.phase} with no reply pending")
            await self._handle(ev)

    def _flush(self) -> None:
        self.proto.write(self.conn.data_to_send())

    async def _flush_tarpit(self) -> None:
        out = self.conn.data_to_send()
        if out:
            if self.conn.tarpit and self.ctx.error_sleep > 0:
                await asyncio.sleep(self.ctx.error_sleep)
            self.proto.write(out)

    def _last_for_log(self) -> str:
        last = self.conn.last_command
        if last in ("DATA", "BDAT") and self.conn.data_bytes:
            return f"{last} ({self.conn.data_bytes} bytes)"
        return last

    # ------------------------------------------------------------------ events
    async def _handle(self, ev: smtp.Event) -> None:
        conn = self.conn
        if isinstance(ev, smtp.Notice):
            self._notice(ev)
        elif isinstance(ev, smtp.ConnectionLost):
            # Postfix does not complain about a client that hangs up right after a message.
            if conn.last_command != "END-OF-MESSAGE":
                self.log.lost_connection(self.client, self._last_for_log())
        elif isinstance(ev, smtp.Helo):
            await self._helo(ev)
        elif isinstance(ev, smtp.MailFrom):
            await self._mail(ev)
        elif isinstance(ev, smtp.RcptTo):
            await self._rcpt(ev)
        elif isinstance(ev, smtp.DataStart):
            reject = await self._policy("check_data", "DATA")
            conn.send(reject or replies.DATA_GO)
        elif isinstance(ev, smtp.MessageComplete):
            await self._message(ev)
        elif isinstance(ev, smtp.Vrfy):
            reject = await self._policy("check_recipient", "VRFY", recipient=ev.argument)
            conn.send(reject or replies.vrfy_ok(ev.argument))
        elif isinstance(ev, smtp.Etrn):
            conn.send(replies.ETRN_UNAVAILABLE)
        elif isinstance(ev, smtp.StartTls):
            await self._starttls()
        elif isinstance(ev, smtp.Auth):
            await self._auth(ev)
        elif isinstance(ev, smtp.AuthResponse):
            await self._auth_response(ev)
        else:  # pragma: no cover - the event union is closed
            raise TypeError(f"unexpected event {ev!r}")

    def _notice(self, ev: smtp.Notice) -> None:
        if ev.kind == "improper_pipelining":
            self.log.improper_pipelining(self.client, ev.command, ev.detail.encode("latin-1"))
        elif ev.kind == "non_smtp_command":
            self.log.non_smtp_command(self.client, ev.detail)
        elif ev.kind == "too_many_errors":
            self.log.too_many_errors(self.client, self._last_for_log())
        elif ev.kind == "bare_lf":
            self.log.warning(f"{self.client}: bare <LF> received after {ev.command}")
        elif ev.kind == "command_too_long":
            self.log.warning(f"{self.client}: command line too long")
        elif ev.kind == "discarded_after_starttls":
            self.log.info(
                f"{self.client}: discarded {ev.detail} bytes of plaintext sent after STARTTLS"
            )
        elif ev.kind == "size_exceeded":
            self.proto.counters.rejects += 1
            self.log.reject(
                None,
                "MAIL",
                self.client,
                replies.SIZE_EXCEEDED,
                sender=ev.detail,
                proto="ESMTP" if self.conn.esmtp else "SMTP",
                helo=self.conn.helo_name,
            )

    def _policy_context(self, *, sender: str | None = None, recipient: str | None = None) -> PolicyContext:
        return PolicyContext(
            client_name=self.client_name,
            client_addr=self.client_addr,
            client_port=self.client_port,
            helo_name=self.conn.helo_name,
            protocol="ESMTP" if self.conn.esmtp else "SMTP",
            sender=sender,
            recipient=recipient,
            sasl_username=self.sasl_username,
            sasl_method=self.sasl_method,
            tls_active=self.conn.tls_active,
            pipelining_violation=self.conn.pipelining_violation,
        )

    async def _policy(
        self,
        check: str,
        stage: str,
        *,
        sender: str | None = None,
        recipient: str | None = None,
    ) -> Reply | None:
        """Ask the restriction engine; log and count a reject like Postfix's NOQUEUE: reject:."""
        if sender is None and self.conn.in_transaction:
            sender = self.tx.sender
        ctx = self._policy_context(sender=sender, recipient=recipient)
        try:
            reject: Reply | None = await getattr(self.ctx.policy, check)(ctx)
        except TableLookupError as exc:
            self.log.warning(f"{self.client}: table lookup failed: {exc}")
            reject = replies.TEMP_LOOKUP_FAILURE
        if reject is not None:
            self.proto.counters.rejects += 1
            queue_id = self.tx.pending.queue_id if self.tx.pending else None
            self.log.reject(
                queue_id,
                stage,
                self.client,
                reject,
                sender=sender,
                recipient=recipient,
                proto="ESMTP" if self.conn.esmtp else "SMTP",
                helo=self.conn.helo_name,
            )
        return reject

    async def _helo(self, ev: smtp.Helo) -> None:
        reject = await self._policy("check_helo", "HELO")  # None unless smtpd_delay_reject = no
        if reject is not None:
            self.conn.send(reject)
            return
        self.tx.abort()
        self.tx = _Transaction()
        self.conn.send(self.conn.ehlo_reply() if ev.extended else self.conn.helo_reply())

    async def _mail(self, ev: smtp.MailFrom) -> None:
        reject = await self._policy("check_sender", "MAIL", sender=ev.address)
        if reject is not None:
            self.conn.send(reject)
            return
        self.tx.abort()
        self.tx = _Transaction(sender=ev.address, params=ev.params)
        self.conn.send(replies.MAIL_OK)

    async def _rcpt(self, ev: smtp.RcptTo) -> None:
        reject = await self._policy("check_recipient", "RCPT", recipient=ev.address)
        if reject is not None:
            self.conn.send(reject)
            return
        if self.tx.pending is None:
            try:
                self.tx.pending = await asyncio.to_thread(self.ctx.queue.begin)
            except QueueWriteError as exc:
                self.log.warning(f"{self.client}: queue file create error: {exc}")
                self.conn.send(replies.QUEUE_WRITE_ERROR)
                return
            self.log.queued_client(
                self.tx.pending.queue_id,
                self.client,
                self.sasl_method,
                self.sasl_username,
                self.tx.params.auth if self.tx.params.auth not in (None, "<>") else None,
            )
        self.tx.recipients.append(
            Recipient(address=ev.address, orcpt=ev.params.orcpt, notify=ev.params.notify)
        )
        self.conn.send(replies.RCPT_OK)

    def _protocol_name(self) -> str:
        if not self.conn.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.conn.tls_active else "") + ("A" if self.sasl_username else "")

    async def _message(self, ev: smtp.MessageComplete) -> None:
        tx = self.tx
        pending = tx.pending
        if pending is None:  # pragma: no cover - the engine only completes with a recipient
            self.conn.send(replies.NO_VALID_RCPT)
            return
        ctx = self.ctx
        now = datetime.datetime.now().astimezone()
        single = tx.recipients[0].address if len(tx.recipients) == 1 else None
        received = received_header(
            helo=self.conn.helo_name or "",
            client_name=self.client_name,
            client_addr=self.client_addr,
            tls_description=self.tls_description,
            tls_received_header=ctx.tls_received_header,
            sasl_username=self.sasl_username if ctx.authenticated_header else None,
            myhostname=ctx.myhostname,
            mail_name=ctx.mail_name,
            protocol=self._protocol_name(),
            queue_id=pending.queue_id,
            single_recipient=single,
            now=now,
        )
        # header_checks see smtpd's Received: (it is part of what cleanup receives) but not
        # the headers cleanup adds below, as in Postfix.
        content = received + ev.content
        disposition, redirect = Disposition.ACCEPT, None
        bcc: tuple[str, ...] = ()
        try:
            checks = content_checks(ctx.params)  # opened once per worker
        except PostillionError as exc:
            self.log.warning(f"{pending.queue_id}: content inspection: {exc}")
            tx.abort()
            self.conn.send(replies.INTERNAL_ERROR)
            return
        if checks:
            result = inspect_message(content, checks, MessageContext(
                queue_id=pending.queue_id, origin=self.client, sender=tx.sender,
                recipient=tx.recipients[0].address, proto="ESMTP" if self.conn.esmtp else "SMTP",
                helo=self.conn.helo_name,
            ))
            for line in (*new_table_warnings(), *result.log):  # under cleanup's name
                self.log.sink.emit(f"{self.log.main_syslog_name}/cleanup", line)
            if result.filter is not None:
                self.log.warning(f"{pending.queue_id}: FILTER {result.filter} ignored: "
                                 "postillion has no content_filter support")
            if result.reply is not None:
                self.proto.counters.rejects += 1
                tx.abort()
                self.conn.send(result.reply)
                self.tx = _Transaction()
                return
            content, disposition = result.content, result.disposition
            redirect, bcc = result.redirect, result.bcc
        # Complete the headers a MUA may leave out, as Postfix's cleanup does for
        # local_header_rewrite_clients (ours also lists permit_sasl_authenticated: submission).
        add = ctx.params.get_bool("always_add_missing_headers") or await self._may_rewrite_headers()
        content, message_id = add_missing_headers(
            content,
            queue_id=pending.queue_id,
            myhostname=ctx.myhostname,
            sender=tx.sender,
            now=now,
            add_from=True,
            add_missing=add,
        )
        try:
            recipients = await self._virtual_aliases(tx.recipients)
        except (TableLookupError, PostillionError) as exc:
            self.log.warning(f"{pending.queue_id}: virtual_alias_maps: {exc}")
            tx.abort()
            self.conn.send(replies.TEMP_LOOKUP_FAILURE)
            return
        if redirect is not None:  # REDIRECT: every recipient is replaced by the target
            recipients = [Recipient(address=redirect)]
        extra = added_recipients([r.address for r in recipients], bcc, ctx.params.get("always_bcc"))
        recipients += [Recipient(address=a, notify=("NEVER",)) for a in extra]
        envelope = Envelope(
            sender=tx.sender,
            recipients=recipients,
            ret=tx.params.ret,
            envid=tx.params.envid,
            body_type=tx.params.body or "7BIT",
            smtputf8=tx.params.smtputf8,
            size=tx.params.size,
            arrival_time=now.timestamp(),
            client_name=None if self.client_name == "unknown" else self.client_name,
            client_addr=self.client_addr,
            client_port=self.client_port,
            helo_name=self.conn.helo_name,
            protocol=self._protocol_name(),
            sasl_method=self.sasl_method,
            sasl_username=self.sasl_username,
            sasl_sender=tx.params.auth if tx.params.auth not in (None, "<>") else None,
            service=ctx.service.name,
        )
        if disposition is Disposition.DISCARD:
            # Claim success and keep nothing (cleanup logged "discard:").
            queue_id = pending.queue_id
            tx.abort()
        else:
            try:
                queue_id = await asyncio.to_thread(
                    pending.commit, envelope, content,
                    queue=HOLD if disposition is Disposition.HOLD else INCOMING,
                )
            except QueueWriteError as exc:
                self.log.warning(f"{pending.queue_id}: queue file write error: {exc}")
                tx.pending = None
                self.conn.send(replies.QUEUE_WRITE_ERROR)
                return
            if disposition is not Disposition.HOLD:
                wake_qmgr(ctx.qmgr_wake)  # new mail: qmgr need not wait for its next scan
        tx.pending = None
        self.proto.counters.messages_accepted += 1
        self.log.message_id(queue_id, message_id or "")
        if ev.chunked:
            self.conn.send(replies.bdat_queued(len(ev.content), queue_id))
        else:
            self.conn.send(replies.queued(queue_id))
        self.tx = _Transaction()

    async def _virtual_aliases(self, recipients: list[Recipient]) -> list[Recipient]:
        """virtual_alias_maps, applied when the message is queued (as Postfix's cleanup does):
        each aliased recipient becomes its targets, remembering the address the client gave
        as ORCPT unless the client sent one."""
        aliases = self.ctx.virtual_aliases
        if aliases is None:
            return list(recipients)
        out: list[Recipient] = []
        seen: set[str] = set()
        for r in recipients:
            targets = await aliases.rewrite(r.address)
            if targets is None:
                targets = [r.address]
            for address in targets:
                if address.lower() in seen:
                    continue
                seen.add(address.lower())
                orcpt = r.orcpt if r.orcpt or address == r.address else f"rfc822;{r.address}"
                out.append(Recipient(address=address, orcpt=orcpt, notify=r.notify))
        return out

    async def _may_rewrite_headers(self) -> bool:
        for word in self.ctx.header_rewrite_clients:
            if word == "permit_sasl_authenticated" and self.sasl_username is not None:
                return True
            if word == "permit_mynetworks" and await self.ctx.mynetworks.match(
                self.client_name, self.client_addr
            ):
                return True
            if word == "permit_inet_interfaces" and self.client_addr == self.local_addr:
                return True  # the client is this machine, talking to one of our addresses
            if word in ("static:all", "permit"):
                return True
        return False

    async def _starttls(self) -> None:
        ctx = self.ctx
        transport = self.proto.transport
        if ctx.ssl_context is None or transport is None:
            self.conn.send(replies.TLS_UNAVAILABLE)
            return
        self.conn.send(replies.STARTTLS_GO)
        self._flush()
        self.proto._accepting_data = False
        loop = asyncio.get_running_loop()
        try:
            new_transport = await loop.start_tls(
                transport,
                self.proto,
                ctx.ssl_context,
                server_side=True,
                ssl_handshake_timeout=ctx.starttls_timeout,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.log.info(f"SSL_accept error from {self.client}: {exc}")
            self.log.lost_connection(self.client, "STARTTLS")
            self.conn.close_with(replies.R(421, "4.7.0", f"{ctx.myhostname} TLS handshake failed"))
            self.conn.data_to_send()  # the channel is unusable; nothing more goes out
            return
        if new_transport is None:
            self.conn.close_with(replies.shutting_down(ctx.myhostname))
            return
        self.proto.transport = new_transport
        self.proto._accepting_data = True
        self.conn.tls_started()
        # RFC 3207 §4.2: the SASL state is forgotten with everything else
        self.sasl_username = None
        self.sasl_method = None
        self.tx.abort()
        self.tx = _Transaction()
        self._log_tls()

    def _log_tls(self) -> None:
        transport = self.proto.transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        if obj is None:
            return
        self.tls_description = tls.describe_session(obj)
        if self.ctx.tls_loglevel >= 1:
            self.log.tls_established(self.client, self.tls_description)

    # ------------------------------------------------------------------ AUTH
    async def _auth(self, ev: smtp.Auth) -> None:
        ctx = self.ctx
        if ctx.auth_rate_limit > 0 and ctx.anvil is not None and await ctx.limits_apply(self.client_name, self.client_addr):
            rate = await ctx.anvil.auth(ctx.service.name, self.client_addr)
            if rate > ctx.auth_rate_limit:
                self.log.warning(
                    f"AUTH command rate limit exceeded: {rate} from {self.client} "
                    f"for service {ctx.service.name}"
                )
                self.conn.send(replies.too_many_auth(self.client_addr))
                return
        if ev.refusal is not None:
            self.conn.send(ev.refusal)
            return
        assert ctx.sasl is not None
        self.exchange = AuthExchange(
            mechanism=ev.mechanism,
            offered=list(self.conn.auth_mechanisms()),
            response_limit=ctx.settings.sasl_response_limit,
            # only SCRAM looks at them: PLAIN/LOGIN need not pay for hashing the certificate
            channel_bindings=(self._channel_bindings()
                              if ev.mechanism.upper().startswith("SCRAM-") else None),
            hostname=ctx.myhostname,
        )
        await self._auth_step(self.exchange.start(ev.initial_response))

    def _channel_bindings(self) -> dict[str, bytes]:
        """What SCRAM -PLUS can bind to on this connection (nothing before TLS)."""
        transport = self.proto.transport
        if not self.conn.tls_active or transport is None:
            return {}
        return channel_binding.channel_bindings(transport.get_extra_info("ssl_object"))

    async def _auth_response(self, ev: smtp.AuthResponse) -> None:
        if self.exchange is None:  # pragma: no cover - the engine only sends these mid-exchange
            self.conn.send(replies.AUTH_ABORTED)
            return
        await self._auth_step(self.exchange.respond(ev.line))

    async def _auth_step(self, action: Challenge | Verify | Lookup | Outcome) -> None:
        exchange = self.exchange
        assert exchange is not None
        ctx = self.ctx
        backend_log: str | None = None
        if isinstance(action, Lookup):
            # SCRAM / CRAM-MD5: only a verifier with stored secrets (the user database) has them
            assert ctx.sasl is not None
            lookup_secret = getattr(ctx.sasl.verifier, "lookup_secret", None)
            try:
                secret, note = (
                    await lookup_secret(action.authcid, action.scheme)
                    if lookup_secret is not None
                    else (None, f"{ctx.sasl.verifier!r} has no stored {action.scheme} secrets")
                )
                action = exchange.looked_up(secret, note=note)
            except AuthBackendError as exc:
                backend_log = exc.log_line
                action = exchange.backend_failed(exc.detail)
        if isinstance(action, Challenge):
            self.conn.send(action.reply)
            return
        if isinstance(action, Verify):
            assert ctx.sasl is not None
            try:
                ok = await ctx.sasl.verifier.verify(
                    action.authcid,
                    action.password,
                    service=ctx.sasl_service,
                    realm=ctx.sasl_realm or None,
                    client_addr=self.client_addr,
                    local_addr=self.local_addr,
                    secured=self.conn.tls_active,
                )
                action = exchange.verified(ok)
            except AuthRejected as exc:
                action = exchange.verified(False, reason=exc.reason)
            except AuthBackendError as exc:
                backend_log = exc.log_line
                action = exchange.backend_failed(exc.detail)
        assert isinstance(action, Outcome), action  # a Lookup or Verify is always answered
        outcome = action
        self.exchange = None
        if outcome.backend_detail:
            self.log.warning(backend_log or f"SASL authentication failure: {outcome.backend_detail}")
        if outcome.log_warning:
            self.log.warning(f"{self.client}: {outcome.log_warning}")
        if outcome.success:
            self.sasl_username = outcome.username
            self.sasl_method = outcome.method
            self.proto.counters.auth_successes += 1
        else:
            self.proto.counters.auth_failures += 1
            if outcome.reply.code == 535 and ctx.error_sleep > 0:
                # Slow down password guessing on every failure, not only past the soft limit.
                self._flush()
                await asyncio.sleep(ctx.error_sleep)
        self.conn.send(outcome.reply)

    # ------------------------------------------------------------------ limits
    async def _connection_limits_ok(self) -> bool:
        ctx = self.ctx
        if ctx.anvil is None or not await ctx.limits_apply(self.client_name, self.client_addr):
            return True
        if ctx.connection_count_limit <= 0 and ctx.connection_rate_limit <= 0:
            return True
        count, rate = await ctx.anvil.connect(ctx.service.name, self.client_addr)
        self.anvil_connected = True
        service = ctx.service.name
        if ctx.connection_count_limit > 0 and count > ctx.connection_count_limit:
            self.log.warning(
                f"Connection concurrency limit exceeded: {count} from {self.client} for service {service}"
            )
        elif ctx.connection_rate_limit > 0 and rate > ctx.connection_rate_limit:
            self.log.warning(
                f"Connection rate limit exceeded: {rate} from {self.client} for service {service}"
            )
        else:
            return True
        self.conn.close_with(replies.too_many_connections(ctx.myhostname, self.client_addr))
        self._flush()
        return False


async def log_failed_tls_accept(ctx: ServiceContext, peer: tuple[str, int], exc: BaseException) -> None:
    """An implicit-TLS (smtps) client whose handshake failed: Postfix's four lines for it."""
    addr, port = str(peer[0]), int(peer[1])
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[7:]
    name = await _reverse_name(addr) if ctx.peername_lookup else "unknown"
    client = client_id(name, addr, port, ctx.port_logging)
    ctx.log.connect(client)
    ctx.log.info(f"SSL_accept error from {client}: {exc or type(exc).__name__}")
    ctx.log.lost_connection(client, "CONNECT")
    ctx.log.disconnect(client, CommandCounters())


def _counters(counts: dict[str, list[int]]) -> CommandCounters:
    out = CommandCounters()
    for name, (ok, total) in counts.items():
        for i in range(total):
            out.record(name, i < ok)
    return out


async def _reverse_name(addr: str) -> str:
    """Postfix's client name: reverse lookup confirmed by a forward lookup, else "unknown"."""
    loop = asyncio.get_running_loop()
    try:
        name, _ = await asyncio.wait_for(
            loop.getnameinfo((addr, 0), socket.NI_NAMEREQD), timeout=5
        )
        infos = await asyncio.wait_for(loop.getaddrinfo(name, None), timeout=5)
    except (OSError, TimeoutError, UnicodeError):
        return "unknown"
    if any(info[4][0] == addr for info in infos):
        return name
    return "unknown"
