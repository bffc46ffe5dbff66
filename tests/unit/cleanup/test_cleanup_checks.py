"""header_checks / body_checks actions on messages, with the log lines cleanup writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from postillion.cleanup.checks import (
    ContentChecks,
    Disposition,
    MessageContext,
    inspect_message,
)
from postillion.cleanup.content import added_recipients, content_checks
from postillion.config import Params
from postillion.tables import open_table

CTX = MessageContext(queue_id="4ABCDEF", origin="localhost[127.0.0.1]", sender="a@example.org",
                     recipient="b@example.org", proto="ESMTP", helo="client.example")
TAIL = "from localhost[127.0.0.1]; from=<a@example.org> to=<b@example.org> proto=ESMTP helo=<client.example>"
MSG = (b"Subject: hello spam\r\nFrom: a@example.org\r\nX-Folded: one\r\n\ttwo\r\n\r\n"
       b"body line\r\nbad word here\r\n")


def checks(header: str = "", body: str = "", **kw: object) -> ContentChecks:
    h = open_table(f"pcre:{{ {header} }}", Path(".")).match if header else None
    b = open_table(f"pcre:{{ {body} }}", Path(".")).match if body else None
    return ContentChecks(header_checks=h, mime_header_checks=h, nested_header_checks=h,
                         body_checks=b, **kw)  # type: ignore[arg-type]


def test_reject_default_text() -> None:
    r = inspect_message(MSG, checks("{/^Subject:.*spam/ REJECT}"), CTX)
    assert r.disposition is Disposition.REJECT
    assert str(r.reply) == "550 5.7.1 message content rejected"
    assert r.log == (f"4ABCDEF: reject: header Subject: hello spam {TAIL}: 5.7.1 message content rejected",)


@pytest.mark.parametrize(("action", "reply"), [
    ("REJECT go away", "550 5.7.1 go away"),
    ("REJECT 5.7.0 own code", "550 5.7.0 own code"),
    ("REJECT 4.7.1 try later", "451 4.7.1 try later"),
])
def test_reject_text(action: str, reply: str) -> None:
    r = inspect_message(MSG, checks(f"{{/^Subject:/ {action}}}"), CTX)
    assert str(r.reply) == reply


def test_body_reject_stops_inspection() -> None:
    r = inspect_message(MSG, checks("{/^Subject:/ WARN}", "{/bad (word)/ REJECT no $1}"), CTX)
    assert r.log == (
        f"4ABCDEF: warning: header Subject: hello spam {TAIL}",
        f"4ABCDEF: reject: body bad word here {TAIL}: 5.7.1 no word",
    )
    assert str(r.reply) == "550 5.7.1 no word"


def test_folded_header_matched_whole_and_logged_with_question_marks() -> None:
    r = inspect_message(MSG, checks("{/^X-Folded: one\\n\\ttwo$/ HOLD held it}"), CTX)
    assert r.disposition is Disposition.HOLD
    assert r.log == (f"4ABCDEF: hold: header X-Folded: one??two {TAIL}: held it",)
    assert r.content == MSG


def test_discard_and_info() -> None:
    r = inspect_message(MSG, checks("{/^From:/ INFO seen}, {/^Subject:/ DISCARD}"), CTX)
    assert r.disposition is Disposition.DISCARD
    assert r.log == (f"4ABCDEF: discard: header Subject: hello spam {TAIL}",)


def test_prepend_replace_ignore() -> None:
    r = inspect_message(MSG, checks("{/^Subject: (.*)/ REPLACE Subject: [SPAM] $1}, "
                                    "{/^From:/ PREPEND X-Seen: yes}, {/^X-Folded:/ IGNORE}",
                                    "{/^body/ REPLACE new body}"), CTX)
    assert r.content == (b"Subject: [SPAM] hello spam\r\nX-Seen: yes\r\nFrom: a@example.org\r\n\r\n"
                         b"new body\r\nbad word here\r\n")
    assert r.log == (
        f"4ABCDEF: replace: header Subject: hello spam {TAIL}: Subject: [SPAM] hello spam",
        f"4ABCDEF: prepend: header From: a@example.org {TAIL}: X-Seen: yes",
        f"4ABCDEF: replace: body body line {TAIL}: new body",
    )
    assert r.disposition is Disposition.ACCEPT


def test_redirect_bcc_filter_unknown() -> None:
    r = inspect_message(MSG, checks("{/^Subject:/ BCC copy@example.net}, {/^From:/ FILTER smtp:[x]}, "
                                    "{/^X-Folded/ FROBNICATE}", "{/^body/ REDIRECT r@example.net}"), CTX)
    assert r.redirect == "r@example.net"
    assert r.bcc == ("copy@example.net",)
    assert r.filter == "smtp:[x]"
    assert "warning: unknown command in header_checks map: FROBNICATE" in r.log
    assert r.log[-1] == f"4ABCDEF: redirect: body body line {TAIL}: r@example.net"


def test_bad_replace_header_text_warns_and_keeps_line() -> None:
    r = inspect_message(MSG, checks("{/^Subject:/ REPLACE not a header}"), CTX)
    assert r.content == MSG
    assert r.log == ('warning: bad REPLACE header text "not a header" in header_checks map -- '
                     'need "headername: headervalue"',)


MIME = (b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n"
        b"preamble\r\n--BB\r\nContent-Type: text/plain\r\n\r\npart one\r\n--BB\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--BB--\r\nepilogue\r\n")


def test_mime_classes() -> None:
    seen: dict[str, list[str]] = {"header_checks": [], "mime_header_checks": [],
                                  "nested_header_checks": [], "body_checks": []}

    def rec(name: str):
        def f(line: str) -> None:
            seen[name].append(line)
        return f

    c = ContentChecks(header_checks=rec("header_checks"), mime_header_checks=rec("mime_header_checks"),
                      nested_header_checks=rec("nested_header_checks"), body_checks=rec("body_checks"))
    r = inspect_message(MIME, c, CTX)
    assert r.content == MIME
    assert seen == {
        "header_checks": ["Subject: x"],
        "mime_header_checks": ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="BB"',
                               "Content-Type: text/plain", "Content-Type: message/rfc822"],
        "nested_header_checks": ["Subject: inner"],
        "body_checks": ["preamble", "--BB", "part one", "--BB", "inner body", "--BB--", "epilogue"],
    }


def test_body_checks_size_limit_per_segment() -> None:
    body = b"Subject: x\r\n\r\n" + b"a" * 10 + b"\r\nfind me\r\n"
    assert inspect_message(body, checks(body="{/find/ REJECT}", body_checks_size_limit=5), CTX).reply is None
    assert inspect_message(body, checks(body="{/find/ REJECT}", body_checks_size_limit=0), CTX).reply is not None


def test_disable_mime_input_processing_sends_mime_headers_to_header_checks() -> None:
    seen: list[str] = []
    c = ContentChecks(header_checks=lambda s: seen.append(s), disable_mime_input_processing=True)
    inspect_message(MIME, c, CTX)
    assert seen == ["Subject: x", "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="BB"']


def test_no_checks_is_identity() -> None:
    r = inspect_message(MSG, ContentChecks(), CTX)
    assert (r.content, r.disposition, r.log) == (MSG, Disposition.ACCEPT, ())


def test_content_checks_from_params_opened_once(tmp_path: Path) -> None:
    (tmp_path / "hc").write_text("/^Subject:/ REJECT\n")
    p = Params.from_dict({"header_checks": "regexp:hc"}, config_dir=tmp_path)
    a, b = content_checks(p), content_checks(p)
    assert a is b
    assert a.header_checks is a.mime_header_checks is a.nested_header_checks
    assert a.body_checks is None


def test_always_bcc_added_once() -> None:
    assert added_recipients(["b@example.org"], ["x@example.net"], "B@example.org") == ["x@example.net"]
    assert added_recipients(["b@example.org"], [], "archive@example.net") == ["archive@example.net"]
    assert added_recipients(["b@example.org"], [], "") == []


def test_boundary_matched_by_its_length_as_mime_state() -> None:
    # mime_state.c compares strlen(boundary) bytes after "--": "--BBx" starts a part (its
    # headers go to mime_header_checks), "--BB--x" closes the multipart.
    msg = (b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BBx\r\nX-Part: 1\r\n\r\nbody\r\n"
           b"--BB--junk\r\nepilogue\r\n")
    seen: dict[str, list[str]] = {"mime": [], "body": []}
    c = ContentChecks(mime_header_checks=lambda s: seen["mime"].append(s),
                      body_checks=lambda s: seen["body"].append(s))
    assert inspect_message(msg, c, CTX).content == msg
    assert seen == {"mime": ["Content-Type: multipart/mixed; boundary=BB", "X-Part: 1"],
                    "body": ["--BBx", "body", "--BB--junk", "epilogue"]}
