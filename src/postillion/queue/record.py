"""The on-disk queue file format: a versioned envelope record, the message, a status trailer.

Owns: ``encode(envelope, content) -> bytes``, ``decode_entry(bytes) -> (Envelope, content,
statuses)`` (``decode`` is the same without the statuses), ``encode_status(status) -> bytes``
for the append-only trailer, ``RecipientStatus`` and the ``QueueRecordError`` raised for a
damaged or unknown file.  docs/queue-format.md describes the format; change both together.
Must not import: anything above ``errors`` (pure functions, no I/O).
Follows: the idea of Postfix ``global/rec_type.h`` (typed records, envelope before content,
recipients marked done in place by the queue manager), in a simpler, self-describing form.

Layout (version 2; version 1 is the same without a trailer)::

    POSTILLION-QUEUE 2\\n
    {"content_length": N, "envelope": {...}}\\n
    \\n
    <N bytes of message content, exactly as received (CRLF lines)>
    S {"rcpt": 0, "status": "deferred", ...}\\n      <- zero or more, appended later

The JSON lines are ASCII-only (``ensure_ascii``), so they never contain a raw newline and any
Unicode (SMTPUTF8 addresses, surrogate-escaped bytes) survives the round trip.  Every field
change bumps the version: a reader refuses versions it does not know and fields it does not
expect instead of silently dropping them.

Crash semantics of the trailer: a status line is written with one ``write()`` on an
``O_APPEND`` descriptor and then fsync'd.  A crash can leave only the *last* line torn (no
newline yet); it is ignored here, and the next append cuts it off first (store.py).  Every
complete line must be a valid status: anything else means the file is damaged.  A file whose
content is shorter than ``content_length`` is damaged too (truncated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from postillion.errors import PostillionError
from postillion.queue.envelope import Envelope, Recipient

MAGIC = b"POSTILLION-QUEUE"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
STATUS_PREFIX = b"S "

DEFERRED = "deferred"
# Not an outcome: the delay warning for this recipient has been sent (Postfix keeps a
# "warn time" in the queue file for the same purpose), so it is sent once.
DELAYED = "delayed"
# These are final: the recipient is done and must never be tried again.
FINAL_STATUSES = ("sent", "bounced", "expired", "delivered")
STATUSES = (DEFERRED, DELAYED, *FINAL_STATUSES)

_ENVELOPE_FIELDS = {f.name for f in fields(Envelope)}
_RECIPIENT_FIELDS = {f.name for f in fields(Recipient)}


class QueueRecordError(PostillionError, ValueError):
    """A queue file is damaged or in a format this version cannot read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientStatus:
    """One delivery outcome for ``envelope.recipients[rcpt]``, as the trailer records it.

    ``text`` is what the log shows in parentheses after ``status=`` (and mailq shows for the
    last deferral); ``relay`` is ``host[addr]:port``, ``local`` or ``none``.
    """

    rcpt: int
    status: str
    dsn: str
    relay: str
    text: str
    time: float

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad recipient status {self.status!r}")
        if isinstance(self.rcpt, bool) or not isinstance(self.rcpt, int) or self.rcpt < 0:
            raise ValueError(f"bad recipient index {self.rcpt!r}")

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


_STATUS_FIELDS = {f.name for f in fields(RecipientStatus)}


def encode(envelope: Envelope, content: bytes) -> bytes:
    """The complete queue file (current version, no statuses yet) for *envelope* and *content*."""
    env: dict[str, Any] = {}
    for f in fields(Envelope):
        value = getattr(envelope, f.name)
        if f.name == "recipients":
            value = [_recipient_to_json(r) for r in value]
        env[f.name] = value
    meta = {"content_length": len(content), "envelope": env}
    line = json.dumps(meta, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return b"%s %d\n%s\n\n%s" % (MAGIC, VERSION, line.encode("ascii"), content)


def encode_status(s: RecipientStatus) -> bytes:
    """One trailer line, newline included: ``S {json}\\n``."""
    obj = {"rcpt": s.rcpt, "status": s.status, "dsn": s.dsn, "relay": s.relay, "text": s.text,
           "time": s.time}
    line = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return STATUS_PREFIX + line.encode("ascii") + b"\n"


def decode(data: bytes) -> tuple[Envelope, bytes]:
    """Parse a queue file, ignoring its status trailer; QueueRecordError when damaged."""
    envelope, content, _ = decode_entry(data)
    return envelope, content


def decode_entry(data: bytes) -> tuple[Envelope, bytes, list[RecipientStatus]]:
    """Parse a queue file of any supported version: envelope, content and statuses in order."""
    version, header_length, length, meta = _parse_head(data)
    rest = data[header_length:]
    if len(rest) < length or (version == 1 and len(rest) != length):
        raise QueueRecordError(
            f"damaged queue file: content is {len(rest)} bytes, record says {length}"
        )
    envelope = _envelope_from_json(meta["envelope"])
    statuses = _decode_trailer(rest[length:], len(envelope.recipients))
    return envelope, rest[:length], statuses


def content_end(head: bytes) -> int | None:
    """Where the trailer starts in a file that begins with *head*, or None if *head* is too
    short to tell; QueueRecordError for a damaged header.  Lets the store find the trailer
    without reading the content."""
    try:
        _, header_length, length, _ = _parse_head(head)
    except _NeedMore:
        return None
    return header_length + length


def version_of(head: bytes) -> int:
    """The format version of a file beginning with *head* (QueueRecordError if not ours)."""
    return _parse_version(head.partition(b"\n")[0], complete=b"\n" in head)


class _NeedMore(QueueRecordError):
    pass


def _parse_version(first: bytes, *, complete: bool) -> int:
    if not complete or not first.startswith(MAGIC + b" "):
        raise QueueRecordError("not a postillion queue file (bad first line)")
    version_text = first[len(MAGIC) + 1 :]
    if not version_text.isdigit():
        raise QueueRecordError(f"bad queue file version {version_text!r}")
    version = int(version_text)
    if version not in SUPPORTED_VERSIONS:
        raise QueueRecordError(f"unsupported queue file version {version}")
    return version


def _parse_head(data: bytes) -> tuple[int, int, int, dict[str, Any]]:
    """(version, offset of the content, content_length, header JSON)."""
    first, sep, rest = data.partition(b"\n")
    version = _parse_version(first, complete=bool(sep))
    line, sep, rest = rest.partition(b"\n")
    if not sep:
        raise _NeedMore("truncated queue file (no envelope record)")
    if not rest:
        raise _NeedMore("truncated queue file (no separator after the envelope record)")
    if not rest.startswith(b"\n"):
        raise QueueRecordError("damaged queue file (no separator after the envelope record)")
    try:
        meta = json.loads(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise QueueRecordError(f"damaged envelope record: {exc}") from exc
    if not isinstance(meta, dict) or set(meta) != {"content_length", "envelope"}:
        raise QueueRecordError("damaged envelope record (unexpected structure)")
    length = meta["content_length"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise QueueRecordError(f"damaged envelope record (content_length {length!r})")
    return version, len(first) + 1 + len(line) + 2, length, meta


def _decode_trailer(trailer: bytes, nrcpt: int) -> list[RecipientStatus]:
    lines = trailer.split(b"\n")
    # The piece after the last newline is empty, or a line torn by a crash: ignore it.
    out = []
    for line in lines[:-1]:
        out.append(_status_from_line(line, nrcpt))
    return out


def _status_from_line(line: bytes, nrcpt: int) -> RecipientStatus:
    if not line.startswith(STATUS_PREFIX):
        raise QueueRecordError(f"damaged status record {line[:80]!r}")
    try:
        obj = json.loads(line[len(STATUS_PREFIX):].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise QueueRecordError(f"damaged status record: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != _STATUS_FIELDS:
        raise QueueRecordError(f"damaged status record {line[:80]!r}")
    if not all(isinstance(obj[k], str) for k in ("status", "dsn", "relay", "text")) or not (
        isinstance(obj["time"], (int, float)) and not isinstance(obj["time"], bool)
    ):
        raise QueueRecordError(f"damaged status record {line[:80]!r}")
    try:
        status = RecipientStatus(**obj)
    except ValueError as exc:
        raise QueueRecordError(f"damaged status record: {exc}") from exc
    if status.rcpt >= nrcpt:
        raise QueueRecordError(f"status record for recipient {status.rcpt} of {nrcpt}")
    return status


def _recipient_to_json(r: Recipient) -> dict[str, Any]:
    return {
        "address": r.address,
        "orcpt": r.orcpt,
        "notify": list(r.notify) if r.notify is not None else None,
    }


def _envelope_from_json(env: Any) -> Envelope:
    if not isinstance(env, dict):
        raise QueueRecordError("damaged envelope record (envelope is not an object)")
    unknown = set(env) - _ENVELOPE_FIELDS
    if unknown:
        raise QueueRecordError(f"unexpected envelope field {sorted(unknown)[0]!r}")
    if not isinstance(env.get("sender"), str) or not isinstance(env.get("recipients", []), list):
        raise QueueRecordError("damaged envelope record (sender or recipients missing)")
    values = dict(env)
    try:
        values["recipients"] = [_recipient_from_json(r) for r in env.get("recipients", [])]
        return Envelope(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, QueueRecordError):
            raise
        raise QueueRecordError(f"damaged envelope record: {exc}") from exc


def _recipient_from_json(r: Any) -> Recipient:
    if not isinstance(r, dict) or set(r) - _RECIPIENT_FIELDS or not isinstance(r.get("address"), str):
        raise QueueRecordError(f"damaged recipient record {r!r}")
    notify = r.get("notify")
    return Recipient(
        address=r["address"],
        orcpt=r.get("orcpt"),
        notify=tuple(notify) if notify is not None else None,
    )
