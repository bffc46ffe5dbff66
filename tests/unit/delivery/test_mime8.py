"""The 8BITMIME downgrade (Postfix mime_state with MIME_OPT_DOWNGRADE): exact output bytes,
and a round trip through the stdlib email package back to the original text."""

from __future__ import annotations

import email
import email.policy

from postillion.delivery.mime8 import downgrade, qp_encode_line

TEXT = "Grüße aus Köln = 100 % schön \t"


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_qp_line_rules() -> None:
    assert qp_encode_line("é=\x01\tx ".encode()) == [b"=C3=A9=3D=01\tx=20"]
    assert qp_encode_line(b"a\t") == [b"a=09"]
    # A soft break once the output is past 72 columns, as mime_state_downgrade() does.
    assert qp_encode_line(b"x" * 80) == [b"x" * 73 + b"=", b"x" * 7]
    assert qp_encode_line(b"") == [b""]


def test_single_part_8bit_becomes_quoted_printable() -> None:
    msg = ("Subject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\nX-After: 1\r\n\r\n" + TEXT + "\r\n.\r\n").encode()
    out, changed = downgrade(msg)
    assert changed
    assert out == ("Subject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\nX-After: 1\r\n"
                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                   "Gr=C3=BC=C3=9Fe aus K=C3=B6ln =3D 100 % sch=C3=B6n =09\r\n.\r\n").encode()
    part = parse(out)
    assert part.get_payload(decode=True) == (TEXT + "\r\n.\r\n").encode()
    assert part["Subject"] == "Grüße"  # 8-bit headers stay as they are


def test_multipart_and_nested_message() -> None:
    msg = ("From: a@x.test\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b1\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + TEXT + "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii = as is\r\n"
           "--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: binary\r\n\r\n"
           "über\r\n--b1--\r\nepilogue\r\n").encode()
    out, changed = downgrade(msg)
    assert changed and out.isascii()  # no 8-bit header here, so nothing 8-bit is left
    lines = out.split(b"\r\n")
    assert lines[:5] == [b"From: a@x.test", b"MIME-Version: 1.0",
                         b'Content-Type: multipart/mixed; boundary="b1"', b"Content-Transfer-Encoding: 7bit", b""]
    assert b"plain ascii = as is" in lines  # a 7bit part is left alone
    assert b"Content-Transfer-Encoding: 7bit" in lines[lines.index(b"Content-Type: message/rfc822"):]
    top = parse(out)
    parts = list(top.walk())
    assert [p.get_content_type() for p in parts] == [
        "multipart/mixed", "text/plain", "text/plain", "message/rfc822", "text/plain"]
    assert parts[1].get_payload(decode=True) == TEXT.encode()
    assert parts[1]["Content-Transfer-Encoding"] == "quoted-printable"
    assert parts[2].get_payload(decode=True) == b"plain ascii = as is"
    assert parts[4].get_payload(decode=True) == "über".encode()


def test_nothing_declared_8bit_is_left_byte_for_byte() -> None:
    msg = "Subject: x\n\nundeclared 8-bit: ü\n".encode()
    assert downgrade(msg) == (msg, False)
    qp = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n"
    assert downgrade(qp) == (qp, False)


def test_missing_blank_line_after_part_headers() -> None:
    # Postfix's mime_state supplies the blank line when a body starts without one.
    msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: 8bit\r\n"
           b"\xc3\xbc\r\n--b--\r\n")
    out, changed = downgrade(msg)
    assert changed
    assert out == (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--b--\r\n")
