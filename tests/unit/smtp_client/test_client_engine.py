"""The sans-IO SMTP client engine, byte for byte: commands out, replies in, in order."""

from __future__ import annotations

import base64

import pytest

from postillion.smtp import (
    NEED_DATA,
    ClientConnection,
    ClientProtocolError,
    Closed,
    SaslClient,
    ServerReply,
    dot_stuff,
    parse_ehlo,
    xtext_encode,
)
from postillion.smtp._client import (
    DATA,
    EHLO,
    END_OF_DATA,
    GREETING,
    MAIL,
    RCPT,
    STARTTLS,
)


def replies(conn: ClientConnection, data: bytes) -> list[ServerReply | Closed]:
    conn.receive_data(data)
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, Closed):
            break
    return out


def test_greeting_and_ehlo_keywords() -> None:
    conn = ClientConnection()
    (greet,) = replies(conn, b"220 mx.example.org ESMTP Postfix\r\n")
    assert (greet.code, greet.command, greet.text) == (220, GREETING, "220 mx.example.org ESMTP Postfix")
    assert conn.ehlo("client.example") == b"EHLO client.example\r\n"
    # split across reads, with a bare-LF line and the old AUTH= form
    assert replies(conn, b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\n250-AUTH=LOGIN") == []
    (ehlo,) = replies(conn, b"\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    assert ehlo.command == EHLO and ehlo.code == 250
    ext = conn.extensions
    assert ext.server_name == "mx.example.org"
    assert ext.pipelining and "smtputf8" in ext and "8BITMIME" in ext and "DSN" not in ext
    assert ext.size_limit == 10240000
    assert ext.auth_mechanisms == ("LOGIN", "PLAIN", "LOGIN")
    assert conn.esmtp


def test_size_keyword_variants() -> None:
    def ext(lines: bytes):
        conn = ClientConnection(expect_greeting=False)
        conn.ehlo("c")
        replies(conn, lines)
        return conn.extensions

    assert ext(b"250-x\r\n250 SIZE\r\n").size_limit == 0
    assert ext(b"250-x\r\n250 SIZE big\r\n").size_limit == 0
    assert ext(b"250 x\r\n").size_limit is None


def test_pipelined_group_replies_come_back_labelled_in_order() -> None:
    conn = ClientConnection(expect_greeting=False)
    out = (conn.mail("a@example.com", size=42, body="8BITMIME")
           + conn.rcpt("b@example.org") + conn.rcpt("c@example.org") + conn.data())
    assert out == (b"MAIL FROM:<a@example.com> SIZE=42 BODY=8BITMIME\r\n"
                   b"RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
    assert conn.pending == 4
    got = replies(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 <c@example.org>: no\r\n"
                        b"550 5.1.1 such user\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert [(r.command, r.code) for r in got] == [(MAIL, 250), (RCPT, 250), (RCPT, 550), (DATA, 354)]
    assert got[2].text == "550-5.1.1 <c@example.org>: no 550 5.1.1 such user"
    assert got[2].enhanced == "5.1.1"
    assert conn.message(b"hi\r\n") == b"hi\r\n.\r\n"
    (eod,) = replies(conn, b"250 2.0.0 Ok: queued as 4AB2C3\r\n")
    assert (eod.command, eod.enhanced, eod.text) == (END_OF_DATA, "2.0.0", "250 2.0.0 Ok: queued as 4AB2C3")


@pytest.mark.parametrize(("line", "enhanced"), [
    (b"250 Ok\r\n", "2.0.0"),
    (b"550 5.7.1 Relay denied\r\n", "5.7.1"),
    (b"550 4.7.1 class mismatch\r\n", "5.0.0"),  # smtp_chat_resp(): a bogus detail becomes X.0.0
    (b"451 4.3.0\r\n", "4.3.0"),
    (b"450 4.2.0x no\r\n", "4.0.0"),
    (b"354 go ahead\r\n", ""),
])
def test_enhanced_status_as_postfix_reads_it(line: bytes, enhanced: str) -> None:
    conn = ClientConnection()
    (reply,) = replies(conn, line)
    assert reply.enhanced == enhanced


def test_enhanced_status_comes_from_the_last_line() -> None:
    conn = ClientConnection()
    (reply,) = replies(conn, b"421-4.7.0 first\r\n421 4.3.2 last\r\n")
    assert reply.enhanced == "4.3.2"


def test_garbage_lines_are_skipped_and_controls_made_printable() -> None:
    conn = ClientConnection()
    (reply,) = replies(conn, b"hello there\r\n220 mx\x07 ready\r\n")
    assert reply.lines == ("220 mx? ready",)


def test_eof_reports_missing_replies() -> None:
    conn = ClientConnection(expect_greeting=False)
    conn.mail("a@b")
    conn.rcpt("c@d")
    got = replies(conn, b"250 ok\r\n")
    assert len(got) == 1
    conn.receive_data(b"")
    assert conn.next_event() == Closed(pending=1)


def test_unexpected_reply_and_overlong_line_are_protocol_errors() -> None:
    conn = ClientConnection(expect_greeting=False)
    conn.receive_data(b"250 surprise\r\n")
    with pytest.raises(ClientProtocolError):
        conn.next_event()
    conn = ClientConnection()
    conn.receive_data(b"2" * 70000)
    with pytest.raises(ClientProtocolError):
        conn.next_event()


def test_starttls_discards_data_sent_before_the_handshake() -> None:
    conn = ClientConnection(expect_greeting=False)
    assert conn.starttls() == b"STARTTLS\r\n"
    # A man in the middle appends a plaintext reply after the 220 (CVE-2011-0411, client side).
    (reply,) = replies(conn, b"220 2.0.0 Ready to start TLS\r\n250-evil\r\n250 AUTH PLAIN\r\n")
    assert reply.command == STARTTLS
    assert conn.discarded_after_starttls == len(b"250-evil\r\n250 AUTH PLAIN\r\n")
    conn.tls_started()
    assert conn.tls_active and not conn.esmtp and conn.extensions.keywords == {}
    assert conn.next_event() is NEED_DATA


def test_helo_forgets_extensions() -> None:
    conn = ClientConnection(expect_greeting=False)
    conn.ehlo("c")
    replies(conn, b"250-x\r\n250 PIPELINING\r\n")
    assert conn.extensions.pipelining
    conn.helo("c")
    replies(conn, b"250 x\r\n")
    assert not conn.extensions.pipelining and not conn.esmtp


def test_mail_and_rcpt_parameters_in_postfix_order() -> None:
    conn = ClientConnection(expect_greeting=False)
    assert conn.mail("", size=10, body="7BIT", envid="a b+c=d", ret="HDRS", smtputf8=True) == (
        b"MAIL FROM:<> SIZE=10 BODY=7BIT ENVID=a+20b+2Bc+3Dd RET=HDRS SMTPUTF8\r\n")
    assert conn.rcpt("x@y", orcpt="rfc822;x+1@y", notify=("SUCCESS", "FAILURE")) == (
        b"RCPT TO:<x@y> ORCPT=rfc822;x+2B1@y NOTIFY=SUCCESS,FAILURE\r\n")
    assert conn.rcpt("\u00fc@y") == "RCPT TO:<\u00fc@y>\r\n".encode()
    with pytest.raises(ValueError):
        conn.mail("a@b\r\nRCPT TO:<x@y>")


@pytest.mark.parametrize(("content", "wire"), [
    (b"", b".\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"x\n.y\n..z\n", b"x\r\n..y\r\n...z\r\n.\r\n"),
    (b"bare\rcr\r\n", b"bare\rcr\r\n.\r\n"),
])
def test_dot_stuffing(content: bytes, wire: bytes) -> None:
    assert dot_stuff(content) == wire


def test_bdat_chunks() -> None:
    conn = ClientConnection(expect_greeting=False)
    assert conn.bdat(b"ab\r\n.\r\n", last=False) == b"BDAT 7\r\nab\r\n.\r\n"
    assert conn.bdat(b"", last=True) == b"BDAT 0 LAST\r\n"
    got = replies(conn, b"250 2.0.0 Ok: 7 bytes\r\n250 2.0.0 Ok: 7 bytes queued as Q\r\n")
    assert [r.command for r in got] == ["BDAT", END_OF_DATA]


def test_sasl_plain_and_login() -> None:
    plain = SaslClient("plain", "alice", "s3cret")
    assert base64.b64decode(plain.initial() or "") == b"\0alice\0s3cret"
    with pytest.raises(ClientProtocolError):
        plain.step(b"")
    login = SaslClient("LOGIN", "alice", "s3cret")
    assert login.initial() is None
    assert login.step(b"Username:") == base64.b64encode(b"alice").decode()
    assert login.step(b"Password:") == base64.b64encode(b"s3cret").decode()
    with pytest.raises(ClientProtocolError):
        login.step(b"again?")
    with pytest.raises(ValueError):
        SaslClient("CRAM-MD5", "a", "b")
    conn = ClientConnection(expect_greeting=False)
    assert conn.auth("PLAIN", "") == b"AUTH PLAIN =\r\n"
    assert conn.auth("LOGIN") == b"AUTH LOGIN\r\n"


def test_parse_ehlo_merges_repeated_keywords() -> None:
    reply = ServerReply(code=250, lines=("250-mx", "250-AUTH PLAIN", "250 AUTH=LOGIN"), command=EHLO)
    assert parse_ehlo(reply).keywords == {"AUTH": "PLAIN LOGIN"}


def test_xtext() -> None:
    assert xtext_encode("a=b c+\u00e9") == "a+3Db+20c+2B+C3+A9"


def test_engine_against_the_server_engine() -> None:
    """A whole pipelined transaction between the two engines, no sockets in between."""
    from postillion import replies as R
    from postillion.smtp import (
        DataStart,
        Helo,
        MailFrom,
        MessageComplete,
        RcptTo,
        ServerConnection,
        Settings,
    )
    from postillion.smtp._events import Sentinel

    server = ServerConnection(Settings(hostname="mx.test"))
    server.send(R.greeting("mx.test ESMTP Postfix"))
    client = ClientConnection()
    got: list[ServerReply] = []

    def pump(data: bytes) -> None:
        if data:  # b"" would be EOF
            server.receive_data(data)
        while not isinstance(ev := server.next_event(), Sentinel):
            if isinstance(ev, Helo):
                server.send(server.ehlo_reply())
            elif isinstance(ev, MailFrom):
                server.send(R.MAIL_OK)
            elif isinstance(ev, RcptTo):
                server.send(R.RCPT_OK)
            elif isinstance(ev, DataStart):
                server.send(R.DATA_GO)
            elif isinstance(ev, MessageComplete):
                assert ev.content == b".leading dot\r\n"
                server.send(R.queued("QID"))
        got.extend(replies(client, server.data_to_send()))

    pump(b"")
    pump(client.ehlo("client.test"))
    assert client.extensions.pipelining
    pump(client.mail("a@b.test", size=14) + client.rcpt("c@d.test") + client.data())
    pump(client.message(b".leading dot\r\n"))
    assert [(r.command, r.code) for r in got] == [
        (GREETING, 220), (EHLO, 250), (MAIL, 250), (RCPT, 250), (DATA, 354), (END_OF_DATA, 250)]
    assert got[-1].text == "250 2.0.0 Ok: queued as QID"
