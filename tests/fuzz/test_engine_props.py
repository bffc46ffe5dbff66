"""Property tests for the sans-IO SMTP engine, driven by the deterministic test driver.

Random byte streams and random (often malformed) command sequences, cut into random chunks,
under random settings.  The driver (``check=True``) asserts the engine's contract as it goes:
one final reply per answered event, nothing sent after the connection closed, and no
MessageComplete without an accepted MAIL and RCPT.  Here we add: the engine never raises,
and every line it sends is a well-formed reply line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "smtp"))

from driver import Driver

from postillion.smtp import Settings
from postillion.smtp._state import EHLO_KEYWORDS

REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -]")
PROPS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

engine_settings = st.builds(
    Settings,
    hostname=st.just("mx.test"),
    tls_available=st.booleans(),
    tls_required=st.booleans(),
    auth_enabled=st.booleans(),
    auth_tls_only=st.booleans(),
    auth_mechanisms=st.sampled_from([(), ("PLAIN", "LOGIN"), ("LOGIN",)]),
    auth_mechanisms_tls=st.sampled_from([(), ("PLAIN", "LOGIN")]),
    broken_sasl_auth_clients=st.booleans(),
    message_size_limit=st.sampled_from([0, 40, 10240000]),
    recipient_limit=st.integers(0, 3),
    recipient_overshoot_limit=st.integers(0, 2),
    hard_error_limit=st.integers(1, 30),
    junk_command_limit=st.integers(0, 5),
    helo_required=st.booleans(),
    disable_vrfy=st.booleans(),
    smtputf8_enable=st.booleans(),
    discard_ehlo_keywords=st.frozensets(st.sampled_from(EHLO_KEYWORDS)),
    forbid_unauth_pipelining=st.booleans(),
    forbid_bare_newline=st.sampled_from(["no", "normal", "strict"]),
    sasl_response_limit=st.sampled_from([16, 12288]),
)

# Commands and fragments that reach every branch of the engine, good and bad.
WORDS = [
    b"EHLO c.test", b"HELO c.test", b"EHLO", b"ehlo  c.test ", b"MAIL FROM:<a@example.test>",
    b"MAIL FROM:<>", b"MAIL FROM:<a@b", b"MAIL FROM:<a@example.test> SIZE=100000000",
    b"MAIL FROM:<a@example.test> BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=x",
    b"MAIL FROM:<d\xc3\xb6rte@example.test> SMTPUTF8", b"MAIL FROM:<@r.test:a@example.test>",
    b"RCPT TO:<b@example.test>", b"RCPT TO:<x@remote.test>", b"RCPT TO:<>",
    b"RCPT TO:<b@example.test> NOTIFY=NEVER ORCPT=rfc822;b", b"RCPT TO:<b@example.test> X=1",
    b"DATA", b"DATA x", b"BDAT 3", b"BDAT 0 LAST", b"BDAT 2 LAST", b"BDAT x", b"BDAT 99999",
    b"RSET", b"NOOP", b"QUIT", b"VRFY a", b"VRFY", b"ETRN example.test", b"HELP", b"STARTTLS",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", b"AUTH PLAIN AGFsaWNlAHdyb25n", b"AUTH LOGIN",
    b"AUTH PLAIN", b"AUTH", b"AUTH FOO", b"YWxpY2U=", b"c2VjcmV0", b"*", b"=", b".", b"..x",
    b"", b"   ", b"Subject: hi", b"GET / HTTP/1.0", b"\xff\xfe", b"abc", b"x" * 3000,
    b"A" * 2047, b"\x00", b"hello world",
]  # fmt: skip
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b""]

sessions = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(ENDINGS)), max_size=40
).map(lambda parts: b"".join(w + e for w, e in parts))
chunk_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=8)


def feed(driver: Driver, data: bytes, sizes: list[int]) -> None:
    """Feed ``data`` in chunks of the given sizes (cycled), then EOF."""
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        driver.feed(data[i : i + n])
        i, k = i + n, k + 1
    driver.feed(b"")


def check_output(out: bytes) -> None:
    assert out.endswith(b"\r\n")  # at least the greeting
    lines = out.split(b"\r\n")[:-1]
    for n, line in enumerate(lines):
        assert REPLY_LINE.match(line), line
        assert b"\r" not in line and b"\n" not in line
        if line[3:4] == b"-":  # a multi-line reply continues with the same code
            assert n + 1 < len(lines) and lines[n + 1][:3] == line[:3], lines[n : n + 2]


def run(cfg: Settings, data: bytes, sizes: list[int]) -> Driver:
    driver = Driver(cfg, check=True)
    feed(driver, data, sizes)
    check_output(bytes(driver.output))
    # once closed (by the server or by EOF), the engine stays quiet and never raises
    driver.feed(b"NOOP\r\n")
    assert driver.conn.closing
    assert driver.conn.data_to_send() == b""
    return driver


@PROPS
@given(cfg=engine_settings, data=st.binary(max_size=2000), sizes=chunk_sizes)
def test_random_bytes(cfg: Settings, data: bytes, sizes: list[int]) -> None:
    run(cfg, data, sizes)


@PROPS
@given(cfg=engine_settings, data=sessions, sizes=chunk_sizes)
def test_random_command_sequences(cfg: Settings, data: bytes, sizes: list[int]) -> None:
    run(cfg, data, sizes)


@PROPS
@given(data=sessions, sizes=chunk_sizes, cfg=engine_settings)
def test_a_good_session_prefix_does_not_change_the_rules(
    data: bytes, sizes: list[int], cfg: Settings
) -> None:
    prefix = b"EHLO c.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
    run(cfg, prefix + b"hi\r\n.\r\n" + data, sizes)


@PROPS
@given(
    cfg=engine_settings.filter(lambda s: not s.tls_available),
    data=sessions,
    sizes=chunk_sizes,
)
def test_replies_do_not_depend_on_packet_boundaries(
    cfg: Settings, data: bytes, sizes: list[int]
) -> None:
    # Only pipelining enforcement (and the STARTTLS flush) may look at what else is buffered.
    cfg = Settings(**{**_fields(cfg), "forbid_unauth_pipelining": False})
    whole = run(cfg, data, [len(data) or 1])
    chunked = run(cfg, data, sizes)
    assert chunked.output == whole.output
    assert chunked.messages == whole.messages


@PROPS
@given(
    body=st.lists(
        st.tuples(st.sampled_from([b"", b".", b"..", b"x", b".x", b"QUIT", b"DATA"]),
                  st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n"])),
        max_size=12,
    ).map(lambda parts: b"".join(w + e for w, e in parts)),
    sizes=chunk_sizes,
)  # fmt: skip
def test_smuggled_end_of_data_never_ends_the_message(
    body: bytes, sizes: list[int]
) -> None:
    # Only CRLF . CRLF ends DATA: the stored message is exactly what a reference model of the
    # default (normal) mode says, and there is never a second one.
    cfg = Settings(forbid_unauth_pipelining=False)
    prefix = b"EHLO c.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
    data = b"\r\n" + body + b"\r\n.\r\n"
    driver = run(cfg, prefix + data, sizes)
    assert driver.messages == [_normal_mode_message(data)]


def _normal_mode_message(data: bytes) -> bytes:
    """Reference model of DATA with smtpd_forbid_bare_newline = normal."""
    out = bytearray()
    prev_crlf = True
    for raw in data.split(b"\n")[:-1]:
        crlf = raw.endswith(b"\r")
        line = raw[:-1] if crlf else raw
        if line == b"." and crlf and prev_crlf:
            return bytes(out)
        if line.startswith(b".") and line != b".":
            line = line[1:]
        out += line + b"\r\n"
        prev_crlf = crlf
    raise AssertionError("the test data always ends with CRLF . CRLF")


def _fields(cfg: Settings) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in Settings.__dataclass_fields__}
