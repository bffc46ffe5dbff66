"""PolicyEngine: the smtpd_*_restrictions, evaluated with Postfix's semantics.

Owns: parsing the six restriction lists at start-up and answering one check per SMTP
stage with a Reply (rejected) or None (not rejected).
Must not import: server, queue, cli.  Uses config (Params), tables, replies.
Follows: postconf(5) smtpd_client/helo/sender/relay/recipient/data_restrictions,
smtpd_delay_reject, smtpd_relay_before_recipient_restrictions, access(5); the control flow
of Postfix smtpd/smtpd_check.c (generic_checks, check_table_result, smtpd_check_rcpt, ...).

Control flow, as in Postfix:
* In a list, the first restriction that decides ends the list: OK (permit) passes the
  list, a reject ends the whole check; DUNNO goes on.  Reaching the end is a pass.
* With ``smtpd_delay_reject = yes`` (default) the client, helo and sender lists run at
  RCPT TO, just before the relay and recipient lists; check_client/helo/sender return None.
* At RCPT TO the relay list and the recipient list must both pass; their order is set by
  ``smtpd_relay_before_recipient_restrictions`` (yes from compatibility level 3.6).
* After that, ``smtpd_reject_unlisted_recipient`` checks local recipients against
  local_recipient_maps unless a reject_unlisted_recipient already did.
* ``warn_if_reject`` turns the next restriction's reject into a ``reject_warning`` event.
* A table that cannot be asked gives ``451 4.3.0 <name>: Temporary lookup failure``.

The engine keeps no per-session state: a check's bookkeeping lives in a _Run.  Because
of that, ``defer_if_permit`` raised in an earlier stage is only remembered when the
stages run in one call (smtpd_delay_reject = yes, the default).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from postillion.errors import ConfigError, TableLookupError
from postillion.policy import _replies as R
from postillion.policy._lists import DomainList, NetworkList
from postillion.policy._names import (
    truncate_dot,
    valid_hostaddr,
    valid_hostname,
    valid_mailhost_addr,
)
from postillion.policy._restrictions import (
    IMPLICIT_MAP,
    RELAY_REQUIRED,
    Step,
    has_required,
    open_cached,
    parse_restrictions,
)
from postillion.policy.context import EventSink, PolicyContext, PolicyEvent
from postillion.replies import CONFIG_ERROR, Reply
from postillion.tables import (
    Table,
    TableList,
    address_keys,
    client_keys,
    domain_keys,
    mail_addr_keys,
    open_table,
    open_tables,
    split_address,
    split_words,
)

if TYPE_CHECKING:
    from postillion.config import Params

# Postfix defaults of parameters the config registry may not list (postconf -d, 3.7).

# Local parts that are always deliverable: qmgr/bounce absorb the first three
# (smtpd_check.c check_rcpt_maps), RFC 2142 asks for abuse.
_ALWAYS_LISTED = frozenset({"postmaster", "mailer-daemon", "double-bounce", "abuse"})
_ROUTING_CHARS = "@!%"
# Error classes whose rejects warn_if_reject may not soften (smtpd_check_reject()).
_HARD_CLASSES = frozenset({"software", "resource", "data"})


def _unquote(text: str) -> str:
    """The inside of a quoted local part with its backslash escapes undone (RFC 5321)."""
    out, escaped = [], False
    for c in text:
        if escaped or c != "\\":
            out.append(c)
            escaped = False
        else:
            escaped = True
    return "".join(out)


class _Status(enum.IntEnum):
    DUNNO = 0
    OK = 1
    REJECT = 2


@dataclass(slots=True)
class _Defer:
    """A pending defer_if_permit / defer_if_reject; the first reason is kept."""

    active: bool = False
    error_class: str = "policy"
    code: int = 450
    dsn: str = "4.7.1"
    text: str = ""


class _Abort(Exception):
    """A lookup or configuration failure ends the list at once (Postfix's longjmp)."""

    def __init__(self, status: _Status) -> None:
        self.status = status


@dataclass(slots=True)
class _Run:
    """Bookkeeping of one check call (Postfix keeps it in SMTPD_STATE)."""

    ctx: PolicyContext
    stage: str
    sink: EventSink | None
    recursion: int = 0
    warn_if_reject: int = 0
    defer_if_permit: _Defer = field(default_factory=_Defer)
    defer_if_reject: _Defer = field(default_factory=_Defer)
    dip_client: bool = False
    dip_helo: bool = False
    dip_sender: bool = False
    reply: Reply | None = None
    rcpt_checked: bool = False
    sender_checked: bool = False

    def event(self, kind: str, text: str, reply: Reply | None = None) -> None:
        if self.sink is not None:
            self.sink(PolicyEvent(kind=kind, text=text, reply=reply))

    def reset(self) -> None:
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_reject.active = False


def _param(p: Params, name: str) -> str:
    return p.get(name)


def _bool(p: Params, name: str) -> bool:
    return p.get_bool(name)


def _int(p: Params, name: str) -> int:
    return p.get_int(name)


def _level(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.strip().split("."))
    except ValueError:
        return (0,)


class PolicyEngine:
    """All smtpd restriction lists of one service, parsed once.

    ``PolicyEngine(params, config_dir)`` raises ConfigError for unknown restriction
    names, check_*_access without a table, tables that cannot be opened, and restriction
    lists that would make an open relay.  The ``check_*`` methods answer None (not
    rejected) or the Reply to send; ``on_event`` receives PolicyEvents to log.
    """

    def __init__(self, params: Params, config_dir: Path | str | None = None) -> None:
        p = params
        self.config_dir = Path(config_dir) if config_dir is not None else Path(p.config_dir)
        self._tables: dict[str, Table] = {}
        opener = open_cached(self._tables, self.config_dir, open_table)

        self._delay_reject = _bool(p, "smtpd_delay_reject")
        before = _param(p, "smtpd_relay_before_recipient_restrictions").strip()
        if before:
            self._relay_first = _bool(p, "smtpd_relay_before_recipient_restrictions")
        else:
            self._relay_first = _level(_param(p, "compatibility_level") or "0") >= (3, 6)
        self._soft_bounce = _bool(p, "soft_bounce")
        self._sasl_enabled = _bool(p, "smtpd_sasl_auth_enable")
        self._reject_unlisted_rcpt = _bool(p, "smtpd_reject_unlisted_recipient")
        self._reject_unlisted_sender = _bool(p, "smtpd_reject_unlisted_sender")
        self._allow_untrusted = _bool(p, "allow_untrusted_routing")
        self._show_table = _bool(p, "show_user_unknown_table_name")
        self._reject_code = _int(p, "reject_code")
        self._defer_code = _int(p, "defer_code")
        self._map_reject_code = _int(p, "access_map_reject_code")
        self._map_defer_code = _int(p, "access_map_defer_code")
        self._relay_code = _int(p, "relay_domains_reject_code")
        self._local_rcpt_code = _int(p, "unknown_local_recipient_reject_code")
        self._non_fqdn_code = _int(p, "non_fqdn_reject_code")
        self._bad_name_code = _int(p, "invalid_hostname_reject_code")
        self._null_key = _param(p, "smtpd_null_access_lookup_key")
        self._delim = _param(p, "recipient_delimiter")
        self._myorigin = (_param(p, "myorigin") or _param(p, "myhostname")).lower()

        parent = {w.lower() for w in split_words(_param(p, "parent_domain_matches_subdomains"))}
        self._access_parent = "smtpd_access_maps" in parent
        self._mynetworks = NetworkList("mynetworks", p.get_list("mynetworks"), self.config_dir,
                                       parent_style="mynetworks" in parent)
        self._mydestination = DomainList("mydestination", p.get_list("mydestination"),
                                         self.config_dir, parent_style="mydestination" in parent)
        self._relay_domains = DomainList("relay_domains", p.get_list("relay_domains"),
                                         self.config_dir, parent_style="relay_domains" in parent)
        # Only explicit virtual domain lists count: their Postfix defaults name tables.
        self._virtual_domains = [
            DomainList(n, p.get_list(n), self.config_dir, parent_style=n in parent)
            for n in ("virtual_alias_domains", "virtual_mailbox_domains") if p.is_set(n)
        ]
        login_maps = _param(p, "smtpd_sender_login_maps")
        if login_maps.strip() or not _param(p, "postillion_user_database").strip():
            self._login_maps = TableList(open_tables(login_maps, self.config_dir))
        else:
            # Unset: a user owns their own address and configured aliases (postillion:users).
            from postillion.sasl.login_table import UserStoreTable

            self._login_maps = TableList([UserStoreTable.from_params(p)])
        self._local_rcpt_maps = TableList(open_tables(_param(p, "local_recipient_maps"),
                                                      self.config_dir))

        class_names = split_words(_param(p, "smtpd_restriction_classes"))
        for name in class_names:
            if not _param(p, name).strip():
                raise ConfigError(f"restriction class `{name}' needs a definition",
                                  name="smtpd_restriction_classes",
                                  fix=f"set {name} = <restrictions> in main.cf")
        self._class_names = set(class_names)
        self._classes: dict[str, list[Step]] = {
            name: parse_restrictions(name, split_words(_param(p, name)), classes=self._class_names,
                                     open_table=opener, def_acl="")
            for name in class_names
        }

        def parse(param: str, def_acl: str | None) -> list[Step]:
            return parse_restrictions(param, p.get_list(param), classes=self._class_names,
                                      open_table=opener, def_acl=def_acl)

        self._client = parse("smtpd_client_restrictions", "check_client_access")
        self._helo = parse("smtpd_helo_restrictions", "check_helo_access")
        self._sender = parse("smtpd_sender_restrictions", "check_sender_access")
        self._relay = parse("smtpd_relay_restrictions", "check_recipient_access")
        self._recipient = parse("smtpd_recipient_restrictions", "check_recipient_access")
        self._data = parse("smtpd_data_restrictions", None)

        if not (has_required(self._recipient, self._classes)
                or has_required(self._relay, self._classes)):
            raise ConfigError(
                "specify at least one working instance of: " + ", ".join(RELAY_REQUIRED[:-1])
                + f" or {RELAY_REQUIRED[-1]}",
                name="smtpd_relay_restrictions or smtpd_recipient_restrictions",
                fix="the default is smtpd_relay_restrictions = permit_mynetworks, "
                    "permit_sasl_authenticated, defer_unauth_destination")

    # ------------------------------------------------------------------ public API
    @property
    def delay_reject(self) -> bool:
        return self._delay_reject

    async def check_client(self, ctx: PolicyContext, *, on_event: EventSink | None = None) -> Reply | None:
        """At connect; always None with smtpd_delay_reject = yes (checked at RCPT)."""
        if self._delay_reject:
            return None
        run = _Run(ctx, "CONNECT", on_event)
        return self._answer(run, await self._client_stage(run))

    async def check_helo(self, ctx: PolicyContext, *, on_event: EventSink | None = None) -> Reply | None:
        if self._delay_reject:
            return None
        run = _Run(ctx, "HELO", on_event)
        return self._answer(run, await self._helo_stage(run))

    async def check_sender(self, ctx: PolicyContext, *, on_event: EventSink | None = None) -> Reply | None:
        if self._delay_reject:
            return None
        run = _Run(ctx, "MAIL", on_event)
        return self._answer(run, await self._sender_stage(run))

    async def check_recipient(self, ctx: PolicyContext, *, on_event: EventSink | None = None) -> Reply | None:
        """RCPT TO: (delayed client, helo, sender,) relay and recipient lists, then the
        unlisted-recipient check."""
        recipient = ctx.recipient
        if recipient is None:
            return None
        # RFC 5321 4.5.1: "postmaster" without a domain is always accepted (smtpd_check_rcpt).
        if recipient.lower() == "postmaster":
            return None
        run = _Run(ctx, "RCPT", on_event)
        if self._delay_reject:
            for stage in (self._client_stage, self._helo_stage, self._sender_stage):
                if await stage(run) == _Status.REJECT:
                    return run.reply
        run.defer_if_permit.active = run.dip_sender
        run.reset()
        lists = [self._relay, self._recipient] if self._relay_first else [self._recipient, self._relay]
        status = _Status.DUNNO
        for steps in lists:
            status = await self._list(run, steps, recipient, R.RECIPIENT, "check_recipient_access")
            if status == _Status.REJECT:
                break
        if status != _Status.REJECT and run.defer_if_permit.active:
            status = self._reject_deferred(run, run.defer_if_permit)
        if self._reject_unlisted_rcpt and status != _Status.REJECT and not run.rcpt_checked:
            status = await self._guarded(run, self._recipient_maps(run, recipient))
        return self._answer(run, status)

    async def check_data(self, ctx: PolicyContext, *, on_event: EventSink | None = None) -> Reply | None:
        """DATA: smtpd_data_restrictions (pass recipient=None when there are several)."""
        run = _Run(ctx, "DATA", on_event)
        run.reset()
        status = await self._list(run, self._data, "DATA", R.DATA, None)
        if status != _Status.REJECT and run.defer_if_permit.active:
            status = self._reject_deferred(run, run.defer_if_permit)
        return self._answer(run, status)

    # ------------------------------------------------------------------ stages
    @staticmethod
    def _answer(run: _Run, status: _Status) -> Reply | None:
        return run.reply if status == _Status.REJECT else None

    async def _client_stage(self, run: _Run) -> _Status:
        run.defer_if_permit.active = False
        run.reset()
        status = await self._list(run, self._client, run.ctx.namaddr, R.CLIENT, "check_client_access")
        run.dip_client = run.defer_if_permit.active
        return status

    async def _helo_stage(self, run: _Run) -> _Status:
        helo = run.ctx.helo_name
        if helo is None:
            return _Status.DUNNO
        run.defer_if_permit.active = run.dip_client
        run.reset()
        status = await self._list(run, self._helo, helo, R.HELO, "check_helo_access")
        run.dip_helo = run.defer_if_permit.active
        return status

    async def _sender_stage(self, run: _Run) -> _Status:
        sender = run.ctx.sender
        if sender is None:
            return _Status.DUNNO
        run.defer_if_permit.active = run.dip_client or run.dip_helo
        run.sender_checked = False
        run.reset()
        status = await self._list(run, self._sender, sender, R.SENDER, "check_sender_access")
        run.dip_sender = run.defer_if_permit.active
        if (self._reject_unlisted_sender and status != _Status.REJECT
                and not run.sender_checked and sender):
            status = await self._guarded(run, self._sender_maps(run, sender))
        return status

    async def _guarded(self, run: _Run, coro) -> _Status:  # type: ignore[no-untyped-def]
        try:
            return await coro
        except _Abort as abort:
            return abort.status

    async def _list(self, run: _Run, steps: list[Step], reply_name: str, reply_class: str,
                    def_acl: str | None) -> _Status:
        if not steps:
            return _Status.DUNNO
        return await self._guarded(run, self._generic(run, steps, reply_name, reply_class, def_acl))

    # ------------------------------------------------------------------ rejects
    def _reject(self, run: _Run, code: int, dsn: str, text: str, error_class: str = "policy") -> _Status:
        """smtpd_check_reject(): build the reply, or log it when warn_if_reject is on."""
        warn = run.warn_if_reject > 0 and error_class not in _HARD_CLASSES
        if not 400 <= code <= 599:
            code, dsn, text = 450, "4.7.1", "Service unavailable"
        d = run.defer_if_reject
        if not warn and d.active and code >= 500:
            run.warn_if_reject = 0
            d.active = False
            return self._reject(run, d.code, d.dsn, d.text, d.error_class)
        reply = R.policy_reply(code, dsn, text, soft_bounce=self._soft_bounce)
        if warn:
            run.event("reject_warning", str(reply), reply)
            return _Status.DUNNO
        run.reply = reply
        return _Status.REJECT

    def _reject_deferred(self, run: _Run, d: _Defer) -> _Status:
        return self._reject(run, d.code, d.dsn, d.text, d.error_class)

    @staticmethod
    def _defer_if(d: _Defer, code: int, dsn: str, text: str) -> _Status:
        if not d.active:
            d.active, d.error_class, d.code, d.dsn, d.text = True, "policy", code, dsn, text
        return _Status.DUNNO

    def _config_error(self, run: _Run, warning: str) -> _Abort:
        run.event("warning", warning)
        self._reject(run, CONFIG_ERROR.code, CONFIG_ERROR.enhanced, CONFIG_ERROR.text, "software")
        return _Abort(_Status.REJECT)

    async def _lookup(self, run: _Run, table: Table | TableList, keys: list[str],
                      reply_name: str) -> str | None:
        """The value of the first key found; a lookup failure ends the check with 451."""
        try:
            for key in keys:
                value = await table.lookup(key)
                if value is not None:
                    return value
        except TableLookupError as exc:
            run.event("warning", f"{table.spec} lookup error for \"{reply_name}\": {exc}")
            self._reject(run, 451, "4.3.0", f"<{reply_name}>: Temporary lookup failure", "data")
            raise _Abort(_Status.REJECT) from exc
        return None

    # ------------------------------------------------------------------ the list walker
    async def _generic(self, run: _Run, steps: list[Step], reply_name: str, reply_class: str,
                       def_acl: str | None) -> _Status:
        saved = run.recursion
        run.recursion += 1
        status = _Status.DUNNO
        try:
            for step in steps:
                if step.name == "warn_if_reject":
                    if run.warn_if_reject == 0:
                        run.warn_if_reject = run.recursion
                    continue
                status = await self._apply(run, step, reply_name, reply_class, def_acl)
                if run.warn_if_reject >= run.recursion:
                    run.warn_if_reject = 0
                if status != _Status.DUNNO:
                    break
                if run.defer_if_permit.active and run.defer_if_reject.active:
                    break
        finally:
            run.recursion = saved
        return status

    async def _apply(self, run: _Run, step: Step, rn: str, rc: str, def_acl: str | None) -> _Status:
        ctx = run.ctx
        name = step.name
        if name == IMPLICIT_MAP:
            if not def_acl:
                raise self._config_error(
                    run, f"specify one of (check_client_access, check_helo_access, "
                         f"check_sender_access, check_recipient_access) before {rc} "
                         f"restriction \"{step.word}\"")
            name = def_acl
        OK, DUNNO = _Status.OK, _Status.DUNNO

        if name == "permit":
            return OK
        if name == "reject":
            return self._reject(run, self._reject_code, "5.7.1", R.reject_text(rn, rc, "Access denied"))
        if name == "defer":
            return self._reject(run, self._defer_code, "4.3.2", R.reject_text(rn, rc, "Try again later"))
        if name == "defer_if_permit":
            return self._defer_if(run.defer_if_permit, 450, "4.7.0",
                                  R.reject_text(rn, rc, "defer_if_permit requested"))
        if name == "defer_if_reject":
            return self._defer_if(run.defer_if_reject, 450, "4.7.0",
                                  R.reject_text(rn, rc, "defer_if_reject requested"))
        if name == "reject_unauth_pipelining":
            if ctx.pipelining_violation and (ctx.protocol.upper() != "ESMTP" or run.stage == "DATA"):
                return self._reject(run, 503, "5.5.0", R.reject_text(
                    rn, rc, "Improper use of SMTP command pipelining"), "protocol")
            return DUNNO

        # --- client
        if name == "permit_mynetworks":
            try:
                hit = await self._mynetworks.match(ctx.client_name, ctx.client_addr)
            except TableLookupError as exc:
                run.event("warning", f"mynetworks lookup error: {exc}")
                self._reject(run, 451, "4.3.0", f"<{ctx.namaddr}>: Temporary lookup failure", "data")
                raise _Abort(_Status.REJECT) from exc
            return OK if hit else DUNNO
        if name == "permit_sasl_authenticated":
            authed = bool(ctx.sasl_username) and (ctx.sasl_method or "").lower() != "anonymous"
            return OK if authed else DUNNO
        if name in ("permit_tls_clientcerts", "permit_tls_all_clientcerts"):
            return DUNNO  # postillion does not verify client certificates
        if name == "check_client_access":
            keys = client_keys(ctx.client_name, ctx.client_addr,
                               parent_matches_subdomains=self._access_parent)
            return await self._access(run, step, keys, ctx.namaddr, R.CLIENT, def_acl)

        # --- helo
        if name == "check_helo_access":
            if ctx.helo_name is None:
                return DUNNO
            keys = domain_keys(ctx.helo_name, parent_matches_subdomains=self._access_parent)
            return await self._access(run, step, keys, ctx.helo_name, R.HELO, def_acl)
        if name in ("reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname"):
            helo = ctx.helo_name
            if helo is None:
                return DUNNO
            if helo.startswith("["):
                inner = helo[1:-1] if len(helo) > 2 and helo.endswith("]") else helo
                if valid_mailhost_addr(inner):
                    return DUNNO
                return self._reject(run, self._bad_name_code, "5.5.2",
                                    R.reject_text(helo, R.HELO, "invalid ip address"))
            test = truncate_dot(helo)
            if name == "reject_invalid_helo_hostname":
                if valid_hostname(test) or valid_hostaddr(test):
                    return DUNNO
                return self._reject(run, self._bad_name_code, "5.5.2",
                                    R.reject_text(helo, R.HELO, "Invalid name"))
            if valid_hostname(test) and "." in test:
                return DUNNO
            return self._reject(run, self._non_fqdn_code, "5.5.2",
                                R.reject_text(helo, R.HELO, "need fully-qualified hostname"))

        # --- sender
        if name == "check_sender_access":
            sender = ctx.sender
            if sender is None:
                return DUNNO
            if sender == "":
                return await self._access(run, step, [self._null_key.lower()], sender, R.SENDER, def_acl)
            return await self._mail_access(run, step, sender, R.SENDER, def_acl)
        if name == "reject_non_fqdn_sender":
            return self._non_fqdn(run, ctx.sender, R.SENDER) if ctx.sender else DUNNO
        if name == "reject_unlisted_sender":
            return await self._sender_maps(run, ctx.sender) if ctx.sender else DUNNO
        if name in ("reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
                    "reject_unauthenticated_sender_login_mismatch",
                    "reject_known_sender_login_mismatch"):
            if not self._sasl_enabled:
                run.event("warning", f"restriction `{step.word}' ignored: no SASL support")
                return DUNNO
            if not ctx.sender:
                return DUNNO
            return await self._login_mismatch(run, name, ctx.sender)

        # --- recipient
        if name == "check_recipient_access":
            if ctx.recipient is None:
                return DUNNO
            return await self._mail_access(run, step, ctx.recipient, R.RECIPIENT, def_acl)
        if name == "permit_auth_destination":
            if ctx.recipient is None:
                return DUNNO
            return OK if await self._auth_destination(run, ctx.recipient) else DUNNO
        if name in ("reject_unauth_destination", "defer_unauth_destination"):
            if ctx.recipient is None or await self._auth_destination(run, ctx.recipient):
                return DUNNO
            code, dsn = ((self._relay_code, "5.7.1") if name == "reject_unauth_destination"
                         else (self._relay_code - 100, "4.7.1"))
            return self._reject(run, code, dsn, f"<{ctx.recipient}>: Relay access denied")
        if name == "reject_non_fqdn_recipient":
            return self._non_fqdn(run, ctx.recipient, R.RECIPIENT) if ctx.recipient is not None else DUNNO
        if name == "reject_unlisted_recipient":
            return await self._recipient_maps(run, ctx.recipient) if ctx.recipient else DUNNO

        # --- restriction class
        if name in self._classes:
            return await self._generic(run, self._classes[name], rn, rc, def_acl)
        raise self._config_error(run, f"unknown smtpd restriction: \"{step.word}\"")

    # ------------------------------------------------------------------ access(5)
    async def _access(self, run: _Run, step: Step, keys: list[str], reply_name: str,
                      reply_class: str, def_acl: str | None) -> _Status:
        assert step.table is not None
        value = await self._lookup(run, step.table, keys, reply_name)
        if value is None:
            return _Status.DUNNO
        return await self._table_result(run, step.table.spec, value, reply_name, reply_class, def_acl)

    async def _mail_access(self, run: _Run, step: Step, address: str, reply_class: str,
                           def_acl: str | None) -> _Status:
        canon = self._canonical(address)
        keys = address_keys(canon, recipient_delimiter=self._delim,
                            parent_matches_subdomains=self._access_parent)
        status = await self._access(run, step, keys, address, reply_class, def_acl)
        # A source-routed recipient is too suspicious for OK (check_mail_access()).
        if (status == _Status.OK and reply_class == R.RECIPIENT and not self._allow_untrusted
                and self._routed(canon)):
            return _Status.DUNNO
        return status

    async def _table_result(self, run: _Run, table: str, value: str, rn: str, rc: str,
                            def_acl: str | None) -> _Status:
        """check_table_result(): what an access(5) right-hand side means."""
        cmd, _, text = value.strip().partition(" ")
        if "\t" in cmd:
            cmd, _, rest = cmd.partition("\t")
            text = f"{rest} {text}".strip()
        text = text.strip()
        word = cmd.upper()
        if word == "DUNNO":
            return _Status.DUNNO
        if word == "REJECT":
            dsn, why = R.dsn_split("5.7.1", text)
            return self._reject(run, self._map_reject_code, R.dsn_fix(dsn, rc),
                                R.reject_text(rn, rc, why or "Access denied"))
        if word == "DEFER":
            dsn, why = R.dsn_split("4.7.1", text)
            return self._reject(run, self._map_defer_code, R.dsn_fix(dsn, rc),
                                R.reject_text(rn, rc, why or "Access denied"))
        if word in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
            dsn, why = R.dsn_split("4.7.1", text)
            target = run.defer_if_permit if word == "DEFER_IF_PERMIT" else run.defer_if_reject
            return self._defer_if(target, 450, R.dsn_fix(dsn, rc),
                                  R.reject_text(rn, rc, why or "Service unavailable"))
        if word in ("WARN", "INFO"):
            run.event(word.lower(), text)
            return _Status.DUNNO
        if word in ("HOLD", "DISCARD"):
            # Not carried out yet: logged, then evaluated as DUNNO.
            run.event(word.lower(), f"<{rn}>: {rc} {text or f'triggers {word} action'}")
            return _Status.DUNNO
        if word in ("FILTER", "REDIRECT", "BCC", "PREPEND"):
            run.event(word.lower(), f"<{rn}>: {rc} triggers {word} {text}".rstrip())
            return _Status.DUNNO
        if value.strip().isdigit():
            return _Status.OK
        if len(cmd) == 3 and text and cmd[0] in "45" and cmd[1:].isdigit():
            dsn, why = R.dsn_split(cmd[0] + ".7.1", text)
            return self._reject(run, int(cmd), R.dsn_fix(dsn, rc),
                                R.reject_text(rn, rc, why or "Access denied"))
        if word in ("OK", "RELAY"):
            return _Status.OK
        if ":" in value:
            raise self._config_error(
                run, f"access table {table} has entry with lookup table: {value}; "
                     "define a restriction class and specify its name instead")
        if run.recursion > 100:
            raise self._config_error(run, f"access table {table} entry {value} causes "
                                          "unreasonable recursion")
        words = split_words(value)
        if not words:
            run.event("warning", f"access table {table} entry {value} has empty value")
            return _Status.OK
        try:
            steps = parse_restrictions(f"access table {table}", words, classes=self._class_names,
                                       open_table=self._no_tables, def_acl=def_acl)
        except ConfigError as exc:
            raise self._config_error(run, str(exc)) from exc
        return await self._generic(run, steps, rn, rc, def_acl)

    @staticmethod
    def _no_tables(spec: str) -> Table:
        raise ConfigError(f"lookup table {spec} inside an access table entry")

    # ------------------------------------------------------------------ addresses
    def _canonical(self, address: str) -> str:
        """The address as the resolver would see it: unquoted local part, lower-case domain
        without a trailing dot, ``@$myorigin`` appended to a bare local part."""
        local, domain = split_address(address)
        if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
            local = _unquote(local[1:-1])
        domain = truncate_dot(domain).lower() if domain else self._myorigin
        return f"{local}@{domain}"

    @staticmethod
    def _routed(canon: str) -> bool:
        local, _ = split_address(canon)
        return any(c in local for c in _ROUTING_CHARS)

    async def _address_class(self, run: _Run, address: str) -> str:
        """"local" (mydestination), "virtual", "relay" (relay_domains) or "remote"."""
        if "@" not in address.rstrip("@"):
            return "local"
        _, domain = split_address(self._canonical(address))
        try:
            if await self._mydestination.match(domain):
                return "local"
            for domains in self._virtual_domains:
                if await domains.match(domain):
                    return "virtual"
            if await self._relay_domains.match(domain):
                return "relay"
        except TableLookupError as exc:
            run.event("warning", f"domain list lookup error for {domain}: {exc}")
            self._reject(run, 451, "4.3.0", f"<{address}>: Temporary lookup failure", "data")
            raise _Abort(_Status.REJECT) from exc
        return "remote"

    async def _auth_destination(self, run: _Run, recipient: str) -> bool:
        """permit_auth_destination(): final delivery here, or a relay_domains destination."""
        if not self._allow_untrusted and self._routed(self._canonical(recipient)):
            return False
        return await self._address_class(run, recipient) != "remote"

    def _non_fqdn(self, run: _Run, address: str | None, reply_class: str) -> _Status:
        if address is None:
            return _Status.DUNNO
        _, domain = split_address(address)
        if domain.startswith("[") and domain.endswith("]"):
            return _Status.DUNNO
        test = truncate_dot(domain)
        if test and valid_hostname(test) and "." in test:
            return _Status.DUNNO
        return self._reject(run, self._non_fqdn_code, "4.5.2",
                            R.reject_text(address, reply_class, "need fully-qualified address"))

    async def _login_mismatch(self, run: _Run, name: str, sender: str) -> _Status:
        user = run.ctx.sasl_username
        if name == "reject_known_sender_login_mismatch":
            name = ("reject_authenticated_sender_login_mismatch" if user
                    else "reject_unauthenticated_sender_login_mismatch")
            allow_unknown = True
        else:
            allow_unknown = False
        check_auth = name in ("reject_sender_login_mismatch",
                              "reject_authenticated_sender_login_mismatch")
        check_unauth = name in ("reject_sender_login_mismatch",
                                "reject_unauthenticated_sender_login_mismatch")
        canon = self._canonical(sender)
        local = await self._address_class(run, sender) == "local"
        keys = mail_addr_keys(canon, recipient_delimiter=self._delim, local_domain=local)
        if user and check_auth:
            owners = await self._lookup(run, self._login_maps, keys, sender)
            if owners is None and allow_unknown:
                return _Status.DUNNO
            if owners is None or not any(o.lower() == user.lower() for o in split_words(owners)):
                return self._reject(run, 553, "5.7.1",
                                    f"<{sender}>: Sender address rejected: not owned by user {user}")
        elif not user and check_unauth:
            if await self._lookup(run, self._login_maps, keys, sender) is not None:
                return self._reject(run, 553, "5.7.1",
                                    f"<{sender}>: Sender address rejected: not logged in")
        return _Status.DUNNO

    async def _recipient_maps(self, run: _Run, recipient: str | None) -> _Status:
        if not recipient or run.rcpt_checked:
            return _Status.DUNNO
        if run.warn_if_reject == 0:
            run.rcpt_checked = True
        return await self._rcpt_maps(run, recipient, R.RECIPIENT)

    async def _sender_maps(self, run: _Run, sender: str | None) -> _Status:
        if not sender or run.sender_checked:
            return _Status.DUNNO
        if run.warn_if_reject == 0:
            run.sender_checked = True
        return await self._rcpt_maps(run, sender, R.SENDER)

    async def _rcpt_maps(self, run: _Run, address: str, reply_class: str) -> _Status:
        """check_rcpt_maps() for local domains: the address must be in local_recipient_maps."""
        if not self._local_rcpt_maps or await self._address_class(run, address) != "local":
            return _Status.DUNNO
        canon = self._canonical(address)
        local, _ = split_address(canon)
        if local.lower() in _ALWAYS_LISTED:
            return _Status.DUNNO
        keys = mail_addr_keys(canon, recipient_delimiter=self._delim, local_domain=True)
        if await self._lookup(run, self._local_rcpt_maps, keys, address) is not None:
            return _Status.DUNNO
        table = " in local recipient table" if self._show_table else ""
        return self._reject(run, self._local_rcpt_code,
                            "5.1.0" if reply_class == R.SENDER else "5.1.1",
                            R.reject_text(address, reply_class, f"User unknown{table}"))
