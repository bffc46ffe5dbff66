"""``postillion -c DIR queue|flush|delete|hold|release|requeue|show``: Postfix's queue tools.

Owns: the admin commands over the queue store, in the exact output formats of
``mailq``/``postqueue -p`` (``queue``), ``postqueue -j`` (``queue -j``), ``postqueue -f``
(``flush``), ``postsuper -d/-h/-H/-r`` (``delete``/``hold``/``release``/``requeue``) and
``postcat -q`` (``show``); and ``wake_qmgr(config_dir)``, the datagram to
``$data_directory/run/qmgr`` that makes the queue manager look now.
Must not import: server (this runs without a running postillion).
Follows: Postfix ``postqueue/showq_compat.c`` and ``showq_json.c`` (formats), ``showq/showq.c``
(queue order, MAILER-DAEMON, the reason lines), ``postsuper/postsuper.c`` (messages, default
queues, root only), ``postcat/postcat.c`` and ``global/rec_type.c`` (section markers, record
names); postqueue(1), postsuper(1), postcat(1).

Like Postfix, listing and ``show`` work for anyone who can read the queue; the postsuper
commands refuse to run unless the real uid is 0.  Differences: ``requeue`` moves a message to
``incoming/`` under the same queue id and keeps its delivery statuses (Postfix re-injects it
through pickup/cleanup under a new id; either way no recipient that is done gets the message
again); ``show`` exits with status 1 for a damaged file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from postillion.config import load_config
from postillion.config.params import Params
from postillion.errors import ConfigError, QueueWriteError
from postillion.queue import maildrop, record, wakeup
from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.ids import is_valid_queue_id
from postillion.queue.record import QueueRecordError
from postillion.queue.store import (
    ACTIVE,
    CORRUPT,
    DEFERRED,
    HOLD,
    INCOMING,
    QUEUE_NAMES,
    QueueEntry,
    QueueStore,
)
from postillion.server.proclog import LogSinks
from postillion.server.supervisor import log_sinks

USAGE = """\
usage: postillion -c DIR queue [-j]              list the queue (mailq, postqueue -p / -j)
       postillion -c DIR flush                   retry deferred mail now (postqueue -f)
       postillion -c DIR show ID                 show a queued message (postcat -q)
       postillion -c DIR delete ID|ALL|- [QUEUE...]   (postsuper -d)
       postillion -c DIR hold ID|ALL|- [QUEUE...]     (postsuper -h)
       postillion -c DIR release ID|ALL|- [QUEUE...]  (postsuper -H)
       postillion -c DIR requeue ID|ALL|- [QUEUE...]  (postsuper -r)
"""

SHOWQ_ORDER = (ACTIVE, INCOMING, DEFERRED, HOLD)  # showq.c queue_info[], after the maildrop
QMGR_FLUSH_TRIGGER = b"F"  # qmgr: "F..." = treat every deferred message as due (Postfix 'F')

# showq_compat.c: short and long queue id layouts.
_S_STRING = "{:<11} {:>7} {:<20} {}\n"
_S_SENDER = "{:<11} {:>7} {:20.20} {}\n"
_S_HEADINGS = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
_L_STRING = "{:<17} {:>8} {:<19} {}\n"
_L_SENDER = "{:<17} {:>8} {:19.19} {}\n"
_L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
_REASON_WIDTH = 76  # showq_compat.c right-aligns "(reason)" to column 76

# dsn_mask.h bit values, as postcat shows them in notify_flags= and ret_flags=.
_NOTIFY_BITS = {"NEVER": 1, "SUCCESS": 2, "DELAY": 4, "FAILURE": 8}
_RET_BITS = {"FULL": 1, "HDRS": 2}

# postsuper.c: which queues each operation looks in when none are named.
_POSTSUPER_DEFAULT_QUEUES = {
    "delete": (HOLD, INCOMING, ACTIVE, DEFERRED),
    "hold": (INCOMING, ACTIVE, DEFERRED),
    "release": (HOLD,),
    "requeue": (HOLD, INCOMING, ACTIVE, DEFERRED),
}
_POSTSUPER_SUMMARY = {
    "delete": "Deleted",
    "hold": "Placed on hold",
    "release": "Released from hold",
    "requeue": "Requeued",
}
_POSTSUPER_DONE = {
    "delete": "removed",
    "hold": "placed on hold",
    "release": "released from hold",
    "requeue": "requeued",
}


class _Fatal(Exception):
    """A ``<program>: fatal: ...`` message; main() prints it and returns 1."""

    def __init__(self, program: str, text: str) -> None:
        super().__init__(f"{program}: fatal: {text}")


class _Usage(Exception):
    pass


def main(
    config_dir: Path,
    argv: list[str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one queue subcommand (``argv[0]``); returns the exit status (0 ok, 1 error, 2 usage)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command == "queue":
            if args not in ([], ["-p"], ["-j"]):
                raise _Usage(f"queue: unexpected argument {args[0]!r}")
            return _queue(config_dir, json_lines=args == ["-j"], stdout=stdout, stderr=stderr)
        if command == "flush":
            if args:
                raise _Usage(f"flush: unexpected argument {args[0]!r}")
            return flush(config_dir)
        if command == "show":
            if len(args) != 1:
                raise _Usage("show: expected one queue id")
            return _show(config_dir, args[0], stdout=stdout, stderr=stderr)
        if command in _POSTSUPER_DEFAULT_QUEUES:
            if not args:
                raise _Usage(f"{command}: expected a queue id, ALL or -")
            return _postsuper(config_dir, command, args[0], args[1:], stdin=stdin, stderr=stderr)
        raise _Usage(f"unknown queue command {command!r}" if command else "")
    except _Usage as exc:
        if str(exc):
            print(f"postillion: {exc}", file=stderr)
        stderr.write(USAGE)
        return 2
    except _Fatal as exc:
        print(str(exc), file=stderr)
        return 1
    except ConfigError as exc:
        print(f"postillion: {exc}", file=stderr)
        return 1


# --- configuration ---------------------------------------------------------------------------


def _params(config_dir: Path) -> Params:
    return load_config(Path(config_dir)).params()


def open_store(params: Params) -> QueueStore:
    """The queue store main.cf names (``queue_directory``, as the server resolves it)."""
    return QueueStore(
        params.path("queue_directory") or params.config_dir / "spool",
        long_queue_ids=params.get_bool("enable_long_queue_ids"),
    )


def wake_qmgr(config_dir: Path, message: bytes = QMGR_FLUSH_TRIGGER) -> bool:
    """Send one datagram to the queue manager's socket (queue/wakeup.py); False (and nothing
    else) when the socket is absent or nobody listens, since then there is nobody to wake."""
    return wakeup.wake_qmgr(wakeup.socket_path(open_store(_params(config_dir)).queue_directory),
                            message)


# --- queue / queue -j (postqueue -p / -j) -----------------------------------------------------


def _queue(config_dir: Path, *, json_lines: bool, stdout: TextIO, stderr: TextIO) -> int:
    params = _params(config_dir)
    store = open_store(params)
    empty = params.get("empty_address_recipient") or "MAILER-DAEMON"
    entries = _scan(store, stderr)
    if json_lines:
        for entry, mtime in entries:
            stdout.write(format_json(entry, mtime, empty_address=empty))
            stdout.flush()
    else:
        stdout.write(format_mailq(entries, long_ids=store.long_queue_ids, empty_address=empty))
    return 0


def _scan(store: QueueStore, stderr: TextIO) -> list[tuple[QueueEntry, float]]:
    """(entry, file mtime) for every readable message, in showq's queue order: mail that
    pickup has not taken yet first (as a live Postfix lists its maildrop), then the queues."""
    out = _scan_maildrop(store.queue_directory)
    for queue in SHOWQ_ORDER:
        try:
            ids = store.list(queue)
        except OSError as exc:
            raise _Fatal("postqueue", f"open {queue}: {exc.strerror or exc}") from exc
        for queue_id in ids:
            try:
                entry = store.load(queue, queue_id)
                mtime = store.next_attempt(queue, queue_id)
            except FileNotFoundError:
                continue  # delivered or moved while we looked, as showq tolerates
            except QueueRecordError as exc:
                print(f"postqueue: warning: {exc}", file=stderr)
                continue
            except OSError as exc:
                raise _Fatal("postqueue", f"open {queue} {queue_id}: {exc.strerror or exc}") from exc
            out.append((entry, mtime))
    return out


def _scan_maildrop(queue_directory: Path) -> list[tuple[QueueEntry, float]]:
    """sendmail's drop files as showq shows them: the file name as queue id, the file size as
    message size, the sender as given (-f) or the owner's login name, unqualified.  Files we may
    not read, damaged ones and files pickup takes meanwhile are left out quietly."""
    directory = maildrop.maildrop_directory(queue_directory)
    try:
        names = sorted(n for n in os.listdir(directory) if maildrop.NAME_RE.fullmatch(n))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        try:
            drop = maildrop.decode_drop(data)
        except maildrop.MaildropError:
            continue
        sender = drop.sender if drop.sender is not None else (maildrop.login_name(st.st_uid) or "")
        envelope = Envelope(sender=sender, recipients=[Recipient(address=a) for a in drop.recipients],
                            arrival_time=st.st_mtime)
        # content = the file, so that size is the file's, as showq reports for the maildrop
        out.append((QueueEntry(queue_id=name, queue=maildrop.MAILDROP, envelope=envelope,
                               content=data, statuses=[]), st.st_mtime))
    return out


def format_mailq(
    entries: list[tuple[QueueEntry, float]], *, long_ids: bool = False,
    empty_address: str = "MAILER-DAEMON",
) -> str:
    """``postqueue -p`` output for (entry, file mtime) pairs, in the order given."""
    string_fmt, sender_fmt, headings = (
        (_L_STRING, _L_SENDER, _L_HEADINGS) if long_ids else (_S_STRING, _S_SENDER, _S_HEADINGS)
    )
    out: list[str] = []
    total = 0
    for n, (entry, mtime) in enumerate(entries):
        out.append("\n" if n else string_fmt.format(*headings))
        flag = {ACTIVE: "*", HOLD: "!"}.get(entry.queue, "")
        arrival = entry.envelope.arrival_time or mtime
        out.append(sender_fmt.format(entry.queue_id + flag, entry.size, _asctime(arrival),
                                     _show_address(entry.envelope.sender, empty_address)))
        saved_reason = ""
        for address, why in _pending(entry):
            # Print a reason only when it differs from the previous recipient's;
            # "reason unavailable" when the previous one had a reason and this one none.
            if why != saved_reason:
                saved_reason = why
                shown = why or "reason unavailable"
                out.append(" " * max(0, _REASON_WIDTH - len(shown)) + f"({shown})\n")
            out.append(string_fmt.format("", "", "", _show_address(address, empty_address)))
        total += entry.size
    if not entries:
        out.append("Mail queue is empty\n")
    else:
        s = "" if len(entries) == 1 else "s"
        out.append(f"\n-- {total // 1024} Kbytes in {len(entries)} Request{s}.\n")
    return "".join(out)


def format_json(entry: QueueEntry, mtime: float, *, empty_address: str = "MAILER-DAEMON") -> str:
    """One ``postqueue -j`` line (showq_json.c's member order and spacing)."""
    arrival = int(entry.envelope.arrival_time or mtime)
    parts = [
        f'"queue_name": "{_json_quote(entry.queue)}", ',
        f'"queue_id": "{_json_quote(entry.queue_id)}", ',
        f'"arrival_time": {arrival}, ',
        f'"message_size": {entry.size}, ',
        '"forced_expire": false, ',
        f'"sender": "{_json_quote(_show_address(entry.envelope.sender, empty_address))}", ',
    ]
    rcpts = []
    for address, why in _pending(entry):
        item = f'{{"address": "{_json_quote(_show_address(address, empty_address))}"'
        if why:
            item += f', "delay_reason": "{_json_quote(why)}"'
        rcpts.append(item + "}")
    return "{" + "".join(parts) + '"recipients": [' + ", ".join(rcpts) + "]}\n"


def _pending(entry: QueueEntry) -> Iterator[tuple[str, str]]:
    """(address, last deferral reason or "") of every recipient not done yet."""
    for i in entry.pending():
        last = entry.last_deferral(i)
        yield entry.envelope.recipients[i].address, last.text if last else ""


def _asctime(t: float) -> str:
    """C ``asctime(localtime(t))`` without the newline: ``Wed Nov 25 08:13:40 2020``."""
    return time.asctime(time.localtime(t))


def _printable(text: str) -> str:
    """``util/printable.c`` with UTF-8 enabled: control characters and undecodable bytes → ?"""
    return "".join(
        "?" if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000 else ch
        for ch in text
    )


_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def quote_822_local(address: str) -> str:
    """``global/quote_822_local.c``: quote the local part when it is not a dot-atom
    (8-bit characters do not need quoting)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    atoms = local.split(".")
    if local and all(a and all(ch in _ATEXT or ord(ch) >= 0x80 for ch in a) for a in atoms):
        return address
    if not local and at:
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted + (f"@{domain}" if at else "")


def unquote_822_local(address: str) -> str:
    """The internal form of an address whose local part is an RFC 5321 quoted-string, as
    Postfix stores it (``"john doe"@example.test`` -> ``john doe@example.test``); the queue
    keeps the address as the client wrote it."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if len(local) < 2 or not (local.startswith('"') and local.endswith('"')):
        return address
    inner, out, i = local[1:-1], [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out) + (f"@{domain}" if at else "")


def _show_address(address: str, empty_address: str) -> str:
    # showq.c quotes the internal form again (quote_822_local) before showing it.
    return _printable(quote_822_local(unquote_822_local(address) or empty_address))


def _json_quote(text: str) -> str:
    """showq_json.c ``json_quote()``: short escapes, \\u00XX for other controls, then printable."""
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            out.append({8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}.get(o, f"\\u{o:04X}"))
        elif ch in '\\"':
            out.append("\\" + ch)
        else:
            out.append(ch)
    return _printable("".join(out))


# --- flush (postqueue -f) -----------------------------------------------------------------


def flush(config_dir: Path, *, now: Callable[[], float] = time.time) -> int:
    """Make every deferred message due now and wake the queue manager.

    Like ``postqueue -f`` this succeeds silently; a user who may not touch the queue files
    still wakes the queue manager, whose flush trigger makes them due anyway.
    """
    store = open_store(_params(config_dir))
    when = now()
    try:
        ids = store.list(DEFERRED)
    except PermissionError:
        ids = []
    for queue_id in ids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            try:
                store.set_next_attempt(DEFERRED, queue_id, when)
            except QueueWriteError as exc:
                if not isinstance(exc.__cause__, PermissionError):
                    raise _Fatal("postqueue", str(exc)) from exc
    wake_qmgr(config_dir)
    return 0


# --- delete / hold / release / requeue (postsuper) -----------------------------------------


def _postsuper(
    config_dir: Path, command: str, target: str, queues: list[str], *, stdin: TextIO, stderr: TextIO
) -> int:
    if os.getuid() != 0:
        raise _Fatal("postsuper", "use of this command is reserved for the superuser")
    for q in queues:
        if q not in QUEUE_NAMES:
            raise _Fatal("postsuper", f"invalid directory name: {q}")
    params = _params(config_dir)
    store = open_store(params)
    # Like Postfix's postsuper: every line to the mail log too, so the log tells who removed
    # or held what (postsuper also prints them, on stderr).
    try:
        sinks: LogSinks | None = log_sinks(params)
    except OSError:
        sinks = None
    tag = f"{params.get('syslog_name') or 'postfix'}/postsuper"

    def say(text: str) -> None:
        print(f"postsuper: {text}", file=stderr)
        if sinks is not None:
            sinks.emit(tag, text)

    search = tuple(queues) or _POSTSUPER_DEFAULT_QUEUES[command]
    count = 0
    try:
        if target == "ALL":
            # List every queue first: a message moved into a later queue is not seen twice.
            listed = [(queue, store.list(queue)) for queue in search]
            for queue, ids in listed:
                for queue_id in ids:
                    count += _operate(store, command, queue, queue_id) is not None
        else:
            ids = [line.strip() for line in stdin] if target == "-" else [target]
            for queue_id in filter(None, ids):
                if not _postfix_queue_id_ok(queue_id):
                    say(f"warning: invalid mail queue id: {queue_id}")
                    continue
                if not is_valid_queue_id(queue_id):
                    continue  # a name Postfix accepts but no queue file of ours can have
                for queue in search:
                    if _operate(store, command, queue, queue_id) is not None:
                        say(f"{queue_id}: {_POSTSUPER_DONE[command]}")
                        count += 1
                        break
    except (QueueWriteError, OSError) as exc:
        raise _Fatal("postsuper", str(exc)) from exc  # msg_fatal: no summary line
    say(f"{_POSTSUPER_SUMMARY[command]}: {count} message{'' if count == 1 else 's'}")
    if sinks is not None:
        sinks.close()
    return 0


def _postfix_queue_id_ok(queue_id: str) -> bool:
    """``global/mail_queue.c`` mail_queue_id_ok(): 1-255 characters, letters, digits or "_".
    postsuper warns only about these; other unknown ids just count as not found."""
    return 0 < len(queue_id) <= 255 and all(c.isascii() and (c.isalnum() or c == "_")
                                            for c in queue_id)


def _operate(store: QueueStore, command: str, queue: str, queue_id: str) -> str | None:
    """Apply *command* to *queue*/*queue_id*; the queue it is in afterwards, or None when
    it was not there (or the operation does not apply to that queue)."""
    try:
        if command == "delete":
            store.remove(queue, queue_id)
            return ""
        if command == "hold":
            if queue == HOLD or queue == CORRUPT:
                return None
            store.move(queue_id, queue, HOLD)
            return HOLD
        if command == "release":
            if queue != HOLD:
                return None
            store.move(queue_id, HOLD, DEFERRED)
            return DEFERRED
        if command == "requeue":
            if queue == CORRUPT:
                return None
            if queue != INCOMING:
                store.move(queue_id, queue, INCOMING)
            # postsuper.c resets the time stamps of a requeued file
            store.set_next_attempt(INCOMING, queue_id, time.time())
            return INCOMING
    except FileNotFoundError:
        return None  # not in this queue, or lost a race with the queue manager
    raise AssertionError(command)


# --- show (postcat -q) ----------------------------------------------------------------------


def _show(config_dir: Path, queue_id: str, *, stdout: TextIO, stderr: TextIO) -> int:
    store = open_store(_params(config_dir))
    queue = store.locate(queue_id) if is_valid_queue_id(queue_id) else None
    if queue is None:
        raise _Fatal("postcat", f"open queue file {queue_id}: No such file or directory")
    try:
        entry = store.load(queue, queue_id)
    except FileNotFoundError as exc:
        raise _Fatal("postcat", f"open queue file {queue_id}: No such file or directory") from exc
    except QueueRecordError as exc:
        print(f"postcat: warning: {queue}/{queue_id}: input is not a valid queue file", file=stderr)
        print(f"postcat: warning: {exc}", file=stderr)
        return 1
    except OSError as exc:
        raise _Fatal("postcat", f"open queue file {queue_id}: {exc.strerror or exc}") from exc
    data = format_postcat(entry)
    binary: BinaryIO | None = getattr(stdout, "buffer", None)
    if binary is not None:
        stdout.flush()
        binary.write(data)
        binary.flush()
    else:
        stdout.write(data.decode("utf-8", "replace"))
    return 0


def format_postcat(entry: QueueEntry) -> bytes:
    """``postcat -q ID`` output (envelope, header and body: the default ``-beh``)."""
    env = entry.envelope
    label = f"{entry.queue}/{entry.queue_id}"
    lines = [f"*** ENVELOPE RECORDS {label} ***"]
    offset = len(record.encode(env, b""))
    smtputf8 = 1 if env.smtputf8 else 0
    lines.append("message_size: " + " ".join(
        f"{v:>15}" for v in (entry.size, offset, len(env.recipients), 0, entry.size, smtputf8)
    ))
    lines.append(f"message_arrival_time: {_asctime(env.arrival_time)}")
    lines.append(f"create_time: {_asctime(env.arrival_time)}")
    lines.append(f"sender: {_printable(env.sender)}")
    lines.extend(f"named_attribute: {name}={_printable(value)}" for name, value in _attributes(env))
    for i, r in enumerate(env.recipients):
        if r.orcpt is not None:
            lines.append(f"named_attribute: dsn_orig_rcpt={_printable(r.orcpt)}")
        if r.notify is not None:
            lines.append(f"named_attribute: notify_flags={sum(_NOTIFY_BITS[n] for n in r.notify)}")
        lines.append(f"original_recipient: {_printable(r.address)}")
        kind = "done_recipient" if entry.is_done(i) else "recipient"
        lines.append(f"{kind}: {_printable(r.address)}")
    lines.append(f"*** MESSAGE CONTENTS {label} ***")
    head = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    body = entry.content.replace(b"\r\n", b"\n")
    if body and not body.endswith(b"\n"):
        body += b"\n"
    tail = [f"*** HEADER EXTRACTED {label} ***"]
    if env.body_type != "7BIT":
        tail.append(f"named_attribute: encoding={'8bit' if env.body_type == '8BITMIME' else 'binary'}")
    tail.append(f"*** MESSAGE FILE END {label} ***")
    return head + body + ("\n".join(tail) + "\n").encode("ascii")


def _attributes(env: Envelope) -> list[tuple[str, str]]:
    """The smtpd attributes Postfix keeps as named_attribute records, in cleanup's order."""
    out: list[tuple[str, str]] = []
    name = env.client_name or "unknown"
    if env.client_addr is not None:
        out.append(("log_client_name", name))
        out.append(("log_client_address", env.client_addr))
        if env.client_port is not None:
            out.append(("log_client_port", str(env.client_port)))
        out.append(("log_message_origin", f"{name}[{env.client_addr}]"))
        if env.helo_name is not None:
            out.append(("log_helo_name", env.helo_name))
        out.append(("log_protocol_name", env.protocol))
        out.append(("client_name", name))
        out.append(("reverse_client_name", name))
        out.append(("client_address", env.client_addr))
        if env.client_port is not None:
            out.append(("client_port", str(env.client_port)))
        if env.helo_name is not None:
            out.append(("helo_name", env.helo_name))
        out.append(("protocol_name", env.protocol))
    for attr in ("sasl_method", "sasl_username", "sasl_sender"):
        value = getattr(env, attr)
        if value is not None:
            out.append((attr, value))
    if env.envid is not None:
        out.append(("envelope_id", env.envid))
    if env.ret is not None:
        out.append(("ret_flags", str(_RET_BITS[env.ret])))
    return out
