"""Queue listing details found by the live Postfix comparison (tests/interop/test_mailq_postfix.py)."""

from __future__ import annotations

import pytest

from postillion.cli.queue import _postfix_queue_id_ok, _show_address, unquote_822_local


@pytest.mark.parametrize(
    ("stored", "internal", "shown"),
    [
        ('"john doe"@example.test', "john doe@example.test", '"john doe"@example.test'),
        ('"plain"@example.test', "plain@example.test", "plain@example.test"),
        ('"a\\"b"@example.test', 'a"b@example.test', '"a\\"b"@example.test'),
        ("alice@example.test", "alice@example.test", "alice@example.test"),
        ("", "", "MAILER-DAEMON"),
    ],
)
def test_quoted_local_part_is_shown_once_quoted(stored: str, internal: str, shown: str) -> None:
    assert unquote_822_local(stored) == internal
    assert _show_address(stored, "MAILER-DAEMON") == shown


@pytest.mark.parametrize(("queue_id", "ok"), [("NOSUCHID", True), ("4F2A1C0B12", True),
                                               ("a_b", True), ("bad.id", False), ("", False),
                                               ("../x", False), ("x" * 256, False)])
def test_postsuper_queue_id_syntax(queue_id: str, ok: bool) -> None:
    assert _postfix_queue_id_ok(queue_id) is ok
