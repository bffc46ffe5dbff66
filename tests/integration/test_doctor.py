"""`postillion doctor` against real running servers (embedded user store), each one broken the
way an admin breaks it: not started, a key that does not fit, an expired certificate, AUTH in
clear text, an open relay, a sender login map without its restriction.

Every test compares the exact checklist lines (pids, dates and temp paths filled in).
The saslauthd diagnoses are in tests/interop/test_doctor_saslauthd.py.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from harness import HOSTNAME, PASSWORD, Server, cleanup, make_server, postillion

SELF_SIGNED = ("✔ certificate chain (self-signed: fine for the certificate postillion init made, "
               "but mail clients warn until the user trusts it)")
CLIENT_REJECTED = "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied"


def doctor(server: Server, *args: str, user: str | None = "alice",
           password: str = PASSWORD) -> tuple[int, list[str]]:
    creds = ["--user", user, "--password-stdin"] if user else []
    done = postillion(server.config_dir, "doctor", *creds, *args, input=password + "\n", check=False)
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


def green_lines(server: Server, service: str = "submission", how: str = "STARTTLS") -> list[str]:
    etc = server.config_dir
    return [
        f"✔ port 127.0.0.1:{server.ports[service]} (postillion, pid {server.proc.pid})",
        f"✔ TLS handshake ({how}, TLSv1.3 with cipher *)",
        "✔ certificate expiry (valid until *)",
        f"✔ certificate host name ({HOSTNAME})",
        SELF_SIGNED,
        f"✔ certificate and key ({etc}/tls/cert.pem and {etc}/tls/key.pem)",
        "✔ no AUTH before TLS (EHLO in clear text does not offer AUTH)" if how == "STARTTLS"
        else "✔ no AUTH before TLS (implicit TLS: nothing is sent in clear text)",
        f"✔ SASL backend (postillion user database {etc}/data/users.sqlite, from {etc}/sasl/smtpd.conf)",
        "✔ user database (1 user)",
        "✔ user database password check (alice)",
        "✔ mech_list (SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN)",
        "✔ AUTH PLAIN over TLS (235 2.7.0 Authentication successful)",
        "✔ AUTH LOGIN over TLS (235 2.7.0 Authentication successful)",
        f"✔ relay without AUTH refused ({CLIENT_REJECTED})",
    ]


def assert_lines(got: list[str], expected: list[str]) -> None:
    """Exact lines; a ``*`` in an expected line stands for any text (cipher names, dates)."""
    assert len(got) == len(expected), "\n".join(got)
    for line, want in zip(got, expected):
        pattern = ".*".join(re.escape(part) for part in want.split("*"))
        assert re.fullmatch(pattern, line), f"{line!r} != {want!r}"


@pytest.fixture
def server() -> Iterator[Server]:
    s = make_server()
    s.add_user("alice")
    try:
        yield s
    finally:
        cleanup(s)


def test_all_green_submission_and_smtps(server: Server) -> None:
    server.start()
    code, lines = doctor(server)
    assert code == 0
    assert_lines(lines, green_lines(server))
    code, lines = doctor(server, "--service", "smtps")
    assert code == 0
    assert_lines(lines, green_lines(server, "smtps", "implicit TLS"))


def test_json(server: Server) -> None:
    server.start()
    code, lines = doctor(server, "--json")
    report = json.loads("\n".join(lines))
    assert (code, report["ok"], report["skipped"]) == (0, True, [])
    assert [s["name"] for s in report["steps"]] == [
        f"port 127.0.0.1:{server.ports['submission']}", "TLS handshake", "certificate expiry",
        "certificate host name", "certificate chain", "certificate and key", "no AUTH before TLS",
        "SASL backend", "user database", "user database password check", "mech_list",
        "AUTH PLAIN over TLS", "AUTH LOGIN over TLS", "relay without AUTH refused"]
    assert report["steps"][0] == {"name": f"port 127.0.0.1:{server.ports['submission']}", "ok": True,
                                  "cause": None, "fix": None,
                                  "detail": f"postillion, pid {server.proc.pid}"}


def test_nothing_listens(server: Server) -> None:
    code, lines = doctor(server, user=None)
    etc = server.config_dir
    assert code == 1
    assert lines == [
        f"✘ port 127.0.0.1:{server.ports['submission']}",
        f"    nothing listens on 127.0.0.1:{server.ports['submission']}",
        f"    fix: start postillion: postillion -c {etc} start",
        f"✔ SASL backend (postillion user database {etc}/data/users.sqlite, from {etc}/sasl/smtpd.conf)",
        "✔ user database (1 user)",
        "✔ mech_list (SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN)",
        "- not checked: TLS, certificate, AUTH and relay (nothing listens)",
        "- not checked: passwords, AUTH PLAIN and AUTH LOGIN (give --user U --password-stdin)",
    ]


def test_wrong_password(server: Server) -> None:
    server.start()
    code, lines = doctor(server, password="nope")
    etc = server.config_dir
    assert code == 1
    assert lines[9:12] == [
        "✘ user database password check",
        f"    wrong password for alice in {etc}/data/users.sqlite",
        f"    fix: postillion -c {etc} user passwd alice",
    ]
    assert lines[13:19] == [
        "✘ AUTH PLAIN over TLS",
        "    535 5.7.8 Error: authentication failed: authentication failure: the password was refused",
        "    fix: see the password check above; the maillog names the reason",
        "✘ AUTH LOGIN over TLS",
        "    535 5.7.8 Error: authentication failed: authentication failure: the password was refused",
        "    fix: see the password check above; the maillog names the reason",
    ]


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def test_cert_key_mismatch(server: Server) -> None:
    server.start()
    key = server.config_dir / "tls" / "key.pem"
    _write_key(key, _new_key())  # replaced under the running server, as an admin would
    code, lines = doctor(server)
    etc = server.config_dir
    assert code == 1
    i = lines.index("✘ certificate and key")
    assert lines[i:i + 3] == [
        "✘ certificate and key",
        (f"    smtpd_tls_key_file {key} does not match the certificate in {etc}/tls/cert.pem "
        "(smtpd_tls_cert_file)"),
        (f"    fix: use the private key the certificate was issued for (postillion -c {etc} check "
        "finds this too); the running server keeps its old pair until a reload, which would fail now"),
    ]
    assert [line for line in lines if line.startswith("✘")] == ["✘ certificate and key"]


def test_expired_certificate(server: Server) -> None:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    ended = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ended - datetime.timedelta(days=90)).not_valid_after(ended)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(server.config_dir / "tls" / "key.pem", key)
    (server.config_dir / "tls" / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server.start()
    code, lines = doctor(server)
    assert code == 1
    assert lines[2:5] == [
        "✘ certificate expiry",
        "    the certificate expired on 2024-03-01 12:00 UTC",
        "    fix: renew the certificate (postillion init makes a self-signed one), then postillion reload",
    ]
    assert [line for line in lines if line.startswith("✘")] == ["✘ certificate expiry"]


@pytest.fixture(scope="module")
def port25() -> Iterator[Server]:
    """Port 25 with AUTH turned on in main.cf (smtpd_tls_security_level = may,
    smtpd_tls_auth_only left at no) and all of 127.0.0.0/8 trusted."""
    s = make_server(main={"smtpd_sasl_auth_enable": "yes", "mynetworks": "127.0.0.0/8"})
    s.add_user("alice")
    s.start()
    try:
        yield s
    finally:
        cleanup(s)


def test_auth_offered_in_clear_text(port25: Server) -> None:
    code, lines = doctor(port25, "--service", str(port25.ports["smtp"]))
    label = f"127.0.0.1:{port25.ports['smtp']}"
    assert code == 1
    i = lines.index("✘ no AUTH before TLS")
    assert lines[i:i + 3] == [
        "✘ no AUTH before TLS",
        ("    AUTH offered before TLS (250-AUTH SCRAM-SHA-256 PLAIN LOGIN): passwords can cross the network in "
        "clear text"),
        ("    fix: smtpd_tls_auth_only = yes or smtpd_tls_security_level = encrypt on that service "
        f"(master.cf, under {label}: -o smtpd_tls_auth_only=yes), then postillion -c "
        f"{port25.config_dir} reload"),
    ]


def test_open_relay(port25: Server) -> None:
    code, lines = doctor(port25, "--service", str(port25.ports["smtp"]))
    label = f"127.0.0.1:{port25.ports['smtp']}"
    assert code == 1
    assert lines[-3:] == [
        "✘ relay without AUTH refused",
        ("    open relay: RCPT TO:<doctor@example.net> from 127.0.0.1 without AUTH got 250 2.1.5 Ok "
        "(permit_mynetworks: 127.0.0.1 is in mynetworks = 127.0.0.0/8)"),
        (f"    fix: on {label} (master.cf): -o smtpd_relay_restrictions=permit_sasl_authenticated,"
        "reject_unauth_destination -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject; "
        f"anywhere else end the list with reject_unauth_destination; then postillion -c "
        f"{port25.config_dir} reload"),
    ]
    assert [line for line in lines if line.startswith("✘")] == [
        "✘ no AUTH before TLS", "✘ relay without AUTH refused"]


def test_relay_check_uses_a_domain_the_server_does_not_accept() -> None:
    # example.net is one of ours here: accepting it is no relaying, so the doctor must ask
    # for an outside domain instead (and not report an open relay).
    s = make_server(main={"relay_domains": "example.net", "mynetworks": "10.0.0.0/8"})
    try:
        s.add_user("alice")
        s.start()
        code, lines = doctor(s, "--service", str(s.ports["smtp"]), user=None)
        relay = [line for line in lines if "relay" in line]
        assert relay == ["✔ relay without AUTH refused (454 4.7.1 <doctor@example.com>: Relay access "
                         "denied)"]
    finally:
        cleanup(s)


def test_relay_recipient_choice() -> None:
    from postillion.config import Params
    from postillion.doctor.dialogue import relay_recipient

    def pick(**main: str) -> str | None:
        return relay_recipient(Params.from_dict({"myhostname": "mail.example.test", **main}))

    assert pick() == "doctor@example.net"
    assert pick(mydestination="example.net") == "doctor@example.com"
    assert pick(relay_domains=".net, example.com") == "doctor@doctor.invalid"
    assert pick(virtual_mailbox_domains="example.net example.com invalid") is None
    assert pick(virtual_alias_domains="hash:/etc/postfix/virtual") == "doctor@example.net"


@pytest.mark.parametrize("restriction", ["", "reject_sender_login_mismatch"])
def test_sender_login_mismatch(restriction: str) -> None:
    s = make_server()
    try:
        senders = s.config_dir / "senders"
        senders.write_text("alice@mail.example.test alice\n")
        s.postconf(f"smtpd_sender_login_maps=texthash:{senders}", f"mua_sender_restrictions={restriction}")
        s.add_user("alice")
        s.start()
        code, lines = doctor(s)
        label = f"127.0.0.1:{s.ports['submission']}"
        if restriction:
            assert (code, lines[-1]) == (0, ("✔ sender login mismatch refused (553 5.7.1 "
                                            "<doctor@example.org>: Sender address rejected: not owned "
                                            "by user alice)"))
        else:
            assert code == 1
            assert lines[-3:] == [
                "✘ sender login mismatch refused",
                ("    alice may send as MAIL FROM:<doctor@example.org> (250 2.1.5 Ok) although "
                "smtpd_sender_login_maps is set"),
                ("    fix: add reject_sender_login_mismatch to smtpd_sender_restrictions on "
                f"{label} (master.cf: -o smtpd_sender_restrictions=reject_sender_login_mismatch), "
                f"then postillion -c {s.config_dir} reload"),
            ]
    finally:
        cleanup(s)
