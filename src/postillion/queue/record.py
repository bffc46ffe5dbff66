"""The on-disk queue file format: a versioned envelope record followed by the message.

Owns: ``encode(envelope, content) -> bytes`` and ``decode(bytes) -> (Envelope, content)``, and
the ``QueueRecordError`` raised for a damaged or unknown file.  docs/queue-format.md describes
the format; change both together.
Must not import: anything above ``errors`` (pure functions, no I/O).
Follows: the idea of Postfix ``global/rec_type.h`` (typed records, envelope before content), in
a simpler, self-describing form.

Layout (version 1)::

    POSTILLION-QUEUE 1\\n
    {"content_length": N, "envelope": {...}}\\n
    \\n
    <N bytes of message content, exactly as received (CRLF lines)>

The JSON line is ASCII-only (``ensure_ascii``), so it never contains a raw newline and any
Unicode (SMTPUTF8 addresses, surrogate-escaped bytes) survives the round trip.  Every field
change bumps the version: a reader refuses versions it does not know and fields it does not
expect instead of silently dropping them.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from postillion.errors import PostillionError
from postillion.queue.envelope import Envelope, Recipient

MAGIC = b"POSTILLION-QUEUE"
VERSION = 1
SUPPORTED_VERSIONS = (1,)

_ENVELOPE_FIELDS = {f.name for f in fields(Envelope)}
_RECIPIENT_FIELDS = {f.name for f in fields(Recipient)}


class QueueRecordError(PostillionError, ValueError):
    """A queue file is damaged or in a format this version cannot read."""


def encode(envelope: Envelope, content: bytes) -> bytes:
    """The complete queue file for *envelope* and *content*."""
    env: dict[str, Any] = {}
    for f in fields(Envelope):
        value = getattr(envelope, f.name)
        if f.name == "recipients":
            value = [_recipient_to_json(r) for r in value]
        env[f.name] = value
    meta = {"content_length": len(content), "envelope": env}
    line = json.dumps(meta, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    return b"%s %d\n%s\n\n%s" % (MAGIC, VERSION, line.encode("ascii"), content)


def decode(data: bytes) -> tuple[Envelope, bytes]:
    """Parse a queue file; QueueRecordError says what is wrong with a damaged one."""
    first, sep, rest = data.partition(b"\n")
    if not sep or not first.startswith(MAGIC + b" "):
        raise QueueRecordError("not a postillion queue file (bad first line)")
    version_text = first[len(MAGIC) + 1 :]
    if not version_text.isdigit():
        raise QueueRecordError(f"bad queue file version {version_text!r}")
    version = int(version_text)
    if version not in SUPPORTED_VERSIONS:
        raise QueueRecordError(f"unsupported queue file version {version}")
    line, sep, rest = rest.partition(b"\n")
    if not sep:
        raise QueueRecordError("truncated queue file (no envelope record)")
    if not rest.startswith(b"\n"):
        raise QueueRecordError("damaged queue file (no separator after the envelope record)")
    content = rest[1:]
    try:
        meta = json.loads(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise QueueRecordError(f"damaged envelope record: {exc}") from exc
    if not isinstance(meta, dict) or set(meta) != {"content_length", "envelope"}:
        raise QueueRecordError("damaged envelope record (unexpected structure)")
    length = meta["content_length"]
    if not isinstance(length, int) or length != len(content):
        raise QueueRecordError(
            f"damaged queue file: content is {len(content)} bytes, record says {length}"
        )
    return _envelope_from_json(meta["envelope"]), content


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
