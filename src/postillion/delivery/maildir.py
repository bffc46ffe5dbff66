"""Maildir delivery: one message file written the way the Maildir spec and Postfix write it.

Owns: unique file names (``time.M<usec>P<pid>Q<n>.<host>``), the tmp/ -> new/ protocol with
fsyncs, creating a missing Maildir (cur/ new/ tmp/, mode 0700), the ``Return-Path:``,
``X-Original-To:`` and ``Delivered-To:`` lines Postfix prepends, the Delivered-To loop check,
and writing as the mailbox owner: when running as root for another user, the file is written
by a short-lived child process that has switched to that user's uid/gid (Postfix's
set_eugid()), so the kernel checks the user's permissions and quotas, never root's.
Must not import: anything from postillion.  The child runs this very file's source with
``python -I -c`` (the mailbox owner may not be able to read the source tree), so the module
is stdlib-only.
Follows: https://cr.yp.to/proto/maildir.html; Postfix local/maildir.c and virtual/maildir.c
(texts "create maildir file %s: %m", "maildir delivery failed: ..."), global/mail_copy.c
(header order), global/mbox_open.c mbox_dsn() (which errors are temporary),
local/delivered.c (the "mail forwarding loop" check).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700  # Postfix make_dirs(..., 0700)
FILE_MODE = 0o600  # Postfix vstream_fopen(..., 0600)

_counter = itertools.count(1)

# RFC 5322 atext plus "." (dot-atom); anything else makes Postfix quote the local part.
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


class MaildirError(Exception):
    """A delivery that did not happen: ``dsn`` decides defer (4.x.x) or bounce (5.x.x)."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose rights a delivery uses (the recipient's, or virtual_uid_maps/virtual_gid_maps)."""

    uid: int
    gid: int


def mbox_dsn(err: int, default: str = "4.2.0") -> str:
    """Postfix mbox_dsn(): full disk 4.3.0, over quota or too big 5.2.2, try again 4.2.0."""
    if err == errno.ENOSPC:
        return "4.3.0"
    if err in (errno.EDQUOT, errno.EFBIG):
        return "5.2.2"
    if err in (errno.EAGAIN, errno.ESTALE):
        return "4.2.0"
    return default


def quote_local(address: str) -> str:
    """Postfix quote_822_local(): quote the local part when it is not a dot-atom."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or _DOT_ATOM.match(local) and not local.startswith(".") \
            and not local.endswith(".") and ".." not in local:
        quoted = local
    else:
        quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{quoted}@{domain}" if at else quoted


def delivery_headers(*, sender: str, delivered_to: str, original: str | None) -> bytes:
    """The lines Postfix's mail_copy() prepends for maildir delivery, in its order.

    ``original`` is the recipient as it arrived (X-Original-To); empty or None omits it.
    """
    lines = [f"Return-Path: <{quote_local(sender) if sender else ''}>"]
    if original:
        lines.append(f"X-Original-To: {quote_local(original)}")
    lines.append(f"Delivered-To: {quote_local(delivered_to)}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def to_lf(content: bytes) -> bytes:
    """Queue content has CRLF line ends; a maildir file has LF ones, like Postfix writes."""
    return content.replace(b"\r\n", b"\n")


def header_section(content: bytes) -> bytes:
    """The message header (up to the first empty line), LF line ends."""
    text = to_lf(content)
    end = text.find(b"\n\n")
    return text if end < 0 else text[: end + 1]


def delivered_to_loop(content: bytes, address: str) -> bool:
    """True when the header already has ``Delivered-To: <address>`` (local/delivered.c):
    the message went round in a forwarding loop.  Folded headers are unfolded first."""
    want = address.strip().lower()
    unfolded = re.sub(rb"\n[ \t]+", b" ", header_section(content))
    for line in unfolded.split(b"\n"):
        name, colon, value = line.partition(b":")
        if (colon and name.strip().lower() == b"delivered-to"
                and value.strip().decode("utf-8", "replace").lower() == want):
            return True
    return False


def unique_name(hostname: str | None = None, *, now: float | None = None) -> str:
    """``<sec>.M<usec>P<pid>Q<n>.<host>``; ``/`` and ``:`` in the host name are escaped as
    the Maildir spec says (``\\057``, ``\\072``)."""
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    host = (hostname or socket.gethostname()).replace("/", "\\057").replace(":", "\\072")
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{host}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p with mode 0700, fsyncing each parent that got a new entry."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


def _error(what: Path, exc: OSError) -> MaildirError:
    return MaildirError(mbox_dsn(exc.errno or 0), f"create maildir file {what}: {exc.strerror}")


def write_maildir(maildir: Path | str, message: bytes, *, hostname: str | None = None) -> Path:
    """Write ``message`` (already with its delivery headers, LF line ends) into ``maildir``.

    Creates tmp/<name> exclusively, writes and fsyncs it, hard-links it into new/ (rename
    where the file system has no hard links), removes the tmp/ name and fsyncs new/.
    Missing Maildir directories are created.  Returns the path in new/; raises MaildirError.
    """
    root = Path(maildir)
    tmpdir, newdir, curdir = root / "tmp", root / "new", root / "cur"
    name = unique_name(hostname)
    tmpfile, newfile = tmpdir / name, newdir / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmpfile, flags, FILE_MODE)
    except FileNotFoundError:
        try:
            _make_dirs(tmpdir)
            fd = os.open(tmpfile, flags, FILE_MODE)
        except OSError as exc:
            raise _error(tmpfile, exc) from None
    except OSError as exc:
        raise _error(tmpfile, exc) from None
    try:
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _unlink_quietly(tmpfile)
        raise MaildirError(mbox_dsn(exc.errno or 0),
                           f"error writing message file: {exc.strerror}") from None
    try:
        _publish(tmpfile, newfile, curdir)
    except OSError as exc:
        _unlink_quietly(tmpfile)
        raise _error(newfile, exc) from None
    try:
        _fsync_dir(newdir)
    except OSError as exc:
        # The link exists but may not survive a crash: say so and let the queue retry.
        raise MaildirError("4.3.0", f"fsync {newdir}: {exc.strerror}") from None
    return newfile


def _publish(tmpfile: Path, newfile: Path, curdir: Path) -> None:
    try:
        _link_or_rename(tmpfile, newfile)
    except FileNotFoundError:
        _make_dirs(curdir)
        _make_dirs(newfile.parent)
        _link_or_rename(tmpfile, newfile)


def _link_or_rename(tmpfile: Path, newfile: Path) -> None:
    try:
        os.link(tmpfile, newfile)
    except OSError as exc:
        # File systems without hard links (some FUSE/SMB mounts): the spec allows rename.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.rename(tmpfile, newfile)
        return
    _unlink_quietly(tmpfile)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a stale tmp/ file is harmless; Maildir readers clean tmp/ after 36 hours


async def deliver_maildir(
    maildir: Path | str, message: bytes, *, owner: Owner | None = None,
    hostname: str | None = None,
) -> Path:
    """Write ``message`` into ``maildir`` with ``owner``'s rights; returns the new/ path.

    As root, with an owner other than root, a child process switches to the owner's uid/gid
    (and no supplementary groups) before it touches the mailbox.  Otherwise the file is
    written in a worker thread of this process.  Raises MaildirError.
    """
    if owner is not None and os.geteuid() == 0 and owner.uid != 0:
        return await _deliver_as(owner, Path(maildir), message, hostname)
    return await asyncio.to_thread(write_maildir, maildir, message, hostname=hostname)


async def _deliver_as(owner: Owner, maildir: Path, message: bytes, hostname: str | None) -> Path:
    source = Path(__file__).read_text("utf-8")
    program = source + "\n_child_main()\n"
    args = [os.path.realpath(sys.executable), "-I", "-c", program, str(maildir),
            hostname or socket.gethostname()]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/", env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            user=owner.uid, group=owner.gid, extra_groups=[], umask=0o077,
        )
    except OSError as exc:
        raise MaildirError("4.3.0", f"cannot run delivery process as UID/GID="
                           f"{owner.uid}/{owner.gid}: {exc.strerror}") from None
    out, err = await proc.communicate(message)
    try:
        answer = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = err.decode("utf-8", "replace").strip().splitlines()
        raise MaildirError("4.3.0", "delivery process for UID/GID="
                           f"{owner.uid}/{owner.gid} failed: "
                           f"{detail[-1] if detail else f'exit status {proc.returncode}'}") from None
    if "path" in answer:
        return Path(answer["path"])
    raise MaildirError(str(answer["dsn"]), str(answer["text"]))


def _child_main() -> None:
    """The child's entry point: argv = [maildir, hostname], message on stdin, JSON out."""
    maildir, hostname = sys.argv[1], sys.argv[2]
    message = sys.stdin.buffer.read()
    try:
        path = write_maildir(maildir, message, hostname=hostname)
        answer: dict[str, str] = {"path": str(path)}
    except MaildirError as exc:
        answer = {"dsn": exc.dsn, "text": exc.text}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
