"""The local delivery agent: mydestination recipients -> aliases -> mailbox, file or command.

Owns: ``LocalAgent`` (a ``DeliveryAgent``): alias_maps expansion (through
``delivery.aliases``), the UNIX passwd lookup, mailbox delivery as the user (``home_mailbox``
ending in ``/``: Maildir; other ``home_mailbox``: mbox in the home directory; empty: mbox
``$mail_spool_directory/USER`` with mailbox_delivery_lock), ``/file`` and ``|command`` alias
members (allow_mail_to_files, allow_mail_to_commands) with the rights of the alias file's
owner, or ``default_privs`` when root owns it, members in other domains handed to a
``Forwarder`` (a new queue file, like Postfix's forward.c resubmitting through cleanup), and
Postfix's status texts and sysexits mapping.
Must not import: server, cli.
Follows: Postfix local(8) and its sources local/local.c, local/recipient.c, local/alias.c,
local/mailbox.c, local/maildir.c, local/file.c, local/command.c, local/unknown.c,
local/forward.c; global/pipe_command.c and sys_exits.c; aliases(5).

Rights: as root, every write happens in a child that has switched to the recipient's uid/gid
(maildir.py, mbox.py) and commands run with ``setgroups([])``, setgid, setuid.  Mail for root
is delivered to root's mailbox with root's rights (local/mailbox.c); commands and files never
run as root: uid/gid 0 is replaced with default_privs (local/command.c, file.c).  Without
root, mailboxes are written with the process's own rights (development mode), and a command
or file is delivered only when the process already is the user it must run as; otherwise the
recipient is deferred with a warning naming the privileged ``local`` service of master.cf.

Aliases: before each request the files behind alias_maps are stat()ed; a changed file makes
the agent re-open the tables (local(8) notices dict_changed_name() and restarts itself; we
re-open in place and log "table NAME has changed -- reloading").  A change that does not
parse keeps the previous tables, with a warning.

Not implemented: ``mailbox_command`` (recipients are deferred with a warning, so nothing is
lost), ``:include:`` ("mail to file is restricted"), ``.forward`` files, ``luser_relay``,
``owner-`` aliases, mailbox_transport/fallback_transport.

Results: one ``RecipientResult`` per member of an alias expansion, with ``address`` set to
the member (for commands and files: the alias that listed them, as Postfix logs them); an
unaliased recipient gets one result without ``address``.  The queue manager logs each and
records the worst per queued recipient (``delivery.merge_member_results``); as in Postfix, a
retry after a partly deferred expansion delivers to all members again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.aliases import Leaf, LocalNaming, expand_local
from postillion.delivery.maildir import (
    MaildirError,
    Owner,
    deliver_maildir,
    delivered_to_loop,
    delivery_headers,
    to_lf,
)
from postillion.delivery.mbox import Locking, MboxError, append, command_input, mbox_message, run_as
from postillion.errors import ConfigError, PostillionError, TableLookupError
from postillion.policy._lists import DomainList
from postillion.tables import TableList, split_address, strip_extension
from postillion.tables.aliases import AliasMaps

RELAY = "local"
# local/unknown.c: with no alias and no account, mail to these is discarded with a warning.
_REQUIRED_ALIASES = frozenset({"postmaster", "mailer-daemon"})
COMMAND_PATH = "/usr/bin:/bin"  # pipe_command.c: PATH is always reset (_PATH_DEFPATH)
OUTPUT_LIMIT = 4096  # pipe_command.c: at most one VSTREAM_BUFSIZE of command output is kept
# command_expansion_filter's default (mail_params.h DEF_COMMAND_EXP_FILTER)
EXPANSION_FILTER = frozenset("1234567890!@%-_=+:,./"
                             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# <sysexits.h> code -> (dsn, text), global/sys_exits.c
SYS_EXITS = {
    64: ("5.3.0", "command line usage error"), 65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"), 67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"), 69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"), 71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"), 73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"), 75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"), 77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}
_DSN_OUTPUT = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$", re.DOTALL)


class Forwarder(Protocol):
    """Queues a copy of the message for alias members in other domains.

    Returns the new queue id; raises (any ``PostillionError``, e.g. QueueWriteError) when
    the copy could not be queued, and the recipient is deferred.
    """

    async def forward(self, *, sender: str, recipients: list[str], content: bytes) -> str: ...


@dataclass(frozen=True, slots=True)
class MemberResult:
    """The outcome for one member of an alias expansion (Postfix logs one line each)."""

    to: str
    orig_to: str
    status: str
    dsn: str
    text: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str
    dsn: str
    text: str


@dataclass(frozen=True, slots=True)
class _Rights:
    """Whom a file or command delivery runs as (usr_attr in local(8))."""

    uid: int
    gid: int
    name: str
    home: str
    shell: str


def _outcome(dsn: str, text: str) -> _Outcome:
    return _Outcome("deferred" if dsn.startswith("4") else "bounced", dsn, text)


def domain_list(params: Params, name: str) -> DomainList:
    """``mydestination`` / ``virtual_mailbox_domains`` as policy matches them."""
    parent = params.get_list("parent_domain_matches_subdomains")
    return DomainList(name, params.get_list(name), params.config_dir, parent_style=name in parent)


def locking_from(params: Params) -> Locking:
    methods = tuple(m.lower() for m in params.get_list("mailbox_delivery_lock"))
    return Locking(methods=methods or ("fcntl", "dotlock"),
                   attempts=params.get_int("deliver_lock_attempts") or 20,
                   delay=params.get_time("deliver_lock_delay") or 1.0,
                   stale=params.get_time("stale_lock_time") or 500.0)


def command_output(raw: bytes) -> str:
    """pipe_command.c: tabs and newlines become spaces, other unprintables underscores."""
    text = raw[:OUTPUT_LIMIT].decode("utf-8", "replace").replace("\t", " ").replace("\n", " ")
    return "".join(c if c.isprintable() else "_" for c in text)


def command_status(command: str, returncode: int, output: bytes) -> _Outcome:
    """A finished command's outcome with pipe_command.c's texts and sysexits.h mapping."""
    if returncode == 0:
        return _Outcome("sent", "2.0.0", f"delivered to command: {command}")
    out = command_output(output)
    suffix = f". Command output: {out}" if out else ""
    if returncode < 0:
        return _Outcome("deferred", "4.3.0",
                        f'Command died with signal {-returncode}: "{command}"{suffix}')
    m = _DSN_OUTPUT.match(out)
    if m:  # "D.S.N text" output takes precedence over the exit status
        return _outcome(m.group(1), m.group(2))
    if returncode in SYS_EXITS:
        dsn, text = SYS_EXITS[returncode]
        return _outcome(dsn, f"{text}{suffix}")
    return _Outcome("bounced", "5.3.0",
                    f'Command died with status {returncode}: "{command}"{suffix}')


class LocalAgent:
    """local(8).  ``deliver()`` never raises for delivery problems."""

    def __init__(
        self, params: Params, *, forwarder: Forwarder | None = None,
        warn: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
        on_member: Callable[[str, MemberResult], None] | None = None,
        getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
        getpwuid: Callable[[int], pwd.struct_passwd] = pwd.getpwuid,
    ) -> None:
        cfg = params.config_dir
        # shared by the copies the local service makes per connection: a re-open is seen by all
        self.alias_maps = AliasMaps(params.get("alias_maps"), cfg)
        self.mydestination = domain_list(params, "mydestination")
        self.naming = LocalNaming(is_local_domain=self.mydestination.match,
                                  myorigin=params.get("myorigin"),
                                  recipient_delimiter=params.get("recipient_delimiter"),
                                  propagate_extension="alias" in params.get_list(
                                      "propagate_unmatched_extensions"))
        self.home_mailbox = params.get("home_mailbox").strip()
        self.mail_spool_directory = params.get("mail_spool_directory").strip() or "/var/mail"
        # raw: the command holds per-delivery macros ($EXTENSION, ...) expanded at use time
        self.mailbox_command = (params.raw("mailbox_command") or "").strip()
        self.default_privs = params.get("default_privs").strip() or "nobody"
        self.allow_commands = {c.lower() for c in params.get_list("allow_mail_to_commands")}
        self.allow_files = {c.lower() for c in params.get_list("allow_mail_to_files")}
        self.command_time_limit = params.get_time("command_time_limit") or 1000.0
        self.locking = locking_from(params)
        self.hostname = params.get("myhostname") or socket.gethostname()
        self.forwarder = forwarder
        self.warn = warn or logging.getLogger("postillion.local").warning
        self.info = info or logging.getLogger("postillion.local").info
        self.on_member = on_member
        self._getpwnam = getpwnam
        self._getpwuid = getpwuid

    @property
    def aliases(self) -> TableList:
        return self.alias_maps.tables

    def reload_aliases(self) -> None:
        """Re-open alias_maps when a file behind it changed since the last look."""
        refresh = self.alias_maps.refresh()
        if not refresh.changed:
            return
        names = ", ".join(refresh.changed)
        if refresh.error:
            self.warn(f"table {names} has changed but cannot be reloaded: {refresh.error}; "
                      "using the previous alias_maps")
        else:
            for name in refresh.changed:
                self.info(f"table {name} has changed -- reloading")

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        self.reload_aliases()
        results = []
        for index, rcpt in request.recipients:
            start = time.monotonic()
            members = await self._recipient(request, rcpt.address)
            took = time.monotonic() - start
            results += [RecipientResult(rcpt=index, status=o.status, dsn=o.dsn, relay=RELAY,
                                        text=o.text, xfer_time=took, address=member)
                        for member, o in members]
        return results

    async def _recipient(self, request: DeliveryRequest,
                         address: str) -> list[tuple[str | None, _Outcome]]:
        try:
            leaves = await expand_local(address, self.aliases, self.naming)
        except TableLookupError as exc:
            self.warn(f"{request.queue_id}: alias lookup for {address}: {exc}")
            return [(None, _Outcome("deferred", "4.3.0", "alias database unavailable"))]
        outcomes: list[tuple[Leaf, _Outcome]] = []
        forwards = [leaf for leaf in leaves if leaf.kind == "forward"]
        for leaf in leaves:
            if leaf.kind == "mailbox":
                outcomes.append((leaf, await self._mailbox(request, address, leaf)))
            elif leaf.kind == "command":
                outcomes.append((leaf, await self._command(request, address, leaf)))
            elif leaf.kind == "file":
                outcomes.append((leaf, await self._file(request, address, leaf)))
            elif leaf.kind == "failed":
                if leaf.dsn == "5.4.6" and leaf.text.startswith("alias database loop"):
                    self.warn(leaf.text)
                outcomes.append((leaf, _outcome(leaf.dsn, leaf.text)))
        if forwards:
            forwarded = await self._forward(request, address, forwards)
            outcomes.extend((leaf, forwarded) for leaf in forwards)
        if not outcomes:  # cannot happen: every expansion path ends in a leaf
            return [(None, _Outcome("deferred", "4.3.0", "alias database unavailable"))]
        expanded = len(outcomes) > 1 or any(leaf.via for leaf, _ in outcomes)
        if not expanded:
            return [(None, outcomes[0][1])]
        if self.on_member is not None:
            for leaf, o in outcomes:
                self.on_member(request.queue_id, MemberResult(
                    to=leaf.address, orig_to=address, status=o.status, dsn=o.dsn, text=o.text))
        return [(leaf.address, o) for leaf, o in outcomes]

    # ------------------------------------------------------------------ mailboxes

    async def _mailbox(self, request: DeliveryRequest, address: str, leaf: Leaf) -> _Outcome:
        try:
            account = self._getpwnam(leaf.user)
        except KeyError:
            if leaf.user in _REQUIRED_ALIASES:
                self.warn(f"required alias not found: {leaf.user}")
                return _Outcome("sent", "2.0.0", "discarded")
            return _Outcome("bounced", "5.1.1", f'unknown user: "{leaf.user}"')
        if self.mailbox_command:
            self.warn(f"{request.queue_id}: mailbox_command = {self.mailbox_command}: "
                      "postillion does not run mailbox_command; mail stays queued")
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        if delivered_to_loop(request.content, address):
            return _Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}")
        owner = Owner(account.pw_uid, account.pw_gid)
        if self.home_mailbox.endswith("/"):
            return await self._maildir(request, address, Path(account.pw_dir) / self.home_mailbox,
                                       owner)
        if not self.home_mailbox and self.mail_spool_directory.endswith("/"):
            return await self._maildir(
                request, address, Path(self.mail_spool_directory) / leaf.user, owner)
        if self.home_mailbox:
            path = str(Path(account.pw_dir) / self.home_mailbox)
            spool = (owner.uid, owner.gid)
        else:
            path = f"{self.mail_spool_directory.rstrip('/')}/{leaf.user}"
            spool = _spool_ids(self.mail_spool_directory, owner)
        message = mbox_message(request.content, sender=request.envelope.sender,
                               original=address, delivered=address)
        try:
            await self._append(path, message, spool=spool, user=(owner.uid, owner.gid),
                               owner_uid=owner.uid)
        except MboxError as exc:
            return _outcome(exc.dsn, f"cannot update mailbox {path} for user {leaf.user}. "
                                     f"{exc.text}")
        return _Outcome("sent", "2.0.0", "delivered to mailbox")

    async def _maildir(self, request: DeliveryRequest, address: str, maildir: Path,
                       owner: Owner) -> _Outcome:
        message = delivery_headers(sender=request.envelope.sender, delivered_to=address,
                                   original=address) + to_lf(request.content)
        try:
            await deliver_maildir(maildir, message, owner=owner, hostname=self.hostname)
        except MaildirError as exc:
            if "Permission denied" in exc.text:
                self.warn(f"maildir access problem for UID/GID={owner.uid}/{owner.gid}: "
                          f"{exc.text}")
                self.warn("perhaps you need to create the maildirs in advance")
            return _outcome(exc.dsn, f"maildir delivery failed: {exc.text}")
        return _Outcome("sent", "2.0.0", "delivered to maildir")

    async def _append(self, path: str, message: bytes, *, spool: tuple[int, int],
                      user: tuple[int, int], regular_only: bool = True,
                      owner_uid: int | None = None, to_file: bool = False) -> None:
        checks: dict[str, Any] = {"regular_only": regular_only, "owner_uid": owner_uid,
                                  "dotlock_may_fail": to_file, "refuse_executable": to_file}
        if os.geteuid() == 0:
            warnings = await run_as(functools.partial(append, path, message,
                                                      locking=self.locking, spool=spool,
                                                      user=user, **checks))
        else:
            warnings = await asyncio.to_thread(append, path, message, locking=self.locking,
                                               **checks)  # type: ignore[arg-type]
        for text in warnings or ():
            self.warn(str(text))

    # ------------------------------------------------------------------ files and commands

    def _rights(self, leaf: Leaf) -> _Rights:
        """alias.c: the alias file owner's rights; root-owned (or no file): default_privs.
        Group 0 is never used either.  Raises ConfigError when default_privs names no
        account (or a privileged one)."""
        uid = 0
        if leaf.source:
            try:
                uid = os.stat(leaf.source).st_uid
            except OSError:
                uid = 0
        owner = None
        if uid != 0:
            try:
                owner = self._getpwuid(uid)
            except KeyError:
                pass
        if owner is not None and owner.pw_gid != 0:
            return _Rights(owner.pw_uid, owner.pw_gid, owner.pw_name, owner.pw_dir,
                           owner.pw_shell)
        try:
            pw = self._getpwnam(self.default_privs)
        except KeyError:
            raise ConfigError(f"unknown default_privs user: {self.default_privs}",
                              name="default_privs") from None
        if pw.pw_uid == 0 or pw.pw_gid == 0:
            raise ConfigError(f"default_privs {self.default_privs} has privileged user ID",
                              name="default_privs")
        if owner is not None:  # command.c, file.c: group 0 becomes default_privs' group
            return _Rights(owner.pw_uid, pw.pw_gid, owner.pw_name, owner.pw_dir,
                           owner.pw_shell)
        return _Rights(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir, pw.pw_shell)

    def _can_switch(self, request: DeliveryRequest, rights: _Rights, what: str) -> bool:
        if os.geteuid() == 0 or os.geteuid() == rights.uid:
            return True
        self.warn(f"{request.queue_id}: cannot deliver to {what} as UID/GID="
                  f"{rights.uid}/{rights.gid} without root: run the privileged local service "
                  "(master.cf: local unix - n n - - local); mail stays queued")
        return False

    def _alias_rights(self, request: DeliveryRequest, leaf: Leaf, allowed: set[str],
                      what: str) -> _Rights | _Outcome:
        """The rights a ``|command`` or ``/file`` member runs with, or the outcome that stops
        it: restricted by allow_mail_to_commands/files, or no usable rights."""
        if "alias" not in allowed:
            return _Outcome("bounced", "5.7.1", f"mail to {what} is restricted")
        try:
            rights = self._rights(leaf)
        except ConfigError as exc:
            self.warn(f"{request.queue_id}: {exc}")
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        if not self._can_switch(request, rights, f"{what} {leaf.target}"):
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        return rights

    async def _command(self, request: DeliveryRequest, address: str, leaf: Leaf) -> _Outcome:
        rights = self._alias_rights(request, leaf, self.allow_commands, "command")
        if isinstance(rights, _Outcome):
            return rights
        env = self._command_env(request, address, leaf, rights)
        env["PATH"] = COMMAND_PATH
        data = command_input(request.content, sender=request.envelope.sender,
                             original=address, delivered=address)
        ids = ({"user": rights.uid, "group": rights.gid, "extra_groups": []}
               if os.geteuid() == 0 else {})
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", leaf.target, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                cwd="/", env=env, start_new_session=True, **ids)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            return _Outcome("deferred", "4.3.0",
                            f"Delivery failed: {getattr(exc, 'strerror', None) or exc}")
        try:
            output = await asyncio.wait_for(_talk(proc, data), self.command_time_limit)
        except (TimeoutError, asyncio.TimeoutError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            return _Outcome("bounced", "5.3.0", f'Command time limit exceeded: "{leaf.target}"')
        return command_status(leaf.target, proc.returncode or 0, output)

    def _command_env(self, request: DeliveryRequest, address: str, leaf: Leaf,
                     rights: _Rights) -> dict[str, str]:
        """local/command.c's environment, censored with command_expansion_filter.

        The recipient is the address whose alias listed the command (recipient.c: LOCAL is
        its local part in lower case, USER and LOGNAME that without the extension,
        EXTENSION the text after the delimiter, DOMAIN the lower-cased domain); HOME and
        SHELL are those of the account the command runs as; ORIGINAL_RECIPIENT is the
        queued recipient.  Client and SASL attributes are exported when known."""
        recipient = leaf.address or address
        local, domain = split_address(recipient.lower())
        bare = strip_extension(local, self.naming.recipient_delimiter)
        user = bare if bare is not None else local
        extension = local[len(bare) + 1:] if bare is not None else None
        if extension is not None and "/" in extension:
            self.warn(f"{request.queue_id}: address with illegal extension: {local}")
            extension = None
        env = {"LOGNAME": user, "USER": user, "SENDER": request.envelope.sender,
               "RECIPIENT": recipient, "LOCAL": local}
        if rights.home:
            env["HOME"] = rights.home
        if rights.shell:
            env["SHELL"] = rights.shell
        if "@" in recipient:
            env["DOMAIN"] = domain
        if extension is not None:
            env["EXTENSION"] = extension
        if address:
            env["ORIGINAL_RECIPIENT"] = address
        e = request.envelope
        for name, value in (("CLIENT_HOSTNAME", e.client_name), ("CLIENT_ADDRESS", e.client_addr),
                            ("CLIENT_HELO", e.helo_name), ("CLIENT_PROTOCOL", e.protocol),
                            ("SASL_METHOD", e.sasl_method), ("SASL_SENDER", e.sasl_sender),
                            ("SASL_USERNAME", e.sasl_username)):
            if value:  # command.c EXPORT_REQUEST: only what is not empty
                env[name] = value
        # command.c: network data never reaches the shell unfiltered
        return {name: censor(value) for name, value in env.items()}

    async def _file(self, request: DeliveryRequest, address: str, leaf: Leaf) -> _Outcome:
        rights = self._alias_rights(request, leaf, self.allow_files, "file")
        if isinstance(rights, _Outcome):
            return rights
        if leaf.target.endswith("/"):
            return await self._maildir(request, address, Path(leaf.target),
                                       Owner(rights.uid, rights.gid))
        message = mbox_message(request.content, sender=request.envelope.sender,
                               original=address, delivered=address)
        ids = (rights.uid, rights.gid)
        try:
            await self._append(leaf.target, message, spool=ids, user=ids, regular_only=False,
                               to_file=True)
        except MboxError as exc:
            return _outcome(exc.dsn, f"cannot append message to file {leaf.target}: {exc.text}")
        return _Outcome("sent", "2.0.0", f"delivered to file: {leaf.target}")

    # ------------------------------------------------------------------ forwarding

    async def _forward(self, request: DeliveryRequest, address: str,
                       leaves: list[Leaf]) -> _Outcome:
        if self.forwarder is None:
            self.warn(f"{request.queue_id}: cannot forward mail for {address} to "
                      f"{', '.join(l.address for l in leaves)}: no forwarding queue configured")
            return _Outcome("deferred", "4.3.5", "mail system configuration error")
        # forward.c: the copy carries Delivered-To, so a loop through other hosts is caught.
        content = (b"Delivered-To: " + address.encode("utf-8", "surrogateescape") + b"\r\n"
                   + request.content)
        try:
            queue_id = await self.forwarder.forward(
                sender=request.envelope.sender, recipients=[l.address for l in leaves],
                content=content)
        except (OSError, PostillionError) as exc:
            self.warn(f"{request.queue_id}: forward: {exc}")
            return _Outcome("deferred", "4.3.0", "mail forwarding transaction failed")
        return _Outcome("sent", "2.0.0", f"forwarded as {queue_id}")


def censor(value: str) -> str:
    """command.c: characters outside command_expansion_filter become underscores."""
    return "".join(c if c in EXPANSION_FILTER else "_" for c in value)


async def _talk(proc: asyncio.subprocess.Process, data: bytes) -> bytes:
    """Feed ``data`` to the command and keep at most OUTPUT_LIMIT bytes of its output
    (pipe_command.c): the rest is read and dropped, so a chatty command cannot fill the
    memory of the root service.  Returns once the command exited and closed its output."""
    assert proc.stdin is not None and proc.stdout is not None

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command stopped reading early: its exit status decides
        finally:
            proc.stdin.close()

    writer = asyncio.ensure_future(feed())
    kept = bytearray()
    try:
        while chunk := await proc.stdout.read(65536):
            if len(kept) < OUTPUT_LIMIT:
                kept += chunk[:OUTPUT_LIMIT - len(kept)]
        await writer
        await proc.wait()
    finally:
        if not writer.done():
            writer.cancel()
    return bytes(kept)


def _spool_ids(spool_directory: str, owner: Owner) -> tuple[int, int]:
    """local/mailbox.c: a world-writable spool is written as the user, a group-writable one
    with the spool's group, any other as root (the new mailbox is then given to the user)."""
    try:
        st = os.stat(spool_directory)
    except OSError:
        return owner.uid, owner.gid
    if st.st_mode & 0o002:
        return owner.uid, owner.gid
    if st.st_mode & 0o020:
        return owner.uid, st.st_gid
    return 0, 0
