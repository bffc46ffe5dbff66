"""server/tls.py: contexts from smtpd_tls_* parameters, real handshakes over a socketpair."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from postillion.config import Params
from postillion.errors import ConfigError
from postillion.server.tls import describe_session, make_server_context, parse_protocols, security_level

HOST = "mail.example.test"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)  # RSA, like Postfix's usual server key


@pytest.fixture()
def certdir(tmp_path: Path, ca: trustme.CA) -> Path:
    cert = ca.issue_cert(HOST, key_type=trustme.KeyType.RSA)
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    with open(tmp_path / "chain.pem", "wb") as f:  # Postfix chain file: key, then the chain
        f.write(cert.private_key_pem.bytes())
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    other = ca.issue_cert("other.example.test")
    other.private_key_pem.write_to_path(tmp_path / "otherkey.pem")  # EC: another key type
    rsa = ca.issue_cert("rsa.example.test", key_type=trustme.KeyType.RSA)
    rsa.private_key_pem.write_to_path(tmp_path / "otherrsakey.pem")  # same type, other key
    return tmp_path


def params(certdir: Path, **values: str) -> Params:
    base = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": "cert.pem",
            "smtpd_tls_key_file": "key.pem"}
    base.update(values)
    return Params.from_dict({k: v for k, v in base.items() if v is not None}, config_dir=certdir)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str, str]:
    """Run a TLS handshake over a socketpair; return (server description, client version)."""
    a, b = socket.socketpair()
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                result["desc"] = describe_session(s)
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=HOST) as c:
            version = c.version() or ""
            c.sendall(b"x")
    finally:
        t.join(10)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return str(result["desc"]), version


def client(ca: trustme.CA, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for attr, v in versions.items():
        setattr(ctx, attr, v)
    return ctx


def test_level_none_gives_no_context(certdir: Path) -> None:
    assert make_server_context(params(certdir, smtpd_tls_security_level="none")) is None
    assert make_server_context(Params.from_dict({})) is None


def test_wrappermode_needs_a_context_even_at_level_none(certdir: Path) -> None:
    p = params(certdir, smtpd_tls_security_level="none", smtpd_tls_wrappermode="yes")
    assert isinstance(make_server_context(p), ssl.SSLContext)


def test_legacy_parameters_map_to_levels() -> None:
    assert security_level(Params.from_dict({"smtpd_use_tls": "yes"})) == "may"
    assert security_level(Params.from_dict({"smtpd_enforce_tls": "yes", "smtpd_use_tls": "yes"})) == "encrypt"
    assert security_level(Params.from_dict({"smtpd_tls_security_level": "none", "smtpd_use_tls": "yes"})) == "none"
    with pytest.raises(ConfigError, match="smtpd_tls_security_level"):
        security_level(Params.from_dict({"smtpd_tls_security_level": "dane"}))


def test_real_handshake_and_session_description(certdir: Path, ca: trustme.CA) -> None:
    ctx = make_server_context(params(certdir))
    assert ctx is not None
    desc, version = handshake(ctx, client(ca))
    assert version == "TLSv1.3"
    assert desc.startswith("TLSv1.3 with cipher TLS_")
    assert desc.split(" with cipher ")[1].split(" (")[1] in {"256/256 bits)", "128/128 bits)"}


def test_tls12_description(certdir: Path, ca: trustme.CA) -> None:
    ctx = make_server_context(params(certdir))
    assert ctx is not None
    desc, version = handshake(ctx, client(ca, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"
    assert desc == "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_protocol_floor_refuses_tls11(certdir: Path, ca: trustme.CA) -> None:
    ctx = make_server_context(params(certdir))
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    old = client(ca, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(ctx, old)


def test_configured_floor_tls13_refuses_tls12(certdir: Path, ca: trustme.CA) -> None:
    ctx = make_server_context(params(certdir, smtpd_tls_protocols=">=TLSv1.3"))
    assert ctx is not None
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(ctx, client(ca, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert handshake(ctx, client(ca))[1] == "TLSv1.3"


def test_encrypt_uses_mandatory_protocols(certdir: Path) -> None:
    ctx = make_server_context(params(certdir, smtpd_tls_security_level="encrypt",
                                     smtpd_tls_protocols=">=TLSv1.2",
                                     smtpd_tls_mandatory_protocols="!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2"))
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (">=TLSv1.2", ("TLSv1.2", "TLSv1.3")),
        ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", ("TLSv1.2", "TLSv1.3")),
        ("!SSLv2:!SSLv3", ("TLSv1", "TLSv1.3")),
        ("TLSv1.2", ("TLSv1.2", "TLSv1.2")),
        (">=TLSv1.1 <=TLSv1.2", ("TLSv1.1", "TLSv1.2")),
        ("!tlsv1.3", ("SSLv3", "TLSv1.2")),
    ],
)
def test_parse_protocols(value: str, expected: tuple[str, str]) -> None:
    assert parse_protocols(value, name="smtpd_tls_protocols") == expected


@pytest.mark.parametrize("value", ["TLSv9", "!TLSv1.2", "!SSLv3 !TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3"])
def test_bad_protocols(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_protocols(value, name="smtpd_tls_protocols")
    assert info.value.name == "smtpd_tls_protocols"


def test_chain_file_with_key_and_chain(certdir: Path, ca: trustme.CA) -> None:
    p = params(certdir, smtpd_tls_cert_file="", smtpd_tls_key_file="", smtpd_tls_chain_files="chain.pem")
    ctx = make_server_context(p)
    assert ctx is not None
    assert handshake(ctx, client(ca))[1] == "TLSv1.3"


@pytest.mark.parametrize("keyfile", ["otherkey.pem", "otherrsakey.pem"])
def test_mismatched_key_is_a_config_error(certdir: Path, keyfile: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_server_context(params(certdir, smtpd_tls_key_file=keyfile))
    err = info.value
    assert err.name == "smtpd_tls_key_file"
    assert err.path == certdir / keyfile
    assert "private key does not match the certificate" in str(err)


def test_missing_cert_file_is_a_config_error(certdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_server_context(params(certdir, smtpd_tls_cert_file="nope.pem", smtpd_tls_key_file="key.pem"))
    assert info.value.name == "smtpd_tls_cert_file"
    assert info.value.path == certdir / "nope.pem"
    assert "cannot read" in str(info.value)


def test_garbage_cert_is_a_config_error(certdir: Path) -> None:
    (certdir / "garbage.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        make_server_context(params(certdir, smtpd_tls_cert_file="garbage.pem"))
    assert info.value.name == "smtpd_tls_cert_file"


def test_absolute_paths_are_used_as_is(certdir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("cfg")
    p = Params.from_dict({"smtpd_tls_security_level": "may",
                          "smtpd_tls_cert_file": str(certdir / "cert.pem"),
                          "smtpd_tls_key_file": str(certdir / "key.pem")}, config_dir=elsewhere)
    assert make_server_context(p) is not None


def test_level_may_without_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make_server_context(Params.from_dict({"smtpd_tls_security_level": "may"}))
    assert info.value.name == "smtpd_tls_cert_file"
