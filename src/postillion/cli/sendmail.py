"""`postillion sendmail`: Postfix's sendmail(1) command, posting through the maildrop.

Owns: the Sendmail-compatible command line (Postfix's getopt list, its ignored and refused
options and their exact fatal texts and exit statuses), reading the message from stdin (the
archaic single-dot end unless ``-i``/``-oi``, leading ``From_`` lines skipped, line endings
fixed as ``sendmail_fix_line_endings`` says), ``-t`` recipient extraction from To:/Cc:/Bcc:
(or only the Resent- ones when there are any), and writing the drop file that pickup turns
into a queued message (queue/maildrop.py).  It works for any local user: the drop file's
owner is the identity pickup trusts.  ``-bp`` and ``-q`` run the queue listing and flush.
Must not import: server (the maildrop is the interface to the running system).
Follows: Postfix sendmail(1) and ``sendmail/sendmail.c`` (option table, ``enqueue()``, the
``msg_fatal_status`` texts and sysexits codes; any other fatal error exits EX_TEMPFAIL as
``msg_cleanup(tempfail)`` does), ``util/fullname.c`` (``$NAME`` or the GECOS field), RFC 5322
section 3.6.3 (destination fields).  ``-bs`` (SMTP on stdin) is ``cli.sendmail_bs``.  Not done:
``-bv``, VERP (``-XV``), ``-bd``/``-bi``; they fail with ``unsupported: -bX``.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import BinaryIO, TextIO

from postillion.cleanup.headers import field_name, field_value, split_headers
from postillion.config import Params, load_config
from postillion.errors import ConfigError
from postillion.queue import maildrop
from postillion.queue.envelope import NOTIFY_VALUES
from postillion.queue.wakeup import socket_path, wake_qmgr

PROGRAM = "sendmail"
# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_TEMPFAIL = 75
EX_NOPERM = 77

GETOPT_LIST = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"  # sendmail.c GETOPT_LIST
_TAKES_ARG = frozenset(c for c, nxt in zip(GETOPT_LIST, GETOPT_LIST[1:] + " ") if c != ":" and nxt == ":")
_KNOWN = frozenset(GETOPT_LIST) - {":"}
_UNSUPPORTED_B = "div"  # daemon, newaliases, address verification
FIX_EOL_VALUES = ("always", "strict", "never")  # sendmail_fix_line_endings


class SendmailError(Exception):
    """``sendmail: fatal: TEXT`` and exit with *status*."""

    def __init__(self, status: int, text: str, *, prelude: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.prelude = prelude  # glibc getopt's own complaint, printed first


class MessageTooBig(Exception):
    pass


@dataclass
class Options:
    mode: str = "enqueue"  # enqueue | mailq | flush | ignore | smtp (-bs)
    extract: bool = False  # -t
    dot_ends: bool = True  # SM_FLAG_AEOF; -i and -oi clear it
    sender: str | None = None  # -f / -r, as given
    full_name: str | None = None  # -F
    body_type: str | None = None  # -B
    envid: str | None = None  # -V
    notify: tuple[str, ...] | None = None  # -N
    config_dir: Path | None = None  # -C
    exit_now: bool = False  # -q with a time: only meaningful for a daemon
    recipients: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _notify_mask(value: str) -> tuple[str, ...] | None:
    """dsn_notify_mask(): ``never`` alone, or any of success/failure/delay; None when bad."""
    words = [w.strip().upper() for w in value.split(",")]
    if not words or any(w not in NOTIFY_VALUES for w in words):
        return None
    if "NEVER" in words and len(words) > 1:
        return None
    return tuple(dict.fromkeys(words))


def _apply(opts: Options, c: str, arg: str | None) -> None:
    if c == "n":
        raise SendmailError(EX_USAGE, f"-{c} option not supported")
    if c == "B":
        if arg not in ("8BITMIME", "7BIT"):
            raise SendmailError(EX_USAGE, "-B option needs 8BITMIME or 7BIT")
        opts.body_type = arg
    elif c == "C":
        path = Path(arg or "")
        opts.config_dir = path.parent if path.name == "main.cf" else path
    elif c == "F":
        opts.full_name = arg
    elif c == "N":
        mask = _notify_mask(arg or "")
        if mask is None:
            opts.warnings.append("bad -N option value -- ignored")
        else:
            opts.notify = mask
    elif c == "V":
        assert arg is not None
        if len(arg) > maildrop.ENVID_LIMIT:
            opts.warnings.append("too long -V option value -- ignored")
        elif not arg or not all(" " < ch <= "~" for ch in arg):
            opts.warnings.append("bad syntax in -V option value -- ignored")
        else:
            opts.envid = arg
    elif c == "X":
        raise SendmailError(EX_USAGE, f"unsupported: -{c}{(arg or '')[:1]}")
    elif c == "b":
        mode = (arg or "")[:1]
        if mode == "m":
            opts.mode = "enqueue"
        elif mode == "p":
            opts.mode = "mailq"
        elif mode in ("h", "H"):
            opts.mode = "ignore"
        elif mode == "s":
            opts.mode = "smtp"
        else:
            raise SendmailError(EX_USAGE, f"unsupported: -{c}{mode}")
    elif c in ("f", "r"):
        opts.sender = arg
    elif c == "i":
        opts.dot_ends = False
    elif c == "o":
        sub = (arg or "")[:1]
        if sub == "i":
            opts.dot_ends = False
        elif sub == "A" and len(arg or "") == 1:
            raise SendmailError(EX_USAGE, "-oA requires pathname")
    elif c == "q":
        arg = arg or ""
        if arg[:1].isdigit():
            opts.exit_now = True
        elif arg[:1] in ("R", "I"):
            if len(arg) == 1:
                raise SendmailError(EX_USAGE, "specify: -qRsitename" if arg == "R" else "specify: -qIqueueid")
            opts.mode = "flush"  # postillion flushes the whole queue: no per-site queues
        else:
            raise SendmailError(EX_USAGE, f"-q{arg[:1]} is not implemented")
    elif c == "t":
        opts.extract = True
    # every other option in GETOPT_LIST is accepted and ignored, as Postfix does


def parse_args(argv: list[str]) -> Options:
    """Postfix's option loop: getopt with ``+`` (options end at the first non-option or
    ``--``), ``-q`` alone means flush; SendmailError for what Postfix refuses."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg == "-q":
            opts.mode = "flush"
            i += 1
            continue
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            if c not in _KNOWN:
                raise SendmailError(EX_USAGE, f"usage: {PROGRAM} [options]",
                                    prelude=f"invalid option -- '{c}'")
            value = None
            if c in _TAKES_ARG:
                if j < len(arg):
                    value, j = arg[j:], len(arg)
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    raise SendmailError(EX_USAGE, f"usage: {PROGRAM} [options]",
                                        prelude=f"option requires an argument -- '{c}'")
            _apply(opts, c, value)
        i += 1
    opts.recipients = argv[i:]
    if opts.extract and opts.mode != "enqueue":
        raise SendmailError(EX_USAGE, "-t can be used only in delivery mode")
    if opts.recipients and opts.mode == "mailq":
        raise SendmailError(EX_USAGE, "display queue mode requires no recipient")
    if opts.recipients and opts.mode == "flush":
        raise SendmailError(EX_USAGE, "flush queue mode requires no recipient")
    return opts


# --- the message ---------------------------------------------------------------------------


def read_message(
    lines: Iterable[bytes], *, dot_ends: bool = True, fix_eol: str = "always", size_limit: int = 0
) -> bytes:
    """The message from *lines* (stdin: bytes, each with its LF except perhaps the last) with
    CRLF line ends.  Leading ``From `` lines (also ``>From ``) are dropped; a line with only
    a dot ends the input when *dot_ends*; CRs before the LF go as *fix_eol* says.
    MessageTooBig when the content exceeds *size_limit* (0: no limit)."""
    out: list[bytes] = []
    total = 0
    strip_cr: bool | None = {"always": True, "never": False}.get(fix_eol)  # None: decide once
    skip_from = True
    for raw in lines:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if strip_cr is None:
            strip_cr = line.endswith(b"\r")
        if skip_from:
            if line.lstrip(b">").startswith(b"From "):
                continue
            skip_from = False
        if strip_cr:
            line = line.rstrip(b"\r")
        if dot_ends and line == b".":
            break
        out.append(line + b"\r\n")
        total += len(line) + 2
        if size_limit > 0 and total > size_limit:
            raise MessageTooBig
    return b"".join(out)


_DESTINATION = ("to", "cc", "bcc")
_RESENT_DESTINATION = ("resent-to", "resent-cc", "resent-bcc")


def extract_recipients(content: bytes) -> list[str]:
    """``-t``: the addresses in To:, Cc: and Bcc:, or only those in the Resent- versions
    when the message has any of them (a resent message goes to its new recipients)."""
    fields, _, _ = split_headers(content)
    normal: list[str] = []
    resent: list[str] = []
    seen_resent = False
    for f in fields:
        name = field_name(f)
        if name in _RESENT_DESTINATION:
            seen_resent, target = True, resent
        elif name in _DESTINATION and not seen_resent:
            target = normal
        else:
            continue
        target.extend(addr for _, addr in getaddresses([field_value(f)]) if addr)
    return resent if seen_resent else normal


def parse_recipient_args(args: list[str]) -> list[str]:
    """Each argument is read like a header value (``"a@b, Name <c@d>"`` is two recipients);
    an argument with no address in it is kept as given, for the syntax check to refuse."""
    out: list[str] = []
    for arg in args:
        found = [addr for _, addr in getaddresses([arg]) if addr]
        out.extend(found if found else [arg.strip()])
    return out


def parse_sender(value: str) -> tuple[str, bool]:
    """``-f``: the first address in *value* (``<>`` and ``""`` are the null sender) and
    whether there was more than one."""
    found = [addr for _, addr in getaddresses([value])]
    if not found:
        return "", False
    return found[0], len([a for a in found if a]) > 1


def gecos_full_name(gecos: str, login: str) -> str:
    """``fullname()``: the GECOS field up to the first ``,`` ``;`` or ``%``, with ``&`` as
    the login name capitalised."""
    out = []
    for ch in gecos:
        if ch in ",;%":
            break
        out.append(login[:1].upper() + login[1:] if ch == "&" else ch)
    return "".join(out)


def default_full_name(env: dict[str, str], entry: pwd.struct_passwd | None) -> str | None:
    name = env.get("NAME")
    if name is not None:
        return name
    if entry is None:
        return None
    return gecos_full_name(entry.pw_gecos, entry.pw_name)


# --- the command ---------------------------------------------------------------------------


def main(
    config_dir: Path,
    argv: list[str],
    *,
    stdin: BinaryIO | None = None,
    stderr: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> int:
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stderr = stderr if stderr is not None else sys.stderr
    env = dict(os.environ) if env is None else env
    try:
        return _run(config_dir, argv, stdin=stdin, stderr=stderr, env=env)
    except SendmailError as exc:
        if exc.prelude:
            print(f"{PROGRAM}: {exc.prelude}", file=stderr)
        print(f"{PROGRAM}: fatal: {exc.text}", file=stderr)
        return exc.status


def _warn(stderr: TextIO, text: str) -> None:
    print(f"{PROGRAM}: warning: {text}", file=stderr)


def _run(config_dir: Path, argv: list[str], *, stdin: BinaryIO, stderr: TextIO, env: dict[str, str]) -> int:
    opts = parse_args(argv)
    for text in opts.warnings:
        _warn(stderr, text)
    config_dir = opts.config_dir.absolute() if opts.config_dir else config_dir
    if opts.exit_now or opts.mode == "ignore":
        return EX_OK
    if opts.mode in ("mailq", "flush"):
        from postillion.cli import queue

        return queue.main(config_dir, ["queue" if opts.mode == "mailq" else "flush"], stderr=stderr)
    try:
        params = load_config(config_dir).params()
        queue_directory = params.path("queue_directory") or params.config_dir / "spool"
        size_limit = params.get_int("message_size_limit")
        fix_eol = params.get("sendmail_fix_line_endings") or "always"
        mail_owner = params.get("mail_owner")
    except ConfigError as exc:
        raise SendmailError(EX_TEMPFAIL, str(exc)) from exc
    if fix_eol not in FIX_EOL_VALUES:
        raise SendmailError(EX_USAGE, f"invalid sendmail_fix_line_endings value: {fix_eol}")

    if opts.mode == "smtp":
        return _smtp_on_stdio(params, queue_directory, size_limit, mail_owner)

    uid = os.getuid()
    try:
        entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    if opts.sender is not None:
        sender, malformed = parse_sender(opts.sender)
        if malformed:
            _warn(stderr, f"-f option specified malformed sender: {opts.sender}")
        saved_sender = sender
    elif entry is None:
        raise SendmailError(EX_OSERR, f"no login name found for user ID {uid}")
    else:
        sender, saved_sender = None, entry.pw_name
    who = f"{saved_sender}({uid})"
    if sender:
        problem = maildrop.address_problem(sender, allow_empty=True)
        if problem:
            raise SendmailError(EX_USAGE, f"{who}: -f option: {problem}: {sender}")

    recipients = parse_recipient_args(opts.recipients)
    for rcpt in recipients:
        problem = maildrop.address_problem(rcpt)
        if problem:
            raise SendmailError(EX_USAGE, f"{who}: {problem}: {rcpt}")
    try:
        content = read_message(stdin, dot_ends=opts.dot_ends, fix_eol=fix_eol, size_limit=size_limit)
    except MessageTooBig as exc:
        raise SendmailError(EX_TEMPFAIL, f"{who}: error writing queue file: File too large") from exc
    except OSError as exc:
        raise SendmailError(EX_DATAERR, f"{who}: error reading input: {exc.strerror}") from exc
    if opts.extract:
        extracted = extract_recipients(content)
        for rcpt in extracted:
            problem = maildrop.address_problem(rcpt)
            if problem:
                raise SendmailError(EX_DATAERR, f"{who}: unable to extract recipients: {problem}: {rcpt}")
        recipients += extracted
    if not recipients:
        if opts.extract:
            raise SendmailError(EX_USAGE, f"{who}: No recipient addresses found in message header")
        raise SendmailError(EX_USAGE, "Recipient addresses must be specified on the command line or via the -t option")

    full_name = opts.full_name if opts.full_name is not None else default_full_name(env, entry)
    drop = maildrop.DropFile(
        recipients=tuple(recipients), content=content, sender=sender,
        full_name=full_name or None, body_type=opts.body_type, envid=opts.envid, notify=opts.notify,
    )
    directory = maildrop.maildrop_directory(queue_directory)
    try:
        if os.geteuid() == 0 and not directory.is_dir():
            maildrop.ensure_maildrop(queue_directory, owner=_owner(mail_owner))
        maildrop.write_drop(directory, maildrop.encode_drop(drop))
    except OSError as exc:
        raise SendmailError(EX_TEMPFAIL, f"{who}: error writing queue file: {exc.strerror or exc}") from exc
    # Only root and mail_owner may use the wake-up socket; pickup scans every second anyway.
    wake_qmgr(socket_path(queue_directory), b"P")
    return EX_OK


def _smtp_on_stdio(params: Params, queue_directory: Path, size_limit: int, mail_owner: str) -> int:
    """``-bs``: SMTP on stdin/stdout; each message becomes a drop file as with plain sendmail."""
    from postillion import smtp
    from postillion.cli import sendmail_bs

    directory = maildrop.maildrop_directory(queue_directory)

    def submit(drop: maildrop.DropFile) -> str:
        if os.geteuid() == 0 and not directory.is_dir():
            maildrop.ensure_maildrop(queue_directory, owner=_owner(mail_owner))
        name = maildrop.write_drop(directory, maildrop.encode_drop(drop))
        wake_qmgr(socket_path(queue_directory), b"P")
        return name

    settings = smtp.Settings(
        hostname=params.get("myhostname"),
        message_size_limit=size_limit,
        smtputf8_enable=params.get_bool("smtputf8_enable"),
        forbid_unauth_pipelining=False,  # a local program on a pipe, not a spammer
        forbid_bare_newline="no",  # programs write LF-only text into the pipe
    )
    return sendmail_bs.serve(sys.stdin.fileno(), sys.stdout.fileno(), settings=settings,
                             banner=params.get("smtpd_banner"), submit=submit)


def _owner(mail_owner: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(mail_owner)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid
