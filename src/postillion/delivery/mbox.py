"""mbox delivery: a message appended to a UNIX mailbox file the way Postfix's local(8) does it.

Owns: the mbox rendering (``From sender  date`` line, ``Return-Path:``, ``X-Original-To:``,
``Delivered-To:``, ``>From `` quoting, the blank line after), the same headers for a
command's standard input (no quoting, no blank line), locking as ``mailbox_delivery_lock``
says (``dotlock``: PATH.lock created exclusively, retried, stale ones removed; ``fcntl``: an
exclusive write lock on the open file), append + fsync with truncation to the old length on
failure, and ``run_as``: a forked child that switches its effective uid/gid the way Postfix's
set_eugid() does before it touches the file system, so the kernel checks the recipient's
rights and quotas, never root's.
Must not import: server, cli, queue (the child runs only stdlib code and this module).
Follows: Postfix global/mail_copy.c (MAIL_COPY_MBOX; header order; "error writing message:
%m"), global/mbox_open.c and mbox_conf.c (lock order: dotlock, open, then fcntl),
global/dot_lockfile.c ("unable to create lock file %s: %m"), local/mailbox.c (spool_uid and
chown rules, "destination %s is not a regular file", "... is not owned by recipient"),
local/file.c ("file is executable", MBOX_DOT_LOCK_MAY_FAIL), util/safe_open.c ("file has %d
hard links"), util/set_eugid.c (setgroups to the one gid).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from postillion.delivery.maildir import delivery_headers, mbox_dsn, quote_local, to_lf

FILE_MODE = 0o600  # local/mailbox.c: S_IRUSR | S_IWUSR
MAILER_DAEMON = "MAILER-DAEMON"  # global/mail_addr.h MAIL_ADDR_MAIL_DAEMON: the From_ null sender
_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class MboxError(Exception):
    """A delivery that did not happen: ``dsn`` decides defer (4.x.x) or bounce (5.x.x)."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text


class _DotlockFailed(MboxError):
    """The lock file could not be created for another reason than "file exists"."""


@dataclass(frozen=True, slots=True)
class Locking:
    """mailbox_delivery_lock plus deliver_lock_attempts, deliver_lock_delay, stale_lock_time."""

    methods: tuple[str, ...] = ("fcntl", "dotlock")
    attempts: int = 20
    delay: float = 1.0
    stale: float = 500.0


def from_line(sender: str, now: float | None = None) -> bytes:
    """``From sender  Thu Jan  1 00:00:00 2025`` (two spaces: mail_copy's "From %s  %.24s")."""
    who = quote_local(sender) if sender else MAILER_DAEMON
    when = time.asctime(time.localtime(time.time() if now is None else now))
    return f"From {who}  {when[:24]}\n".encode("utf-8", "surrogateescape")


def mbox_message(content: bytes, *, sender: str, original: str | None, delivered: str,
                 now: float | None = None) -> bytes:
    """What MAIL_COPY_MBOX appends: From_ line, Return-Path, X-Original-To, Delivered-To,
    the message with LF line ends and ``>From `` quoting, then one empty line."""
    body = _FROM_LINE.sub(b">From ", to_lf(content))
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return (from_line(sender, now)
            + delivery_headers(sender=sender, delivered_to=delivered, original=original)
            + body + b"\n")


def command_input(content: bytes, *, sender: str, original: str | None, delivered: str,
                  now: float | None = None) -> bytes:
    """A command's standard input (local/command.c: MAIL_COPY_FROM | RETURN_PATH | ORIG_RCPT
    | DELIVERED): the same lines, the message unquoted, no empty line appended."""
    return (from_line(sender, now)
            + delivery_headers(sender=sender, delivered_to=delivered, original=original)
            + to_lf(content))


# ----------------------------------------------------------------------------- locking


def dotlock(path: str, locking: Locking) -> str:
    """Create ``path.lock`` exclusively; a lock older than ``stale`` seconds is removed.
    Returns the lock path; raises MboxError (4.2.0 while somebody else holds it)."""
    lock = path + ".lock"
    err: OSError | None = None
    for attempt in range(max(1, locking.attempts)):
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0))
            return lock
        except FileExistsError as exc:
            err = exc
            try:
                if time.time() - os.lstat(lock).st_mtime > locking.stale:
                    os.unlink(lock)
                    continue
            except OSError:
                continue
        except OSError as exc:
            raise _DotlockFailed(mbox_dsn(exc.errno or 0, "5.2.0"),
                                 f"unable to create lock file {lock}: {exc.strerror}") from None
        if attempt + 1 < locking.attempts:
            time.sleep(locking.delay)
    assert err is not None
    raise MboxError("4.2.0", f"unable to create lock file {lock}: {err.strerror}")


def _fcntl_lock(fd: int, path: str, locking: Locking) -> None:
    for attempt in range(max(1, locking.attempts)):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or attempt + 1 >= locking.attempts:
                raise MboxError(mbox_dsn(exc.errno or errno.EAGAIN, "5.2.0"),
                                f"unable to lock for exclusive access: {exc.strerror}") from None
        time.sleep(locking.delay)


# ----------------------------------------------------------------------------- appending


def set_eugid(uid: int, gid: int) -> None:
    """Postfix set_eugid(): become root, set the effective gid and the group list to that
    one gid, then the effective uid.  A no-op when not running with a saved root uid (unprivileged mode)."""
    if os.getresuid()[2] != 0 and os.getuid() != 0:
        return
    if os.geteuid() != 0:
        os.seteuid(0)
    os.setegid(gid)
    # root's supplementary groups (group 0 among them) must not come along
    os.setgroups([gid])
    if uid != 0:
        os.seteuid(uid)


def append(path: str, message: bytes, *, locking: Locking = Locking(),
           regular_only: bool = True, spool: tuple[int, int] | None = None,
           user: tuple[int, int] | None = None, owner_uid: int | None = None,
           dotlock_may_fail: bool = False, refuse_executable: bool = False) -> list[str]:
    """Append ``message`` to the mbox file ``path`` (created 0600 when missing).

    ``spool`` are the ids that create the file and its dotlock, ``user`` the ids that
    write it (local/mailbox.c: they differ when the spool directory is not writable by the
    user; a file created by another uid is then given to ``user``).  Both None: the current
    ids.  An existing file is opened as safe_open() does: no symlink, one hard link, the
    same file as the name (a link to another file must not be written with our rights).
    ``owner_uid``: the file must belong to that uid (strict_mailbox_ownership);
    ``dotlock_may_fail``: a dotlock that cannot be created for another reason than "file
    exists" is only warned about (local/file.c); ``refuse_executable``: an executable
    regular file is refused (file.c).  No dotlock for a path that is not a regular file
    (mbox_open.c: never /dev/null.lock).  A failed write truncates the file to its old
    length.  Returns warnings to log; raises MboxError.
    """
    warnings: list[str] = []
    if spool is not None:
        set_eugid(*spool)
    lock = None
    if "dotlock" in locking.methods and _may_dotlock(path):
        try:
            lock = dotlock(path, locking)
        except _DotlockFailed as exc:
            if not dotlock_may_fail:
                raise MboxError(exc.dsn, exc.text) from None
            warnings.append(exc.text)
    try:
        # O_NONBLOCK: a FIFO without a reader must fail, not hang the delivery (mbox_open.c)
        flags = os.O_APPEND | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        created = False
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                raise MboxError(mbox_dsn(exc.errno or 0, "5.2.0"),
                                f"cannot open file: {exc.strerror}") from None
        except OSError as exc:
            raise MboxError(mbox_dsn(exc.errno or 0, "5.2.0"),
                            f"cannot open file: {exc.strerror}") from None
        try:
            os.set_blocking(fd, True)
            if not created:
                _check_opened(fd, path)
            if created and user is not None and spool is not None and spool[0] != user[0]:
                os.fchown(fd, *user)
            if user is not None and user != spool:
                set_eugid(*user)
            _write_locked(fd, path, message, locking, regular_only, owner_uid,
                          refuse_executable)
        finally:
            os.close(fd)
            if user is not None and spool is not None and user != spool:
                set_eugid(*spool)
    finally:
        if lock is not None:
            try:
                os.unlink(lock)
            except OSError:
                pass
    return warnings


def _may_dotlock(path: str) -> bool:
    """mbox_open.c: dotlock a missing or regular file only (stat follows symlinks)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _check_opened(fd: int, path: str) -> None:
    """safe_open_exist(): the open file has one hard link, is no directory, and is the
    file the name points to now (it was not swapped after the open)."""
    st = os.fstat(fd)
    if st.st_nlink != 1:
        raise MboxError("5.2.0", f"file has {st.st_nlink} hard links")
    if stat.S_ISDIR(st.st_mode):
        raise MboxError("5.2.0", "file is a directory")
    try:
        lst = os.lstat(path)
    except OSError as exc:
        raise MboxError("5.2.0",
                        f"file status changed unexpectedly: {exc.strerror}") from None
    if (st.st_dev, st.st_ino, st.st_nlink, st.st_mode) != (
            lst.st_dev, lst.st_ino, lst.st_nlink, lst.st_mode):
        raise MboxError("5.2.0", "file status changed unexpectedly")


def _write_locked(fd: int, path: str, message: bytes, locking: Locking,
                  regular_only: bool, owner_uid: int | None = None,
                  refuse_executable: bool = False) -> None:
    st = os.fstat(fd)
    regular = stat.S_ISREG(st.st_mode)
    if not regular and regular_only:
        raise MboxError("5.2.0", f"destination {path} is not a regular file")
    if owner_uid is not None and st.st_uid != owner_uid:
        raise MboxError("4.2.0", f"destination {path} is not owned by recipient")
    if refuse_executable and regular and st.st_mode & 0o111:
        raise MboxError("5.7.1", "file is executable")
    if regular and "fcntl" in locking.methods:
        _fcntl_lock(fd, path, locking)
    if regular and os.fstat(fd).st_nlink != 1:
        # mbox_open.c: a mailbox removed or linked while we waited for the lock
        raise MboxError("4.2.0", "target file status changed unexpectedly")
    start = os.lseek(fd, 0, os.SEEK_END) if regular else 0
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(fd, view):]
        if regular:
            os.fsync(fd)
    except OSError as exc:
        if regular:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        raise MboxError(mbox_dsn(exc.errno or 0, "5.3.0"),
                        f"error writing message: {exc.strerror}") from None


# ----------------------------------------------------------------------------- privileges


async def run_as(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a forked child and return its JSON-able result.

    ``fn`` switches ids itself (``set_eugid``), so a parent that is root stays root.  An
    MboxError raised in the child is raised again here; anything else the child raises
    becomes MboxError 4.3.0, so the mail is deferred, never lost.
    """
    rfd, wfd = os.pipe()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(rfd)
        os.close(wfd)
        raise MboxError("4.3.0", f"fork: {exc.strerror}") from None
    if pid == 0:  # pragma: no cover - runs in the child
        _child(fn, args, rfd, wfd, old_mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(wfd)
    answer = await asyncio.to_thread(_collect, pid, rfd)
    if "error" in answer:
        raise MboxError(str(answer["dsn"]), str(answer["error"]))
    return answer.get("result")


def _child(fn: Callable[..., Any], args: tuple[Any, ...], rfd: int, wfd: int,
           old_mask: Any) -> None:  # pragma: no cover - runs in the child
    code = 0
    try:
        os.close(rfd)
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            answer: dict[str, Any] = {"result": fn(*args)}
        except MboxError as exc:
            answer = {"dsn": exc.dsn, "error": exc.text}
        except OSError as exc:
            answer = {"dsn": mbox_dsn(exc.errno or 0, "4.3.0"), "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 -- reported to the parent, which defers
            answer = {"dsn": "4.3.0", "error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(answer).encode()
        while data:
            data = data[os.write(wfd, data):]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _collect(pid: int, rfd: int) -> dict[str, Any]:
    chunks = []
    with os.fdopen(rfd, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    try:
        return dict(json.loads(b"".join(chunks)))
    except ValueError:
        return {"dsn": "4.3.0", "error": f"delivery process failed: wait status {status}"}
