"""The versioned queue file record: round trip and refusal of damaged files."""

from __future__ import annotations

import json

import pytest

from postillion.queue.envelope import Envelope, Recipient
from postillion.queue.record import (
    QueueRecordError,
    RecipientStatus,
    decode,
    decode_entry,
    encode,
    encode_status,
)

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
    assert data.startswith(b"POSTILLION-QUEUE 2\n{")
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
    assert _damaged(good.replace(b"QUEUE 2", b"QUEUE 3", 1)) == "unsupported queue file version 3"
    assert _damaged(good.replace(b"QUEUE 2", b"QUEUE x", 1)) == "bad queue file version b'x'"
    assert _damaged(good[:-1]) == (
        f"damaged queue file: content is {len(CONTENT) - 1} bytes, record says {len(CONTENT)}"
    )
    assert _damaged(good.split(b"\n")[0] + b"\n{\"a\"") == "truncated queue file (no envelope record)"
    assert "damaged envelope record" in _damaged(b"POSTILLION-QUEUE 2\n{nope\n\n")
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


DEFERRAL = RecipientStatus(rcpt=1, status="deferred", dsn="4.4.1", relay="none",
                           text="connect to mx.b\u00fccher.test[192.0.2.1]:25: Connection refused",
                           time=1764058500.5)
SENT = RecipientStatus(rcpt=0, status="sent", dsn="2.0.0", relay="mx.remote.test[192.0.2.7]:25",
                       text="250 2.0.0 Ok: queued as 4dQ7", time=1764058501.25)


def v1_file(env: Envelope, content: bytes) -> bytes:
    """A version 1 file, as written before the status trailer existed."""
    return encode(env, content).replace(b"POSTILLION-QUEUE 2\n", b"POSTILLION-QUEUE 1\n", 1)


def test_version_1_files_still_decode() -> None:
    env = sample()
    assert decode(v1_file(env, CONTENT)) == (env, CONTENT)
    assert decode_entry(v1_file(env, CONTENT)) == (env, CONTENT, [])
    # version 1 has no trailer: bytes after the content are damage
    assert _damaged(v1_file(env, CONTENT) + encode_status(SENT)).startswith(
        f"damaged queue file: content is {len(CONTENT) + len(encode_status(SENT))} bytes"
    )


def test_status_line_format() -> None:
    assert encode_status(SENT) == (
        b'S {"dsn":"2.0.0","rcpt":0,"relay":"mx.remote.test[192.0.2.7]:25",'
        b'"status":"sent","text":"250 2.0.0 Ok: queued as 4dQ7","time":1764058501.25}\n'
    )
    assert encode_status(DEFERRAL).isascii()
    assert SENT.final and not DEFERRAL.final


def test_trailer_round_trip_and_decode_ignores_it() -> None:
    data = encode(sample(), CONTENT) + encode_status(DEFERRAL) + encode_status(SENT)
    assert decode_entry(data) == (sample(), CONTENT, [DEFERRAL, SENT])
    assert decode(data) == (sample(), CONTENT)


def test_torn_last_status_line_is_ignored() -> None:
    whole = encode(sample(), CONTENT) + encode_status(DEFERRAL)
    line = encode_status(SENT)
    for cut in range(1, len(line)):  # every possible torn write of the second line
        assert decode_entry(whole + line[:cut])[2] == [DEFERRAL]


def test_truncated_content_is_damage_even_in_version_2() -> None:
    good = encode(sample(), CONTENT)
    assert _damaged(good[:-3]) == (
        f"damaged queue file: content is {len(CONTENT) - 3} bytes, record says {len(CONTENT)}"
    )


def test_damaged_status_lines_are_refused() -> None:
    good = encode(sample(), CONTENT)
    assert _damaged(good + b"X {}\n") == "damaged status record b'X {}'"
    assert _damaged(good + b"S {nope\n").startswith("damaged status record: ")
    assert _damaged(good + b'S {"rcpt":0}\n') == "damaged status record b'S {\"rcpt\":0}'"
    bad_status = encode_status(SENT).replace(b'"sent"', b'"lost"')
    assert _damaged(good + bad_status) == "damaged status record: bad recipient status 'lost'"
    out_of_range = encode_status(SENT).replace(b'"rcpt":0', b'"rcpt":2')
    assert _damaged(good + out_of_range) == "status record for recipient 2 of 2"
    torn_then_more = encode_status(SENT)[:10] + encode_status(SENT)
    assert _damaged(good + torn_then_more).startswith("damaged status record")


def test_status_values_are_checked() -> None:
    with pytest.raises(ValueError):
        RecipientStatus(rcpt=0, status="queued", dsn="", relay="", text="", time=0.0)
    with pytest.raises(ValueError):
        RecipientStatus(rcpt=-1, status="sent", dsn="", relay="", text="", time=0.0)
