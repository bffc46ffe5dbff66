"""The maildrop: how `postillion sendmail` hands mail to the pickup service, and pickup itself.

Owns: the drop file format (``encode_drop`` / ``decode_drop``), the ``$queue_directory/maildrop``
directory (``ensure_maildrop``), writing one drop file (``write_drop``), and ``Pickup``, which
turns drop files into queue files in ``incoming/``: validate, add the headers a local
submission needs (``build_message``, pure), commit, log, remove.
Must not import: server, cli, smtp (the queue manager process drives ``Pickup``; sendmail
calls ``write_drop``).
Follows: Postfix postdrop(1) and pickup(8) (``pickup.c``: the ``Received: by HOST (Postfix,
from userid UID)`` header dated by the file's mtime, the ``ID: uid=UID from=<sender>`` log
line, the time-warp warnings), ``mail_open_ok.c`` (a regular file with one link),
cleanup(8) (``message_drop_headers``, missing Message-Id:/Date:/From: with the full name in
``header_from_format``, duplicate recipients removed, stray CR/LF replaced as
``cleanup_replace_stray_cr_lf`` does) and trivial-rewrite(8) (``append_at_myorigin``).

Trust model (read this before changing anything).  The directory is mode 1733 and owned by
mail_owner, so any local user can create a file in it, nobody but its owner (and mail_owner)
can remove or rename it, and nobody but mail_owner can list it.  Where Postfix has a setgid
postdrop program, postillion has unguessable names: a drop file is world-readable (pickup runs
as mail_owner, not as the file's owner) but only someone who knows its 128-bit random name can
open it.  The **only trusted fact about a drop file is its owner's uid** (from ``fstat``): it
goes into the Received: header and the log, and the default sender is that user's login
name.  Everything inside the file is treated as hostile: pickup never follows symlinks, opens
nothing but regular files with one link, bounds what it reads, validates every field, makes
the content's line endings canonical, and moves whatever fails to ``corrupt/`` with a warning.

Crash semantics.  ``write_drop`` writes a temporary ``.tmp.<random>`` file (pickup ignores
names starting with a dot), fsyncs it, then renames it to its final name; pickup never sees a
partial file.  Pickup commits the queue file first and removes the drop file afterwards: a
crash in between delivers the message twice (the file is picked up again), never zero times.
An unprivileged user cannot open the directory to fsync it (Postfix's postdrop cannot either),
so the rename is as durable as the file system makes it; root's submissions fsync it.

Format, version 1::

    POSTILLION-MAILDROP 1\\n
    {"content_length": N, "recipients": ["a@b.example", ...], "sender": "...", ...}\\n
    \\n
    <exactly N bytes of message content, CRLF lines>

The JSON line is ASCII only.  Keys: ``content_length`` and ``recipients`` (required);
``sender`` (``-f``; absent means the file owner's login name; ``""`` is the null sender),
``full_name`` (``-F``), ``body_type`` (``-B``: ``7BIT`` or ``8BITMIME``), ``envid`` (``-V``)
and ``notify`` (``-N``, a list of NEVER/SUCCESS/FAILURE/DELAY).  Unknown keys, other
versions, a short or long content and anything after it make the file damaged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pwd
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from postillion.cleanup.headers import (
    add_missing_headers,
    field_name,
    mail_date,
    quote_822_local,
    split_headers,
)
from postillion.cleanup.checks import CheckResult, ContentChecks, Disposition, MessageContext, inspect_message
from postillion.cleanup.content import added_recipients, content_checks, new_table_warnings
from postillion.config import Params
from postillion.errors import PostillionError, QueueWriteError
from postillion.maillog import printable
from postillion.queue.envelope import NOTIFY_VALUES, Envelope, Recipient
from postillion.queue.record import RecipientStatus
from postillion.queue.store import CORRUPT, HOLD, INCOMING, QueueEntry, QueueStore

MAILDROP = "maildrop"
MAILDROP_DIR_MODE = 0o1733  # Postfix: 1730 root:postdrop; we have no setgid postdrop program
DROP_FILE_MODE = 0o644  # pickup (mail_owner) must read files other users own
MAGIC = b"POSTILLION-MAILDROP"
VERSION = 1
TEMP_PREFIX = ".tmp."
NAME_RE = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16)
ENVELOPE_LIMIT = 1 << 20  # bytes for the magic and JSON lines: ~10000 long recipients
ADDRESS_LIMIT = 1000  # longer than any usable address (RFC 5321 paths stop at 256 octets)
FULL_NAME_LIMIT = 1000
ENVID_LIMIT = 100  # sendmail.c: "too long -V option value -- ignored"
STALE_TEMP_AGE = 86400.0  # a temporary file this old was left by a sendmail that died
FUTURE_SLACK = 2 * 3600  # pickup.c: allow clients whose clock (or DST offset) is off
OLD_AGE = 86400  # pickup.c warns about mail that sat in the maildrop for a day or more
DROP_HEADERS_DEFAULT = "bcc, content-length, resent-bcc, return-path"  # message_drop_headers
_KEYS = {"content_length", "recipients", "sender", "full_name", "body_type", "envid", "notify"}
_BODY_TYPES = ("7BIT", "8BITMIME")
_O_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW
# RFC 5322 specials (plus the quote itself): a full name with one of these is quoted.
_SPECIALS = set('()<>[]:;@\\,."')
_DOMAIN = re.compile(r"(?:[^\s.@\[\]\\\"<>(),;:]+\.)*[^\s.@\[\]\\\"<>(),;:]+\.?|\[[!-Z^-~]+\]")


class MaildropError(PostillionError, ValueError):
    """A drop file is damaged or hostile (the text says why, for the warning)."""


# --- the drop file ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DropFile:
    """One submission as sendmail hands it over.  ``sender`` None: the file owner's login."""

    recipients: tuple[str, ...]
    content: bytes
    sender: str | None = None
    full_name: str | None = None
    body_type: str | None = None
    envid: str | None = None
    notify: tuple[str, ...] | None = None


def address_problem(address: str, *, allow_empty: bool = False) -> str | None:
    """Why *address* (an envelope address, without angle brackets) is not sane, or None.

    Unqualified names (``alice``) are fine: pickup appends ``@$myorigin``.
    """
    if not address:
        return None if allow_empty else "empty address"
    if len(address.encode("utf-8", "surrogateescape")) > ADDRESS_LIMIT:
        return "address too long"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in address) or "<" in address or ">" in address:
        return "bad address syntax"
    local, at, domain = address.rpartition("@")
    if not at:
        local = address
    elif not domain or not _DOMAIN.fullmatch(domain) or not local:
        return "bad address syntax"
    quoted = len(local) >= 2 and local.startswith('"') and local.endswith('"')
    if not quoted and any(ch.isspace() for ch in local):
        return "bad address syntax"
    return None


def encode_drop(drop: DropFile) -> bytes:
    meta: dict[str, Any] = {"content_length": len(drop.content), "recipients": list(drop.recipients)}
    if drop.sender is not None:
        meta["sender"] = drop.sender
    if drop.full_name is not None:
        meta["full_name"] = drop.full_name
    if drop.body_type is not None:
        meta["body_type"] = drop.body_type
    if drop.envid is not None:
        meta["envid"] = drop.envid
    if drop.notify is not None:
        meta["notify"] = list(drop.notify)
    line = json.dumps(meta, ensure_ascii=True, separators=(", ", ": "))
    return b"%s %d\n%s\n\n" % (MAGIC, VERSION, line.encode("ascii")) + drop.content


def _string(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise MaildropError(f"{key} is not a string")
    return value


def decode_drop(data: bytes, *, content_limit: int = 0) -> DropFile:
    """Parse and validate a drop file; MaildropError says what is wrong.

    *content_limit* is ``message_size_limit`` (0: no limit).
    """
    first = data.find(b"\n", 0, 64)
    if first < 0 or data[:first] != b"%s %d" % (MAGIC, VERSION):
        if data.startswith(MAGIC + b" "):
            raise MaildropError("unsupported maildrop file version")
        raise MaildropError("not a maildrop file")
    second = data.find(b"\n", first + 1, ENVELOPE_LIMIT)
    if second < 0:
        raise MaildropError("envelope too long or truncated")
    try:
        meta = json.loads(data[first + 1:second].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MaildropError("malformed envelope") from exc
    if not isinstance(meta, dict):
        raise MaildropError("malformed envelope")
    unknown = sorted(set(meta) - _KEYS)
    if unknown:
        raise MaildropError(f"unexpected envelope field {unknown[0][:40]!r}")
    length = meta.get("content_length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise MaildropError("bad content_length")
    if content_limit > 0 and length > content_limit:
        raise MaildropError("message file too big")
    if data[second + 1:second + 2] != b"\n":
        raise MaildropError("no empty line after the envelope")
    content = data[second + 2:]
    if len(content) != length:
        raise MaildropError("truncated file" if len(content) < length else "data after the content")

    rcpts = meta.get("recipients")
    if not isinstance(rcpts, list) or not rcpts or not all(isinstance(r, str) for r in rcpts):
        raise MaildropError("no recipients")
    for rcpt in rcpts:
        problem = address_problem(rcpt)
        if problem:
            raise MaildropError(f"recipient {printable(rcpt, 100)!r}: {problem}")
    sender = _string(meta, "sender")
    if sender is not None:
        problem = address_problem(sender, allow_empty=True)
        if problem:
            raise MaildropError(f"sender {printable(sender, 100)!r}: {problem}")
    full_name = _string(meta, "full_name")
    if full_name is not None and (len(full_name) > FULL_NAME_LIMIT
                                  or not all(ch.isprintable() for ch in full_name)):
        raise MaildropError("bad full name")
    body_type = _string(meta, "body_type")
    if body_type is not None and body_type not in _BODY_TYPES:
        raise MaildropError("bad body type")
    envid = _string(meta, "envid")
    if envid is not None and (len(envid) > ENVID_LIMIT or not re.fullmatch(r"[!-~]+", envid)):
        raise MaildropError("bad envid")
    notify = meta.get("notify")
    if notify is not None:
        if (not isinstance(notify, list) or not notify
                or not all(isinstance(n, str) and n in NOTIFY_VALUES for n in notify)
                or ("NEVER" in notify and len(notify) > 1)):
            raise MaildropError("bad notify")
        notify = tuple(notify)
    return DropFile(recipients=tuple(rcpts), content=content, sender=sender,
                    full_name=full_name, body_type=body_type, envid=envid, notify=notify)


def canonical_lines(content: bytes) -> bytes:
    """CRLF after every line (the last one too); a CR or LF that does not end a line
    becomes a space, so nothing downstream can see a line end SMTP would not
    (``cleanup_replace_stray_cr_lf``)."""
    if not content:
        return b""
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(line.replace(b"\r", b" "))
    return b"\r\n".join(out) + b"\r\n"


# --- the directory and writing a drop file (sendmail's side) -------------------------------


def maildrop_directory(queue_directory: Path) -> Path:
    return Path(queue_directory) / MAILDROP


def ensure_maildrop(queue_directory: Path, *, owner: tuple[int, int] | None = None) -> Path:
    """Create ``maildrop/`` (mode 1733) if missing and fix its mode; *owner* (uid, gid) is
    given by root, so the directory belongs to mail_owner whoever made it.  OSError when the
    directory cannot be made, or when something else (a symlink, a file) holds its name."""
    path = maildrop_directory(queue_directory)
    try:
        os.mkdir(path, 0o700)
        if owner is not None:
            os.chown(path, owner[0], owner[1], follow_symlinks=False)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    if stat.S_IMODE(st.st_mode) != MAILDROP_DIR_MODE:
        os.chmod(path, MAILDROP_DIR_MODE)  # after chown: chown clears the sticky bit on some systems
    return path


def write_drop(directory: Path, data: bytes) -> str:
    """Write *data* as a new drop file in *directory*; return its name.

    Temporary file (a dot name pickup ignores) → write → fchmod 0644 → fsync → rename.  The
    directory is opened without following symlinks and every step goes through its
    descriptor, so a directory swapped for a symlink cannot redirect root's write.  On
    failure the temporary file is removed and the OSError propagates.
    """
    dfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | _O_FLAGS)
    try:
        name = secrets.token_hex(16)
        tmp = TEMP_PREFIX + secrets.token_hex(16)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_FLAGS, 0o600, dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, DROP_FILE_MODE)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        _fsync_dir_if_allowed(directory)
        return name
    finally:
        os.close(dfd)


def _fsync_dir_if_allowed(directory: Path) -> None:
    # Others have no read permission on a 1733 directory, so only root and mail_owner can
    # open it to fsync; for everyone else the rename is as durable as the file system makes it.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _O_FLAGS)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- turning a drop file into a queued message (pure) --------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PickupSettings:
    myhostname: str
    myorigin: str
    mail_name: str = "Postfix"
    message_size_limit: int = 10240000
    drop_headers: frozenset[str] = frozenset({"bcc", "content-length", "resent-bcc", "return-path"})
    header_from_format: str = "standard"
    checks: ContentChecks = ContentChecks()  # header_checks, body_checks ... (cleanup/content.py)
    always_bcc: str = ""


def pickup_settings(params: Params) -> PickupSettings:
    myhostname = params.get("myhostname") or "localhost"
    return PickupSettings(
        myhostname=myhostname,
        myorigin=params.get("myorigin") or myhostname,
        mail_name=params.get("mail_name") or "Postfix",
        message_size_limit=params.get_int("message_size_limit"),
        drop_headers=frozenset(h.lower() for h in params.get_list("message_drop_headers")),
        header_from_format=params.get("header_from_format") or "standard",
        checks=content_checks(params),
        always_bcc=params.get("always_bcc"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    envelope: Envelope
    content: bytes
    message_id: str  # for cleanup's "message-id=" line
    log_sender: str  # what pickup logs as from=<...>: the sender as submitted, unqualified


def qualify(address: str, myorigin: str) -> str:
    """``append_at_myorigin``: ``alice`` → ``alice@$myorigin``; ``""`` stays the null sender."""
    if not address or "@" in address:
        return address
    return f"{address}@{myorigin}"


def from_header(sender: str, full_name: str, header_from_format: str) -> str:
    """The From: cleanup adds: ``From: Full Name <a@b>`` (standard, Postfix 3.3 and later)
    or ``From: a@b (Full Name)`` (obsolete); a name with specials is quoted."""
    addr = quote_822_local(sender)
    if header_from_format == "obsolete":
        comment = full_name.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return f"From: {addr} ({comment})"
    phrase = full_name
    if any(ch in _SPECIALS for ch in full_name):
        phrase = '"' + full_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"From: {phrase} <{addr}>"


def _drop_headers(content: bytes, names: frozenset[str]) -> bytes:
    fields, end, _ = split_headers(content)
    if not names or not any(field_name(f) in names for f in fields):
        return content
    return b"".join(f for f in fields if field_name(f) not in names) + content[end:]


def _append_header(content: bytes, header: str) -> bytes:
    _, end, has_separator = split_headers(content)
    head, rest = content[:end], content[end:]
    block = header.encode("utf-8") + b"\r\n"
    if rest and not has_separator:
        block += b"\r\n"
    return head + block + rest


def build_message(
    drop: DropFile,
    *,
    uid: int,
    login: str | None,
    queue_id: str,
    posted: datetime.datetime,
    settings: PickupSettings,
) -> Submission:
    """The envelope and content pickup queues for *drop*, owned by *uid* (*login*: that
    user's name, None when the uid has none), posted at *posted* (the file's mtime).

    MaildropError when no sender can be found (no ``-f`` and no login name).
    """
    raw_sender = drop.sender if drop.sender is not None else login
    if raw_sender is None:
        raise MaildropError(f"no login name found for user ID {uid}")
    sender = qualify(raw_sender, settings.myorigin)
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for rcpt in drop.recipients:
        address = qualify(rcpt, settings.myorigin)
        if address.lower() not in seen:  # cleanup's duplicate filter folds case
            seen.add(address.lower())
            recipients.append(Recipient(address=address, notify=drop.notify))

    body = _drop_headers(canonical_lines(drop.content), settings.drop_headers)
    if body[:1] in (b" ", b"\t"):
        body = b"\r\n" + body  # pickup.c: leading white space must not continue our Received:
    received = (
        f"Received: by {settings.myhostname} ({settings.mail_name}, from userid {uid})\r\n"
        f"\tid {queue_id}; {mail_date(posted)}\r\n"
    ).encode("ascii")
    full_name = drop.full_name or ""
    named_from = bool(sender and full_name)
    content, msgid = add_missing_headers(
        received + body, queue_id=queue_id, myhostname=settings.myhostname, sender=sender,
        now=posted, add_from=not named_from,
    )
    if named_from:
        fields, _, _ = split_headers(content)
        if not any(field_name(f) == "from" for f in fields):
            content = _append_header(content, from_header(sender, full_name, settings.header_from_format))

    addresses = [sender, *(r.address for r in recipients)]
    envelope = Envelope(
        sender=sender,
        recipients=recipients,
        envid=drop.envid,
        body_type=drop.body_type or ("7BIT" if content.isascii() else "8BITMIME"),
        smtputf8=not all(a.isascii() for a in addresses),
        arrival_time=posted.timestamp(),
        protocol="local",
        queue_id=queue_id,
    )
    return Submission(envelope=envelope, content=content, message_id=msgid, log_sender=raw_sender)


# --- log lines (kept here until maillog.py grows pickup events) ----------------------------


def pickup_line(queue_id: str, uid: int, sender: str) -> str:
    """pickup.c: ``ID: uid=1000 from=<alice>`` (the sender as submitted)."""
    return f"{queue_id}: uid={uid} from=<{printable(sender)}>"


def message_id_line(queue_id: str, msgid: str) -> str:
    """cleanup's ``ID: message-id=<...>``."""
    return f"{queue_id}: message-id={printable(msgid) if msgid else '<>'}"


# --- pickup (runs as mail_owner in the queue manager process) ------------------------------


class PickupLog(Protocol):
    """What pickup logs through (``maillog.QueueLog`` fits)."""

    def info(self, text: str, process: str = ...) -> None: ...

    def warning(self, text: str, process: str = ...) -> None: ...


def login_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _read_at_most(fd: int, limit: int) -> bytes:
    """At most *limit* + 1 bytes (one more than allowed tells that the file grew)."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


@dataclass
class Pickup:
    """pickup(8): move mail from ``maildrop/`` into ``incoming/``.

    ``scan()`` handles every file present; ``on_queued(queue_id)`` runs after each commit (the
    queue manager's wake-up).  Files that cannot be handled are moved to ``corrupt/`` (or, if
    even that fails, remembered and skipped), so one bad file never stops the rest.
    """

    store: QueueStore
    settings: PickupSettings
    log: PickupLog
    on_queued: Callable[[str], None] | None = None
    # Gets a rejected message (never queued) whose recipients all carry the bounce status.
    on_rejected: Callable[[tuple[QueueEntry, list[RecipientStatus]]], None] | None = None
    clock: Callable[[], float] = time.time
    login_of: Callable[[int], str | None] = login_name
    _skip: set[tuple[int, int, int]] = field(default_factory=set)

    @property
    def directory(self) -> Path:
        return maildrop_directory(self.store.queue_directory)

    def ensure_directory(self) -> None:
        ensure_maildrop(self.store.queue_directory)

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []

    def scan(self) -> list[str]:
        """Pick up every file in the maildrop; the new queue ids."""
        ids = []
        for name in self.names():
            queue_id = self.process(name)
            if queue_id is not None:
                ids.append(queue_id)
        return ids

    def _warn(self, text: str) -> None:
        self.log.warning(text, process="pickup")

    def process(self, name: str) -> str | None:
        """Queue one drop file; its queue id, or None (skipped, moved aside, or to retry)."""
        path = self.directory / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn(f"{MAILDROP}/{printable(name, 100)}: {exc.strerror}")
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key in self._skip:
            return None
        if name.startswith("."):
            self._remove_stale_temp(path, st)
            return None
        try:
            loaded = self._load(name, st)
        except MaildropError as exc:
            self._reject(name, st, str(exc))
            return None
        if loaded is None:
            return None  # gone meanwhile (its owner removed it)
        return self._queue(name, *loaded)

    def _load(self, name: str, st: os.stat_result) -> tuple[os.stat_result, DropFile] | None:
        """Open and decode a drop file without trusting it; MaildropError says why not."""
        if not NAME_RE.fullmatch(name):
            raise MaildropError("bad maildrop file name")
        if not stat.S_ISREG(st.st_mode):
            raise MaildropError("not a regular file")
        if st.st_nlink != 1:
            raise MaildropError(f"file has {st.st_nlink} links")
        limit = self.settings.message_size_limit
        try:
            fd = os.open(self.directory / name, os.O_RDONLY | os.O_NONBLOCK | _O_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MaildropError(f"open: {exc.strerror}") from exc
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
                raise MaildropError("file changed while opening it")
            if limit > 0 and fst.st_size > limit + ENVELOPE_LIMIT:
                raise MaildropError("message file too big")
            data = _read_at_most(fd, limit + ENVELOPE_LIMIT if limit > 0 else max(fst.st_size, 1 << 30))
        except OSError as exc:
            raise MaildropError(f"read: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return fst, decode_drop(data, content_limit=limit)

    def _queue(self, name: str, st: os.stat_result, drop: DropFile) -> str | None:
        now = self.clock()
        mtime = st.st_mtime
        warnings = []
        if mtime > now + FUTURE_SLACK:
            warnings.append(f"message {MAILDROP}/{name} dated {int(mtime - now)} seconds into the future")
            mtime = now
        elif mtime < now - OLD_AGE:
            warnings.append(f"message {MAILDROP}/{name} has been queued for {int((now - mtime) // OLD_AGE)} days")
        posted = datetime.datetime.fromtimestamp(mtime).astimezone()
        try:
            with self.store.begin() as pending:
                try:
                    sub = build_message(drop, uid=st.st_uid, login=self.login_of(st.st_uid),
                                        queue_id=pending.queue_id, posted=posted,
                                        settings=self.settings)
                except MaildropError as exc:
                    pending.abort()
                    self._reject(name, st, str(exc))
                    return None
                result, sub = self._inspect(drop, sub, st, pending.queue_id, posted)
                queue_id = pending.queue_id
                if result.disposition not in (Disposition.REJECT, Disposition.DISCARD):
                    queue_id = pending.commit(
                        sub.envelope, sub.content,
                        queue=HOLD if result.disposition is Disposition.HOLD else INCOMING,
                    )
        except QueueWriteError as exc:
            self._warn(f"{MAILDROP}/{name}: uid={st.st_uid}: {exc}; will try again")
            return None
        for text in warnings:
            self._warn(f"{queue_id}: {text}")
        self.log.info(pickup_line(queue_id, st.st_uid, sub.log_sender), process="pickup")
        for line in (*new_table_warnings(), *result.log):
            self.log.info(line, process="cleanup")
        if result.filter is not None:
            self._warn(f"{queue_id}: FILTER {result.filter} ignored: no content_filter support")
        if result.disposition is Disposition.REJECT:
            # Local mail cannot get a 5xx: like Postfix's cleanup for pickup, bounce it to the
            # sender (queued before the maildrop file goes, so a crash repeats rather than loses).
            if self.on_rejected is not None:
                self.on_rejected(self._rejected_entry(queue_id, sub, result))
            self._remove(name, st)
            self.log.info(f"{queue_id}: removed", process="qmgr")
            return None
        if result.disposition is not Disposition.DISCARD:
            self.log.info(message_id_line(queue_id, sub.message_id), process="cleanup")
        self._remove(name, st)
        if self.on_queued is not None and result.disposition is Disposition.ACCEPT:
            self.on_queued(queue_id)
        return queue_id

    def _rejected_entry(self, queue_id: str, sub: Submission,
                        result: CheckResult) -> tuple[QueueEntry, list[RecipientStatus]]:
        reply = result.reply
        dsn = (reply.enhanced if reply is not None and reply.enhanced else "5.7.1")
        text = reply.text if reply is not None else "message content rejected"
        envelope = dataclasses.replace(sub.envelope, queue_id=queue_id)
        now = self.clock()
        failed = [RecipientStatus(rcpt=i, status="bounced", dsn=dsn, relay="none", text=text,
                                  time=now) for i in range(len(envelope.recipients))]
        entry = QueueEntry(queue_id=queue_id, queue=INCOMING, envelope=envelope,
                           content=sub.content, statuses=[])
        return entry, failed

    def _inspect(self, drop: DropFile, sub: Submission, st: os.stat_result, queue_id: str,
                 posted: datetime.datetime) -> tuple[CheckResult, Submission]:
        """header_checks/body_checks on the content as submitted (cleanup's own headers are
        not inspected), then REDIRECT, BCC and always_bcc on the envelope."""
        settings = self.settings
        result = CheckResult(content=drop.content)
        if settings.checks:
            env = sub.envelope
            result = inspect_message(canonical_lines(drop.content), settings.checks, MessageContext(
                queue_id=queue_id, origin="local", sender=env.sender,
                recipient=env.recipients[0].address if env.recipients else None,
            ))
            if result.content != canonical_lines(drop.content):
                sub = build_message(dataclasses.replace(drop, content=result.content), uid=st.st_uid,
                                    login=self.login_of(st.st_uid), queue_id=queue_id,
                                    posted=posted, settings=settings)
        recipients = list(sub.envelope.recipients)
        if result.redirect is not None:
            recipients = [Recipient(address=result.redirect)]
        extra = added_recipients([r.address for r in recipients], result.bcc, settings.always_bcc)
        recipients += [Recipient(address=a, notify=("NEVER",)) for a in extra]
        if recipients != list(sub.envelope.recipients):
            sub = dataclasses.replace(sub, envelope=dataclasses.replace(sub.envelope,
                                                                       recipients=recipients))
        return result, sub

    def _remove(self, name: str, st: os.stat_result) -> None:
        path = self.directory / name
        try:
            # The owner may have renamed another file onto this name meanwhile: keep that one.
            if os.lstat(path).st_ino == st.st_ino:
                os.unlink(path)
                _fsync_dir_if_allowed(self.directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn(f"remove {MAILDROP}/{name}: {exc.strerror}")
            self._skip.add((st.st_dev, st.st_ino, st.st_mtime_ns))  # never queue it twice

    def _reject(self, name: str, st: os.stat_result, reason: str) -> None:
        """Move a bad file to ``corrupt/maildrop.NAME`` with a warning (never raise)."""
        shown = printable(name, 100)
        base = f"{MAILDROP}.{name}" if NAME_RE.fullmatch(name) else f"{MAILDROP}.inode{st.st_ino}"
        target = self.store.queue_directory / CORRUPT / base
        if os.path.lexists(target):
            target = target.with_name(f"{base}.{time.time_ns()}")
        try:
            os.rename(self.directory / name, target)
            where = f"moved to {CORRUPT}/{target.name}"
        except FileNotFoundError:
            return
        except OSError:
            try:
                os.unlink(self.directory / name)
                where = "removed"
            except OSError as exc:
                where = f"skipped (cannot move or remove it: {exc.strerror})"
                self._skip.add((st.st_dev, st.st_ino, st.st_mtime_ns))
        self._warn(f"{MAILDROP}/{shown}: uid={st.st_uid}: {reason}; {where}")

    def _remove_stale_temp(self, path: Path, st: os.stat_result) -> None:
        if st.st_mtime >= self.clock() - STALE_TEMP_AGE:
            return  # a sendmail may still be writing it
        with contextlib.suppress(OSError):
            os.unlink(path)
            self._warn(f"removed stale temporary file {MAILDROP}/{printable(path.name, 100)}")
