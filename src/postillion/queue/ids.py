"""Postfix-style queue ids.

Owns: turning (time, inode number) into a queue id, in Postfix's short or long form, and
recognising a well-formed id (so a queue id can never name a path outside the queue).
Must not import: anything from postillion (pure functions).
Follows: Postfix ``global/mail_queue.h`` (MQID_SH_*, MQID_LG_*) and ``global/safe_ultostr.c``.

Short form (``enable_long_queue_ids = no``): the microseconds as exactly five upper-case hex
digits, then the inode number in upper-case hex (``C9DD9160197``).

Long form (``enable_long_queue_ids = yes``): the seconds in base 52 (at least six digits), the
microseconds in base 52 (exactly four digits), ``z``, the inode number in base 51 (so it has no
``z``), all in Postfix's vowel-free alphabet (``4jZC9w0SM3zBrKl``).

Uniqueness comes from the inode: the id is taken from a file that stays alive (first as the
temporary file, then renamed, which keeps the inode) for as long as the id is in use, and no two
live files on one file system share an inode.  The time part keeps a recycled inode from
repeating an old id in the logs.
"""

from __future__ import annotations

import re

# safe_ultostr.c: 10 digits, 21 upper-case and 21 lower-case letters, no vowels.
SAFE_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"

SH_USEC_PAD = 5  # MQID_SH_USEC_PAD: microseconds, exactly five hex digits
LG_SEC_BASE = 52  # MQID_LG_SEC_BASE
LG_SEC_PAD = 6  # MQID_LG_SEC_PAD: minimum width
LG_USEC_BASE = 52  # MQID_LG_USEC_BASE
LG_USEC_PAD = 4  # MQID_LG_USEC_PAD: exact width
LG_INUM_SEP = "z"  # MQID_LG_INUM_SEP
LG_INUM_BASE = 51  # MQID_LG_INUM_BASE: base 51 leaves out the separator 'z'

SHORT_ID_RE = re.compile(r"[0-9A-F]{6,}")
# The time part may itself contain 'z' (digit 51); the separator is the last 'z' (strrchr).
LONG_ID_RE = re.compile(
    r"[0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz]{10,}z[0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy]+"
)

NOQUEUE = "NOQUEUE"  # what Postfix logs before a queue file exists


def safe_ultostr(value: int, base: int, padlen: int = 0) -> str:
    """``safe_ultostr()``: *value* in *base* over the safe alphabet, left-padded with '0'."""
    if not 2 <= base <= len(SAFE_ALPHABET):
        raise ValueError(f"bad base: {base}")
    if value < 0:
        raise ValueError("negative value")
    digits = []
    while value:
        value, rem = divmod(value, base)
        digits.append(SAFE_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(padlen, "0")


def safe_strtoul(text: str, base: int) -> int:
    """Inverse of :func:`safe_ultostr`; ValueError on a character outside the base."""
    value = 0
    for ch in text:
        digit = SAFE_ALPHABET.find(ch)
        if digit < 0 or digit >= base:
            raise ValueError(f"bad base-{base} digit {ch!r} in {text!r}")
        value = value * base + digit
    return value


def short_queue_id(usec: int, inode: int) -> str:
    """Postfix's short id: ``%05X`` microseconds + ``%lX`` inode number."""
    return f"{usec:0{SH_USEC_PAD}X}{inode:X}"


def long_queue_id(sec: int, usec: int, inode: int) -> str:
    """Postfix's long id: base-52 seconds + base-52 microseconds + 'z' + base-51 inode."""
    return (
        safe_ultostr(sec, LG_SEC_BASE, LG_SEC_PAD)
        + safe_ultostr(usec, LG_USEC_BASE, LG_USEC_PAD)
        + LG_INUM_SEP
        + safe_ultostr(inode, LG_INUM_BASE)
    )


def make_queue_id(time_ns: int, inode: int, *, long: bool) -> str:
    """The queue id for a file with *inode* created at *time_ns* (``time.time_ns()``)."""
    sec, ns = divmod(time_ns, 1_000_000_000)
    usec = ns // 1000
    return long_queue_id(sec, usec, inode) if long else short_queue_id(usec, inode)


def is_long_queue_id(queue_id: str) -> bool:
    return LONG_ID_RE.fullmatch(queue_id) is not None


def is_valid_queue_id(queue_id: str) -> bool:
    """True for a short or long id; anything else (``..``, ``/``, ``NOQUEUE``) is refused."""
    return SHORT_ID_RE.fullmatch(queue_id) is not None or is_long_queue_id(queue_id)


def queue_id_inode(queue_id: str) -> int:
    """The inode number encoded in *queue_id* (``MQID_GET_INUM``)."""
    if is_long_queue_id(queue_id):
        return safe_strtoul(queue_id.rsplit(LG_INUM_SEP, 1)[1], LG_INUM_BASE)
    if SHORT_ID_RE.fullmatch(queue_id):
        return int(queue_id[SH_USEC_PAD:], 16)
    raise ValueError(f"not a queue id: {queue_id!r}")
