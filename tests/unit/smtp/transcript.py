"""Reader and engine runner for ``tests/transcripts/*.smtp`` dialogue files.

Owns: the transcript file format (STYLE.md §6 plus the ``!`` directives below) and running one
transcript through the sans-IO engine with a chosen chunking of the client's bytes.
Must not import: asyncio, sockets, ``postillion.server`` (a socket replayer will reuse ``parse``).
Follows: STYLE.md §6.

Format, one item per line::

    # comment                      (blank lines are ignored too)
    C: EHLO c.example              client line, CRLF added
    C> b"hi\\n.\\r\\n"               raw client bytes: a Python bytes literal (``+`` and
                                   ``* count`` allowed: ``b"NOOP " + b"x" * 3000 + b"\\r\\n"``)
    S: 250 2.1.0 Ok                exact server line (trailing spaces count: "S: 334 ")
    S~ 250 *                       server line, fnmatch glob
    !main.cf name = value          a main.cf parameter for this session (before the dialogue)
    !packet                        the next client turn arrives in one piece (never split)
    !tls-handshake                 the client runs the TLS handshake here (after 220 to STARTTLS)
    !expect-closed                 the server has hung up
    !expect-queued N               N messages were queued so far
    !expect-message b"..."         content of the next queued message (dot-unstuffed, as stored)
    !expect-stats ehlo=1 ... commands=N    the counters of Postfix's "disconnect from" line

A *turn* is the client data between two server lines: it is what a pipelining client writes
before it waits for replies.  The runner feeds a turn (whole, line by line or byte by byte,
answering events after every piece), then checks that exactly the following ``S`` lines came
back.  A turn that must reach the server in one write to mean what it tests (a pipelining
violation, data injected after STARTTLS) is marked ``!packet``.  At the end the client closes
the connection, and the server must not answer that.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from driver import Driver, format_stats, settings_from_maincf

CHUNKINGS = ("whole", "line", "byte")
DIRECTIVES = frozenset({
    "main.cf", "packet", "tls-handshake", "expect-closed", "expect-queued", "expect-message",
    "expect-stats",
})  # fmt: skip


class TranscriptError(ValueError):
    """The transcript file itself is malformed."""


@dataclass(frozen=True, slots=True)
class Client:
    data: bytes
    lineno: int


@dataclass(frozen=True, slots=True)
class Server:
    text: str
    glob: bool
    lineno: int

    def matches(self, line: str) -> bool:
        return fnmatch.fnmatchcase(line, self.text) if self.glob else line == self.text


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    arg: str
    lineno: int


Item = Client | Server | Directive


@dataclass(frozen=True, slots=True)
class Transcript:
    path: Path
    maincf: dict[str, str]
    items: tuple[Item, ...]


def _bytes_literal(text: str, lineno: int) -> bytes:
    """A bytes literal, optionally combined with ``+`` and ``* count`` (``b"x" * 3000``)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        value = _bytes_expr(tree)
    except (ValueError, SyntaxError) as e:
        raise TranscriptError(f"line {lineno}: not a bytes literal: {text!r}") from e
    if not isinstance(value, bytes):
        raise TranscriptError(f"line {lineno}: expected a bytes literal, got {text!r}")
    return value


def _bytes_expr(node: ast.expr) -> bytes | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, int)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _bytes_expr(node.left), _bytes_expr(node.right)
        if (
            isinstance(node.op, ast.Add)
            and isinstance(left, bytes)
            and isinstance(right, bytes)
        ):
            return left + right
        if (
            isinstance(node.op, ast.Mult)
            and isinstance(left, bytes)
            and isinstance(right, int)
        ):
            return left * right
    raise ValueError("only bytes literals, + and * int are allowed")


def parse(text: str, path: Path = Path("<string>")) -> Transcript:
    maincf: dict[str, str] = {}
    items: list[Item] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        tag, rest = line[:2], line[3:] if len(line) > 2 and line[2] == " " else line[2:]
        if tag == "C:":
            items.append(Client(rest.encode("utf-8") + b"\r\n", lineno))
        elif tag == "C>":
            items.append(Client(_bytes_literal(rest, lineno), lineno))
        elif tag in ("S:", "S~"):
            items.append(Server(rest, tag == "S~", lineno))
        elif line.startswith("!"):
            name, _, arg = line[1:].partition(" ")
            if name not in DIRECTIVES:
                raise TranscriptError(f"line {lineno}: unknown directive !{name}")
            if name == "main.cf":
                key, eq, value = arg.partition("=")
                if not eq or not key.strip():
                    raise TranscriptError(
                        f"line {lineno}: expected !main.cf name = value"
                    )
                if items:
                    raise TranscriptError(
                        f"line {lineno}: !main.cf after the dialogue started"
                    )
                maincf[key.strip()] = value.strip()
            else:
                if name == "expect-message":
                    _bytes_literal(arg, lineno)
                items.append(Directive(name, arg.strip(), lineno))
        else:
            raise TranscriptError(f"line {lineno}: cannot parse {line!r}")
    return Transcript(path=path, maincf=maincf, items=tuple(items))


def load(path: Path) -> Transcript:
    return parse(path.read_text(encoding="utf-8"), path)


def _pieces(data: bytes, chunking: str) -> list[bytes]:
    if chunking == "whole":
        return [data]
    if chunking == "line":
        return [p for p in re.split(b"(?<=\n)", data) if p]
    if chunking == "byte":
        return [data[i : i + 1] for i in range(len(data))]
    raise ValueError(f"unknown chunking {chunking!r}")


def _split_reply_lines(data: bytes, where: str) -> list[str]:
    if data and not data.endswith(b"\r\n"):
        raise AssertionError(f"{where}: server output does not end in CRLF: {data!r}")
    lines = data.split(b"\r\n")[:-1] if data else []
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise AssertionError(f"{where}: bare CR or LF in server output {line!r}")
    return [line.decode("utf-8") for line in lines]


def _difference(got: bytes, want: bytes) -> str:
    """Where two byte strings first differ, with a short window (messages can be large)."""
    at = next(
        (i for i, (a, b) in enumerate(zip(got, want)) if a != b),
        min(len(got), len(want)),
    )
    lo = max(0, at - 20)
    return (
        f"{len(got)} vs {len(want)} bytes, first difference at {at}: "
        f"got {got[lo : at + 20]!r}, want {want[lo : at + 20]!r}"
    )


def run(transcript: Transcript, chunking: str) -> Driver:
    """Run a transcript through the engine; raises AssertionError at the first difference."""
    name = transcript.path.name
    driver = Driver(settings_from_maincf(transcript.maincf))
    seen = 0  # output bytes already checked
    turn = bytearray()
    packet = False
    expected: list[Server] = []
    handshakes = messages_checked = 0

    def send_turn() -> None:
        nonlocal packet
        if not turn:
            return
        if driver.conn.closing:
            raise AssertionError(
                f"{name}: client data after the server closed the connection"
            )
        for piece in _pieces(bytes(turn), "whole" if packet else chunking):
            driver.feed(piece)
        turn.clear()
        packet = False

    def check_replies(lineno: int) -> None:
        """Compare the new output with the S lines collected since the last check."""
        nonlocal seen
        got = _split_reply_lines(bytes(driver.output[seen:]), f"{name}:{lineno}")
        seen = len(driver.output)
        want = list(expected)
        expected.clear()
        bad = len(got) != len(want) or any(not w.matches(g) for w, g in zip(want, got))
        if bad:
            raise AssertionError(
                f"{name}: replies before line {lineno} ({chunking}) differ\n"
                + "expected:\n"
                + "".join(f"  {'S~' if w.glob else 'S:'} {w.text}\n" for w in want)
                + "got:\n"
                + "".join(f"  S: {g}\n" for g in got)
            )

    for item in transcript.items:
        if isinstance(item, Client):
            if expected:
                check_replies(item.lineno)
            turn += item.data
        elif isinstance(item, Server):
            send_turn()
            expected.append(item)
        else:
            if item.name == "packet":
                if turn:
                    raise TranscriptError(
                        f"{name}:{item.lineno}: !packet inside a turn"
                    )
                check_replies(item.lineno)
                packet = True
                continue
            send_turn()
            check_replies(item.lineno)
            where = f"{name}:{item.lineno} ({chunking})"
            if item.name == "tls-handshake":
                handshakes += 1
                assert driver.handshakes == handshakes and driver.conn.tls_active, (
                    f"{where}: no STARTTLS handshake happened here"
                )
            elif item.name == "expect-closed":
                assert driver.conn.closing, f"{where}: the server did not hang up"
            elif item.name == "expect-queued":
                assert len(driver.messages) == int(item.arg), (
                    f"{where}: {len(driver.messages)} messages queued, expected {item.arg}"
                )
            elif item.name == "expect-message":
                want = _bytes_literal(item.arg, item.lineno)
                assert messages_checked < len(driver.messages), (
                    f"{where}: no message queued"
                )
                got = driver.messages[messages_checked]
                assert got == want, (
                    f"{where}: message content differs: {_difference(got, want)}"
                )
                messages_checked += 1
            elif item.name == "expect-stats":
                got_stats = format_stats(driver.conn.stats.counts)
                assert got_stats == item.arg, (
                    f"{where}: stats\n  got  {got_stats}\n  want {item.arg}"
                )
    send_turn()
    check_replies(0)  # 0: the end of the file
    assert driver.handshakes == handshakes, (
        f"{name}: {driver.handshakes} TLS handshakes but {handshakes} !tls-handshake lines"
    )
    if not driver.conn.closing:
        driver.feed(b"")  # the client hangs up; the server has nothing more to say
        assert driver.lost, f"{name}: EOF did not end the session"
    assert len(driver.output) == seen, (
        f"{name}: output after the dialogue: {driver.output[seen:]!r}"
    )
    return driver
