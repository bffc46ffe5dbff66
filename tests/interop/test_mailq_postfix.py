"""Issue 4: our queue listing and postsuper messages against a live Postfix 3.7.

The same messages are queued in a private Postfix (postfix_instance.py) and in postillion, both
with ``relayhost = [127.0.0.1]:PORT`` where nothing listens, so every delivery is deferred with
the same reason (``connect to 127.0.0.1[127.0.0.1]:PORT: Connection refused``):

* a plain message; one with three recipients; one from a long sender address (wider than the
  20-column arrival-time field before it); one with the null sender (shown as
  ``MAILER-DAEMON``); one from a quoted local part (``"john doe"@example.test``) that is then
  put on hold.

Then ``mailq`` (= ``postqueue -p``) and ``postqueue -j`` are compared line by line with
``postillion queue`` and ``queue -j``, and ``postsuper -H/-h/-d`` with ``release/hold/delete``.

Normalised before comparing, and only these, because the two systems cannot agree on them:

* queue ids (each system makes its own) -> ``QUEUEID``, keeping the ``*``/``!`` status mark and
  the 11-column padding of the short-id layout;
* sizes (Postfix's Received:/Message-ID: headers differ from ours) -> ``SIZE`` right-aligned in
  the 7-column size field, the JSON ``message_size`` -> 0, and the ``-- N Kbytes`` total -> N;
* arrival times (the messages are queued seconds apart) -> ``DATE`` in the 20-column field, the
  JSON ``arrival_time`` -> 0.

A line whose columns are not where showq_compat.c puts them is left as it is, so a layout
difference still shows.  Messages are compared as a sorted list of blocks because both list a
queue directory in the order the file system returns; the order of the queues themselves
(deferred before hold) is compared as it is.  The three recipients are chosen so that
Postfix's qmgr delivery order (sorted by domain) is also their envelope order.

Mail still in the maildrop (pickup stopped in Postfix, no queue manager in postillion) is
compared the same way: showq lists it first, without a status mark, as queue "maildrop".

Postfix's postsuper reports on stderr only when it is a terminal, so it runs on a pty.
Needs root (Postfix's master); skipped when a Postfix program is missing.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from harness import Server, cleanup, free_port, make_server, postillion
from postfix_instance import POSTSUPER, PROGRAMS, PostfixInstance, running_postfix

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    *(pytest.mark.skipif(not Path(p).exists(), reason=f"{p} missing (apt install postfix)")
      for p in PROGRAMS),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: Postfix's master runs as root"),
    pytest.mark.timeout(180),
]

HOST = "mail.example.test"
LONG_SENDER = "a-very-long-sender-address-for-the-mailq-test@subdomain.example.test"
QUOTED = '"john doe"@example.test'
MESSAGES = [  # (sender, recipients); the last one is put on hold
    ("alice@example.test", ["far@example.org"]),
    ("bob@example.test", ["a@example.com", "b@example.net", "c@example.org"]),
    (LONG_SENDER, ["long@example.org"]),
    ("", ["bounce@example.org"]),
    (QUOTED, ["held@example.org"]),
]
BODY = "Subject: mailq comparison\n\nhello\n"

# showq_compat.c short-id sender line: "%-11s %7ld %20.20s %s" (id and status mark, size,
# arrival time, sender), so the fields sit at fixed columns.
_ID = re.compile(r"^[0-9A-Za-z]+([*!]?) *$")
_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                   r" [ \d]\d \d\d:\d\d:\d\d $")


def normalise_mailq_line(line: str) -> str:
    ident = line.split(" ", 1)[0]
    m = _ID.match(ident)
    pos = max(11, len(ident))  # "%-11s" pads to 11 and overflows for a longer id + mark
    size, date = line[pos + 1:pos + 8], line[pos + 9:pos + 29]
    if m and len(line) > pos + 30 and line[len(ident):pos + 1].strip(" ") == "" \
            and line[pos + 8] == line[pos + 29] == " " \
            and re.fullmatch(r" *\d+", size) and _DATE.match(date):
        return f"{'QUEUEID' + m.group(1):<11} {'SIZE':>7} {'DATE':<20} {line[pos + 30:]}"
    return re.sub(r"^-- \d+ Kbytes in", "-- N Kbytes in", line)


def mailq_blocks(text: str) -> tuple[str, list[str], str, list[str]]:
    """(heading, sorted message blocks, total line, status marks in listed order)."""
    lines = [normalise_mailq_line(x) for x in text.split("\n")]
    assert lines[-1] == "", text
    heading, body, total = lines[0], "\n".join(lines[1:-2]), lines[-2]
    blocks = [b.strip("\n") for b in body.split("\n\n")]  # the last one ends in a newline
    marks = [b.split(" ", 1)[0] for b in blocks]
    return heading, sorted(blocks), total, marks


def normalise_json(line: str) -> str:
    line = re.sub(r'"queue_id": "\w+"', '"queue_id": "QUEUEID"', line)
    line = re.sub(r'"arrival_time": \d+', '"arrival_time": 0', line)
    return re.sub(r'"message_size": \d+', '"message_size": 0', line)


def wait_for(what: str, probe, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def all_deferred(json_text: str, n: int) -> bool:
    records = [json.loads(x) for x in json_text.splitlines()]
    return len(records) == n and all(
        r["queue_name"] == "deferred" and all("delay_reason" in rc for rc in r["recipients"])
        for r in records)


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()  # nothing listens there: every connection is refused


@pytest.fixture(scope="module")
def postfix(closed_port: int) -> Iterator[tuple[PostfixInstance, list[str]]]:
    main = (f"myhostname = {HOST}\nmydomain = example.test\n"
            f"relayhost = [127.0.0.1]:{closed_port}\n")
    with running_postfix(main) as pf:
        ids = [pf.sendmail(sender or "<>", rcpts, BODY) for sender, rcpts in MESSAGES]
        wait_for("Postfix to defer everything", lambda: all_deferred(pf.postqueue("-j"), len(ids)))
        code, _ = pf.on_tty(POSTSUPER, "-h", ids[-1])
        assert code == 0
        yield pf, ids


@pytest.fixture(scope="module")
def ours(closed_port: int) -> Iterator[tuple[Server, list[str]]]:
    srv = make_server(qmgr=True, main={"relayhost": f"[127.0.0.1]:{closed_port}",
                                       "mydomain": "example.test"})
    try:
        srv.start()
        ids = []
        for sender, rcpts in MESSAGES:
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c.example.test",
                              timeout=10) as s:
                # Raw MAIL FROM: smtplib would strip the quotes of "john doe"@example.test.
                assert s.docmd(f"MAIL FROM:<{sender}>")[0] == 250
                for rcpt in rcpts:
                    assert s.rcpt(rcpt)[0] == 250
                code, text = s.data(BODY.replace("\n", "\r\n").encode())
                assert code == 250, text
                ids.append(text.decode().rsplit(" ", 1)[1])
        wait_for("postillion to defer everything",
                 lambda: all_deferred(postillion(srv.config_dir, "queue", "-j").stdout, len(ids)))
        postillion(srv.config_dir, "hold", ids[-1])
        yield srv, ids
    finally:
        cleanup(srv)


def test_mailq_matches_postfix(postfix, ours) -> None:
    pf, _ = postfix
    srv, _ = ours
    theirs = pf.postqueue("-p")
    mine = postillion(srv.config_dir, "queue").stdout
    t_head, t_blocks, t_total, t_marks = mailq_blocks(theirs)
    m_head, m_blocks, m_total, m_marks = mailq_blocks(mine)
    assert m_head == t_head == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    assert m_total == t_total == "-- N Kbytes in 5 Requests."
    assert m_marks == t_marks  # deferred messages first, then the held one
    for m_block, t_block in zip(m_blocks, t_blocks, strict=True):
        assert m_block.split("\n") == t_block.split("\n"), f"ours:\n{mine}\nPostfix:\n{theirs}"
    # The comparison looked at what it should: the special senders are there.
    assert any(QUOTED in b and b.startswith("QUEUEID!") for b in t_blocks), theirs
    assert any(" MAILER-DAEMON" in b for b in t_blocks), theirs
    assert any(LONG_SENDER in b for b in t_blocks), theirs


def test_postqueue_json_matches_postfix(postfix, ours) -> None:
    pf, _ = postfix
    srv, _ = ours
    theirs = sorted(normalise_json(x) for x in pf.postqueue("-j").splitlines())
    mine = sorted(normalise_json(x) for x in
                  postillion(srv.config_dir, "queue", "-j").stdout.splitlines())
    assert len(theirs) == 5
    for m_line, t_line in zip(mine, theirs, strict=True):
        assert m_line == t_line


def _tty(srv: Server, *args: str) -> tuple[int, str]:
    import pty
    import select
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "postillion", "-c", str(srv.config_dir), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while select.select([master], [], [], 30)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode().replace("\r\n", "\n")


def test_postsuper_messages_match_postfix(postfix, ours) -> None:
    pf, pf_ids = postfix
    srv, my_ids = ours

    def both(pf_args: list[str], my_args: list[str], pf_id: str = "", my_id: str = "") -> str:
        t_code, t_text = pf.on_tty(POSTSUPER, *pf_args)
        m_code, m_text = _tty(srv, *my_args)
        if pf_id:
            t_text = t_text.replace(pf_id, "QUEUEID")
        if my_id:
            m_text = m_text.replace(my_id, "QUEUEID")
        assert (m_code, m_text) == (t_code, t_text)
        return t_text

    assert both(["-H", pf_ids[-1]], ["release", my_ids[-1]], pf_ids[-1], my_ids[-1]) == (
        "postsuper: QUEUEID: released from hold\npostsuper: Released from hold: 1 message\n")
    assert both(["-H", pf_ids[-1]], ["release", my_ids[-1]]) == (
        "postsuper: Released from hold: 0 messages\n")
    assert both(["-h", "ALL"], ["hold", "ALL"]) == "postsuper: Placed on hold: 5 messages\n"
    assert both(["-H", "ALL"], ["release", "ALL"]) == "postsuper: Released from hold: 5 messages\n"
    assert both(["-d", pf_ids[0]], ["delete", my_ids[0]], pf_ids[0], my_ids[0]) == (
        "postsuper: QUEUEID: removed\npostsuper: Deleted: 1 message\n")
    assert both(["-d", pf_ids[0]], ["delete", my_ids[0]]) == "postsuper: Deleted: 0 messages\n"
    # mail_queue_id_ok() accepts letters, digits and "_": an unknown id is just not found.
    assert both(["-d", "NOSUCHID"], ["delete", "NOSUCHID"]) == "postsuper: Deleted: 0 messages\n"
    assert both(["-d", "bad.id"], ["delete", "bad.id"]) == (
        "postsuper: warning: invalid mail queue id: bad.id\npostsuper: Deleted: 0 messages\n")
    assert both(["-d", "ALL"], ["delete", "ALL"]) == "postsuper: Deleted: 4 messages\n"
    assert pf.postqueue("-p") == postillion(srv.config_dir, "queue").stdout == "Mail queue is empty\n"


def test_maildrop_listing_matches_postfix() -> None:
    """Mail sendmail dropped that pickup has not taken yet: Postfix's showq lists its maildrop
    (no status mark, queue_name "maildrop", the sender as postdrop recorded it)."""
    import subprocess

    from postfix_instance import SENDMAIL

    submissions = [([], ["x@example.org"]), (["-f", ""], ["y@example.org", "z@example.org"])]
    with running_postfix(f"myhostname = {HOST}\n") as pf:
        master = pf.config / "master.cf"
        master.write_text(re.sub(r"^pickup ", "#pickup ", master.read_text(), flags=re.M))
        pf.run("/usr/sbin/postfix", "reload")
        time.sleep(1)  # the old pickup finishes its current scan before it goes
        for args, rcpts in submissions:
            subprocess.run([SENDMAIL, "-C", str(pf.config), *args, *rcpts], input=BODY,
                           text=True, check=True)
        theirs = pf.postqueue("-p")
        theirs_json = pf.postqueue("-j")
    srv = make_server()  # no queue manager, so no pickup: drop files stay in maildrop/
    try:
        srv.start()
        for args, rcpts in submissions:
            subprocess.run([sys.executable, "-m", "postillion", "-c", str(srv.config_dir),
                            "sendmail", *args, *rcpts], input=BODY, text=True, check=True)
        mine = postillion(srv.config_dir, "queue").stdout
        mine_json = postillion(srv.config_dir, "queue", "-j").stdout
    finally:
        cleanup(srv)
    t_head, t_blocks, t_total, t_marks = mailq_blocks(theirs)
    m_head, m_blocks, m_total, m_marks = mailq_blocks(mine)
    assert (m_head, m_total, m_marks) == (t_head, t_total, t_marks)
    assert m_blocks == t_blocks, f"ours:\n{mine}\nPostfix:\n{theirs}"
    assert any(b.endswith(" root\n" + " " * 41 + "x@example.org") for b in t_blocks), theirs
    assert any(b.endswith(" MAILER-DAEMON\n" + " " * 41 + "y@example.org\n" + " " * 41
                          + "z@example.org") for b in t_blocks), theirs
    assert sorted(normalise_json(x) for x in mine_json.splitlines()) == sorted(
        normalise_json(x) for x in theirs_json.splitlines())
    assert '"queue_name": "maildrop"' in theirs_json
