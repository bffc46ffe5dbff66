"""``postillion sendmail -bs``: an SMTP session on standard input and output.

Owns: driving the sans-IO SMTP engine over stdin/stdout for one local user, and turning each
accepted message into a maildrop file (what Postfix's stand-alone smtpd hands to postdrop).
Must not import: server (no listener, no TLS, no SASL: the caller is already a local user).
Follows: Postfix sendmail(1) ``-bs`` ("Stand-alone SMTP server mode ... mail relaying and other
access controls are disabled by default"), smtpd(8) stand-alone mode: the usual replies, every
recipient accepted, the queue id of the reply is the maildrop file's name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from postillion import replies, smtp
from postillion.queue import maildrop
from postillion.smtp import NEED_DATA, PAUSED

READ_SIZE = 65536


def serve(
    stdin_fd: int,
    stdout_fd: int,
    *,
    settings: smtp.Settings,
    banner: str,
    submit: Callable[[maildrop.DropFile], str],
) -> int:
    """Run one session until QUIT or end of input; 0, or 75 (EX_TEMPFAIL) when stdout broke.

    ``submit`` writes a drop file and returns its name (raising OSError when it cannot).
    """
    conn = smtp.ServerConnection(settings)
    crlf = _LineEnds()
    conn.send(replies.greeting(banner))
    sender: str | None = None
    params: smtp.MailParams | None = None
    recipients: list[str] = []
    notify: list[tuple[str, ...] | None] = []
    while True:
        out = conn.data_to_send()
        if out and not _write_all(stdout_fd, out):
            return 75
        if conn.closing:
            return 0
        ev = conn.next_event()
        if ev is NEED_DATA:
            data = os.read(stdin_fd, READ_SIZE)
            conn.receive_data(crlf.feed(data) if data else b"")
            continue
        if ev is PAUSED:
            if conn.closing:  # QUIT (or too many errors): the engine wrote its last reply
                continue
            raise RuntimeError("engine paused with no reply pending")
        if isinstance(ev, smtp.Helo):
            conn.send(conn.ehlo_reply() if ev.extended else conn.helo_reply())
        elif isinstance(ev, smtp.MailFrom):
            sender, params, recipients, notify = ev.address, ev.params, [], []
            conn.send(replies.MAIL_OK)
        elif isinstance(ev, smtp.RcptTo):
            problem = maildrop.address_problem(ev.address)
            if problem:
                conn.send(replies.Reply(code=501, enhanced="5.1.3",
                                        text=f"<{ev.address}>: Recipient address rejected: {problem}"))
            else:
                recipients.append(ev.address)
                notify.append(ev.params.notify)
                conn.send(replies.RCPT_OK)
        elif isinstance(ev, smtp.DataStart):
            conn.send(replies.DATA_GO)
        elif isinstance(ev, smtp.MessageComplete):
            assert sender is not None and params is not None
            drop = maildrop.DropFile(
                recipients=tuple(recipients),
                content=maildrop.canonical_lines(ev.content),
                sender=sender,
                body_type=params.body,
                envid=params.envid,
                # a drop file has one NOTIFY for all: keep it only when every RCPT said the same
                notify=notify[0] if notify and all(n == notify[0] for n in notify) else None,
            )
            try:
                name = submit(drop)
            except OSError:
                conn.send(replies.QUEUE_WRITE_ERROR)
            else:
                conn.send(replies.queued(name))
            sender, params, recipients, notify = None, None, [], []
        elif isinstance(ev, smtp.Vrfy):
            conn.send(replies.vrfy_ok(ev.argument))
        elif isinstance(ev, smtp.Etrn):
            conn.send(replies.ETRN_UNAVAILABLE)
        elif isinstance(ev, smtp.ConnectionLost):
            return 0  # end of input; a message not yet complete is dropped, as smtpd does
        elif isinstance(ev, smtp.Notice):
            pass
        else:  # STARTTLS and AUTH are never offered, so the engine refuses them itself
            raise TypeError(f"unexpected event {ev!r}")


class _LineEnds:
    """LF → CRLF on a stream cut anywhere: a local program's pipe is not the network, and
    smtpd reading stdin ends lines at LF (so ``.\n`` ends DATA, as it does for Postfix)."""

    def __init__(self) -> None:
        self._after_cr = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        start = 0
        while (i := data.find(b"\n", start)) >= 0:
            out += data[start:i]
            cr_before = data[i - 1:i] == b"\r" if i > 0 else self._after_cr
            out += b"\n" if cr_before else b"\r\n"
            start = i + 1
        out += data[start:]
        if data:
            self._after_cr = data.endswith(b"\r")
        return bytes(out)


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True
