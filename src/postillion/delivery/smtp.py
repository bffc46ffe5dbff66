"""The smtp delivery agent: one delivery request → MX/relayhost → SMTP sessions → one result per recipient.

Owns: the asyncio driver around ``smtp.ClientConnection``: connecting (smtp_connect_timeout,
trying the next MX address), the greeting, EHLO/HELO, client STARTTLS per
smtp_tls_security_level (none, may, encrypt, verify, secure), client SASL (PLAIN/LOGIN with
smtp_sasl_password_maps), MAIL/RCPT/DATA with PIPELINING when offered, connection reuse
(sessions kept in a ``ConnectionCache`` by next hop and by address, RSET probe before reuse,
smtp_connection_* limits), the 8BITMIME downgrade (mime8.py) and Postfix's status texts
(``host mx[ip] said: ... (in reply to RCPT TO command)``, ``connect to mx[ip]:25:
Connection refused``, ``lost connection with ...``).
Must not import: server, cli, maillog (the queue manager logs the results).
Follows: Postfix smtp(8): smtp_connect.c (server iteration, FINAL_SERVER, smtp_reuse_nexthop
before the DNS lookup, then smtp_reuse_addr per address), smtp_reuse.c and smtp_proto.c (the
protocol, xfer_states/xfer_request texts, RSET probe and final RSET, SMTP_MIME_DOWNGRADE),
smtp_trouble.c (site/message/recipient failures), smtp_sasl_glue.c (password lookup: remote
host, then nexthop); RFC 3207, RFC 4954, RFC 6152.

Differences from Postfix: caching "on demand" has no backlog signal from the queue manager,
so every clean session is cached (for smtp_connection_cache_time_limit); TLS sessions are
cached as they are (Postfix needs tlsproxy(8) and smtp_tls_connection_reuse for that).
Not done (yet): BDAT, client certificates, DANE/fingerprint levels, loop detection against
our own addresses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import ipaddress
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.conncache import ConnectionCache
from postillion.delivery.dns import (
    LookupFailure,
    Nexthop,
    Resolver,
    Target,
    families_for,
    parse_nexthop,
)
from postillion.delivery.mime8 import downgrade
from postillion.errors import ConfigError, TableLookupError
from postillion.queue.envelope import Recipient
from postillion.smtp._client import (
    DATA,
    END_OF_DATA,
    MAIL,
    RCPT,
    SASL_MECHANISMS,
    ClientConnection,
    ClientProtocolError,
    Closed,
    SaslClient,
    ServerReply,
)
from postillion.smtp._events import NEED_DATA
from postillion.tables import TableList, open_tables

TLS_LEVELS = ("none", "may", "encrypt", "verify", "secure")

# Postfix's xfer_states[] / where texts, for "lost connection with X while ...".
W_GREETING = "receiving the initial server greeting"
W_EHLO = "performing the EHLO handshake"
W_HELO = "performing the HELO handshake"
W_STARTTLS = "receiving the STARTTLS response"
W_MAIL = "sending MAIL FROM"
W_RCPT = "sending RCPT TO"
W_DATA = "sending DATA command"
W_BODY = "sending message body"
W_DOT = "sending end of data -- message may be sent more than once"
W_RSET_FINAL = "sending final RSET"
W_RSET_PROBE = "sending RSET probe"

# xfer_request[]: the "(in reply to ...)" names.
IN_REPLY_TO = {MAIL: "MAIL FROM command", RCPT: "RCPT TO command", DATA: "DATA command",
               END_OF_DATA: "end of DATA command"}


@dataclass(frozen=True, slots=True)
class _Status:
    status: str  # "sent" | "deferred" | "bounced"
    dsn: str
    text: str
    relay: str
    conn_use: int = 0


class _SessionFail(Exception):
    """A failure that applies to every recipient still open in this session."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text


class _TlsFallback(Exception):
    """STARTTLS failed at level may: Postfix retries the same server in plaintext."""


def _failure(reply: ServerReply, namaddr: str, command: str) -> tuple[str, str]:
    """(dsn, text) for a negative reply, as vsmtp_fill_dsn() words it."""
    dsn = reply.enhanced
    text = f"host {namaddr} said: {reply.text} (in reply to {IN_REPLY_TO[command]})"
    if not dsn or dsn[0] not in "45":
        return "5.5.0", "Protocol error: " + text
    return dsn, text


def _needs_smtputf8(request: DeliveryRequest) -> bool:
    """Postfix's DELIVERY_REQUIRES_SMTPUTF8: requested, and some address or header is UTF-8."""
    env = request.envelope
    if not env.smtputf8:
        return False
    if not env.sender.isascii() or any(not r.address.isascii() for _, r in request.recipients):
        return True
    header_end = request.content.find(b"\r\n\r\n")
    headers = request.content if header_end < 0 else request.content[:header_end]
    return not headers.isascii()


def _eight_bit(request: DeliveryRequest) -> bool:
    return request.envelope.body_type == "8BITMIME" or not request.content.isascii()


def _cert_names(cert: dict) -> tuple[list[str], list[str]]:
    dns_names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    ips = [v for k, v in cert.get("subjectAltName", ()) if k == "IP Address"]
    if not dns_names:
        for rdn in cert.get("subject", ()):
            dns_names += [v for k, v in rdn if k == "commonName"]
    return dns_names, ips


def _name_matches(pattern: str, name: str, *, subdomains: bool) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if subdomains:
        # dot-nexthop: the certificate names some host below the nexthop domain.
        base = pattern.removeprefix("*.")
        return base == name and pattern != base or base.endswith("." + name)
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def cert_matches(cert: dict, wanted: list[tuple[str, bool]]) -> bool:
    """Does a verified peer certificate name one of ``wanted`` (name, subdomains-allowed)?"""
    dns_names, ips = _cert_names(cert)
    for name, subdomains in wanted:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        if ip is not None:
            if any(ipaddress.ip_address(v.strip()) == ip for v in ips):
                return True
            continue
        if any(_name_matches(p, name, subdomains=subdomains) for p in dns_names):
            return True
    return False


class SmtpAgent:
    """``DeliveryAgent`` for the smtp (and relay) transports.

    ``params``: main.cf with the service's overrides.  ``resolver``: injectable for tests
    (default: built from postillion_dns_servers, inet_protocols, smtp_host_lookup).
    ``clock``: monotonic seconds, for the conn/xfer delays.
    """

    def __init__(
        self,
        params: Params,
        *,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params
        self.clock = clock
        lookup = [w.lower() for w in params.get_list("smtp_host_lookup")]
        self.resolver = resolver or Resolver(
            params.get_list("postillion_dns_servers"),
            families=families_for(params.get_list("inet_protocols")),
            use_dns="dns" in lookup,
            native="native" in lookup,
            address_limit=params.get_int("smtp_mx_address_limit"),
            randomize=params.get_bool("smtp_randomize_addresses"),
            defer_no_mx_address=params.get_bool("smtp_defer_if_no_mx_address_found"),
        )
        self.helo_name = params.get("smtp_helo_name")
        self.timeouts = {name: params.get_time(f"smtp_{name}_timeout") for name in (
            "connect", "helo", "mail", "rcpt", "data_init", "data_xfer", "data_done", "quit",
            "starttls")}
        self.skip_5xx_greeting = params.get_bool("smtp_skip_5xx_greeting")
        self.session_limit = params.get_int("smtp_mx_session_limit")
        self.soft_bounce = params.get_bool("soft_bounce")
        self.tls_level = self._tls_level(params)
        self.verify_match = params.get_list("smtp_tls_verify_cert_match")
        self.secure_match = params.get_list("smtp_tls_secure_cert_match")
        self._tls_plain_ctx: ssl.SSLContext | None = None
        self._tls_verify_ctx: ssl.SSLContext | None = None
        self.sasl_enable = params.get_bool("smtp_sasl_auth_enable")
        self.sasl_maps = TableList(open_tables(params.get("smtp_sasl_password_maps"), params.config_dir)
                                   if self.sasl_enable else [])
        self.sasl_options = {
            "plain": {w.lower() for w in params.get_list("smtp_sasl_security_options")},
            "tls": {w.lower() for w in params.get_list("smtp_sasl_tls_security_options")},
            "verified": {w.lower() for w in params.get_list("smtp_sasl_tls_verified_security_options")},
        }
        self.sasl_filter = [w.upper() for w in params.get_list("smtp_sasl_mechanism_filter")]
        self.sasl_soft_bounce = params.get_bool("smtp_sasl_auth_soft_bounce")
        self.timeouts["rset"] = params.get_time("smtp_rset_timeout")
        self.cache_on_demand = params.get_bool("smtp_connection_cache_on_demand")
        self.cache_destinations = {w.lower() for w in params.get_list("smtp_connection_cache_destinations")}
        self.reuse_time_limit = params.get_time("smtp_connection_reuse_time_limit")
        self.reuse_count_limit = params.get_int("smtp_connection_reuse_count_limit")
        self.cache: ConnectionCache[_Session] = ConnectionCache(params.get_time("smtp_connection_cache_time_limit"))
        self.mime_output_conversion = not params.get_bool("disable_mime_output_conversion")
        self.mime_nesting_limit = params.get_int("mime_nesting_limit")
        self.mime_boundary_limit = params.get_int("mime_boundary_length_limit")

    @staticmethod
    def _tls_level(params: Params) -> str:
        level = params.get("smtp_tls_security_level").strip().lower()
        if not level:
            # Postfix's compatibility with the obsolete booleans.
            if params.get_bool("smtp_enforce_tls"):
                return "encrypt"
            return "may" if params.get_bool("smtp_use_tls") else "none"
        if level not in TLS_LEVELS:
            raise ConfigError(f'invalid tls security level: "{level}"', name="smtp_tls_security_level",
                              fix="use none, may, encrypt, verify or secure")
        return level

    def tls_context(self, verify: bool) -> ssl.SSLContext:
        """The client TLS context: no verification for may/encrypt, CA checks for verify/secure.

        Host names are matched by ``cert_matches`` after the handshake (Postfix's
        smtp_tls_*_cert_match lists), so the context's own check_hostname stays off; and no
        SNI is sent, like Postfix with smtp_tls_servername empty.
        """
        if verify:
            if self._tls_verify_ctx is None:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_REQUIRED
                cafile = self.params.path("smtp_tls_CAfile")
                if cafile is not None:
                    ctx.load_verify_locations(cafile=str(cafile))
                self._tls_verify_ctx = ctx
            return self._tls_verify_ctx
        if self._tls_plain_ctx is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._tls_plain_ctx = ctx
        return self._tls_plain_ctx

    # ------------------------------------------------------------------ delivery
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        start = self.clock()
        open_rcpts = dict(request.recipients)
        done: dict[int, RecipientResult] = {}
        timing = _Timing(start)

        def finish(idx: int, st: _Status) -> None:
            status, dsn = st.status, st.dsn
            if status == "bounced" and self.soft_bounce:
                status, dsn = "deferred", "4" + dsn[1:]
            now = self.clock()
            mail_at = timing.mail_at
            conn = (mail_at if mail_at is not None else now) - start
            xfer = now - mail_at if mail_at is not None else 0.0
            done[idx] = RecipientResult(rcpt=idx, status=status, dsn=dsn, relay=st.relay,
                                        text=st.text, conn_time=conn, xfer_time=xfer,
                                        conn_use=st.conn_use)
            open_rcpts.pop(idx, None)

        def fail_all(st: _Status) -> None:
            for idx in list(open_rcpts):
                finish(idx, st)

        def results() -> list[RecipientResult]:
            return [done[i] for i, _ in request.recipients]

        try:
            nexthop = parse_nexthop(request.nexthop)
        except ValueError as exc:
            fail_all(_Status("deferred", "4.3.5", str(exc), "none"))
            return results()

        caching = self._caching(request.nexthop, nexthop)
        dest_label = f"{nexthop.host.lower()}:{nexthop.port}:{'mx' if nexthop.mx else 'host'}"
        last = _Status("deferred", "4.4.1", f"no route to {request.nexthop}", "none")
        sessions = 0

        async def attempt(session: _Session, *, final: bool, best: bool) -> _Status | None:
            """One session's worth of delivery; None when the same server must be retried
            in plaintext (STARTTLS failed at level may)."""
            nonlocal last
            session.bind(request, list(open_rcpts.items()), timing)
            clean = False
            try:
                outcomes = await session.run()
                clean = True
            except _TlsFallback:
                await session.close()
                return None
            except _SessionFail as exc:
                outcomes = {idx: _Status(_status_of(exc.dsn), exc.dsn, exc.text, session.relay, session.uses)
                            for idx in open_rcpts}
            if clean:
                await self._release(session, labels=(dest_label,) if best else ())
            else:
                await session.close()
            for idx, st in outcomes.items():
                if st.status == "deferred" and not final:
                    last = st  # Postfix keeps the recipient for the next server
                    continue
                if st.status == "bounced" and self.soft_bounce and not final:
                    last = st
                    continue
                finish(idx, st)
            return last

        # Postfix's smtp_reuse_nexthop(): a cached session for this next hop goes first,
        # before any DNS lookup.
        if caching:
            session = await self._reuse(dest_label)
            if session is not None:
                sessions += 1
                await attempt(session, final=False, best=True)
                if not open_rcpts:
                    return results()

        try:
            targets = await self.resolver.targets(nexthop)
        except LookupFailure as exc:
            status = "deferred" if exc.dsn[0] == "4" else "bounced"
            fail_all(_Status(status, exc.dsn, exc.text, "none"))
            return results()

        best_pref = targets[0].pref if targets else 0
        i = 0
        use_tls = True
        while i < len(targets) and open_rcpts:
            target = targets[i]
            final = i == len(targets) - 1 or (self.session_limit > 0 and sessions + 1 >= self.session_limit)
            endpoint = self._endpoint_label(target, request.nexthop)
            session = await self._reuse(endpoint) if caching and use_tls else None
            if session is None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(target.address, target.port), self.timeouts["connect"])
                except (OSError, TimeoutError) as exc:
                    last = _Status("deferred", "4.4.1",
                                   f"connect to {target.namaddrport}: {_strerror(exc)}", "none")
                    i += 1
                    continue
                session = _Session(self, target, nexthop.host, reader, writer, tls_allowed=use_tls,
                                   endpoint=endpoint, cacheable=caching)
            sessions += 1
            if await attempt(session, final=final, best=target.pref == best_pref) is None:
                use_tls = False  # same server again, in plaintext
                continue
            use_tls = True
            if final:
                break
            i += 1
        fail_all(last)
        return results()

    # ------------------------------------------------------------------ connection cache
    def _caching(self, nexthop_text: str, nexthop: Nexthop) -> bool:
        """smtp_connection_cache_on_demand, or a destination named in
        smtp_connection_cache_destinations (the nexthop as written, or its host)."""
        if self.cache_on_demand:
            return True
        names = {nexthop_text.strip().lower(), nexthop.host.lower(),
                 f"[{nexthop.host.lower()}]", f"[{nexthop.host.lower()}]:{nexthop.port}"}
        return bool(names & self.cache_destinations)

    def _endpoint_label(self, target: Target, request_nexthop: str) -> str:
        label = f"[{target.address}]:{target.port}"
        # Credentials (looked up by server name, then by the request's nexthop as written:
        # "[relay]:587" and "relay:587" can have different ones) and certificate names depend
        # on both: such sessions are only shared when both are the same (Postfix puts the
        # request nexthop in the label).
        if self.sasl_enable or self.tls_level in ("verify", "secure"):
            label += f"/{request_nexthop.strip().lower()}/{target.host.lower()}"
        return label

    async def _reuse(self, label: str) -> _Session | None:
        """A cached session that still answers an RSET probe; dead ones are dropped silently."""
        while (session := self.cache.take(label)) is not None:
            if await session.probe():
                return session
            await session.close()
        return None

    async def _release(self, session: _Session, *, labels: tuple[str, ...]) -> None:
        """After a transaction: keep the session for the next delivery, or QUIT."""
        if session.cacheable and self._may_reuse(session):
            if not session.needs_rset or await session.rset(W_RSET_FINAL):
                self.cache.store(session, (*labels, session.endpoint))
                return
            await session.close()
            return
        await session.quit()
        await session.close()

    def _may_reuse(self, session: _Session) -> bool:
        if self.reuse_count_limit > 0 and session.uses - 1 >= self.reuse_count_limit:
            return False
        return self.clock() - session.created < self.reuse_time_limit

    async def aclose(self) -> None:
        """QUIT every cached connection (the queue manager is stopping)."""
        await self.cache.aclose()

    async def sasl_credentials(self, host: str, nexthop: str) -> tuple[str, str] | None:
        """username, password for this server: looked up by remote host name, then nexthop."""
        if not self.sasl_maps:
            return None
        for key in (host, nexthop):
            value = await self.sasl_maps.lookup(key)
            if value is not None:
                user, _, password = value.partition(":")
                return user, password
        return None


def _status_of(dsn: str) -> str:
    return "deferred" if dsn.startswith("4") else "bounced"


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return os.strerror(errno.ETIMEDOUT)  # "Connection timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class _Timing:
    start: float
    mail_at: float | None = None  # when MAIL FROM went out (end of "c", start of "d")


class _Session:
    """One SMTP connection: set up once (greeting, EHLO, STARTTLS, AUTH), then one
    transaction per delivery request bound to it; kept in the agent's cache in between."""

    def __init__(
        self,
        agent: SmtpAgent,
        target: Target,
        nexthop_domain: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls_allowed: bool,
        endpoint: str = "",
        cacheable: bool = False,
    ) -> None:
        self.agent = agent
        self.target = target
        self.nexthop_domain = nexthop_domain
        self.reader = reader
        self.writer = writer
        self.tls_allowed = tls_allowed
        self.endpoint = endpoint
        self.cacheable = cacheable
        self.conn = ClientConnection()
        self.namaddr = target.namaddr
        self.relay = target.namaddrport
        self.tls_verified = False
        self.ready = False  # greeting, EHLO, STARTTLS and AUTH done
        self.created = agent.clock()
        self.uses = 0  # transactions started on this connection (Postfix's conn_use)
        self.needs_rset = False  # a transaction was left open (no end of data)
        self.request: DeliveryRequest
        self.rcpts: list[tuple[int, Recipient]] = []
        self.timing = _Timing(self.created)

    def bind(self, request: DeliveryRequest, rcpts: list[tuple[int, Recipient]], timing: _Timing) -> None:
        """The delivery request the next transaction carries."""
        self.request = request
        self.rcpts = rcpts
        self.timing = timing

    # ------------------------------------------------------------------ I/O helpers
    async def _reply(self, where: str, timeout: float) -> ServerReply:
        while True:
            try:
                ev = self.conn.next_event()
            except ClientProtocolError as exc:
                raise _SessionFail("4.4.2", f"conversation with {self.namaddr} failed while {where}: {exc}") from exc
            if isinstance(ev, ServerReply):
                return ev
            if isinstance(ev, Closed):
                raise _SessionFail("4.4.2", f"lost connection with {self.namaddr} while {where}")
            assert ev is NEED_DATA
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except TimeoutError:
                raise _SessionFail("4.4.2", f"conversation with {self.namaddr} timed out while {where}") from None
            except OSError:
                data = b""
            self.conn.receive_data(data)

    async def _send(self, data: bytes, where: str, timeout: float) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError:
            raise _SessionFail("4.4.2", f"conversation with {self.namaddr} timed out while {where}") from None
        except OSError:
            raise _SessionFail("4.4.2", f"lost connection with {self.namaddr} while {where}") from None

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, TimeoutError, ssl.SSLError):
            pass

    async def quit(self) -> None:
        # smtp_skip_quit_response = yes: send QUIT and hang up without waiting.
        try:
            self.writer.write(self.conn.quit(expect_reply=False))
            await asyncio.wait_for(self.writer.drain(), self.agent.timeouts["quit"])
        except (OSError, TimeoutError, ssl.SSLError):
            pass

    async def aclose(self) -> None:
        """The cache's idle limit expired: QUIT and hang up."""
        await self.quit()
        await self.close()

    async def rset(self, where: str) -> bool:
        """RSET and a 2xx reply; False for anything else (the session is then unusable)."""
        t = self.agent.timeouts["rset"]
        try:
            await self._send(self.conn.rset(), where, t)
            reply = await self._reply(where, t)
        except _SessionFail:
            return False
        self.needs_rset = False
        return reply.code // 100 == 2

    async def probe(self) -> bool:
        """Is a cached connection still alive?  (Postfix's RSET probe before reuse.)"""
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        return await self.rset(W_RSET_PROBE)

    # ------------------------------------------------------------------ protocol
    async def run(self) -> dict[int, _Status]:
        """One transaction for the bound request, after the set-up on a new connection."""
        if not self.ready:
            await self._setup()
            self.ready = True
        if _needs_smtputf8(self.request) and "SMTPUTF8" not in self.conn.extensions:
            raise _SessionFail("5.6.7", f"SMTPUTF8 is required, but was not offered by host {self.namaddr}")
        limit = self.conn.extensions.size_limit
        size = len(self.request.content)
        if limit and size > limit:
            raise _SessionFail("5.3.4", f"message size {size} exceeds size limit {limit} of server {self.namaddr}")
        self.uses += 1
        return await self._transaction()

    async def _setup(self) -> None:
        t = self.agent.timeouts
        greeting = await self._reply(W_GREETING, t["helo"])
        if greeting.code // 100 != 2:
            dsn = greeting.enhanced or "4.0.0"
            if dsn[0] == "5" and self.agent.skip_5xx_greeting:
                dsn = "4" + dsn[1:]
            raise _SessionFail(dsn, f"host {self.namaddr} refused to talk to me: {greeting.text}")
        await self._hello()
        if _needs_smtputf8(self.request) and "SMTPUTF8" not in self.conn.extensions:
            raise _SessionFail("5.6.7", f"SMTPUTF8 is required, but was not offered by host {self.namaddr}")
        await self._starttls()
        await self._authenticate()

    async def _hello(self) -> None:
        t = self.agent.timeouts["helo"]
        await self._send(self.conn.ehlo(self.agent.helo_name), W_EHLO, t)
        reply = await self._reply(W_EHLO, t)
        if reply.code // 100 == 2:
            return
        if reply.code == 421:
            raise _SessionFail(reply.enhanced, f"host {self.namaddr} refused to talk to me: {reply.text}")
        await self._send(self.conn.helo(self.agent.helo_name), W_HELO, t)
        reply = await self._reply(W_HELO, t)
        if reply.code // 100 != 2:
            raise _SessionFail(reply.enhanced or "4.0.0", f"host {self.namaddr} refused to talk to me: {reply.text}")

    async def _starttls(self) -> None:
        level = self.agent.tls_level
        required = level in ("encrypt", "verify", "secure")
        if level == "none" or not self.tls_allowed:
            if required:
                raise _SessionFail("4.7.4", f"TLS is required, but was not offered by host {self.namaddr}")
            return
        if "STARTTLS" not in self.conn.extensions:
            if required:
                raise _SessionFail("4.7.4", f"TLS is required, but was not offered by host {self.namaddr}")
            return
        t = self.agent.timeouts["starttls"]
        await self._send(self.conn.starttls(), W_STARTTLS, t)
        reply = await self._reply(W_STARTTLS, t)
        if reply.code // 100 != 2:
            if required:
                raise _SessionFail(reply.enhanced or "4.0.0",
                                   f"TLS is required, but host {self.namaddr} refused to start TLS: {reply.text}")
            return  # may: go on in plaintext
        verify = level in ("verify", "secure")
        ctx = self.agent.tls_context(verify)
        try:
            await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=None), t)
        except ssl.SSLCertVerificationError:
            raise _SessionFail("4.7.5", "Server certificate not verified") from None
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError):
            if not required:
                raise _TlsFallback() from None
            raise _SessionFail("4.7.5", "Cannot start TLS: handshake failure") from None
        if verify:
            cert = self.writer.get_extra_info("peercert") or {}
            if not cert_matches(cert, self._cert_names(level)):
                raise _SessionFail("4.7.5", "Server certificate not verified")
            self.tls_verified = True
        self.conn.tls_started()
        # RFC 3207 §4.2: EHLO again; the announced extensions may differ under TLS.
        await self._hello()

    def _cert_names(self, level: str) -> list[tuple[str, bool]]:
        words = self.agent.verify_match if level == "verify" else self.agent.secure_match
        out: list[tuple[str, bool]] = []
        for w in words:
            lw = w.lower()
            if lw == "hostname":
                out.append((self.target.host, False))
            elif lw == "nexthop":
                out.append((self.nexthop_domain, False))
            elif lw == "dot-nexthop":
                out.append((self.nexthop_domain, True))
            elif w.startswith("."):
                out.append((w[1:], True))
            else:
                out.append((w, False))
        return out

    async def _authenticate(self) -> None:
        agent = self.agent
        if not agent.sasl_enable or "AUTH" not in self.conn.extensions:
            return
        try:
            creds = await agent.sasl_credentials(self.target.host, self.request.nexthop)
        except TableLookupError:
            raise _SessionFail("4.3.0", f"local data error while talking to {self.namaddr}") from None
        if creds is None:
            return
        if self.tls_verified:
            options = agent.sasl_options["verified"]
        elif self.conn.tls_active:
            options = agent.sasl_options["tls"]
        else:
            options = agent.sasl_options["plain"]
        offered = self.conn.extensions.auth_mechanisms
        if agent.sasl_filter:
            offered = tuple(m for m in offered if m in agent.sasl_filter)
        # Cyrus semantics for the mechanisms we have: noplaintext rules out PLAIN and LOGIN.
        usable = [m for m in offered if m in SASL_MECHANISMS and "noplaintext" not in options]
        if not usable:
            raise _SessionFail("4.7.0", f"SASL authentication failed: server {self.namaddr} offered no "
                               "compatible authentication mechanisms for this type of connection security")
        client = SaslClient(usable[0], *creds)
        t = agent.timeouts["helo"]
        await self._send(self.conn.auth(client.mechanism, client.initial()), W_EHLO, t)
        while True:
            reply = await self._reply(W_EHLO, t)
            if reply.code == 334:
                try:
                    challenge = base64.b64decode(reply.words[-1].strip(), validate=True)
                    line = client.step(challenge)
                except (binascii.Error, ClientProtocolError):
                    raise _SessionFail("4.7.0", "SASL authentication failed; authentication protocol "
                                       f"loop with server {self.namaddr}") from None
                await self._send(self.conn.auth_response(line), W_EHLO, t)
                continue
            if reply.code // 100 == 2:
                return
            dsn = reply.enhanced or "4.7.0"
            if dsn[0] == "5" and agent.sasl_soft_bounce:
                dsn = "4" + dsn[1:]
            raise _SessionFail(dsn, f"SASL authentication failed; server {self.namaddr} said: {reply.text}")

    def _mail_command(self) -> bytes:
        ext = self.conn.extensions
        env = self.request.envelope
        body = None
        if "8BITMIME" in ext or "SMTPUTF8" in ext:
            body = "8BITMIME" if _eight_bit(self.request) else "7BIT"
        dsn = "DSN" in ext
        return self.conn.mail(
            env.sender,
            size=len(self.request.content) if "SIZE" in ext else None,
            body=body,
            envid=env.envid if dsn else None,
            ret=env.ret if dsn else None,
            smtputf8=env.smtputf8 and "SMTPUTF8" in ext,
        )

    def _content(self) -> bytes:
        """The message as this server may receive it: Postfix's SMTP_MIME_DOWNGRADE turns
        8bit parts into quoted-printable for a server without 8BITMIME, unless
        disable_mime_output_conversion = yes (then the message goes as it is)."""
        content = self.request.content
        ext = self.conn.extensions
        agent = self.agent
        if "8BITMIME" in ext or "SMTPUTF8" in ext or not agent.mime_output_conversion:
            return content
        if not _eight_bit(self.request):
            return content
        return downgrade(content, nesting_limit=agent.mime_nesting_limit,
                         boundary_limit=agent.mime_boundary_limit)[0]

    def _rcpt_command(self, rcpt: Recipient) -> bytes:
        if "DSN" in self.conn.extensions:
            return self.conn.rcpt(rcpt.address, orcpt=rcpt.orcpt, notify=rcpt.notify)
        return self.conn.rcpt(rcpt.address)

    async def _transaction(self) -> dict[int, _Status]:
        t = self.agent.timeouts
        out: dict[int, _Status] = {}
        accepted: list[int] = []
        self.timing.mail_at = self.agent.clock()
        pipelining = self.conn.extensions.pipelining

        def rcpt_failed(idx: int, reply: ServerReply, command: str) -> None:
            dsn, text = _failure(reply, self.namaddr, command)
            out[idx] = _Status(_status_of(dsn), dsn, text, self.relay, self.uses)

        if pipelining:
            # RFC 2920: MAIL, every RCPT and DATA go in one write; replies come back in order.
            batch = self._mail_command() + b"".join(self._rcpt_command(r) for _, r in self.rcpts)
            await self._send(batch + self.conn.data(), W_MAIL, t["mail"])
        else:
            await self._send(self._mail_command(), W_MAIL, t["mail"])
        # Until the end of data is answered, a cached session needs Postfix's "final RSET".
        self.needs_rset = True
        reply = await self._reply(W_MAIL, t["mail"])
        mail_rejected = reply.code // 100 != 2
        if mail_rejected:
            for idx, _ in self.rcpts:
                rcpt_failed(idx, reply, MAIL)
            if not pipelining:
                return out
        for idx, rcpt in self.rcpts:
            if not pipelining:
                await self._send(self._rcpt_command(rcpt), W_RCPT, t["rcpt"])
            reply = await self._reply(W_RCPT, t["rcpt"])
            if mail_rejected:
                continue
            if reply.code // 100 == 2:
                accepted.append(idx)
            else:
                rcpt_failed(idx, reply, RCPT)
        if not pipelining:
            if not accepted:
                return out
            await self._send(self.conn.data(), W_DATA, t["data_init"])
        reply = await self._reply(W_DATA, t["data_init"])
        if reply.code // 100 != 3:
            if accepted:
                for idx in accepted:
                    rcpt_failed(idx, reply, DATA)
            return out
        # With nobody accepted (pipelined DATA still got 354) Postfix sends just "." (RFC 2920).
        content = self._content() if accepted else b""
        await self._send(self.conn.message(content), W_BODY, t["data_xfer"])
        reply = await self._reply(W_DOT, t["data_done"])
        self.needs_rset = False
        if not accepted:
            return out
        if reply.code // 100 != 2:
            for idx in accepted:
                rcpt_failed(idx, reply, END_OF_DATA)
            return out
        for idx in accepted:
            out[idx] = _Status("sent", reply.enhanced or "2.0.0", reply.text, self.relay, self.uses)
        return out
