"""Queue ids: Postfix's short and long encodings (global/mail_queue.h, safe_ultostr.c)."""

from __future__ import annotations

import pytest

from postillion.queue import ids


def test_short_id_is_five_hex_usec_digits_then_hex_inode() -> None:
    # C9DD9160197 from the live log: usec 0xC9DD9, inode 0x160197
    assert ids.short_queue_id(0xC9DD9, 0x160197) == "C9DD9160197"
    assert ids.short_queue_id(5, 0xAB) == "00005AB"


def test_long_id_encoding() -> None:
    assert ids.safe_ultostr(0, 52, 4) == "0000"
    assert ids.safe_ultostr(51, 52) == "z"
    assert ids.safe_ultostr(52, 52) == "10"
    assert ids.safe_ultostr(50, 51) == "y"
    qid = ids.long_queue_id(1764058420, 123456, 1_234_567)
    sec, usec, sep, inum = qid[:6], qid[6:10], qid[10], qid[11:]
    assert (sep, len(qid)) == ("z", 6 + 4 + 1 + len(inum))
    assert ids.safe_strtoul(sec, 52) == 1764058420
    assert ids.safe_strtoul(usec, 52) == 123456
    assert ids.safe_strtoul(inum, 51) == 1_234_567
    assert ids.queue_id_inode(qid) == 1_234_567


def test_live_ids_are_recognised() -> None:
    for qid in ("C9DD9160197", "8EEC4160045", "4jZC9w0SM3zBrKl"):
        assert ids.is_valid_queue_id(qid)
    assert ids.is_long_queue_id("4jZC9w0SM3zBrKl")
    assert not ids.is_long_queue_id("C9DD9160197")
    assert ids.queue_id_inode("C9DD9160197") == 0x160197


@pytest.mark.parametrize("bad", ["", "NOQUEUE", "../etc", "abc", "C9DD9/1", ".tmp.1.abc", "AEIOU1z5"])
def test_bad_ids_are_refused(bad: str) -> None:
    assert not ids.is_valid_queue_id(bad)


def test_long_id_whose_time_part_contains_z() -> None:
    qid = ids.long_queue_id(51, 51, 7)  # seconds and usec both end in digit 'z'
    assert qid == "00000z000zz7"
    assert ids.is_valid_queue_id(qid)
    assert ids.queue_id_inode(qid) == 7


def test_make_queue_id_from_time_ns() -> None:
    t = 1764058420 * 10**9 + 826841 * 1000 + 999
    assert ids.make_queue_id(t, 0x160197, long=False) == "C9DD9160197"
    assert ids.make_queue_id(t, 5, long=True) == ids.long_queue_id(1764058420, 826841, 5)
