"""Every ``tests/transcripts/*.smtp`` dialogue, byte-exact, through the sans-IO engine.

Each transcript runs three times: each client turn fed whole, line by line, and one byte at a
time (with events answered after every piece), so framing never depends on packet boundaries.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from driver import Driver, format_stats, settings_from_maincf
from transcript import CHUNKINGS, TranscriptError, load, parse, run

TRANSCRIPTS = sorted((Path(__file__).parents[2] / "transcripts").glob("*.smtp"))


def test_transcripts_exist() -> None:
    assert len(TRANSCRIPTS) >= 30


@pytest.mark.parametrize("chunking", CHUNKINGS)
@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path, chunking: str) -> None:
    run(load(path), chunking)


# --- the runner must be able to fail ---------------------------------------------------------
GREETING = "S: 220 mail.example.test ESMTP Postfix\n"


def test_runner_rejects_a_wrong_reply() -> None:
    t = parse(GREETING + "C: NOOP\nS: 250 2.0.0 OK\n")
    with pytest.raises(AssertionError, match="differ"):
        run(t, "whole")


def test_runner_rejects_a_missing_reply() -> None:
    t = parse(GREETING + "C: NOOP\nC: NOOP\nS: 250 2.0.0 Ok\n")
    with pytest.raises(AssertionError, match="differ"):
        run(t, "line")


def test_runner_rejects_an_extra_reply() -> None:
    t = parse(GREETING + "C: NOOP\nS: 250 2.0.0 Ok\nC: RSET\n")
    with pytest.raises(AssertionError, match="differ"):
        run(t, "byte")


def test_runner_checks_stats_and_messages() -> None:
    t = parse(GREETING + "C: NOOP\nS: 250 2.0.0 Ok\n!expect-stats noop=1 commands=2\n")
    with pytest.raises(AssertionError, match="stats"):
        run(t, "whole")
    with pytest.raises(AssertionError, match="no message"):
        run(parse(GREETING + '!expect-message b"x"\n'), "whole")


def test_runner_requires_the_handshake_marker() -> None:
    t = parse(
        "!main.cf smtpd_tls_security_level = may\n"
        + GREETING
        + "C: STARTTLS\nS: 220 2.0.0 Ready to start TLS\n"
    )
    with pytest.raises(AssertionError, match="handshake"):
        run(t, "whole")


@pytest.mark.parametrize("text", [
    "X: what\n", "!nonsense\n", "C> 'str'\n", "C: NOOP\n!main.cf a = b\n", "!main.cf novalue\n",
])  # fmt: skip
def test_parser_rejects_malformed_files(text: str) -> None:
    with pytest.raises(TranscriptError):
        parse(text)


def test_parser_keeps_trailing_spaces_of_server_lines() -> None:
    t = parse("S: 334 \nC> b'x'\n")
    assert t.items[0].text == "334 "  # type: ignore[union-attr]


# --- helpers --------------------------------------------------------------------------------
@pytest.mark.parametrize("counts,line", [
    ({}, "commands=0/0"),
    ({"ehlo": [1, 1], "auth": [1, 3], "rcpt": [0, 1]}, "ehlo=1 auth=1/3 rcpt=0/1 commands=2/5"),
    ({"quit": [1, 1], "unknown": [0, 1], "helo": [1, 1], "noop": [1, 1]},
     "helo=1 noop=1 quit=1 unknown=0/1 commands=3/4"),
    ({"ehlo": [2, 2], "starttls": [1, 1], "auth": [1, 1], "mail": [1, 1], "rcpt": [1, 1],
      "data": [1, 1], "quit": [1, 1]},
     "ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8"),
])  # fmt: skip
def test_format_stats_matches_postfix(counts: dict[str, list[int]], line: str) -> None:
    assert format_stats(counts) == line


def test_settings_follow_postfix_parameters() -> None:
    s = settings_from_maincf({
        "smtpd_tls_security_level": "encrypt", "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_security_options": "noanonymous, noplaintext",
        "smtpd_sasl_tls_security_options": "noanonymous",
        "smtpd_discard_ehlo_keywords": "VRFY, enhancedstatuscodes",
    })  # fmt: skip
    assert (s.tls_available, s.tls_required, s.auth_tls_only) == (True, True, True)
    assert (s.auth_mechanisms, s.auth_mechanisms_tls) == ((), ("PLAIN", "LOGIN"))
    assert s.discard_ehlo_keywords == frozenset({"vrfy", "enhancedstatuscodes"})
    with pytest.raises(ValueError, match="unsupported"):
        settings_from_maincf({"smtpd_nonsense": "1"})


def test_driver_sends_the_greeting_first() -> None:
    d = Driver(settings_from_maincf({"myhostname": "mx.test"}))
    assert d.text() == "220 mx.test ESMTP Postfix\r\n"
