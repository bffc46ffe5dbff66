"""The durable mail queue (see store.py for the failure semantics, docs/queue-format.md for
the file format).

Re-exports the public names only; importing has no side effects.
"""

from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.ids import NOQUEUE, is_valid_queue_id, make_queue_id
from postillion.queue.record import (
    QueueRecordError,
    RecipientStatus,
    decode,
    decode_entry,
    encode,
    encode_status,
)
from postillion.queue.store import QUEUE_NAMES, PendingMessage, QueueEntry, QueueStore

__all__ = [
    "NOQUEUE",
    "QUEUE_NAMES",
    "Envelope",
    "PendingMessage",
    "QueueEntry",
    "QueueRecordError",
    "QueueStore",
    "Recipient",
    "RecipientStatus",
    "decode",
    "decode_entry",
    "encode",
    "encode_status",
    "is_valid_queue_id",
    "make_queue_id",
]
