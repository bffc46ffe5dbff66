"""The versioned queue file record: round trip and refusal of damaged files."""

from __future__ import annotations

import json

import pytest

from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import QueueRecordError, decode, encode

CONTENT = b"Subject: hi\r\n\r\nbody line\r\n.dot\r\n\r\n"


def sample() -> Envelope:
    return Envelope(
        sender="alice@example.test",
        recipients=[
            Recipient(address="x@remote.test", orcpt="rfc822;x@remote.test", notify=("SUCCESS", "FAILURE")),
            Recipient(address="j\u00f6rg@b\u00fccher.test"),
        ],
        ret="HDRS",
        envid="QQ314159",
        body_type="8BITMIME",
        smtputf8=True,
        size=1234,
        arrival_time=1764058420.826841,
        client_name="localhost",
        client_addr="127.0.0.1",
        client_port=40000,
        helo_name="client.example.test",
        protocol="ESMTPSA",
        sasl_method="PLAIN",
        sasl_username="alice",
        sasl_sender=None,
        service="submission",
        queue_id="C9DD9160197",
    )


def test_round_trip() -> None:
    env = sample()
    data = encode(env, CONTENT)
    assert data.startswith(b"POSTILLION-QUEUE 1\n{")
    assert data.endswith(b"}\n\n" + CONTENT)
    assert decode(data) == (env, CONTENT)


def test_null_sender_and_empty_content_round_trip() -> None:
    env = Envelope(sender="", recipients=[Recipient(address="a@b.test")])
    assert decode(encode(env, b"")) == (env, b"")


def test_surrogate_escaped_bytes_survive() -> None:
    env = Envelope(sender=b"\xff@x.test".decode("utf-8", "surrogateescape"))
    got, _ = decode(encode(env, b""))
    assert got.sender.encode("utf-8", "surrogateescape") == b"\xff@x.test"


def test_envelope_line_is_ascii_json_with_content_length() -> None:
    data = encode(sample(), CONTENT)
    line = data.split(b"\n")[1]
    meta = json.loads(line)
    assert meta["content_length"] == len(CONTENT)
    assert meta["envelope"]["recipients"][0]["notify"] == ["SUCCESS", "FAILURE"]
    assert line.isascii()


def _damaged(data: bytes) -> str:
    with pytest.raises(QueueRecordError) as info:
        decode(data)
    return str(info.value)


def test_damage_is_reported() -> None:
    good = encode(sample(), CONTENT)
    assert _damaged(b"") == "not a postillion queue file (bad first line)"
    assert _damaged(b"From x\n") == "not a postillion queue file (bad first line)"
    assert _damaged(good.replace(b"QUEUE 1", b"QUEUE 2", 1)) == "unsupported queue file version 2"
    assert _damaged(good.replace(b"QUEUE 1", b"QUEUE x", 1)) == "bad queue file version b'x'"
    assert _damaged(good[:-1]) == (
        f"damaged queue file: content is {len(CONTENT) - 1} bytes, record says {len(CONTENT)}"
    )
    assert _damaged(good.split(b"\n")[0] + b"\n{\"a\"") == "truncated queue file (no envelope record)"
    assert "damaged envelope record" in _damaged(b"POSTILLION-QUEUE 1\n{nope\n\n")
    head, line, rest = good.split(b"\n", 2)
    assert _damaged(head + b"\n" + line + b"\nX" + rest) == (
        "damaged queue file (no separator after the envelope record)"
    )


def test_unknown_field_is_refused() -> None:
    env = {"sender": "", "recipients": [], "delivered": True}
    data = b"POSTILLION-QUEUE 1\n" + json.dumps({"content_length": 0, "envelope": env}).encode() + b"\n\n"
    assert _damaged(data) == "unexpected envelope field 'delivered'"


def test_bad_field_value_is_refused() -> None:
    env = {"sender": "", "recipients": [], "body_type": "9BIT"}
    data = b"POSTILLION-QUEUE 1\n" + json.dumps({"content_length": 0, "envelope": env}).encode() + b"\n\n"
    assert _damaged(data) == "damaged envelope record: bad body type '9BIT'"
