"""AuthExchange: byte-exact replies and log texts for every way an AUTH command ends.

The expected lines are Postfix 3.7 + Cyrus SASL 2.1.28, observed live (docs reference smtp-auth.md).
"""

from __future__ import annotations

import base64

import pytest

from postillion.sasl.exchange import AuthExchange, Challenge, Outcome, Verify

OFFERED = ["PLAIN", "LOGIN"]
USERS = {"alice": "secret"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(command: str, responses: list[str], *, offered: list[str] = OFFERED,
        backend_down: str | None = None, limit: int = 12288) -> tuple[list[str], Outcome]:
    """Drive one AUTH command; returns the server lines sent and the final Outcome.

    ``command`` is the AUTH line's arguments ("PLAIN AGFs..."), ``responses`` the client's lines.
    """
    args = command.split(" ")
    ex = AuthExchange(args[0], offered, response_limit=limit)
    action = ex.start(args[1] if len(args) > 1 else None)
    sent: list[str] = []
    pending = list(responses)
    while True:
        if isinstance(action, Challenge):
            sent.extend(action.reply.lines())
            action = ex.respond(pending.pop(0))
        elif isinstance(action, Verify):
            if backend_down is not None:
                action = ex.backend_failed(backend_down)
            else:
                action = ex.verified(USERS.get(action.authcid) == action.password)
        else:
            assert isinstance(action, Outcome)
            sent.extend(action.reply.lines())
            assert not pending, "client lines left over"
            return sent, action


def test_plain_initial_response_success() -> None:
    sent, out = run("PLAIN AGFsaWNlAHNlY3JldA==", [])
    assert sent == ["235 2.7.0 Authentication successful"]
    assert (out.success, out.username, out.log_warning, out.method) == (True, "alice", None, "PLAIN")


def test_plain_wrong_password() -> None:
    sent, out = run("PLAIN AGFsaWNlAHdyb25n", [])
    assert sent == ["535 5.7.8 Error: authentication failed: authentication failure"]
    assert out.log_warning == (
        "SASL PLAIN authentication failed: authentication failure, sasl_username=alice"
    )
    assert (out.success, out.username, out.backend_detail) == (False, "alice", None)


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    sent, out = run("PLAIN", ["AGFsaWNlAHNlY3JldA=="])
    assert sent == ["334 ", "235 2.7.0 Authentication successful"]
    assert out.reply.encode() == b"235 2.7.0 Authentication successful\r\n"


def test_empty_challenge_is_334_space_on_the_wire() -> None:
    action = AuthExchange("PLAIN", OFFERED).start(None)
    assert action == Challenge(text="")
    assert action.reply.encode() == b"334 \r\n"


@pytest.mark.parametrize("mechanism", ["FOO", "CRAM-MD5", "ANONYMOUS"])
def test_unknown_mechanism(mechanism: str) -> None:
    sent, out = run(f"{mechanism} AGFsaWNlAHNlY3JldA==", [])
    assert sent == ["535 5.7.8 Error: authentication failed: no mechanism available"]
    assert out.log_warning == (
        f"SASL {mechanism} authentication failed: no mechanism available, "
        "sasl_username=(unavailable)"
    )
    assert out.username is None


def test_mechanism_we_have_but_did_not_offer_is_no_mechanism() -> None:
    sent, out = run("PLAIN AGFsaWNlAHNlY3JldA==", [], offered=["LOGIN"])
    assert sent == ["535 5.7.8 Error: authentication failed: no mechanism available"]


def test_mechanism_name_is_case_insensitive_and_logged_as_sent() -> None:
    sent, out = run("plain AGFsaWNlAHdyb25n", [])
    assert sent == ["535 5.7.8 Error: authentication failed: authentication failure"]
    assert out.log_warning == (
        "SASL plain authentication failed: authentication failure, sasl_username=alice"
    )


@pytest.mark.parametrize("command, responses", [
    ("PLAIN !!!notb64", []),
    ("PLAIN AGFsaWNlAHNlY3JldA", []),          # padding missing
    ("PLAIN", ["!!!notb64"]),
    ("PLAIN", ["*junk"]),
    ("LOGIN", ["YWxp Y2U="]),
])
def test_bad_base64(command: str, responses: list[str]) -> None:
    sent, out = run(command, responses)
    assert sent[-1] == "535 5.7.8 Error: authentication failed: bad protocol / cancel"
    assert out.log_warning == (
        f"SASL {command.split()[0]} authentication failed: bad protocol / cancel, "
        "sasl_username=(unavailable)"
    )


@pytest.mark.parametrize("command, responses, expected_lines", [
    ("PLAIN =", [], ["535 5.7.8 Error: authentication failed: another step is needed in authentication"]),
    ("PLAIN", ["="], ["334 ", "535 5.7.8 Error: authentication failed: another step is needed in authentication"]),
    ("PLAIN", [""], ["334 ", "535 5.7.8 Error: authentication failed: another step is needed in authentication"]),
])
def test_empty_plain_message(command: str, responses: list[str], expected_lines: list[str]) -> None:
    sent, out = run(command, responses)
    assert sent == expected_lines
    assert out.log_warning == (
        "SASL PLAIN authentication failed: another step is needed in authentication, "
        "sasl_username=(unavailable)"
    )


@pytest.mark.parametrize("command, responses, expected_lines", [
    ("LOGIN", ["*"], ["334 VXNlcm5hbWU6", "501 5.7.0 Authentication aborted"]),
    ("LOGIN", ["YWxpY2U=", "*"], ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "501 5.7.0 Authentication aborted"]),
    ("PLAIN", ["*"], ["334 ", "501 5.7.0 Authentication aborted"]),
])
def test_cancel(command: str, responses: list[str], expected_lines: list[str]) -> None:
    sent, out = run(command, responses)
    assert sent == expected_lines
    assert out.log_warning == f"SASL {command} authentication aborted"
    assert out.success is False


def test_backend_down_is_454_and_detail_kept_for_the_log() -> None:
    detail = "cannot connect to saslauthd server /x/mux: No such file or directory"
    sent, out = run("PLAIN AGFsaWNlAHNlY3JldA==", [], backend_down=detail)
    assert sent == ["454 4.7.0 Temporary authentication failure: generic failure"]
    assert out.backend_detail == detail
    assert out.log_warning == (
        "SASL PLAIN authentication failed: generic failure, sasl_username=alice"
    )
    assert out.reply.temporary


def test_response_limit() -> None:
    sent, out = run("PLAIN", ["A" * 13], limit=12)
    assert sent == ["334 ", "500 5.5.6 SASL response limit exceeded"]
    assert out.log_warning is None
    # exactly at the limit is still read (and here fails as what it is: bad base64 content)
    sent, out = run("PLAIN", ["AAAAAAAAAAAA"], limit=12)
    assert sent[-1] == "535 5.7.8 Error: authentication failed: bad protocol / cancel"


def test_response_limit_default_is_smtpd_sasl_response_limit() -> None:
    sent, _ = run("LOGIN", ["A" * 12289])
    assert sent == ["334 VXNlcm5hbWU6", "500 5.5.6 SASL response limit exceeded"]
    sent, _ = run("LOGIN", ["*" * 12288])
    assert sent[-1] == "535 5.7.8 Error: authentication failed: bad protocol / cancel"


def test_login_two_prompts_then_success() -> None:
    sent, out = run("LOGIN", ["YWxpY2U=", "c2VjcmV0"])
    assert sent == ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]
    assert out.username == "alice"


def test_login_initial_response_skips_username_prompt() -> None:
    sent, out = run("LOGIN YWxpY2U=", ["c2VjcmV0"])
    assert sent == ["334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]


def test_login_wrong_password() -> None:
    sent, out = run("LOGIN", ["YWxpY2U=", "d3Jvbmc="])
    assert sent == [
        "334 VXNlcm5hbWU6",
        "334 UGFzc3dvcmQ6",
        "535 5.7.8 Error: authentication failed: authentication failure",
    ]
    assert out.log_warning == (
        "SASL LOGIN authentication failed: authentication failure, sasl_username=alice"
    )


def test_login_empty_initial_response_gets_the_username_prompt() -> None:
    sent, out = run("LOGIN =", ["YWxpY2U=", "c2VjcmV0"])
    assert sent == ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]


def test_login_empty_username_fails_without_verifying() -> None:
    sent, out = run("LOGIN", ["", b64(b"secret")])
    assert sent == ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6",
                    "535 5.7.8 Error: authentication failed: authentication failure"]
    assert out.log_warning == (
        "SASL LOGIN authentication failed: authentication failure, sasl_username=(unavailable)")


def test_login_bad_password_encoding_names_the_user() -> None:
    sent, out = run("LOGIN YWxpY2U=", [b64(b"\xff\xfe")])
    assert sent[-1] == "535 5.7.8 Error: authentication failed: bad protocol / cancel"
    assert out.log_warning == (
        "SASL LOGIN authentication failed: bad protocol / cancel, sasl_username=alice"
    )


def test_login_field_limit_is_cyrus_1024() -> None:
    sent, _ = run("LOGIN", [b64(b"a" * 1025)])
    assert sent[-1] == "535 5.7.8 Error: authentication failed: bad protocol / cancel"
    ex = AuthExchange("LOGIN", OFFERED)
    ex.start(b64(b"a" * 1024))
    assert isinstance(ex.respond(b64(b"pw")), Verify)


def test_live_transcript_login_sequence() -> None:
    """The Postfix 3.7.11 live transcript (smtp-auth.md §4), AUTH by AUTH."""
    assert run("LOGIN", ["*"])[0] == ["334 VXNlcm5hbWU6", "501 5.7.0 Authentication aborted"]
    assert run("LOGIN", ["YWxpY2U=", "d3Jvbmc="])[0] == [
        "334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6",
        "535 5.7.8 Error: authentication failed: authentication failure"]
    assert run("LOGIN YWxpY2U=", ["c2VjcmV0"])[0] == [
        "334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]


@pytest.mark.parametrize("message, expected_authzid", [
    (b"\0alice\0secret", ""),
    (b"alice\0alice\0secret", "alice"),
])
def test_plain_authzid_empty_or_same_is_accepted(message: bytes, expected_authzid: str) -> None:
    action = AuthExchange("PLAIN", OFFERED).start(b64(message))
    assert action == Verify(authcid="alice", authzid=expected_authzid, password="secret")


def test_plain_other_authzid_is_authentication_failure_without_verifying() -> None:
    action = AuthExchange("PLAIN", OFFERED).start(b64(b"bob\0alice\0secret"))
    assert isinstance(action, Outcome)
    assert action.reply.lines() == [
        "535 5.7.8 Error: authentication failed: authentication failure"]
    assert action.log_warning == (
        "SASL PLAIN authentication failed: authentication failure, sasl_username=alice"
    )


@pytest.mark.parametrize("message", [
    b"alice\0secret",                 # one NUL
    b"\0alice\0sec\0ret",             # three NULs
    b"\0alice\xff\0secret",           # not UTF-8
    b"no nul at all",
])
def test_plain_malformed_is_bad_protocol(message: bytes) -> None:
    sent, out = run(f"PLAIN {b64(message)}", [])
    assert sent == ["535 5.7.8 Error: authentication failed: bad protocol / cancel"]
    assert out.log_warning == (
        "SASL PLAIN authentication failed: bad protocol / cancel, sasl_username=(unavailable)"
    )


def test_plain_empty_authcid_is_authentication_failure() -> None:
    sent, out = run("PLAIN " + b64(b"\0\0secret"), [])
    assert sent == ["535 5.7.8 Error: authentication failed: authentication failure"]
    assert out.log_warning.endswith("sasl_username=(unavailable)")


def test_plain_utf8_credentials() -> None:
    action = AuthExchange("PLAIN", OFFERED).start(b64("\0jürgen\0pässwört".encode()))
    assert action == Verify(authcid="jürgen", authzid="", password="pässwört")


def test_log_line_escapes_control_characters_in_client_text() -> None:
    _, out = run("PLAIN " + b64(b"\0al\rice\nx\0wrong"), [])
    assert out.log_warning == (
        "SASL PLAIN authentication failed: authentication failure, sasl_username=al?ice?x"
    )
    _, out = run("FO\x1bO", [])
    assert out.log_warning == (
        "SASL FO?O authentication failed: no mechanism available, sasl_username=(unavailable)"
    )


def test_password_never_in_repr_or_log() -> None:
    ex = AuthExchange("PLAIN", OFFERED)
    action = ex.start(b64(b"\0alice\0hunter2"))
    assert isinstance(action, Verify)
    assert "hunter2" not in repr(action)
    for out in (ex.verified(False),):
        assert "hunter2" not in repr(out)
        assert "hunter2" not in (out.log_warning or "")


def test_calls_out_of_order_are_programming_errors() -> None:
    ex = AuthExchange("PLAIN", OFFERED)
    with pytest.raises(RuntimeError):
        ex.respond("x")
    ex.start("AGFsaWNlAHNlY3JldA==")
    with pytest.raises(RuntimeError):
        ex.start(None)
    ex.verified(True)
    with pytest.raises(RuntimeError):
        ex.verified(True)
    with pytest.raises(RuntimeError):
        ex.backend_failed("x")
