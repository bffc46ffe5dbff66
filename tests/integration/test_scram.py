"""SCRAM-SHA-256/-1 (with and without channel binding) and CRAM-MD5 against the real server,
with scramp's client (an independent SCRAM implementation) over smtplib's AUTH commands, and
swaks for CRAM-MD5.

The server's smtpd.conf lists every mechanism and main.cf has postillion_cram_md5_enable = yes,
so `postillion user add` stores SCRAM keys and a CRAM-MD5 secret (carol); alice's CRAM-MD5
secret is removed afterwards, and "legacy" is a user from before SCRAM keys were stored.
"""

from __future__ import annotations

import base64
import smtplib
import sqlite3
import subprocess
from collections.abc import Iterator

import pytest
import scramp
import scramp.core
from harness import HOSTNAME, PASSWORD, Server, cleanup, client_context, make_server

from postillion.sasl.userdb import UserDB
from postillion.server.channel_binding import tls_exporter

MECH_LIST = ("SCRAM-SHA-256-PLUS SCRAM-SHA-256 SCRAM-SHA-1-PLUS SCRAM-SHA-1 CRAM-MD5 "
             "PLAIN LOGIN")
AUTH_TLS = f"AUTH {MECH_LIST}"
FAILED = "535 5.7.8 Error: authentication failed: authentication failure"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = make_server(main={"postillion_cram_md5_enable": "yes"})
    (srv.config_dir / "sasl" / "smtpd.conf").write_text(
        f"pwcheck_method: auxprop\nauxprop_plugin: postillion\nmech_list: {MECH_LIST}\n")
    for user in ("alice", "carol", "legacy"):
        srv.add_user(user)
    db_path = srv.config_dir / "data" / "users.sqlite"
    assert UserDB(db_path, readonly=True).cram_md5_secret("carol") is not None  # the CLI stored it
    with sqlite3.connect(db_path) as con:
        con.execute("DELETE FROM secrets WHERE name = 'legacy'")
        con.execute("DELETE FROM secrets WHERE name = 'alice' AND scheme = 'CRAM-MD5'")
    srv.start()
    try:
        yield srv
    finally:
        cleanup(srv)


def submission(server: Server) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=15)
    smtp.ehlo("client.example.test")
    smtp.starttls(context=client_context())
    smtp.ehlo("client.example.test")
    return smtp


def reply(answer: tuple[int, bytes]) -> str:
    return f"{answer[0]} {answer[1].decode()}"


def scram_auth(smtp: smtplib.SMTP, mech: str, user: str, password: str,
               channel_binding: tuple[str, object] | None = None) -> list[str]:
    """Run AUTH <mech> with scramp's client; the server's replies (334 texts decoded)."""
    client = scramp.ScramClient([mech], user, password, channel_binding=channel_binding)
    assert client.mechanism_name == mech
    first = base64.b64encode(client.get_client_first().encode()).decode()
    code, text = smtp.docmd("AUTH", f"{mech} {first}")
    seen = [f"{code} {text.decode()}"]
    if code != 334:
        return seen
    client.set_server_first(base64.b64decode(text).decode())
    code, text = smtp.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    if code != 334:
        return seen + [f"{code} {text.decode()}"]
    server_final = base64.b64decode(text).decode()
    client.set_server_final(server_final)  # raises unless the server proved it knows the keys
    code, text = smtp.docmd("")
    return seen + [f"334 {server_final[:2]}...", f"{code} {text.decode()}"]


@pytest.fixture
def exporter_in_scramp(monkeypatch: pytest.MonkeyPatch) -> None:
    # scramp 1.5 knows the name tls-exporter but refuses it; with the data given as bytes
    # its client needs nothing else.
    monkeypatch.setattr(scramp.core.CbName, "SUPPORTED_TYPES",
                        scramp.core.CbName.SUPPORTED_TYPES | {"tls-exporter"})
    monkeypatch.setattr(scramp.core.CbName, "UNSUPPORTED_TYPES", frozenset())


def test_ehlo_lists_mech_list_order_only_after_starttls(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=15) as smtp:
        code, text = smtp.ehlo("client.example.test")
        assert "AUTH" not in text.decode()
        smtp.starttls(context=client_context())
        code, text = smtp.ehlo("client.example.test")
        assert AUTH_TLS in text.decode().split("\n")


def test_plus_not_offered_without_tls(server: Server) -> None:
    # smtpd_tls_auth_only = no on port 25: AUTH in the clear, but nothing to bind to
    server.settle()
    smtp = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=15)
    try:
        code, text = smtp.ehlo("client.example.test")
        auth = [line for line in text.decode().split("\n") if line.startswith("AUTH")]
        if auth:  # whether port 25 offers AUTH at all is the service's choice
            assert "-PLUS" not in auth[0]
            assert reply(smtp.docmd("AUTH", "SCRAM-SHA-256-PLUS")) == (
                "535 5.7.8 Error: authentication failed: no mechanism available")
    finally:
        smtp.close()


def test_scram_session_log(server: Server) -> None:
    server.settle()
    start = server.mark()
    with submission(server) as smtp:
        scram_auth(smtp, "SCRAM-SHA-256", "alice", PASSWORD)
    assert server.wait_for_disconnect(start, "postfix/submission") == (
        "disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 auth=1 quit=1 commands=5")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_replies(server: Server, mech: str) -> None:
    with submission(server) as smtp:
        seen = scram_auth(smtp, mech, "alice", PASSWORD)
    assert seen[0].startswith("334 ") and seen[1:] == [
        "334 v=...", "235 2.7.0 Authentication successful"]


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"])
def test_scram_plus_tls_server_end_point(server: Server, mech: str) -> None:
    with submission(server) as smtp:
        # scramp hashes the certificate it was shown (asn1crypto), independently of the server
        seen = scram_auth(smtp, mech, "alice", PASSWORD,
                          channel_binding=("tls-server-end-point", smtp.sock))
    assert seen[1:] == ["334 v=...", "235 2.7.0 Authentication successful"]


def test_scram_plus_tls_exporter(server: Server, exporter_in_scramp: None) -> None:
    with submission(server) as smtp:
        data = tls_exporter(smtp.sock)  # the client's own end of the same TLS 1.3 session
        assert data is not None and len(data) == 32
        seen = scram_auth(smtp, "SCRAM-SHA-256-PLUS", "alice", PASSWORD,
                          channel_binding=("tls-exporter", data))
    assert seen[1:] == ["334 v=...", "235 2.7.0 Authentication successful"]


def test_scram_plus_wrong_binding_data(server: Server, exporter_in_scramp: None) -> None:
    with submission(server) as smtp:
        seen = scram_auth(smtp, "SCRAM-SHA-256-PLUS", "alice", PASSWORD,
                          channel_binding=("tls-exporter", b"\0" * 32))
    assert seen[1:] == ["535 5.7.8 Error: authentication failed: bad protocol / cancel"]


def test_scram_downgrade_y_flag_refused(server: Server) -> None:
    with submission(server) as smtp:
        # scramp sends "y": it can bind but picked the non-PLUS name while we offer -PLUS
        seen = scram_auth(smtp, "SCRAM-SHA-256", "alice", PASSWORD,
                          channel_binding=("tls-server-end-point", smtp.sock))
    assert seen == ["535 5.7.8 Error: authentication failed: bad protocol / cancel"]


def test_scram_wrong_password(server: Server) -> None:
    start = server.mark()
    with submission(server) as smtp:
        seen = scram_auth(smtp, "SCRAM-SHA-256", "alice", "wrong")
    assert seen[1:] == [FAILED]
    server.wait_for_log("SASL SCRAM-SHA-256 authentication failed", start=start)
    assert ("postfix/submission/smtpd: warning: localhost[127.0.0.1]: SASL SCRAM-SHA-256 "
            "authentication failed: authentication failure, sasl_username=alice"
            ) in server.log_lines(start)


def test_scram_unknown_user_looks_like_wrong_password(server: Server) -> None:
    with submission(server) as smtp:
        seen = scram_auth(smtp, "SCRAM-SHA-256", "nobody", "x")
    assert seen[0].startswith("334 ") and seen[1:] == [FAILED]


def test_scram_user_without_keys(server: Server) -> None:
    start = server.mark()
    with submission(server) as smtp:
        seen = scram_auth(smtp, "SCRAM-SHA-256", "legacy", PASSWORD)
        assert seen[1:] == [FAILED]
        # PLAIN still works for that user
        plain = base64.b64encode(f"\0legacy\0{PASSWORD}".encode()).decode()
        assert reply(smtp.docmd("AUTH", f"PLAIN {plain}")) == "235 2.7.0 Authentication successful"
    server.wait_for_log("sasl_username=legacy", start=start)
    lines = server.log_lines(start)
    assert (
        "postfix/submission/smtpd: warning: SASL authentication failure: no SCRAM-SHA-256 secret "
        "for user legacy (its password was set before SCRAM-SHA-256 was stored; set it again "
        "with: postillion user passwd legacy)"
    ) in lines


def test_cram_md5_with_smtplib(server: Server) -> None:
    with submission(server) as smtp:
        smtp.user, smtp.password = "carol", PASSWORD
        assert reply(smtp.auth("CRAM-MD5", smtp.auth_cram_md5)) == (
            "235 2.7.0 Authentication successful")
    with submission(server) as smtp:
        # alice has no CRAM-MD5 secret (removed in the fixture)
        smtp.user, smtp.password = "alice", PASSWORD
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.auth("CRAM-MD5", smtp.auth_cram_md5)
        assert (info.value.smtp_code, info.value.smtp_error.decode()) == (
            535, "5.7.8 Error: authentication failed: authentication failure")


@pytest.mark.interop
def test_cram_md5_with_swaks(server: Server) -> None:
    from conftest import need

    need("swaks")
    proc = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.ports['submission']}", "--tls",
         "--auth", "CRAM-MD5", "--auth-user", "carol", "--auth-password", PASSWORD,
         "--quit-after", "AUTH", "--timeout", "15"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<~  235 2.7.0 Authentication successful" in proc.stdout


def test_hostname_in_cram_challenge(server: Server) -> None:
    with submission(server) as smtp:
        code, text = smtp.docmd("AUTH", "CRAM-MD5")
        assert code == 334
        challenge = base64.b64decode(text).decode()
        assert challenge.startswith("<") and challenge.endswith(f"@{HOSTNAME}>")
        assert reply(smtp.docmd("*")) == "501 5.7.0 Authentication aborted"


@pytest.mark.interop
@pytest.mark.parametrize("mech, extra, gs2", [
    ("SCRAM-SHA-256-PLUS", [], "p=tls-exporter,,"),  # GnuTLS computes RFC 9266 itself
    ("SCRAM-SHA-256", ["--no-cb"], "n,,"),
    ("SCRAM-SHA-1", ["--no-cb"], "n,,"),
])
def test_gnu_sasl_client(server: Server, mech: str, extra: list[str], gs2: str) -> None:
    """GNU SASL's gsasl (Debian package gsasl; GnuTLS, not OpenSSL) as an independent client."""
    from conftest import need

    need("gsasl")
    proc = subprocess.run(
        ["gsasl", "--smtp", "--starttls", "--verbose", "-m", mech, "-a", "alice", "-p", PASSWORD,
         *extra, "--x509-ca-file=", "127.0.0.1", str(server.ports["submission"])],
        capture_output=True, text=True, timeout=60, input="", check=False)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = lines[lines.index(f"AUTH {mech}") + 2]  # after the empty "334 " challenge
    assert base64.b64decode(first).decode().startswith(gs2 + "n=alice,r=")
    assert "235 2.7.0 Authentication successful" in lines
